package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/testnet"
)

// previousRelease is the build the current one must interoperate with
// during a rolling upgrade (N-1): the commit this work started from, the
// last one before the lifecycle commands, the feature gate and the
// restored-node protocol. Its wire formats are all still spoken here: raft
// commands of the baseline (state.Baseline), snapshot format 4,
// replication /hce/repl/2.0.0, the directory protocols 1.0.0/1.1.0, the
// voters' internal routes; what this build adds is offered only to
// peers that say they know it.
const previousRelease = "bb9b5c1"

// buildRelease builds hce at a commit of this repository's history into
// a temp folder: the commit's tree is extracted (git archive, no work
// tree or worktree metadata touched) and built with the module cache, no
// network. It skips the test when git or the commit is not available.
func buildRelease(t *testing.T, commit string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds an older release")
	}
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("no git history here (%v): the mixed-version test needs commit %s", err, commit)
	}
	top := strings.TrimSpace(string(root))
	if err := exec.Command("git", "-C", top, "cat-file", "-e", commit+"^{commit}").Run(); err != nil {
		t.Skipf("commit %s is not in this clone's history (a shallow clone?): the mixed-version test needs it", commit)
	}
	src := filepath.Join(t.TempDir(), "src")
	arch := exec.Command("git", "-C", top, "archive", "--format=tar", commit)
	out, err := arch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := arch.Start(); err != nil {
		t.Fatal(err)
	}
	if err := untar(out, src); err != nil {
		t.Fatal(err)
	}
	if err := arch.Wait(); err != nil {
		t.Fatalf("git archive %s: %v", commit, err)
	}
	bin := filepath.Join(t.TempDir(), "hce-"+commit)
	build := exec.Command("go", "build", "-o", bin, "./cmd/hce")
	build.Dir = src
	build.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	begin := time.Now()
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", commit, err, b)
	}
	t.Logf("built hce at %s in %v", commit, time.Since(begin).Round(time.Second))
	return bin
}

// untar extracts a tar stream's folders and regular files into dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, filepath.Clean(dir)+string(filepath.Separator)) {
			return fmt.Errorf("tar entry %q leaves the folder", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
}

