package directory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory/state"
)

// addVoterSlot makes a new voter of c (certificate, ports, folder)
// without starting it.
func (c *testCluster) addVoterSlot(id string) *voter {
	c.t.Helper()
	v := &voter{id: id, dir: filepath.Join(c.t.TempDir(), "v"), httpAddr: testkit.FreeAddr(c.t), raftAddr: testkit.FreeAddr(c.t)}
	var err error
	if v.cert, v.key, err = c.ca.Issue(v.id, []string{"127.0.0.1"}, time.Hour); err != nil {
		c.t.Fatal(err)
	}
	c.voters = append(c.voters, v)
	return v
}

// adminJSON sends an admin request with a JSON body; it returns the
// status and decodes the answer into out.
func adminJSON(t testing.TB, method, url string, body, out any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	if out != nil && len(raw) > 0 {
		_ = json.Unmarshal(raw, out)
	}
	if resp.StatusCode != 200 {
		t.Logf("%s %s: %d %s", method, url, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

// TestVotersGrowAndShrinkWhileRegistering grows a cluster from 3 to 5
// voters (one added by an admin after starting with AwaitAdd, one
// joining by itself) and shrinks it back to 3 (the leader among the
// removed) while registrations go on; every acknowledged registration is
// on every remaining voter. The removed voters stop (Fatal) and refuse
// to open their folders again.
func TestVotersGrowAndShrinkWhileRegistering(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	var live atomic.Pointer[[]*Directory]
	setLive := func() {
		var ds []*Directory
		for _, v := range c.voters {
			if v.d != nil {
				ds = append(ds, v.d)
			}
		}
		live.Store(&ds)
	}
	setLive()
	var (
		mu    sync.Mutex
		acked []string
		seq   atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				ds := *live.Load()
				d := ds[(w+i)%len(ds)]
				name := fmt.Sprintf("u%05d", seq.Add(1))
				wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
				err := d.CreateUser(wctx, name, "password", "")
				wcancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
				}
			}
		}()
	}
	progress := func(what string) {
		t.Helper()
		n := count()
		testkit.WaitFor(t, 10*time.Second, "registrations go on "+what, func() bool { return count() >= n+20 })
	}
	progress("with 3 voters")

	// v4 starts with AwaitAdd and waits; an admin adds it through a
	// follower, which passes the request to the leader.
	v4 := c.addVoterSlot("v4")
	cfg4 := c.config(v4, false, "")
	cfg4.Cluster.AwaitAdd = true
	started := make(chan error, 1)
	go func() { started <- c.startErr(v4, cfg4) }()
	l := c.leader()
	var follower *voter
	for _, v := range c.voters[:3] {
		if v != l {
			follower = v
			break
		}
	}
	// A wrong ID for the address is refused: the certificate names v4.
	bad := joinRequest{ID: "v9", RaftAddr: v4.raftAddr, HTTPURL: v4.url()}
	var res wireResult
	testkit.WaitFor(t, 10*time.Second, "v4 listening for raft", func() bool {
		code := adminJSON(t, "POST", follower.url()+"/admin/v1/voters", bad, &res)
		return code == 400 && res.Error == "bad_voter" && strings.Contains(res.Message, `answers as voter "v4"`)
	})
	begin := time.Now()
	if code := adminJSON(t, "POST", follower.url()+"/admin/v1/voters",
		joinRequest{ID: "v4", RaftAddr: v4.raftAddr, HTTPURL: v4.url()}, &res); code != 200 {
		t.Fatalf("add v4: %d %+v", code, res)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Logf("voter add (admin, AwaitAdd): %v", time.Since(begin))
	setLive()
	progress("with v4")
	// v5 joins by itself.
	v5 := c.addVoterSlot("v5")
	begin = time.Now()
	c.start(v5, false, c.voters[1].url())
	t.Logf("voter add (join): %v", time.Since(begin))
	setLive()
	progress("with 5 voters")
	var vv VotersView
	if code := adminJSON(t, "GET", v5.url()+"/admin/v1/voters", nil, &vv); code != 200 || len(vv.Voters) != 5 {
		t.Fatalf("voters: %d %+v", code, vv)
	}
	for _, v := range vv.Voters {
		if !v.Recorded || v.Suffrage != "Voter" {
			t.Fatalf("voter %+v not recorded", v)
		}
	}

	// Shrink: remove the leader (it hands leadership over first), then
	// v5, through whichever voter.
	remove := func(target, via *voter) {
		t.Helper()
		begin := time.Now()
		if code := adminJSON(t, "DELETE", via.url()+"/admin/v1/voters/"+target.id, nil, &res); code != 200 {
			t.Fatalf("remove %s via %s: %d %+v", target.id, via.id, code, res)
		}
		t.Logf("voter remove %s (via %s): %v", target.id, via.id, time.Since(begin))
		select {
		case err := <-target.d.Fatal():
			if !errors.Is(err, ErrVoterRemoved) {
				t.Fatalf("%s: fatal %v", target.id, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not notice its removal", target.id)
		}
		c.stop(target)
		setLive()
		progress("after removing " + target.id)
	}
	old := c.leader()
	remove(old, old)
	if nl := c.leader(); nl == old {
		t.Fatal("the removed leader still leads")
	}
	target := v5
	if old == v5 {
		target = v4
	}
	remove(target, c.leader())
	cancel()
	wg.Wait()

	// Three voters remain, every acknowledged user on each.
	rest := c.live()
	if len(rest) != 3 {
		t.Fatalf("%d voters live", len(rest))
	}
	testkit.WaitFor(t, 10*time.Second, "three voters in the configuration, records dropped", func() bool {
		vv = VotersView{}
		return adminJSON(t, "GET", rest[0].url()+"/admin/v1/voters", nil, &vv) == 200 &&
			len(vv.Voters) == 3 && len(vv.Stale) == 0 && len(rest[0].d.state.Voters()) == 3
	})
	mu.Lock()
	all := slices.Clone(acked)
	mu.Unlock()
	t.Logf("%d registrations acknowledged", len(all))
	for _, v := range rest {
		testkit.WaitFor(t, 10*time.Second, v.id+" has every acknowledged user", func() bool {
			for _, u := range all {
				if ok, _ := v.d.UserExists(context.Background(), u); !ok {
					return false
				}
			}
			return true
		})
	}
	// A removed voter does not come back by itself.
	octx, ocancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ocancel()
	if d, err := Open(octx, c.config(old, false, "")); !errors.Is(err, ErrVoterRemoved) {
		if d != nil {
			d.Close()
		}
		t.Fatalf("reopening removed %s: %v", old.id, err)
	}
	// The last voters are never removed below one; unknown ones are 404.
	if code := adminJSON(t, "DELETE", rest[0].url()+"/admin/v1/voters/nobody", nil, &res); code != 404 {
		t.Fatalf("remove unknown: %d", code)
	}
}

// TestRemovedWhileDownNoticesAtRestart removes a voter that is down; at
// its restart it finds the leader's configuration without it, stops
// (Fatal), and its record is gone.
func TestRemovedWhileDownNoticesAtRestart(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.leader()
	var gone *voter
	for _, v := range c.voters {
		if v != l {
			gone = v
			break
		}
	}
	c.stop(gone)
	var res wireResult
	if code := adminJSON(t, "DELETE", l.url()+"/admin/v1/voters/"+gone.id, nil, &res); code != 200 {
		t.Fatalf("remove: %d %+v", code, res)
	}
	c.start(gone, false, "")
	select {
	case err := <-gone.d.Fatal():
		if !errors.Is(err, ErrVoterRemoved) {
			t.Fatalf("fatal %v", err)
		}
		t.Logf("restarted removed voter: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("a voter removed while down did not notice at restart")
	}
	// It may not record itself again.
	enc, _ := state.EncodeCommand(state.SetVoter{ID: gone.id, HTTPURL: gone.url(), RaftAddr: gone.raftAddr})
	req, _ := http.NewRequest("POST", l.url()+pathForward, bytes.NewReader(enc))
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var wr wireResult
	_ = json.NewDecoder(resp.Body).Decode(&wr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || wr.Error != "voter_removed" {
		t.Fatalf("forwarded SetVoter of a removed voter: %d %+v", resp.StatusCode, wr)
	}
	testkit.WaitFor(t, 10*time.Second, "record dropped", func() bool {
		_, ok := l.d.state.Voters()[gone.id]
		return !ok
	})
}

// TestGateWithholdsUnknownCommands: a voter that never said what it
// decodes (as a build before the gate, which answers 404) keeps the
// leader from proposing commands outside the baseline; baseline
// commands go on.
func TestGateWithholdsUnknownCommands(t *testing.T) {
	var silent atomic.Bool
	c := newTestCluster(t, 3, nil)
	// v3 answers 404 on the commands route while silent.
	v3 := c.voters[2]
	h := v3.lazy.h.Load()
	inner := *h
	var wrapped http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if silent.Load() && r.URL.Path == pathCommands {
			http.NotFound(w, r)
			return
		}
		inner.ServeHTTP(w, r)
	})
	v3.lazy.h.Store(&wrapped)
	silent.Store(true)
	l := c.leader()
	// Forget what the leader may have learnt already.
	l.d.gate.mu.Lock()
	delete(l.d.gate.known, "v3")
	l.d.gate.mu.Unlock()
	ctx := context.Background()
	if l.d.Understood(ctx, state.CmdRemoveVoter, 1) {
		t.Fatal("gate open with a voter that does not say what it decodes")
	}
	err := l.d.write(ctx, state.RemoveVoter{ID: "nobody"})
	if !errors.Is(err, ErrGated) {
		t.Fatalf("gated write: %v", err)
	}
	if err := l.d.CreateUser(ctx, "alice", "password", ""); err != nil {
		t.Fatalf("baseline write while gated: %v", err)
	}
	silent.Store(false)
	if !l.d.Understood(ctx, state.CmdRemoveVoter, 1) {
		t.Fatal("gate still closed once every voter answered")
	}
	if err := l.d.write(ctx, state.RemoveVoter{ID: "nobody"}); err != nil {
		t.Fatal(err)
	}
	// A voter that does not know a version keeps it gated too.
	if l.d.Understood(ctx, state.CmdRemoveVoter, 9) {
		t.Fatal("unknown version passed the gate")
	}
}
