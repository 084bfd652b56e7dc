package directory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// memberNode is a registered storage node with a listening libp2p host
// (its addresses registered), optionally serving dirproto.ProtoMembership
// and recording the events.
type memberNode struct {
	id, url string
	host    host.Host

	mu     sync.Mutex
	events []dirproto.MembershipEvent
}

func newMemberNode(t *testing.T, ctx context.Context, d *Directory, i int, serve bool) *memberNode {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	edKey, err := p2p.Ed25519Key(key)
	if err != nil {
		t.Fatal(err)
	}
	n := &memberNode{url: fmt.Sprintf("http://node%d.example/", i), host: newTestP2PHost(t, key)}
	var addrs []string
	for _, a := range n.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	body, sig, err := SignRegistration(edKey, Registration{BaseURL: n.url, Operator: fmt.Sprintf("op%d", i),
		Capacity: 100, P2PAddrs: addrs}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	info, err := d.RegisterNode(ctx, body, sig)
	if err != nil {
		t.Fatal(err)
	}
	n.id = info.ID
	if serve {
		n.serveMembership()
	}
	return n
}

func (n *memberNode) serveMembership() {
	p2p.Serve(n.host, dirproto.ProtoMembership, p2p.HandleJSON(func(_ context.Context, _ peer.ID, ev dirproto.MembershipEvent) (struct{}, error) {
		n.mu.Lock()
		n.events = append(n.events, ev)
		n.mu.Unlock()
		return struct{}{}, nil
	}), p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize})
}

// told reports whether the node was told about user.
func (n *memberNode) told(user string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.ContainsFunc(n.events, func(ev dirproto.MembershipEvent) bool { return slices.Contains(ev.Users, user) })
}

func (n *memberNode) forget() {
	n.mu.Lock()
	n.events = nil
	n.mu.Unlock()
}

func (c *dirCaller) report(ctx context.Context, r dirproto.ReportRequest) (dirproto.ReportResponse, error) {
	var resp dirproto.ReportResponse
	err := c.call(ctx, dirproto.ProtoReport, r, &resp)
	return resp, err
}

func (c *dirCaller) assignment(ctx context.Context, user string) (dirproto.AssignmentResponse, error) {
	var resp dirproto.AssignmentResponse
	err := c.call(ctx, dirproto.ProtoAssignment, dirproto.AssignmentRequest{User: user}, &resp)
	return resp, err
}

