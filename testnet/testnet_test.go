package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
)

// TestTestnetInProcess starts a whole federation in process (3 voters
// over raft with mutual TLS, 4 nodes of 2 operators over libp2p) and
// checks placement, failover after Kill, Restart and Drain.
func TestTestnetInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const downAfter = 1500 * time.Millisecond
	const hb = 250 * time.Millisecond
	begin := time.Now()
	tn, err := Start(ctx, Config{Dir: t.TempDir(), DownAfter: downAfter, Heartbeat: hb,
		Directory: func(c *directory.Config) { tuneDirectory(c); c.Nodes.LivenessTick = 100 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tn.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	t.Logf("in-process testnet (3 voters, 4 nodes) ready in %v", time.Since(begin))

	leaderID, leaderURL := tn.Leader()
	if leaderID == "" || leaderURL == "" {
		t.Fatal("no leader")
	}
	if got := len(tn.Voters()); got != 3 {
		t.Fatalf("%d voters", got)
	}
	st, err := tn.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]string{}
	for _, n := range st.Nodes {
		if n.State != "active" || !n.Running {
			t.Fatalf("node %s: %+v", n.Name, n)
		}
		ops[n.ID] = n.Operator
	}
	if len(ops) != 4 || len(st.Voters) != 3 {
		t.Fatalf("status: %+v", st)
	}
	var m Manifest
	b, err := os.ReadFile(filepath.Join(tn.Dir(), ManifestFile))
	if err != nil || json.Unmarshal(b, &m) != nil || len(m.Directories) != 3 || len(m.Nodes) != 4 || m.AdminToken != tn.AdminToken() {
		t.Fatalf("testnet.json: %v %s", err, b)
	}

	// A user registered at a follower gets 2 nodes of distinct operators.
	var follower string
	for _, v := range tn.Voters() {
		if v.ID != leaderID {
			follower = v.HTTP
		}
	}
	email := uniqueEmail(t)
	user := accountName(email)
	code, body := fedCall(t, "PUT", follower+"user/1.0/"+user, "", []byte(fmt.Sprintf(`{"password":"testnet-password-1","email":%q}`, email)))
	if code != 200 {
		t.Fatalf("register at a follower: %d %s", code, body)
	}
	var set userSet
	code, body = fedCall(t, "GET", leaderURL+"admin/v1/users/"+user, "Bearer "+tn.AdminToken(), nil)
	if code != 200 || json.Unmarshal(body, &set) != nil || len(set.Replicas) != 1 {
		t.Fatalf("replica set: %d %s", code, body)
	}
	if ops[set.Primary.ID] == "" || ops[set.Primary.ID] == ops[set.Replicas[0].ID] {
		t.Fatalf("replicas not on distinct operators: %+v (operators %v)", set, ops)
	}
	weave := func() string {
		_, b := fedCall(t, "GET", follower+"user/1.0/"+user+"/node/weave", "", nil)
		return string(b)
	}
	// The follower applies the registration shortly after the leader.
	testkit.Eventually(t, 5*time.Second, func() string {
		if w := weave(); w != set.Primary.URL {
			return fmt.Sprintf("node/weave %q, want %q", w, set.Primary.URL)
		}
		return ""
	})

	// Kill the primary: node/weave moves within DownAfter + a heartbeat.
	killed := time.Now()
	if err := tn.Kill(set.Primary.ID); err != nil {
		t.Fatal(err)
	}
	if err := tn.Kill(set.Primary.ID); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("second kill: %v", err)
	}
	testkit.Eventually(t, downAfter+hb+3*time.Second, func() string {
		if w := weave(); w == set.Primary.URL || w == "" {
			return "node/weave still " + w
		}
		return ""
	})
	t.Logf("node/weave moved %v after the kill", time.Since(killed))

	// Restart brings it back active on the same URL.
	if err := tn.Restart(ctx, set.Primary.ID); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, func() string {
		st, err := tn.Status(ctx)
		if err != nil {
			return err.Error()
		}
		for _, n := range st.Nodes {
			if n.ID == set.Primary.ID && (n.State != "active" || !n.Running || n.HTTP != set.Primary.URL) {
				return fmt.Sprintf("restarted node: %+v", n)
			}
		}
		return ""
	})

	// Drain by short name.
	name := tn.Nodes()[0].Name
	if err := tn.Drain(ctx, name); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		st, err := tn.Status(ctx)
		if err != nil {
			return err.Error()
		}
		if s := st.Nodes[0].State; s != "draining" && s != "retired" {
			return "drained node is " + s
		}
		return ""
	})
	if err := tn.Kill("nope"); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("kill of an unknown id: %v", err)
	}
}
