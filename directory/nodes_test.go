package directory

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory/placement"
)

// openServed opens a single voter with an admin token and serves its
// HTTPHandler; it returns the directory and the server's URL.
func openServed(t *testing.T, tune func(*Config)) (*Directory, string) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.AdminToken = testAdminToken
	if tune != nil {
		tune(&cfg)
	}
	d := openDir(t, cfg)
	srv := httptest.NewServer(d.HTTPHandler())
	t.Cleanup(srv.Close)
	return d, srv.URL
}

func nodeState(t *testing.T, d *Directory, id string) string {
	t.Helper()
	for _, n := range d.Nodes() {
		if n.ID == id {
			return n.State
		}
	}
	t.Fatalf("node %s not found", id)
	return ""
}

func TestNodeAdmission(t *testing.T) {
	d, url := openServed(t, nil)
	n := newTestNode(t, "opA", 10)
	now := time.Now()
	good, sig, err := SignRegistration(n.key, n.reg, now)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(nil)
	_, forgedSig, _ := SignRegistration(other, n.reg, now) // other key, same claimed id
	stale := n.reg
	stale.Timestamp = now.Add(-6 * time.Minute).Unix()
	staleBody, staleSig, _ := SignRegistration(n.key, stale, now)
	wrongID := n.reg
	wrongID.ID = PeerID(other.Public().(ed25519.PublicKey))
	wrongIDBody, wrongIDSig, _ := SignRegistration(n.key, wrongID, now)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-3] ^= 1 // flips a timestamp digit
	hexID := n.reg
	hexID.ID = fmt.Sprintf("%x", n.key.Public().(ed25519.PublicKey))

	cases := []struct {
		name string
		body []byte
		sig  string
		want int
	}{
		{"unsigned", good, "", 401},
		{"garbage signature", good, base64.StdEncoding.EncodeToString([]byte("nope")), 401},
		{"signed by another key", good, forgedSig, 401},
		{"tampered body", tampered, sig, 401},
		{"id of another key", wrongIDBody, wrongIDSig, 401},
		{"stale", staleBody, staleSig, 400},
		{"not json", []byte("{"), sig, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := postRegistration(t, url, c.body, c.sig); got != c.want {
				t.Fatalf("status %d, want %d", got, c.want)
			}
		})
	}
	if len(d.Nodes()) != 0 {
		t.Fatalf("refused registrations recorded nodes: %+v", d.Nodes())
	}
	if got := postRegistration(t, url, good, sig); got != 200 {
		t.Fatalf("signed registration: %d", got)
	}
	if s := nodeState(t, d, n.reg.ID); s != "pending" {
		t.Fatalf("state %q, want pending", s)
	}
	// A pending node gets no users.
	if err := d.CreateUser(context.Background(), "u1", "password", ""); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := d.Assignment("u1"); p != "" {
		t.Fatalf("user assigned to pending node %s", p)
	}
	// Approval needs the admin token.
	if code := adminDo(t, "POST", url+"/admin/v1/nodes/"+n.reg.ID+"/approve", "", nil); code != 401 {
		t.Fatalf("approve without token: %d", code)
	}
	if code := adminDo(t, "POST", url+"/admin/v1/nodes/"+n.reg.ID+"/approve", testAdminToken, nil); code != 200 {
		t.Fatalf("approve: %d", code)
	}
	if code := adminDo(t, "POST", url+"/admin/v1/nodes/nosuch/approve", testAdminToken, nil); code != 404 {
		t.Fatalf("approve unknown: %d", code)
	}
	if s := nodeState(t, d, n.reg.ID); s != "active" {
		t.Fatalf("state %q, want active", s)
	}
	// The hex form of the id is accepted too.
	m := &testNode{key: n.key, reg: hexID}
	if code := m.register(t, url); code != 200 {
		t.Fatalf("hex id registration: %d", code)
	}
}

// cluster of storage nodes registered (auto-approved) on d.
func registerNodes(t *testing.T, d *Directory, url string, operators []string, capacity int) []*testNode {
	t.Helper()
	var out []*testNode
	for _, op := range operators {
		n := newTestNode(t, op, capacity)
		if code := n.register(t, url); code != 200 {
			t.Fatalf("register: %d", code)
		}
		out = append(out, n)
	}
	return out
}