// TestReportP2P drives one user through the reports a node's replication
// sends (ProtoReport): an unconfirmed write makes the other member filling
// and tells it at once (Notified), a filling member may not acknowledge,
// a backfill for a stale epoch changes nothing and one for the current
// epoch makes the member current, a handoff empties the leaving list; a
// member that cannot be told makes Notified false.
func TestReportP2P(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig(t, t.TempDir())
	cfg.Nodes.AutoApprove = true
	cfg.Nodes.P2PListen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Nodes.MaxTransfers = -1
	d := openDir(t, cfg)
	byID := map[string]*memberNode{}
	for i := range 3 {
		n := newMemberNode(t, ctx, d, i, true)
		byID[n.id] = n
	}
	if err := d.CreateUser(ctx, "alice", "password", ""); err != nil {
		t.Fatal(err)
	}
	r, _ := d.Replicas("alice")
	a, b := byID[r.Members[0].ID], byID[r.Members[1].ID]
	ca, cb := newDirCaller(t, a.host, d.P2PHost()), newDirCaller(t, b.host, d.P2PHost())

	// a acknowledges a write b did not confirm: b becomes filling and is
	// told before the answer.
	resp, err := ca.report(ctx, dirproto.ReportRequest{Unconfirmed: []dirproto.UnconfirmedWrite{{User: "alice"}}})
	if err != nil || !resp.Notified {
		t.Fatalf("unconfirmed report: %+v %v", resp, err)
	}
	if !b.told("alice") {
		t.Fatal("b was not told")
	}
	as, err := ca.assignment(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(as.Nodes) != 2 || as.Nodes[0].ID != a.id || as.Nodes[0].Filling || !as.Nodes[1].Filling || as.Nodes[1].Epoch == 0 {
		t.Fatalf("assignment after the report: %+v", as)
	}
	epoch := as.Nodes[1].Epoch

	// b, filling, may not acknowledge a write.
	if _, err := cb.report(ctx, dirproto.ReportRequest{Unconfirmed: []dirproto.UnconfirmedWrite{{User: "alice"}}}); !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("filling member's unconfirmed report: %v", err)
	}
	// A stale epoch changes nothing; the current one makes b current.
	if _, err := cb.report(ctx, dirproto.ReportRequest{Filled: []dirproto.Filled{{User: "alice", Epoch: epoch - 1, Source: a.id}}}); err != nil {
		t.Fatal(err)
	}
	if as, _ := cb.assignment(ctx, "alice"); !as.Nodes[1].Filling {
		t.Fatalf("stale backfill made b current: %+v", as)
	}
	if _, err := cb.report(ctx, dirproto.ReportRequest{Filled: []dirproto.Filled{{User: "alice", Epoch: epoch, Source: a.id}}}); err != nil {
		t.Fatal(err)
	}
	applied := d.state.AppliedIndex()
	if as, _ := cb.assignment(ctx, "alice"); as.Nodes[1].Filling || as.Index < applied {
		t.Fatalf("backfill did not make b current, or the answer's state index is below %d: %+v", applied, as)
	}

	// b goes down: a serves, a replacement fills, b owes a handoff and
	// still finds alice in its users list.
	if err := d.write(ctx, state.SetNodeState{ID: b.id, State: placement.Down}); err != nil {
		t.Fatal(err)
	}
	as, _ = ca.assignment(ctx, "alice")
	if len(as.Leaving) != 1 || as.Leaving[0].ID != b.id || !as.Leaving[0].Down || as.Nodes[0].ID != a.id || !as.Nodes[1].Filling {
		t.Fatalf("after b died: %+v", as)
	}
	users, _, _, err := cb.assignedUsers(ctx, "", 10)
	if err != nil || len(users) != 1 || users[0].User != "alice" || len(users[0].Leaving) != 1 {
		t.Fatalf("b's users while leaving: %+v %v", users, err)
	}
	// A filling member cannot report the handoff; a current one can.
	c := byID[as.Nodes[1].ID]
	cc := newDirCaller(t, c.host, d.P2PHost())
	if _, err := cc.report(ctx, dirproto.ReportRequest{HandedOff: []dirproto.HandedOff{{User: "alice", Source: b.id}}}); err != nil {
		t.Fatal(err)
	}
	if as, _ := ca.assignment(ctx, "alice"); len(as.Leaving) != 1 {
		t.Fatalf("a filling member's handoff counted: %+v", as)
	}
	if _, err := ca.report(ctx, dirproto.ReportRequest{HandedOff: []dirproto.HandedOff{{User: "alice", Source: b.id}}}); err != nil {
		t.Fatal(err)
	}
	if as, _ := ca.assignment(ctx, "alice"); len(as.Leaving) != 0 {
		t.Fatalf("handoff not applied: %+v", as)
	}
	if users, _, _, _ := cb.assignedUsers(ctx, "", 10); len(users) != 0 {
		t.Fatalf("b still lists %+v", users)
	}

	// c stops answering membership events: a's next unconfirmed write is
	// committed, but Notified is false (a waits the cache lifetime).
	c.host.RemoveStreamHandler(dirproto.ProtoMembership)
	resp, err = ca.report(ctx, dirproto.ReportRequest{Unconfirmed: []dirproto.UnconfirmedWrite{{User: "alice", Confirmed: []string{}}}})
	if err != nil || resp.Notified {
		t.Fatalf("report with a deaf member: %+v %v", resp, err)
	}
	if as, _ := ca.assignment(ctx, "alice"); !as.Nodes[1].Filling || as.Nodes[1].Epoch <= epoch {
		t.Fatalf("after the second unconfirmed write: %+v", as)
	}
	// The peers list gives the voters' addresses too (nodes dial every
	// voter, including ones that joined after they started).
	var peers dirproto.PeersResponse
	if err := ca.call(ctx, dirproto.ProtoPeers, nil, &peers); err != nil {
		t.Fatal(err)
	}
	vid := d.P2PHost().ID().String()
	if !slices.Contains(peers.Voters, vid) || len(peers.Addrs[vid]) == 0 || len(peers.Addrs[a.id]) == 0 {
		t.Fatalf("peers: %+v", peers)
	}

	// A stranger may not report (the voter's gater refuses it at once).
	stranger := newDirCaller(t, newTestP2PHost(t, nil), d.P2PHost())
	if _, err := stranger.report(ctx, dirproto.ReportRequest{Filled: []dirproto.Filled{{User: "alice", Epoch: 1, Source: a.id}}}); err == nil {
		t.Fatal("a stranger's report was taken")
	}
}