// TestMixedVersionFederation runs a federation whose voters and nodes
// are split between the previous release and this build, through the
// federation stories: registrations through voters of both versions,
// writes that replicate between nodes of both versions, a leader killed
// and a user's primary killed while a client writes; then a rolling
// upgrade, member by member, while the client goes on. Commands only
// this build decodes stay gated (409) while an older voter is in the
// configuration, and pass once every voter runs this build. Every
// acknowledged record is on every replica at the end.
func TestMixedVersionFederation(t *testing.T) {
	cur := hceBinary(t)
	old := buildRelease(t, previousRelease)
	var bmu sync.Mutex
	bins := map[string]string{"d1": old, "d3": old, "n1": old, "n3": old}
	binaryFor := func(name string) string {
		bmu.Lock()
		defer bmu.Unlock()
		return bins[name] // "" -> the current build
	}
	upgrade := func(name string) {
		bmu.Lock()
		delete(bins, name)
		bmu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tn := childNet(t, ctx, testnet.Config{Binary: cur, BinaryFor: binaryFor, Directories: 3, Nodes: 3, DownAfter: 2 * time.Second, Heartbeat: 250 * time.Millisecond})
	t.Logf("mixed testnet up: d1, d3, n1, n3 run %s, d2, n2 this build", previousRelease)
	hc := &http.Client{Timeout: 10 * time.Second}
	voterURL := func(name string) string {
		for _, v := range tn.Voters() {
			if v.ID == name {
				return v.HTTP
			}
		}
		t.Fatalf("no voter %s", name)
		return ""
	}
	admin := func(method, url string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, url, nil)
		req.Header.Set("Authorization", "Bearer "+tn.AdminToken())
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Registration through a voter of each version; writes; replication
	// between nodes of both versions.
	const password = "mixed version story"
	type account struct {
		c     *client.Client
		mu    sync.Mutex
		acked map[string]string
	}
	var accts []*account
	for i, via := range []string{"d1", "d2", "d3"} {
		c, err := client.New(client.Config{Directory: voterURL(via), Email: fmt.Sprintf("mixed%d@example.com", i),
			Password: password, FailoverWait: 30 * time.Second, HTTP: hc})
		if err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, func() string {
			if err := c.Register(ctx); err != nil {
				return fmt.Sprintf("register through %s: %v", via, err)
			}
			return ""
		})
		accts = append(accts, &account{c: c, acked: map[string]string{}})
	}
	write := func(a *account, prefix string, n int) error {
		var rs []client.Record
		for i := range n {
			p := fmt.Sprintf(`{"ciphertext":"%s-%d"}`, prefix, i)
			rs = append(rs, client.Record{ID: fmt.Sprintf("%s-%d", prefix, i), Payload: &p})
		}
		res, _, err := a.c.Post(ctx, "history", rs, 0)
		if err != nil {
			return err
		}
		a.mu.Lock()
		for _, id := range res.Success {
			for _, r := range rs {
				if r.ID == id {
					a.acked[id] = *r.Payload
				}
			}
		}
		a.mu.Unlock()
		return nil
	}
	for i, a := range accts {
		if err := write(a, fmt.Sprintf("first%d", i), 10); err != nil {
			t.Fatal(err)
		}
		if err := tn.WaitConverged(ctx, a.c.User(), password); err != nil {
			t.Fatal(err)
		}
	}

	// The gate: UndrainNode is a command the previous release does not
	// decode; with older voters in the configuration the leader does
	// not propose it.
	nodeID := tn.Nodes()[1].ID
	undrain := func() (int, string) {
		return admin(http.MethodPost, voterURL("d2")+"admin/v1/nodes/"+nodeID+"/undrain")
	}
	if code, body := undrain(); code != http.StatusConflict || !strings.Contains(body, "gated") {
		t.Fatalf("undrain with older voters: %d %s (want 409 gated)", code, body)
	}

	// Failover while a client writes: the leader voter, then the user's
	// primary node, are killed. The writer's client asks a voter that
	// stays up (a client's directory URL is one name; behind it, in
	// production, a load balancer over the voters).
	leader, _ := tn.Leader()
	writer := accts[0]
	for i, via := range []string{"d1", "d2", "d3"} {
		if via != leader {
			writer = accts[i]
			break
		}
	}
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var lastErr sync.Map
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := 0; wctx.Err() == nil; b++ {
			if err := write(writer, fmt.Sprintf("stream-b%d", b), 5); err != nil {
				lastErr.Store("err", err.Error())
			}
		}
	}()
	progress := func(what string) {
		t.Helper()
		writer.mu.Lock()
		n := len(writer.acked)
		writer.mu.Unlock()
		testkit.Eventually(t, 60*time.Second, func() string {
			writer.mu.Lock()
			defer writer.mu.Unlock()
			if len(writer.acked) < n+20 {
				e, _ := lastErr.Load("err")
				return fmt.Sprintf("writes stalled %s (%d acknowledged; last error %v)", what, len(writer.acked), e)
			}
			return ""
		})
	}
	progress("at the start")
	if err := tn.Kill(leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the leader voter %s", leader)
	progress("after the leader was killed")
	var set []string
	testkit.Eventually(t, 20*time.Second, func() string {
		var err error
		if set, err = tn.ReplicaSet(ctx, writer.c.User()); err != nil {
			return err.Error()
		}
		return ""
	})
	primary := ""
	for _, n := range tn.Nodes() {
		if n.HTTP == set[0] {
			primary = n.Name
		}
	}
	if err := tn.Kill(primary); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the writer's primary node %s", primary)
	progress("after its primary was killed")
	for _, name := range []string{leader, primary} {
		if err := tn.Restart(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	progress("after the restarts")

	// Rolling upgrade: each older member, one by one, stopped and started
	// again on this build, while the client writes.
	for _, name := range []string{"n1", "n3", "d1", "d3"} {
		if err := tn.Kill(name); err != nil {
			t.Fatal(err)
		}
		upgrade(name)
		if err := tn.Restart(ctx, name); err != nil {
			t.Fatal(err)
		}
		progress("after upgrading " + name)
		t.Logf("upgraded %s", name)
	}
	// Every voter runs this build: the gated command is proposed (and
	// refused by the state machine: the node is not draining).
	testkit.Eventually(t, 20*time.Second, func() string {
		if code, body := undrain(); code != http.StatusBadRequest || !strings.Contains(body, "bad_node_state") {
			return fmt.Sprintf("undrain after the upgrade: %d %s (want 400 bad_node_state)", code, body)
		}
		return ""
	})
	stopWriter()
	wg.Wait()

	for _, a := range accts {
		user := a.c.User()
		if err := tn.WaitConverged(ctx, user, password); err != nil {
			t.Fatal(err)
		}
		var set []string
		testkit.Eventually(t, 20*time.Second, func() string {
			var err error
			if set, err = tn.ReplicaSet(ctx, user); err != nil {
				return err.Error()
			}
			return ""
		})
		a.mu.Lock()
		want := a.acked
		a.mu.Unlock()
		for _, base := range set {
			var got map[string]string
			testkit.Eventually(t, 20*time.Second, func() string {
				var err error
				if got, err = storyListing(ctx, hc, base, user, password, "history"); err != nil {
					return err.Error()
				}
				return ""
			})
			for id, p := range want {
				if got[id] != p {
					t.Fatalf("user %s: acknowledged %s missing on %s", user, id, base)
				}
			}
		}
		t.Logf("user %s: %d acknowledged records on each of %d replicas", user, len(want), len(set))
	}
	var st struct {
		Voters []struct{ ID string } `json:"voters"`
	}
	_, body := admin(http.MethodGet, voterURL("d2")+"admin/v1/status")
	if json.Unmarshal([]byte(body), &st) != nil || len(st.Voters) != 3 {
		t.Fatalf("status after the upgrade: %s", body)
	}
}
