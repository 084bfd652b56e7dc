package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/directory/raftls"
)

const fedToken = "federation-test-admin-token"

// fedCall makes one HTTP request and returns the status and body.
func fedCall(t *testing.T, method, url, auth string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// federation is a voter that bootstrapped a cluster and storage nodes,
// started one by one with StartVoter and StartNode (not as a Testnet) for
// tests that reach into them.
type federation struct {
	v     *Voter
	nodes []*Node // in the order of their operators
	byID  map[string]*Node
}

// startFederation starts a voter (admin token fedToken, auto-approve,
// R = 2, tuneDirectory) and one storage node of capacity 100 per entry of
// ops, run by that operator, and waits until the directory has every node
// active. voter and node, when set, adjust the configurations. Everything
// is closed when the test ends, the nodes first.
func startFederation(t *testing.T, ctx context.Context, ops []string, voter func(*VoterConfig), node func(*NodeConfig)) federation {
	t.Helper()
	tmp := t.TempDir()
	ca, err := raftls.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vcfg := VoterConfig{ID: "d1", Dir: filepath.Join(tmp, "d1"), CA: ca, Bootstrap: true, AdminToken: fedToken,
		AutoApprove: true, Replicas: 2, Directory: tuneDirectory}
	if voter != nil {
		voter(&vcfg)
	}
	v, err := StartVoter(ctx, vcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Shutdown(context.Background()) })
	f := federation{v: v, byID: map[string]*Node{}}
	for i, op := range ops {
		ncfg := NodeConfig{Dir: filepath.Join(tmp, fmt.Sprintf("n%d", i)), Directory: v.URL(), Operator: op, Capacity: 100}
		if node != nil {
			node(&ncfg)
		}
		n, err := StartNode(ctx, ncfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		f.nodes = append(f.nodes, n)
		f.byID[n.ID()] = n
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		ns := v.Directory().Nodes()
		for _, n := range ns {
			if n.State != "active" {
				return fmt.Sprintf("node %s is %s", n.ID, n.State)
			}
		}
		if len(ns) != len(ops) {
			return fmt.Sprintf("%d nodes registered", len(ns))
		}
		return ""
	})
	return f
}

type userSet struct {
	User    string `json:"user"`
	Primary struct {
		ID, URL string
	} `json:"primary"`
	Replicas []struct{ ID, URL string } `json:"replicas"`
}