// TestLeaderTellsMembersOfChanges: after a set change the leader sends
// ProtoMembership to the nodes concerned, without any report.
func TestLeaderTellsMembersOfChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig(t, t.TempDir())
	cfg.Nodes.AutoApprove = true
	cfg.Nodes.P2PListen = []string{"/ip4/127.0.0.1/tcp/0"}
	d := openDir(t, cfg)
	byID := map[string]*memberNode{}
	for i := range 3 {
		n := newMemberNode(t, ctx, d, i, true)
		byID[n.id] = n
	}
	if err := d.CreateUser(ctx, "bob", "password", ""); err != nil {
		t.Fatal(err)
	}
	r, _ := d.Replicas("bob")
	primary := byID[r.Members[0].ID]
	testkit.WaitFor(t, 5*time.Second, "members told of the new user", func() bool {
		return primary.told("bob") && byID[r.Members[1].ID].told("bob")
	})
	for _, n := range byID {
		n.forget()
	}
	if err := d.write(ctx, state.SetNodeState{ID: primary.id, State: placement.Down}); err != nil {
		t.Fatal(err)
	}
	changed := d.state.AppliedIndex()
	testkit.WaitFor(t, 5*time.Second, "every node concerned told of the failover", func() bool {
		for _, n := range byID {
			if !n.told("bob") {
				return false
			}
		}
		return true
	})
	// Each event names a directory state that includes the change, so a
	// node does not take an older view from a lagging voter afterwards.
	for _, n := range byID {
		n.mu.Lock()
		for _, ev := range n.events {
			if slices.Contains(ev.Users, "bob") && ev.Index < changed {
				t.Errorf("node %s told of the failover (index %d) with state index %d", n.id, changed, ev.Index)
			}
		}
		n.mu.Unlock()
	}
}

// servedUserAPI opens a single voter with P2P and serves its internal,
// admin and Weave user API routes.
func servedUserAPI(t *testing.T, logs io.Writer) (*Directory, string) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.AdminToken = testAdminToken
	cfg.Nodes.AutoApprove = true
	cfg.Nodes.P2PListen = []string{"/ip4/127.0.0.1/tcp/0"}
	if logs != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	d := openDir(t, cfg)
	users, err := api.NewUserHandler(d.UserAPIConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.NewHandler(d.HTTPHandler(), users))
	t.Cleanup(srv.Close)
	return d, srv.URL
}