// checkSets asserts every user has R distinct active nodes on distinct
// operators and returns user -> set (IDs, primary first).
func checkSets(t *testing.T, d *Directory, users []string, r int) map[string][]string {
	t.Helper()
	info := map[string]NodeInfo{}
	for _, n := range d.Nodes() {
		info[n.ID] = n
	}
	out := map[string][]string{}
	for _, u := range users {
		p, reps, err := d.Assignment(u)
		if err != nil {
			t.Fatal(err)
		}
		set := []string{p}
		ops := map[string]bool{info[p].Operator: true}
		for _, n := range reps {
			set = append(set, n.ID)
			ops[info[n.ID].Operator] = true
		}
		if len(set) != r || len(ops) != r {
			t.Fatalf("user %s: set %v on %d operators, want %d", u, set, len(ops), r)
		}
		for _, id := range set {
			if info[id].State != "active" {
				t.Fatalf("user %s: member %s is %s", u, id, info[id].State)
			}
		}
		url, _ := d.StorageNode(context.Background(), u)
		if url != info[p].URL {
			t.Fatalf("StorageNode(%s) = %s, want primary %s", u, url, info[p].URL)
		}
		out[u] = set
	}
	return out
}

func TestAllocationThroughCreateUser(t *testing.T) {
	d, url := openServed(t, func(c *Config) { c.Nodes.AutoApprove = true })
	ctx := context.Background()
	// Before any node exists, users get Accounts.NodeURL (the serve case).
	if err := d.CreateUser(ctx, "early", "password", ""); err != nil {
		t.Fatal(err)
	}
	if u, _ := d.StorageNode(ctx, "early"); u != "http://node1.example:8080/" {
		t.Fatalf("early user node = %q", u)
	}
	registerNodes(t, d, url, []string{"opA", "opA", "opB", "opC"}, 50)
	var users []string
	for i := range 30 {
		u := fmt.Sprintf("user%02d", i)
		if err := d.CreateUser(ctx, u, "password", ""); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	checkSets(t, d, users, 2)
	total := 0
	for _, n := range d.Nodes() {
		total += n.Load
	}
	if total != 60 {
		t.Fatalf("total load %d, want 60", total)
	}
	// Deleting a user releases its load.
	if err := d.DeleteUser(ctx, users[0]); err != nil {
		t.Fatal(err)
	}
	total = 0
	for _, n := range d.Nodes() {
		total += n.Load
	}
	if total != 58 {
		t.Fatalf("total load after delete %d, want 58", total)
	}
}

// heartbeats sends heartbeats for the nodes listed in alive every 20 ms
// until stop is closed.
func heartbeats(t *testing.T, d *Directory, alive func() []string, stop chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, id := range alive() {
				_ = d.Heartbeat(context.Background(), id, dirproto.HeartbeatRequest{})
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
}

func TestFailoverOnSilence(t *testing.T) {
	const downAfter = 400 * time.Millisecond
	const tick = 50 * time.Millisecond
	d, url := openServed(t, func(c *Config) {
		c.Nodes.AutoApprove = true
		c.Nodes.DownAfter = downAfter
		c.Nodes.LivenessTick = tick
	})
	ctx := context.Background()
	nodes := registerNodes(t, d, url, []string{"opA", "opB", "opC"}, 100)
	var mu sync.Mutex
	alive := []string{nodes[0].reg.ID, nodes[1].reg.ID, nodes[2].reg.ID}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	heartbeats(t, d, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(alive) }, stop, &wg)
	var users []string
	for i := range 12 {
		u := fmt.Sprintf("user%02d", i)
		if err := d.CreateUser(ctx, u, "password", ""); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	before := checkSets(t, d, users, 2)
	victim := nodes[0].reg.ID
	var hit []string
	for u, set := range before {
		if slices.Contains(set, victim) {
			hit = append(hit, u)
		}
	}
	if len(hit) == 0 {
		t.Fatal("victim holds no user")
	}
	mu.Lock()
	alive = alive[1:]
	mu.Unlock()
	silent := time.Now()
	testkit.WaitFor(t, downAfter+tick+2*time.Second, "victim marked down and its users moved", func() bool {
		if nodeState(t, d, victim) != "down" {
			return false
		}
		for _, u := range hit {
			p, reps, _ := d.Assignment(u)
			if p == victim || len(reps) != 1 || reps[0].ID == victim {
				return false
			}
		}
		return true
	})
	if el := time.Since(silent); el > downAfter+tick+time.Second {
		t.Errorf("failover took %v", el)
	}
	after := checkSets(t, d, users, 2)
	for _, u := range hit {
		old := before[u]
		if old[0] == victim && after[u][0] != old[1] {
			t.Errorf("user %s: primary %s, want the former replica %s", u, after[u][0], old[1])
		}
	}
	// The node heartbeats again: it comes back up.
	mu.Lock()
	alive = append(alive, victim)
	mu.Unlock()
	testkit.WaitFor(t, 2*time.Second, "victim active again", func() bool { return nodeState(t, d, victim) == "active" })
	if err := d.Heartbeat(ctx, "nosuch", dirproto.HeartbeatRequest{}); err == nil {
		t.Fatal("heartbeat of unknown node accepted")
	}
}

// TestDrainMovesEveryUser drains a node: every set of it gains a filling
// replacement at once while the node keeps serving, and the leader's
// placement loop drops the node from each set only once the replacement
// has reported its backfill.
func TestDrainMovesEveryUser(t *testing.T) {
	d, url := openServed(t, func(c *Config) {
		c.Nodes.AutoApprove = true
		c.Nodes.PlacementTick = 20 * time.Millisecond
	})
	ctx := context.Background()
	nodes := registerNodes(t, d, url, []string{"opA", "opB", "opC", "opD"}, 100)
	var users []string
	for i := range 16 {
		u := fmt.Sprintf("user%02d", i)
		if err := d.CreateUser(ctx, u, "password", ""); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	victim := nodes[1].reg.ID
	var held []string
	for _, u := range users {
		if r, _ := d.Replicas(u); slices.ContainsFunc(r.Members, func(m MemberInfo) bool { return m.ID == victim }) {
			held = append(held, u)
		}
	}
	if code := adminDo(t, "POST", url+"/admin/v1/nodes/"+victim+"/drain", testAdminToken, nil); code != 200 {
		t.Fatalf("drain: %d", code)
	}
	if s := nodeState(t, d, victim); s != "draining" {
		t.Fatalf("state %s", s)
	}
	// Each set of the victim keeps it and gains a filling member; the
	// node keeps serving until that member reports its backfill.
	for _, u := range held {
		r, _ := d.Replicas(u)
		last := r.Members[len(r.Members)-1]
		if len(r.Members) != 3 || !last.Filling || !slices.ContainsFunc(r.Members, func(m MemberInfo) bool { return m.ID == victim }) {
			t.Fatalf("user %s while draining: %+v", u, r.Members)
		}
		if _, err := d.StorageNode(ctx, u); err != nil {
			t.Fatalf("user %s unserved while draining: %v", u, err)
		}
		// A stale epoch changes nothing; the right one lets the victim go.
		for _, epoch := range []uint64{last.Epoch + 1, last.Epoch} {
			rep := dirproto.ReportRequest{Filled: []dirproto.Filled{{User: u, Epoch: epoch, Source: r.Members[0].ID}}}
			if _, err := d.Report(ctx, last.ID, rep); err != nil {
				t.Fatal(err)
			}
		}
	}
	testkit.WaitFor(t, 5*time.Second, "every user off the drained node", func() bool {
		for _, n := range d.Nodes() {
			if n.ID == victim {
				return n.Load == 0
			}
		}
		return false
	})
	for _, u := range users {
		r, _ := d.Replicas(u)
		for _, m := range r.Members {
			if m.ID == victim || m.Filling {
				t.Fatalf("user %s after drain: %+v", u, r.Members)
			}
		}
		if len(r.Members) != 2 {
			t.Fatalf("user %s after drain: %d members", u, len(r.Members))
		}
		if slices.Contains(held, u) != slices.ContainsFunc(r.Leaving, func(n NodeInfo) bool { return n.ID == victim }) {
			t.Fatalf("user %s: leaving %+v", u, r.Leaving)
		}
	}
	// Retire waits for the handoffs the drained node still owes.
	var p RetireProgress
	if code := adminDo(t, "POST", url+"/admin/v1/nodes/"+victim+"/retire", testAdminToken, &p); code != 200 {
		t.Fatalf("retire: %d", code)
	}
	if p.Retired || p.Load != 0 || p.Leaving != len(held) || nodeState(t, d, victim) != "draining" {
		t.Fatalf("retire with handoffs owed: %+v, state %s", p, nodeState(t, d, victim))
	}
	for _, u := range held {
		r, _ := d.Replicas(u)
		rep := dirproto.ReportRequest{HandedOff: []dirproto.HandedOff{{User: u, Source: victim}}}
		if _, err := d.Report(ctx, r.Members[0].ID, rep); err != nil {
			t.Fatal(err)
		}
	}
	if code := adminDo(t, "POST", url+"/admin/v1/nodes/"+victim+"/retire", testAdminToken, &p); code != 200 || !p.Retired {
		t.Fatalf("retire after the handoffs: %d %+v", code, p)
	}
	if s := nodeState(t, d, victim); s != placement.Retired.String() {
		t.Fatalf("state %s", s)
	}
}

func TestConfigValidateCluster(t *testing.T) {
	base := func() Config {
		return Config{Dir: t.TempDir(), AdminToken: "t", Cluster: ClusterConfig{
			Bootstrap: true, RaftAddr: "127.0.0.1:0", HTTPURL: "http://127.0.0.1:1",
			TLSCA: []byte("x"), TLSCert: []byte("x"), TLSKey: []byte("x")}}
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("valid cluster config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no raft addr":       func(c *Config) { c.Cluster.RaftAddr = "" },
		"no http url":        func(c *Config) { c.Cluster.HTTPURL = "" },
		"no tls":             func(c *Config) { c.Cluster.TLSKey = nil },
		"no admin token":     func(c *Config) { c.AdminToken = "" },
		"bootstrap and join": func(c *Config) { c.Cluster.Join = "http://x" },
	} {
		c := base()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
