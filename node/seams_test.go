package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// fakeWaiter is a ReplicaWaiter that answers what the test sets and
// records the calls.
type fakeWaiter struct {
	mu       sync.Mutex
	calls    []uint64
	reported bool
	err      error
}

func (w *fakeWaiter) WaitReplicated(ctx context.Context, user string, seq uint64) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	w.calls = append(w.calls, seq)
	return w.reported, w.err
}

func (w *fakeWaiter) set(reported bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reported, w.err = reported, err
}

func (w *fakeWaiter) n() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.calls)
}

// TestReplicaWaiterDecidesTheAnswer: every client write path (Weave PUT,
// POST, DELETE of an item, a collection and the storage, and a CouchDB
// client's ApplyRevisions) asks the waiter after its commit; a refusal
// fails the write with ErrNotAcknowledged (a 503) while the write stays
// committed, a reported acknowledgement is counted. Revisions from a peer
// never wait.
func TestReplicaWaiterDecidesTheAnswer(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	w := &fakeWaiter{}
	s.SetReplicaWaiter(w)
	pre := api.Precondition{}
	writes := []struct {
		name string
		do   func() error
	}{
		{"put", func() error { _, err := s.PutItem(ctx, "u", "c", testkit.WBO("a", "1"), pre); return err }},
		{"post", func() error {
			_, err := s.PostItems(ctx, "u", "c", []api.WBO{testkit.WBO("b", "2"), testkit.WBO("c", "3")}, pre)
			return err
		}},
		{"delete item", func() error { _, err := s.DeleteItem(ctx, "u", "c", "b", pre); return err }},
		{"delete collection", func() error { _, err := s.DeleteCollection(ctx, "u", "c", nil, pre); return err }},
		{"delete storage", func() error { _, err := s.DeleteStorage(ctx, "u"); return err }},
	}
	for _, wr := range writes {
		before := w.n()
		if err := wr.do(); err != nil {
			t.Fatalf("%s: %v", wr.name, err)
		}
		if w.n() != before+1 {
			t.Fatalf("%s: waiter called %d times, want 1", wr.name, w.n()-before)
		}
	}
	if s.UnconfirmedWrites() != 0 || s.UnacknowledgedWrites() != 0 {
		t.Fatalf("counters %d %d", s.UnconfirmedWrites(), s.UnacknowledgedWrites())
	}

	// Acknowledged after a report: counted.
	w.set(true, nil)
	mustPut(t, s, "u", "c", testkit.WBO("r", "reported"))
	if n := s.UnconfirmedWrites(); n != 1 {
		t.Fatalf("UnconfirmedWrites = %d, want 1", n)
	}

	// Refused: 503, but committed.
	w.set(false, errors.New("directory unreachable"))
	_, err := s.PutItem(ctx, "u", "c", testkit.WBO("x", "durable"), pre)
	if !errors.Is(err, ErrNotAcknowledged) || !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("refused write: %v", err)
	}
	if got, _, err := s.GetItem(ctx, "u", "c", "x"); err != nil || got.Payload != "durable" {
		t.Fatalf("refused write not committed: %+v %v", got, err)
	}
	if n := s.UnacknowledgedWrites(); n != 1 {
		t.Fatalf("UnacknowledgedWrites = %d, want 1", n)
	}
	// Refused because this node no longer serves the user: 401 (the
	// client asks the directory), not 503; committed all the same.
	w.set(false, fmt.Errorf("not a current member any more: %w", ErrNotServing))
	_, err = s.PutItem(ctx, "u", "c", testkit.WBO("moved", "durable"), pre)
	if !errors.Is(err, ErrNotServing) || !errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("write refused as not serving: %v", err)
	}
	if got, _, err := s.GetItem(ctx, "u", "c", "moved"); err != nil || got.Payload != "durable" {
		t.Fatalf("refused write not committed: %+v %v", got, err)
	}
	if n := s.UnacknowledgedWrites(); n != 2 {
		t.Fatalf("UnacknowledgedWrites = %d, want 2", n)
	}

	// CouchDB client writes (peer "") wait; a refusal is a 503.
	d, err := s.GetDoc(ctx, "u", "c", "x")
	if err != nil {
		t.Fatal(err)
	}
	win, _ := d.Winner()
	rev, _ := d.Revision(win.Rev, 0)
	other := openTest(t, t.TempDir(), newFakeClock(), 0)
	ow := &fakeWaiter{}
	other.SetReplicaWaiter(ow)
	if _, err := other.ApplyRevisions(ctx, "u", []Revision{rev}, "peer", nil); err != nil || ow.n() != 0 {
		t.Fatalf("replicated revisions: %v, %d waits", err, ow.n())
	}
	ow.set(false, errors.New("no quorum"))
	rev2 := rev
	rev2.ID = "y"
	rev2.Body.Origin = "" // a CouchDB client's revision carries no origin
	if _, err := other.ApplyRevisions(ctx, "u", []Revision{rev2}, "", nil); !errors.Is(err, ErrNotAcknowledged) {
		t.Fatalf("client revisions refused by the waiter: %v", err)
	}
	if ow.n() != 1 {
		t.Fatalf("client revisions: %d waits, want 1", ow.n())
	}
	if _, err := other.GetDoc(ctx, "u", "c", "y"); err != nil {
		t.Fatalf("refused client revision not committed: %v", err)
	}
	ow.set(false, nil)
	if _, err := other.ApplyRevisions(ctx, "u", []Revision{rev2}, "", nil); err != nil || ow.n() != 2 {
		t.Fatalf("retried client revision (a no-op) must wait again: %v, %d waits", err, ow.n())
	}
}