// TestNodeWeaveWaitsForCurrentPrimary: while a user's only current member
// is down, node/weave and the token endpoint answer 503 with a short
// Retry-After (logged with the crash id), never a node lacking the data;
// once it is back they name it again. The admin view shows the state.
func TestNodeWeaveWaitsForCurrentPrimary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var logs syncBuffer
	d, url := servedUserAPI(t, &logs)
	byID := map[string]*memberNode{}
	for i := range 3 {
		n := newMemberNode(t, ctx, d, i, false)
		byID[n.id] = n
	}
	email := "carol@example.org"
	user := api.AccountName(email)
	if err := d.CreateUser(ctx, user, "carol-password-1", email); err != nil {
		t.Fatal(err)
	}
	r, _ := d.Replicas(user)
	a := byID[r.Members[0].ID]
	get := func(path, auth string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, body, _ := get("/user/1.0/"+user+"/node/weave", ""); code != 200 || body != a.url {
		t.Fatalf("node/weave: %d %q, want %s", code, body, a.url)
	}
	// a acknowledges a write alone, then dies: its copy is the only
	// current one.
	if _, err := d.Report(ctx, a.id, dirproto.ReportRequest{Unconfirmed: []dirproto.UnconfirmedWrite{{User: user}}}); err != nil {
		t.Fatal(err)
	}
	if err := d.write(ctx, state.SetNodeState{ID: a.id, State: placement.Down}); err != nil {
		t.Fatal(err)
	}
	code, body, h := get("/user/1.0/"+user+"/node/weave", "")
	if code != 503 || h.Get("Retry-After") != fmt.Sprint(UserAPIRetryAfter) || !strings.Contains(body, "crash id ") {
		t.Fatalf("node/weave while the primary is down: %d %q Retry-After %q", code, body, h.Get("Retry-After"))
	}
	crash := strings.Trim(strings.SplitN(body, "crash id ", 2)[1], `"`)
	if !strings.Contains(logs.String(), "crash_id="+crash) || !strings.Contains(logs.String(), "is down") {
		t.Fatalf("503 not logged with its crash id and error: %s", logs.String())
	}
	if code, _, _ := get("/user/1.0/"+user+"/token", testkit.BasicAuth(user, "carol-password-1")); code != 503 {
		t.Fatalf("token while the primary is down: %d", code)
	}
	var view UserView
	if code := adminDo(t, "GET", url+"/admin/v1/users/"+user, testAdminToken, &view); code != 200 {
		t.Fatalf("admin user view: %d", code)
	}
	if !view.Waiting || view.Primary.ID != a.id || !view.Primary.Down || len(view.Replicas) != 1 || !view.Replicas[0].Filling || view.Replicas[0].Epoch == 0 {
		t.Fatalf("admin view: %+v", view)
	}
	var nodes NodesView
	if code := adminDo(t, "GET", url+"/admin/v1/nodes", testAdminToken, &nodes); code != 200 {
		t.Fatalf("admin nodes: %d", code)
	}
	if i := slices.IndexFunc(nodes.Nodes, func(n NodeStatus) bool { return n.ID == a.id }); i < 0 || nodes.Nodes[i].Waiting != 1 {
		t.Fatalf("admin nodes while a is down: %+v", nodes)
	}

	// a is back: it serves again.
	if err := d.Heartbeat(ctx, a.id, dirproto.HeartbeatRequest{Unconfirmed: 3, HandoffBacklog: 2}); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get("/user/1.0/"+user+"/node/weave", ""); code != 200 || body != a.url {
		t.Fatalf("node/weave after the primary's return: %d %q", code, body)
	}
	nodes = NodesView{}
	if code := adminDo(t, "GET", url+"/admin/v1/nodes", testAdminToken, &nodes); code != 200 {
		t.Fatalf("admin nodes: %d", code)
	}
	i := slices.IndexFunc(nodes.Nodes, func(n NodeStatus) bool { return n.ID == a.id })
	if i < 0 || nodes.Nodes[i].Heartbeat == nil || nodes.Nodes[i].Heartbeat.Unconfirmed != 3 || nodes.Nodes[i].Heartbeat.HandoffBacklog != 2 {
		t.Fatalf("admin nodes: %+v", nodes)
	}
}

// TestLivenessSuspectsItself: a leader that hears from fewer nodes than
// it would mark down marks none; once it hears from enough, it marks the
// silent one down.
func TestLivenessSuspectsItself(t *testing.T) {
	const downAfter = 300 * time.Millisecond
	d, url := openServed(t, func(c *Config) {
		c.Nodes.AutoApprove = true
		c.Nodes.DownAfter = downAfter
		c.Nodes.LivenessTick = 20 * time.Millisecond
	})
	nodes := registerNodes(t, d, url, []string{"opA", "opB", "opC"}, 100)
	var mu sync.Mutex
	var alive []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	heartbeats(t, d, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(alive) }, stop, &wg)
	allActive := func() {
		t.Helper()
		for _, n := range nodes {
			if s := nodeState(t, d, n.reg.ID); s != "active" {
				t.Fatalf("node %s is %s", n.reg.ID, s)
			}
		}
	}
	// Silence from everyone, then from two of three: nobody goes down.
	for _, k := range []int{0, 1} {
		mu.Lock()
		alive = nil
		for _, n := range nodes[:k] {
			alive = append(alive, n.reg.ID)
		}
		mu.Unlock()
		start := time.Now()
		base := d.beats.refrained.Load()
		testkit.WaitFor(t, 10*time.Second, "the leader refrains for a while", func() bool {
			return d.beats.refrained.Load() >= base+5 && time.Since(start) > 2*downAfter
		})
		allActive()
	}
	// Heartbeats from two: the third is marked down.
	mu.Lock()
	alive = []string{nodes[0].reg.ID, nodes[1].reg.ID}
	mu.Unlock()
	testkit.WaitFor(t, 5*time.Second, "the silent node marked down", func() bool {
		return nodeState(t, d, nodes[2].reg.ID) == "down"
	})
}

