package dirclient

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/p2p/p2ptest"
	"github.com/hce-sync/hce/api/testkit"
)

// TestFollowsLeaderHint: a voter that is not the leader names it; the
// client asks the named voter next, before any other, and asks it first
// from then on.
func TestFollowsLeaderHint(t *testing.T) {
	v1, v2, v3 := newFakeVoter(t, false), newFakeVoter(t, false), newFakeVoter(t, true)
	v1.setHint(v3.h.ID())
	node := p2ptest.NewHost(t, p2p.Config{})
	c, err := New(Config{Host: node, Directory: []peer.AddrInfo{v1.info(), v2.info(), v3.info()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := v3.beat(node.ID()); !ok {
		t.Fatal("the leader got no heartbeat")
	}
	if n := v2.calls(dirproto.ProtoHeartbeat); n != 0 {
		t.Fatalf("a voter after the hint was asked %d times", n)
	}
	if err := c.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if n := v1.calls(dirproto.ProtoHeartbeat); n != 1 {
		t.Fatalf("the follower was asked %d times, want once", n)
	}
	// Reports go to the leader too.
	if _, err := c.Report(ctx, dirproto.ReportRequest{HandedOff: []dirproto.HandedOff{{User: "u", Source: "n"}}}); err != nil {
		t.Fatal(err)
	}
	if v3.calls(dirproto.ProtoReport) != 1 || v1.calls(dirproto.ProtoReport)+v2.calls(dirproto.ProtoReport) != 0 {
		t.Fatal("the report did not go to the leader first")
	}
}

// TestLearnsVoterThatJoinedLater: a node started with one voter learns a
// voter that joined later from the peer list (its address into the
// peerstore, its id into the gater's allowlist) and reaches it when the
// first voter is gone.
func TestLearnsVoterThatJoinedLater(t *testing.T) {
	v1, v2 := newFakeVoter(t, true), newFakeVoter(t, false)
	v1.listVoters(v1, v2)
	v2.listVoters(v1, v2)
	allow := p2p.NewStaticAllowlist(v1.h.ID())
	node := p2ptest.NewHost(t, p2p.Config{Gater: p2p.NewGater(allow, nil)})
	c, err := New(Config{Host: node, Directory: []peer.AddrInfo{v1.info()}, Allowlist: allow, CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if c.IsVoter(v2.h.ID()) {
		t.Fatal("voter known before the peer list")
	}
	if err := c.RefreshPeers(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.IsVoter(v2.h.ID()) || !allow.Allowed(v2.h.ID()) || len(node.Peerstore().Addrs(v2.h.ID())) == 0 {
		t.Fatalf("voter not learnt: voters %v, allowed %v", c.Voters(), allow.Allowed(v2.h.ID()))
	}
	// v1 goes away, v2 leads: the node follows.
	v1.h.Close()
	v2.leader.Store(true)
	if err := c.CheckPassword(ctx, "alice", "s3cret"); err != nil {
		t.Fatalf("password check through the learnt voter: %v", err)
	}
	if err := c.Heartbeat(ctx); err != nil {
		t.Fatalf("heartbeat to the learnt voter: %v", err)
	}
	if _, ok := v2.beat(node.ID()); !ok {
		t.Fatal("no heartbeat at the learnt voter")
	}
	// The configured voter stays known even when the list omits it.
	v2.listVoters(v2)
	if err := c.RefreshPeers(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.IsVoter(v1.h.ID()) {
		t.Fatal("a configured voter was forgotten")
	}
}

// TestHeartbeatsFindTheNewLeader: while no voter takes heartbeats (an
// election), heartbeats are retried within a second, not at the
// heartbeat interval, so the new leader hears from the node soon after it
// is elected. The failure is logged at WARN with its count, the recovery
// at INFO.
func TestHeartbeatsFindTheNewLeader(t *testing.T) {
	v1, v2 := newFakeVoter(t, false), newFakeVoter(t, false)
	node := p2ptest.NewHost(t, p2p.Config{})
	logs := &logBuffer{}
	var unconfirmed atomic.Uint64
	unconfirmed.Store(3)
	c, err := New(Config{
		Host: node, Directory: []peer.AddrInfo{v1.info(), v2.info()},
		HeartbeatInterval: 10 * time.Second, KeyRefresh: time.Hour,
		Unconfirmed:    unconfirmed.Load,
		HandoffBacklog: func() int { return 4 },
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testkit.WaitFor(t, 10*time.Second, "failed heartbeats", func() bool { return v1.calls(dirproto.ProtoHeartbeat) >= 2 })
	elected := time.Now()
	v2.leader.Store(true)
	testkit.WaitFor(t, 10*time.Second, "heartbeat at the new leader", func() bool { _, ok := v2.beat(node.ID()); return ok })
	if d := time.Since(elected); d > 2*time.Second {
		t.Fatalf("the new leader heard from the node %v after its election", d)
	}
	r, _ := v2.beat(node.ID())
	if r.Unconfirmed != 3 || r.HandoffBacklog != 4 {
		t.Fatalf("heartbeat %+v", r)
	}
	testkit.WaitFor(t, 5*time.Second, "recovery logged", func() bool { return strings.Contains(logs.String(), "heartbeat succeeded again") })
	out := logs.String()
	if n := strings.Count(out, "level=WARN msg=\"dirclient: heartbeat failed\""); n != 1 {
		t.Fatalf("%d WARN lines for failures within the interval, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "failures=") || !strings.Contains(out, "not_leader") {
		t.Fatalf("WARN without count or last error:\n%s", out)
	}
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFailLog: a failing call logs one WARN per interval with the count
// and the last error, and one INFO when it succeeds again.
func TestFailLog(t *testing.T) {
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	f := failLog{what: "heartbeat"}
	f.ok(log) // nothing failed: nothing logged
	for range 5 {
		f.fail(log, errBoom, time.Hour)
	}
	f.lastWarn = time.Now().Add(-2 * time.Hour)
	f.fail(log, errBoom, time.Hour)
	f.ok(log)
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 2 {
		t.Fatalf("%d WARN lines, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "failures=6") || !strings.Contains(out, "boom") {
		t.Fatalf("second WARN lacks the count or the error:\n%s", out)
	}
	if n := strings.Count(out, "level=INFO"); n != 1 || !strings.Contains(out, "succeeded again") {
		t.Fatalf("recovery not logged once:\n%s", out)
	}
}

var errBoom = p2p.Errorf(p2p.CodeUnavailable, "boom")

// TestServesCurrentMembersOnly: a node serves a user only as a current
// member; filling, leaving or absent it does not; with the directory
// gone it answers from the cache until the TTL, then fails (503).
func TestServesCurrentMembersOnly(t *testing.T) {
	v := newFakeVoter(t, true)
	self := p2ptest.NewHost(t, p2p.Config{})
	other := p2ptest.NewHost(t, p2p.Config{})
	me := dirproto.AssignedNode{ID: self.ID().String(), PeerID: self.ID().String()}
	them := dirproto.AssignedNode{ID: other.ID().String(), PeerID: other.ID().String()}
	filling := me
	filling.Filling, filling.Epoch = true, 2
	sets := map[string]dirproto.AssignmentResponse{
		"current": {Exists: true, Nodes: []dirproto.AssignedNode{them, me}},
		"filling": {Exists: true, Nodes: []dirproto.AssignedNode{them, filling}},
		"leaving": {Exists: true, Nodes: []dirproto.AssignedNode{them}, Leaving: []dirproto.AssignedNode{me}},
		"absent":  {Exists: true, Nodes: []dirproto.AssignedNode{them}},
	}
	p2p.Serve(v.h, dirproto.ProtoAssignment, p2p.HandleJSON(func(_ context.Context, _ peer.ID, r dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
		return sets[r.User], nil
	}), p2p.RPCConfig{})
	ttl := 300 * time.Millisecond
	c, err := New(Config{Host: self, Directory: []peer.AddrInfo{v.info()}, MembershipTTL: ttl, CallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for user, want := range map[string]bool{"current": true, "filling": false, "leaving": false, "absent": false} {
		if got, err := c.Serves(ctx, user); err != nil || got != want {
			t.Errorf("Serves(%s) = %v %v, want %v", user, got, err, want)
		}
	}
	nodes, leaving, err := c.Assignment(ctx, "leaving")
	if err != nil || len(nodes) != 1 || len(leaving) != 1 || leaving[0] != me {
		t.Fatalf("Assignment: %+v %+v %v", nodes, leaving, err)
	}
	// The directory goes away: cached answers hold until the TTL.
	start := time.Now()
	if _, err := c.Serves(ctx, "current"); err != nil {
		t.Fatal(err)
	}
	v.h.Close()
	if got, err := c.Serves(ctx, "current"); time.Since(start) < ttl && (err != nil || !got) {
		t.Fatalf("cached answer within the TTL: %v %v", got, err)
	}
	testkit.WaitFor(t, 10*time.Second, "unavailable after the TTL", func() bool {
		_, err := c.Serves(ctx, "current")
		return err != nil
	})
}

// TestMembershipEvents: a voter's membership event drops the cached sets
// of the users it names before it is answered (an answer in flight then
// is not cached), prefers that voter for the next lookups, and calls the
// hook; other peers are refused.
func TestMembershipEvents(t *testing.T) {
	v := newFakeVoter(t, true)
	self := p2ptest.NewHost(t, p2p.Config{})
	stranger := p2ptest.NewHost(t, p2p.Config{})
	var calls atomic.Int32
	release := make(chan struct{}, 1)
	var block atomic.Bool
	p2p.Serve(v.h, dirproto.ProtoAssignment, p2p.HandleJSON(func(_ context.Context, _ peer.ID, r dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
		calls.Add(1)
		if block.Load() {
			<-release
		}
		return dirproto.AssignmentResponse{Exists: true, Nodes: []dirproto.AssignedNode{{ID: self.ID().String(), PeerID: self.ID().String()}}}, nil
	}), p2p.RPCConfig{})
	c, err := New(Config{Host: self, Directory: []peer.AddrInfo{v.info()}, MembershipTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var hooked atomic.Pointer[[]string]
	c.ServeMembershipEvents(func(users []string) { hooked.Store(&users) })
	p2ptest.Know(v.h, self)
	p2ptest.Know(stranger, self)
	ctx := context.Background()
	if _, err := c.Serves(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Serves(ctx, "u"); err != nil || calls.Load() != 1 {
		t.Fatalf("cached lookup: %v, %d calls", err, calls.Load())
	}
	if err := p2p.CallJSON(ctx, p2p.RPCConfig{}, stranger, self.ID(), dirproto.ProtoMembership, dirproto.MembershipEvent{Users: []string{"u"}}, nil); !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("event from a stranger: %v", err)
	}
	if err := p2p.CallJSON(ctx, p2p.RPCConfig{}, v.h, self.ID(), dirproto.ProtoMembership, dirproto.MembershipEvent{Users: []string{"u"}}, nil); err != nil {
		t.Fatalf("event from the voter: %v", err)
	}
	if u := hooked.Load(); u == nil || len(*u) != 1 || (*u)[0] != "u" {
		t.Fatalf("hook got %v", u)
	}
	if _, err := c.Serves(ctx, "u"); err != nil || calls.Load() != 2 {
		t.Fatalf("lookup after the event: %v, %d calls", err, calls.Load())
	}
	// An answer in flight when an event arrives is not cached.
	block.Store(true)
	done := make(chan error, 1)
	go func() { _, err := c.Serves(ctx, "v"); done <- err }()
	testkit.WaitFor(t, 10*time.Second, "lookup in flight", func() bool { return calls.Load() == 3 })
	c.InvalidateUsers("v")
	block.Store(false)
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Serves(ctx, "v"); err != nil || calls.Load() != 4 {
		t.Fatalf("an answer in flight during an invalidation was cached: %v, %d calls", err, calls.Load())
	}
}

// TestReportDropsCachedSets: a committed report drops the cached sets of
// the users it names, so the caller reads the directory's.
func TestReportDropsCachedSets(t *testing.T) {
	v := newFakeVoter(t, true)
	self := p2ptest.NewHost(t, p2p.Config{})
	var calls atomic.Int32
	p2p.Serve(v.h, dirproto.ProtoAssignment, p2p.HandleJSON(func(context.Context, peer.ID, dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
		calls.Add(1)
		return dirproto.AssignmentResponse{Exists: true, Nodes: []dirproto.AssignedNode{}}, nil
	}), p2p.RPCConfig{})
	c, err := New(Config{Host: self, Directory: []peer.AddrInfo{v.info()}, MembershipTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, u := range []string{"a", "b"} {
		if _, err := c.Serves(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Report(ctx, dirproto.ReportRequest{Unconfirmed: []dirproto.UnconfirmedWrite{{User: "a"}}})
	if err != nil || !resp.Notified {
		t.Fatalf("Report: %+v %v", resp, err)
	}
	_, _ = c.Serves(ctx, "a")
	_, _ = c.Serves(ctx, "b")
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d lookups, want 3 (a again, b cached)", n)
	}
	if _, err := c.Report(ctx, dirproto.ReportRequest{Filled: []dirproto.Filled{{User: ""}}}); err == nil {
		t.Fatal("an invalid report was sent")
	}
}
