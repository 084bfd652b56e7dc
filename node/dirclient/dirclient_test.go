package dirclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/p2p/p2ptest"
	"github.com/hce-sync/hce/api/testkit"
)

// fakeVoter is a directory voter stand-in serving the directory protocols
// with p2p.Serve on a real host.
type fakeVoter struct {
	h      host.Host
	leader atomic.Bool

	mu      sync.Mutex
	keys    map[string][]byte
	beats   map[peer.ID]dirproto.HeartbeatRequest // last heartbeat per node
	tries   map[string]int                        // calls per protocol
	hint    peer.ID                               // named by not_leader answers
	voters  []*fakeVoter                          // listed by ProtoPeers (nil: itself)
	reports []dirproto.ReportRequest
}

func newFakeVoter(t *testing.T, leader bool) *fakeVoter {
	v := &fakeVoter{h: p2ptest.NewHost(t, p2p.Config{}), keys: map[string][]byte{}, beats: map[peer.ID]dirproto.HeartbeatRequest{}, tries: map[string]int{}}
	v.leader.Store(leader)
	p2p.Serve(v.h, dirproto.ProtoCheckPassword, p2p.HandleJSON(func(_ context.Context, _ peer.ID, r dirproto.CheckPasswordRequest) (dirproto.CheckPasswordResponse, error) {
		v.count(dirproto.ProtoCheckPassword)
		return dirproto.CheckPasswordResponse{OK: r.User == "alice" && r.Password == "s3cret"}, nil
	}), p2p.RPCConfig{})
	p2p.Serve(v.h, dirproto.ProtoKeys, p2p.HandleJSON(func(context.Context, peer.ID, struct{}) (dirproto.KeysResponse, error) {
		v.count(dirproto.ProtoKeys)
		v.mu.Lock()
		defer v.mu.Unlock()
		return dirproto.KeysResponse{Keys: v.keys}, nil
	}), p2p.RPCConfig{})
	p2p.Serve(v.h, dirproto.ProtoHeartbeat, p2p.HandleJSON(func(_ context.Context, from peer.ID, r dirproto.HeartbeatRequest) (struct{}, error) {
		if err := v.notLeader(dirproto.ProtoHeartbeat); err != nil {
			return struct{}{}, err
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		v.beats[from] = r
		return struct{}{}, nil
	}), p2p.RPCConfig{})
	p2p.Serve(v.h, dirproto.ProtoPeers, p2p.HandleJSON(func(context.Context, peer.ID, struct{}) (dirproto.PeersResponse, error) {
		v.mu.Lock()
		defer v.mu.Unlock()
		resp := dirproto.PeersResponse{Nodes: []string{}, Addrs: map[string][]string{}}
		vs := v.voters
		if vs == nil {
			vs = []*fakeVoter{v}
		}
		for _, o := range vs {
			id := o.h.ID().String()
			resp.Voters = append(resp.Voters, id)
			for _, a := range o.h.Addrs() {
				resp.Addrs[id] = append(resp.Addrs[id], a.String())
			}
		}
		return resp, nil
	}), p2p.RPCConfig{})
	p2p.Serve(v.h, dirproto.ProtoReport, p2p.HandleJSON(func(_ context.Context, _ peer.ID, r dirproto.ReportRequest) (dirproto.ReportResponse, error) {
		if err := v.notLeader(dirproto.ProtoReport); err != nil {
			return dirproto.ReportResponse{}, err
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		v.reports = append(v.reports, r)
		return dirproto.ReportResponse{Notified: true}, nil
	}), p2p.RPCConfig{})
	return v
}

// notLeader counts a call of proto and, when v is not the leader,
// returns the not_leader answer (naming v.hint when set).
func (v *fakeVoter) notLeader(proto protocol.ID) error {
	v.count(proto)
	if v.leader.Load() {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.hint != "" {
		return p2p.Errorf(dirproto.CodeNotLeader, "%s", v.hint)
	}
	return p2p.Errorf(dirproto.CodeNotLeader, "no leader known")
}

func (v *fakeVoter) count(proto protocol.ID) {
	v.mu.Lock()
	v.tries[string(proto)]++
	v.mu.Unlock()
}

func (v *fakeVoter) calls(proto protocol.ID) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.tries[string(proto)]
}

func (v *fakeVoter) setHint(id peer.ID) {
	v.mu.Lock()
	v.hint = id
	v.mu.Unlock()
}

func (v *fakeVoter) listVoters(vs ...*fakeVoter) {
	v.mu.Lock()
	v.voters = vs
	v.mu.Unlock()
}

func (v *fakeVoter) info() peer.AddrInfo { return peer.AddrInfo{ID: v.h.ID(), Addrs: v.h.Addrs()} }

func (v *fakeVoter) setKeys(m map[string][]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys = m
}

func (v *fakeVoter) beat(id peer.ID) (dirproto.HeartbeatRequest, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r, ok := v.beats[id]
	return r, ok
}

func TestConfigValidate(t *testing.T) {
	h := p2ptest.NewHost(t, p2p.Config{})
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{Host: h, Directory: []peer.AddrInfo{{ID: h.ID()}}}, true},
		{"no host", Config{Directory: []peer.AddrInfo{{ID: h.ID()}}}, false},
		{"no voters", Config{Host: h}, false},
		{"empty id", Config{Host: h, Directory: []peer.AddrInfo{{}}}, false},
		{"negative interval", Config{Host: h, Directory: []peer.AddrInfo{{ID: h.ID()}}, HeartbeatInterval: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
}

func TestDirectoryClientCheckPassword(t *testing.T) {
	v1, v2 := newFakeVoter(t, false), newFakeVoter(t, true)
	c, err := New(Config{
		Host: p2ptest.NewHost(t, p2p.Config{}), Directory: []peer.AddrInfo{v1.info(), v2.info()}, CallTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, user, pw string
		want           error
	}{
		{"right", "alice", "s3cret", nil},
		{"wrong", "alice", "nope", api.ErrUnauthorized},
		{"unknown user", "bob", "s3cret", api.ErrUnauthorized},
		{"empty user", "", "x", api.ErrUnauthorized},
		{"overlong password", "alice", string(make([]byte, dirproto.MaxPasswordLen+1)), api.ErrUnauthorized},
	} {
		if err := c.CheckPassword(ctx, tc.user, tc.pw); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	// The fake voters speak version 1.0 only: the client fell back.
	if v1.calls(dirproto.ProtoCheckPassword)+v2.calls(dirproto.ProtoCheckPassword) == 0 {
		t.Fatal("no check over version 1.0")
	}
	// Failover: the first voter goes away, the second answers.
	v1.h.Close()
	if err := c.CheckPassword(ctx, "alice", "s3cret"); err != nil {
		t.Fatalf("after losing a voter: %v", err)
	}
	if err := c.CheckPassword(ctx, "alice", "nope"); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("wrong password after failover: %v", err)
	}
	// No voter at all: 503, never 401.
	v2.h.Close()
	err = c.CheckPassword(ctx, "alice", "s3cret")
	if !errors.Is(err, ErrDirectoryUnavailable) || !errors.Is(err, api.ErrUnavailable) || errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("no directory: %v", err)
	}
	// A cancelled context is reported as such.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.CheckPassword(cctx, "alice", "s3cret"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestDirectoryClientRun(t *testing.T) {
	follower, leader := newFakeVoter(t, false), newFakeVoter(t, true)
	k1 := make([]byte, ed25519.PublicKeySize)
	k1[0] = 1
	k2 := make([]byte, ed25519.PublicKeySize)
	k2[0] = 2
	follower.setKeys(map[string][]byte{"k1": k1})
	leader.setKeys(map[string][]byte{"k1": k1})
	node := p2ptest.NewHost(t, p2p.Config{})
	var load atomic.Int64
	load.Store(42)
	c, err := New(Config{
		Host:              node,
		Directory:         []peer.AddrInfo{follower.info(), leader.info()},
		HeartbeatInterval: 20 * time.Millisecond,
		KeyRefresh:        20 * time.Millisecond,
		Load:              func() int { return int(load.Load()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Keys().PublicKey("k1"); ok {
		t.Fatal("keys known before the first fetch")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	testkit.WaitFor(t, 10*time.Second, "keys", func() bool { _, ok := c.Keys().PublicKey("k1"); return ok })
	testkit.WaitFor(t, 10*time.Second, "heartbeat at the leader", func() bool { r, ok := leader.beat(node.ID()); return ok && r.Load == 42 })
	if _, ok := follower.beat(node.ID()); ok {
		t.Fatal("follower recorded a heartbeat")
	}
	// Load changes reach the directory.
	load.Store(7)
	testkit.WaitFor(t, 10*time.Second, "new load", func() bool { r, _ := leader.beat(node.ID()); return r.Load == 7 })
	// Rotation: k2 published, k1 retired.
	follower.setKeys(map[string][]byte{"k2": k2})
	leader.setKeys(map[string][]byte{"k2": k2})
	testkit.WaitFor(t, 10*time.Second, "rotation", func() bool {
		_, old := c.Keys().PublicKey("k1")
		k, ok := c.Keys().PublicKey("k2")
		return !old && ok && k[0] == 2
	})
	// Leadership moves: heartbeats follow.
	leader.leader.Store(false)
	follower.leader.Store(true)
	testkit.WaitFor(t, 10*time.Second, "heartbeat at the new leader", func() bool { _, ok := follower.beat(node.ID()); return ok })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// serveAssignment makes v answer dirproto.ProtoAssignment with *set for every
// user but "nobody", counting the calls.
func serveAssignment(v *fakeVoter, mu *sync.Mutex, set *[]dirproto.AssignedNode, calls *atomic.Int32) {
	p2p.Serve(v.h, dirproto.ProtoAssignment, p2p.HandleJSON(func(_ context.Context, _ peer.ID, r dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
		calls.Add(1)
		if r.User == "nobody" {
			return dirproto.AssignmentResponse{Nodes: []dirproto.AssignedNode{}}, nil
		}
		mu.Lock()
		defer mu.Unlock()
		return dirproto.AssignmentResponse{Exists: true, Nodes: *set}, nil
	}), p2p.RPCConfig{})
}

func TestDirectoryClientReplicasCache(t *testing.T) {
	v := newFakeVoter(t, true)
	self := p2ptest.NewHost(t, p2p.Config{})
	other := p2ptest.NewHost(t, p2p.Config{})
	an := func(h host.Host) dirproto.AssignedNode {
		return dirproto.AssignedNode{ID: h.ID().String(), PeerID: h.ID().String(), URL: "http://" + h.ID().String() + "/"}
	}
	var mu sync.Mutex
	set := []dirproto.AssignedNode{an(other), an(self)}
	var calls atomic.Int32
	serveAssignment(v, &mu, &set, &calls)
	c, err := New(Config{Host: self, Directory: []peer.AddrInfo{v.info()}, MembershipTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	got, err := c.Replicas(ctx, "alice")
	if err != nil || len(got) != 2 || got[0] != an(other) || got[1] != an(self) {
		t.Fatalf("Replicas: %+v %v", got, err)
	}
	got[0].URL = "scribbled" // the caller's copy
	if holds, err := c.Serves(ctx, "alice"); err != nil || !holds {
		t.Fatalf("Serves: %v %v", holds, err)
	}
	if again, _ := c.Replicas(ctx, "alice"); again[0] != an(other) {
		t.Fatalf("cache modified through a returned slice: %+v", again)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d directory calls for one user within the TTL, want 1", n)
	}
	// Unknown users and names out of bounds have no replicas; the latter
	// never reach the directory.
	if r, err := c.Replicas(ctx, "nobody"); err != nil || len(r) != 0 {
		t.Fatalf("unknown user: %+v %v", r, err)
	}
	if holds, err := c.Serves(ctx, "nobody"); err != nil || holds {
		t.Fatalf("Serves of an unknown user: %v %v", holds, err)
	}
	before := calls.Load()
	if r, err := c.Replicas(ctx, ""); err != nil || r != nil {
		t.Fatalf("empty user: %+v %v", r, err)
	}
	if r, err := c.Replicas(ctx, strings.Repeat("u", dirproto.MaxUserLen+1)); err != nil || r != nil {
		t.Fatalf("long user: %+v %v", r, err)
	}
	if calls.Load() != before {
		t.Fatal("an invalid user name reached the directory")
	}

	// The set changes: the cache answers the old one until invalidated.
	mu.Lock()
	set = []dirproto.AssignedNode{an(other)}
	mu.Unlock()
	if holds, _ := c.Serves(ctx, "alice"); !holds {
		t.Fatal("cached Serves changed within the TTL")
	}
	c.InvalidateUser("alice")
	if holds, err := c.Serves(ctx, "alice"); err != nil || holds {
		t.Fatalf("Serves after InvalidateUser: %v %v", holds, err)
	}
	if r, _ := c.Replicas(ctx, "alice"); len(r) != 1 || r[0] != an(other) {
		t.Fatalf("Replicas after InvalidateUser: %+v", r)
	}

	// With a short TTL the set is asked for again once it expires.
	short, err := New(Config{Host: self, Directory: []peer.AddrInfo{v.info()}, MembershipTTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.Replicas(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	n := calls.Load()
	testkit.WaitFor(t, 10*time.Second, "a call after expiry", func() bool {
		if _, err := short.Serves(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		return calls.Load() > n
	})

	// No voter: an uncached user is unavailable, never "not held".
	v.h.Close()
	if _, err := c.Replicas(ctx, "bob"); !errors.Is(err, ErrDirectoryUnavailable) {
		t.Fatalf("Replicas without a directory: %v", err)
	}
	if _, err := c.Serves(ctx, "bob"); !errors.Is(err, ErrDirectoryUnavailable) {
		t.Fatalf("Serves without a directory: %v", err)
	}
}

func TestDirectoryClientAssignedUsers(t *testing.T) {
	v := newFakeVoter(t, true)
	all := []string{"a", "b", "c", "d", "e"}
	var bad atomic.Bool // answer a page that ignores After
	var last atomic.Pointer[dirproto.UsersRequest]
	p2p.Serve(v.h, dirproto.ProtoUsers, p2p.HandleJSON(func(_ context.Context, _ peer.ID, r dirproto.UsersRequest) (dirproto.UsersResponse, error) {
		last.Store(&r)
		out := dirproto.UsersResponse{Users: []dirproto.UserReplicas{}, Version: 9}
		for _, u := range all {
			if (u > r.After || bad.Load()) && len(out.Users) < r.Limit {
				out.Users = append(out.Users, dirproto.UserReplicas{User: u, Nodes: []dirproto.AssignedNode{}})
			}
		}
		out.More = len(out.Users) > 0 && out.Users[len(out.Users)-1].User != all[len(all)-1]
		return out, nil
	}), p2p.RPCConfig{})
	c, err := New(Config{Host: p2ptest.NewHost(t, p2p.Config{}), Directory: []peer.AddrInfo{v.info()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var got []string
	after := ""
	for {
		users, more, version, err := c.AssignedUsers(ctx, after, 2)
		if err != nil || version != 9 {
			t.Fatalf("AssignedUsers(%q): %v version %d", after, err, version)
		}
		if r := last.Load(); r.After != after || r.Limit != 2 {
			t.Fatalf("request %+v", *r)
		}
		for _, u := range users {
			got = append(got, u.User)
		}
		if !more {
			break
		}
		after = users[len(users)-1].User
	}
	if strings.Join(got, "") != "abcde" {
		t.Fatalf("swept %v", got)
	}
	// A page that does not start after After is rejected.
	bad.Store(true)
	if _, _, _, err := c.AssignedUsers(ctx, "c", 2); !errors.Is(err, p2p.ErrBadMessage) {
		t.Fatalf("page before After: %v", err)
	}
	if _, _, _, err := c.AssignedUsers(ctx, "", -1); !errors.Is(err, p2p.ErrBadMessage) {
		t.Fatalf("negative limit: %v", err)
	}
}