// TestHeartbeatThroughFollower: a follower passes a node's heartbeat on to
// the leader; when it cannot reach the leader it answers not_leader with
// the leader's peer ID.
func TestHeartbeatThroughFollower(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.Nodes.AutoApprove = true
		cfg.Nodes.P2PListen = []string{"/ip4/127.0.0.1/tcp/0"}
	})
	l := c.leader()
	var f *voter
	for _, v := range c.voters {
		if v != l {
			f = v
			break
		}
	}
	n := newMemberNode(t, ctx, l.d, 0, false)
	testkit.WaitFor(t, 5*time.Second, "the follower knows the node", func() bool {
		_, ok := f.d.state.Node(n.id)
		return ok
	})
	cf := newDirCaller(t, n.host, f.d.P2PHost())
	if err := cf.call(ctx, dirproto.ProtoHeartbeat, dirproto.HeartbeatRequest{Load: 4, Unconfirmed: 7}, nil); err != nil {
		t.Fatalf("heartbeat via a follower: %v", err)
	}
	if hb := l.d.beats.lastBeat(n.id); hb.at.IsZero() || hb.req.Unconfirmed != 7 || hb.req.Load != 4 {
		t.Fatalf("leader's record: %+v", hb)
	}
	// The leader's HTTP endpoint goes away (its raft stays up).
	l.srv.Close()
	err := cf.call(ctx, dirproto.ProtoHeartbeat, dirproto.HeartbeatRequest{Load: 4}, nil)
	var re *p2p.RemoteError
	if !p2p.IsCode(err, dirproto.CodeNotLeader) || !errors.As(err, &re) || re.Message != l.d.P2PHost().ID().String() {
		t.Fatalf("heartbeat with the leader unreachable: %v, want not_leader naming %s", err, l.d.P2PHost().ID())
	}
	// The follower's admin view shows what it passed on.
	if hb := f.d.beats.lastBeat(n.id); hb.req.Load != 4 {
		t.Fatalf("follower's record: %+v", hb)
	}
}

// TestNoNodeDownWhenVotersDie: nodes heartbeat through the voters in
// order (the first they know first); killing the first voter, then the
// leader, marks no live node down: a new leader gives every node a full
// down-after.
func TestNoNodeDownWhenVotersDie(t *testing.T) {
	const downAfter = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.Nodes.AutoApprove = true
		cfg.Nodes.DownAfter = downAfter
		cfg.Nodes.LivenessTick = 50 * time.Millisecond
	})
	l := c.leader()
	var ids []string
	for i := range 3 {
		n := newTestNode(t, fmt.Sprintf("op%d", i), 100)
		if code := n.register(t, l.url()); code != 200 {
			t.Fatalf("register: %d", code)
		}
		ids = append(ids, n.reg.ID)
	}
	// The nodes' heartbeat loop: every 100 ms, through the first voter
	// that takes it.
	var mu sync.Mutex
	dirs := make([]*Directory, len(c.voters))
	for i, v := range c.voters {
		dirs[i] = v.d
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, id := range ids {
				mu.Lock()
				ds := slices.Clone(dirs)
				mu.Unlock()
				for _, d := range ds {
					if d != nil && d.Heartbeat(ctx, id, dirproto.HeartbeatRequest{}) == nil {
						break
					}
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer wg.Wait()
	defer close(stop)
	kill := func(v *voter) {
		mu.Lock()
		dirs[slices.Index(c.voters, v)] = nil
		mu.Unlock()
		c.stop(v)
	}
	noneDown := func(v *voter) {
		t.Helper()
		for _, n := range v.d.Nodes() {
			if n.State != "active" {
				t.Fatalf("node %s is %s on %s", n.ID, n.State, v.id)
			}
		}
	}
	watch := func(what string) {
		t.Helper()
		nl := c.leader()
		since := time.Now()
		testkit.WaitFor(t, 10*time.Second, what, func() bool {
			noneDown(nl)
			return time.Since(since) > 2*downAfter
		})
		noneDown(nl)
	}
	// The first voter dies (the one every node tries first).
	first := c.voters[0]
	kill(first)
	watch("a leader watched twice down-after with the first voter dead")
	c.start(first, false, "")
	mu.Lock()
	dirs[0] = first.d
	mu.Unlock()
	// Then the leader dies.
	kill(c.leader())
	watch("a new leader watched twice down-after")
}
