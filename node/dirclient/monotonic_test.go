package dirclient

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/p2p/p2ptest"
)

// indexedVoter answers ProtoAssignment 1.1 with its current answer (or
// unavailable), stamped with its state's index.
type indexedVoter struct {
	*fakeVoter
	mu    sync.Mutex
	index uint64
	nodes []dirproto.AssignedNode
	down  bool
}

func newIndexedVoter(t *testing.T) *indexedVoter {
	v := &indexedVoter{fakeVoter: newFakeVoter(t, false)}
	p2p.Serve(v.h, dirproto.ProtoAssignment11, p2p.HandleJSON(func(context.Context, peer.ID, dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.down {
			return dirproto.AssignmentResponse{}, p2p.Errorf(p2p.CodeUnavailable, "not fresh")
		}
		return dirproto.AssignmentResponse{Exists: true, Nodes: v.nodes, Index: v.index}, nil
	}), p2p.RPCConfig{})
	return v
}

func (v *indexedVoter) set(index uint64, down bool, nodes ...dirproto.AssignedNode) {
	v.mu.Lock()
	v.index, v.down, v.nodes = index, down, nodes
	v.mu.Unlock()
}

// TestViewsNeverGoBack: once a node has seen the directory at some state
// (an assignment answer, a membership event), it does not use an answer
// from an older state: another voter a moment behind would show it
// current again in a set it has left, and it would serve reads that lack
// writes acknowledged without it. It asks the other voters, waits a
// little for the lagging one, and answers "directory unavailable" (503)
// rather than an old view; an answer as new as the floor is used.
func TestViewsNeverGoBack(t *testing.T) {
	self := p2ptest.NewHost(t, p2p.Config{})
	other := p2ptest.NewHost(t, p2p.Config{})
	an := func(id peer.ID) dirproto.AssignedNode {
		return dirproto.AssignedNode{ID: id.String(), PeerID: id.String(), URL: "http://" + id.String() + "/"}
	}
	fresh, lagging := newIndexedVoter(t), newIndexedVoter(t)
	c, err := New(Config{Host: self, Directory: []peer.AddrInfo{fresh.info(), lagging.info()}, MembershipTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// The fresh voter says this node left the set (state 100); the
	// lagging one still lists it (state 90).
	fresh.set(100, false, an(other.ID()))
	lagging.set(90, false, an(other.ID()), an(self.ID()))
	if ok, err := c.Serves(ctx, "alice"); err != nil || ok {
		t.Fatalf("Serves from the fresh voter: %v %v", ok, err)
	}
	// The fresh voter stops answering; the lagging one is asked and its
	// older state is not used.
	fresh.set(100, true, an(other.ID()))
	c.InvalidateUser("alice")
	start := time.Now()
	ok, err := c.Serves(ctx, "alice")
	if ok || !errors.Is(err, ErrDirectoryUnavailable) {
		t.Fatalf("Serves with only a lagging voter answering: %v %v; want directory unavailable", ok, err)
	}
	if d := time.Since(start); d < staleRetries*staleRetryWait {
		t.Fatalf("gave up after %v without waiting for the lagging voter", d)
	}
	// A voter that catches up is used at once, and so is one that says
	// nothing of its state (an older directory).
	lagging.set(100, false, an(other.ID()))
	if ok, err := c.Serves(ctx, "alice"); err != nil || ok {
		t.Fatalf("Serves once the voter caught up: %v %v", ok, err)
	}
	c.InvalidateUser("alice")
	lagging.set(0, false, an(other.ID()), an(self.ID()))
	if ok, err := c.Serves(ctx, "alice"); err != nil || !ok {
		t.Fatalf("Serves from a voter that sends no index: %v %v", ok, err)
	}

	// A membership event raises the floor: an answer older than the
	// event's state is not used, a newer one is.
	c.ServeMembershipEvents(nil)
	fresh.listVoters(fresh.fakeVoter, lagging.fakeVoter)
	if err := c.RefreshPeers(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p2p.CallJSON(ctx, p2p.RPCConfig{}, fresh.h, self.ID(), dirproto.ProtoMembership,
		dirproto.MembershipEvent{Users: []string{"alice"}, Index: 200}, nil); err != nil {
		t.Fatal(err)
	}
	lagging.set(150, false, an(other.ID()), an(self.ID()))
	if ok, err := c.Serves(ctx, "alice"); ok || !errors.Is(err, ErrDirectoryUnavailable) {
		t.Fatalf("Serves from a state older than the membership event's: %v %v", ok, err)
	}
	fresh.set(201, false, an(other.ID()), an(self.ID()))
	if ok, err := c.Serves(ctx, "alice"); err != nil || !ok {
		t.Fatalf("Serves from a state newer than the event's: %v %v", ok, err)
	}
}

// TestViewsFollowARestoredDirectory: when every voter has answered from an
// older state than the node's floor for staleReset (the directory was
// restored from a backup and its raft indexes went back), the node follows
// the directory instead of refusing for ever.
func TestViewsFollowARestoredDirectory(t *testing.T) {
	old := staleReset
	staleReset = 300 * time.Millisecond
	t.Cleanup(func() { staleReset = old })
	self := p2ptest.NewHost(t, p2p.Config{})
	an := dirproto.AssignedNode{ID: self.ID().String(), PeerID: self.ID().String(), URL: "http://self/"}
	v := newIndexedVoter(t)
	c, err := New(Config{Host: self, Directory: []peer.AddrInfo{v.info()}, MembershipTTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v.set(5000, false, an)
	if ok, err := c.Serves(ctx, "alice"); err != nil || !ok {
		t.Fatalf("before the restore: %v %v", ok, err)
	}
	v.set(40, false, an) // restored: the indexes start again
	start := time.Now()
	if _, err := c.Serves(ctx, "alice"); !errors.Is(err, ErrDirectoryUnavailable) {
		t.Fatalf("right after the restore: %v; want directory unavailable", err)
	}
	for {
		ok, err := c.Serves(ctx, "alice")
		if err == nil && ok {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("never followed the restored directory: %v %v", ok, err)
		}
	}
	if d := time.Since(start); d < staleReset {
		t.Fatalf("followed the older state after %v, before %v", d, staleReset)
	}
	// From then on the restored directory's states are the floor.
	v.set(30, false, an)
	if _, err := c.Serves(ctx, "alice"); !errors.Is(err, ErrDirectoryUnavailable) {
		t.Fatalf("an answer older than the restored state: %v; want directory unavailable", err)
	}
}