// TestFederation runs a voter in cluster mode and three storage nodes of
// two operators, all in-process over loopback HTTP and libp2p: admission,
// placement on distinct operators, Basic and token auth on nodes,
// failover after a crash, drain, and the nodes' gater.
func TestFederation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	const downAfter = 1500 * time.Millisecond
	const hbEvery = 250 * time.Millisecond
	fed := startFederation(t, ctx, []string{"alpha", "alpha", "beta"}, func(c *VoterConfig) {
		c.DownAfter = downAfter
		c.Directory = func(c *directory.Config) { tuneDirectory(c); c.Nodes.LivenessTick = 100 * time.Millisecond }
	}, func(c *NodeConfig) {
		c.HeartbeatInterval, c.MembershipTTL = hbEvery, 200*time.Millisecond
	})
	v, nodes, byID := fed.v, fed.nodes, fed.byID

	// A user gets R=2 nodes on distinct operators.
	email := uniqueEmail(t)
	user, pw := accountName(email), "federation-password-1"
	code, body := fedCall(t, "PUT", v.URL()+"user/1.0/"+user, "", []byte(fmt.Sprintf(`{"password":%q,"email":%q}`, pw, email)))
	if code != 200 {
		t.Fatalf("register user: %d %s", code, body)
	}
	set := func() userSet {
		var s userSet
		code, body := fedCall(t, "GET", v.URL()+"admin/v1/users/"+user, "Bearer "+fedToken, nil)
		if code != 200 || json.Unmarshal(body, &s) != nil {
			t.Fatalf("admin user: %d %s", code, body)
		}
		return s
	}
	s := set()
	if s.Primary.ID == "" || len(s.Replicas) != 1 {
		t.Fatalf("replica set %+v", s)
	}
	opOf := func(id string) string {
		for _, n := range v.Directory().Nodes() {
			if n.ID == id {
				return n.Operator
			}
		}
		return ""
	}
	if opOf(s.Primary.ID) == opOf(s.Replicas[0].ID) {
		t.Fatalf("primary and replica on one operator: %+v", s)
	}
	weave := func() string {
		_, b := fedCall(t, "GET", v.URL()+"user/1.0/"+user+"/node/weave", "", nil)
		return string(b)
	}
	primary := byID[s.Primary.ID]
	if got := weave(); got != primary.URL() {
		t.Fatalf("node/weave = %q, want the primary %q", got, primary.URL())
	}
	auth := testkit.BasicAuth(user, pw)
	put := func(base, id, authz string) (int, []byte) {
		return fedCall(t, "PUT", base+"1.1/"+user+"/storage/bookmarks/"+id, authz, []byte(`{"payload":"x"}`))
	}
	// Writes with Basic through the primary succeed.
	if code, body := put(primary.URL(), "a", auth); code != 200 {
		t.Fatalf("basic write on primary: %d %s", code, body)
	}
	if code, _ := put(primary.URL(), "a", testkit.BasicAuth(user, "wrong-password")); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	var outsider *Node
	for _, n := range nodes {
		if n.ID() != s.Primary.ID && n.ID() != s.Replicas[0].ID {
			outsider = n
		}
	}
	if code, _ := put(outsider.URL(), "a", auth); code != 401 {
		t.Fatalf("basic write on a node not holding the user: %d, want 401", code)
	}

	// A token works on its aud node only.
	code, body = fedCall(t, "GET", v.URL()+"user/1.0/"+user+"/token", auth, nil)
	var tok struct{ Token, Node string }
	if code != 200 || json.Unmarshal(body, &tok) != nil || tok.Token == "" {
		t.Fatalf("token: %d %s", code, body)
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		if code, body := put(primary.URL(), "t", "Bearer "+tok.Token); code != 200 {
			return fmt.Sprintf("token on the aud node: %d %s", code, body)
		}
		return ""
	})
	replica := byID[s.Replicas[0].ID]
	if code, _ := put(replica.URL(), "t2", "Bearer "+tok.Token); code != 401 {
		t.Fatalf("token on another node: %d, want 401", code)
	}

	// The gater: a peer the directory does not list cannot connect.
	stranger := strangerHost(t, ctx, t.TempDir())
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	// The dialer may finish its half of the handshake before the node's
	// gater refuses the connection, so the proof is that no stream opens
	// and the node holds no connection to the stranger.
	err := stranger.Connect(cctx, peer.AddrInfo{ID: replica.PeerID(), Addrs: replica.Host().Addrs()})
	if err == nil {
		var st interface{ Close() error }
		st, err = stranger.NewStream(cctx, replica.PeerID(), dirproto.ProtoKeys)
		if err == nil {
			st.Close()
		}
	}
	ccancel()
	if err == nil {
		t.Fatal("an unlisted peer opened a stream to a node")
	}
	if n := len(replica.Host().Network().ConnsToPeer(stranger.ID())); n != 0 {
		t.Fatalf("node holds %d connections to an unlisted peer", n)
	}
	// Nodes learn each other from the directory's peer list.
	testkit.Eventually(t, 5*time.Second, func() string {
		if !replica.Allowlist().Allowed(primary.PeerID()) {
			return "replica's allowlist lacks the primary"
		}
		return ""
	})

	// Failover: the primary crashes; node/weave moves within DownAfter
	// plus one heartbeat (and the liveness tick), and the new primary
	// takes the user's writes.
	crashed := time.Now()
	primary.Close()
	testkit.Eventually(t, downAfter+hbEvery+2*time.Second, func() string {
		if got := weave(); got == primary.URL() || got == "" {
			return "node/weave still " + got
		}
		return ""
	})
	t.Logf("failover after %v", time.Since(crashed))
	s = set()
	newPrimary := byID[s.Primary.ID]
	if newPrimary == nil || newPrimary == primary || weave() != newPrimary.URL() {
		t.Fatalf("after failover: set %+v, node/weave %q", s, weave())
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		if code, body := put(newPrimary.URL(), "b", auth); code != 200 {
			return fmt.Sprintf("write on the new primary: %d %s", code, body)
		}
		return ""
	})

	// Drain a live node holding the user: afterwards it answers 401.
	var drained *Node
	for _, r := range append([]struct{ ID, URL string }{{s.Primary.ID, s.Primary.URL}}, s.Replicas...) {
		if n := byID[r.ID]; n != nil && n != primary {
			drained = n
			break
		}
	}
	if code, body := put(drained.URL(), "c", auth); code != 200 {
		t.Fatalf("write before drain: %d %s", code, body)
	}
	code, body = fedCall(t, "POST", v.URL()+"admin/v1/nodes/"+drained.ID()+"/drain", "Bearer "+fedToken, nil)
	if code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	testkit.Eventually(t, 5*time.Second, func() string {
		if code, _ := put(drained.URL(), "d", auth); code != 401 {
			return fmt.Sprintf("drained node answers %d", code)
		}
		return ""
	})
	if w := weave(); strings.Contains(w, drained.URL()) {
		t.Fatalf("node/weave still names the drained node")
	}
}
