package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/hce-sync/hce/directory/placement"
)

// TestFSMClusterDeterministic applies the same entries to two FSMs and
// compares snapshot bytes, then restores one into a third.
func TestFSMClusterDeterministic(t *testing.T) {
	var snaps [][]byte
	for range 2 {
		f := testFSM(t)
		idx := uint64(0)
		apply := func(c Command) any { idx++; return applyCmd(t, f, idx, c) }
		apply(SetSettings{Settings: Settings{Replicas: 2, AutoApprove: true}})
		for i, op := range []string{"a", "b", "c", "a"} {
			apply(RegisterNode{ID: fmt.Sprintf("n%d", i), Operator: op, BaseURL: "http://n/", Capacity: 10, PublicKey: []byte{1}})
		}
		for i := range 8 {
			apply(CreateUser{Name: fmt.Sprintf("u%d", i), Hash: "h"})
		}
		apply(SetNodeState{ID: "n1", State: placement.Down})
		apply(SetNodeState{ID: "n2", State: placement.Draining})
		apply(FinishDrain{ID: "n2"})
		s, _ := f.Snapshot()
		var sink memSink
		if err := s.Persist(&sink); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, sink.Bytes())
	}
	if string(snaps[0]) != string(snaps[1]) {
		t.Fatal("equal logs gave different snapshots")
	}
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snaps[0]))); err != nil {
		t.Fatal(err)
	}
	s, _ := g.Snapshot()
	var sink memSink
	_ = s.Persist(&sink)
	if string(sink.Bytes()) != string(snaps[0]) {
		t.Fatal("restored state snapshots differently")
	}
}

func TestFSMNodeStateRules(t *testing.T) {
	f := testFSM(t)
	idx := uint64(0)
	apply := func(c Command) error {
		idx++
		err, _ := applyCmd(t, f, idx, c).(error)
		return err
	}
	reg := RegisterNode{ID: "n1", Operator: "a", BaseURL: "http://n1", Capacity: 5, PublicKey: []byte{1}}
	steps := []struct {
		cmd  Command
		want error
	}{
		{RegisterNode{ID: "", BaseURL: "http://x/", PublicKey: []byte{1}}, ErrMalformedCommand},
		{reg, nil},
		{SetNodeState{ID: "n1", State: placement.Down}, ErrBadNodeState}, // pending
		{ApproveNode{ID: "nosuch"}, ErrUnknownNode},
		{ApproveNode{ID: "n1"}, nil},
		{ApproveNode{ID: "n1"}, nil}, // idempotent
		{SetNodeState{ID: "n1", State: placement.Pending}, ErrBadNodeState},
		{SetNodeState{ID: "n1", State: placement.Down}, nil},
		{ApproveNode{ID: "n1"}, ErrBadNodeState}, // down: comes back by heartbeat
		{SetNodeState{ID: "n1", State: placement.Active}, nil},
		{FinishDrain{ID: "n1"}, ErrBadNodeState}, // not draining
		{RetireNode{ID: "n1"}, nil},
		{SetNodeState{ID: "n1", State: placement.Active}, ErrNodeRetired},
		{reg, ErrNodeRetired},
		{SetVoter{}, ErrMalformedCommand},
	}
	for i, s := range steps {
		if err := apply(s.cmd); !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Fatalf("step %d %v: %v, want %v", i, s.cmd.Type(), err, s.want)
		}
	}
	n, _ := f.Node("n1")
	if n.URL != "http://n1/" || n.State != "retired" || n.Added != 5 {
		t.Fatalf("node = %+v", n)
	}
}

// checkUserIndex compares the FSM's derived per-node index with Sets.
func checkUserIndex(t *testing.T, f *FSM) {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	want := make(map[string][]string)
	for u, set := range f.cl.Sets {
		for _, id := range append(set.IDs(), set.Leaving...) {
			want[id] = append(want[id], u)
		}
	}
	if len(want) != len(f.cl.byNode) {
		t.Fatalf("index has %d nodes, assignments %d", len(f.cl.byNode), len(want))
	}
	for id, users := range want {
		slices.Sort(users)
		s := f.cl.byNode[id]
		if s == nil {
			t.Fatalf("node %s missing from the index", id)
		}
		if got := s.after("", len(users)+1); !slices.Equal(got, users) || s.len() != len(users) {
			t.Fatalf("node %s: index %v (len %d), want %v", id, got, s.len(), users)
		}
	}
}

func TestFSMUserIndex(t *testing.T) {
	f := testFSM(t)
	idx := uint64(0)
	apply := func(c Command) {
		t.Helper()
		idx++
		if res := applyCmd(t, f, idx, c); res != nil {
			if err, ok := res.(error); ok && err != nil {
				t.Fatalf("%T: %v", c, err)
			}
		}
	}
	for i := range 5 {
		apply(RegisterNode{ID: fmt.Sprintf("n%d", i), Operator: fmt.Sprintf("op%d", i), BaseURL: "http://n/",
			Capacity: 1000, PublicKey: []byte{byte(i)}, Approve: true})
	}
	for i := range 200 {
		apply(CreateUser{Name: fmt.Sprintf("u%03d", i), Hash: "h"})
	}
	checkUserIndex(t, f)
	steps := []Command{
		SetNodeState{ID: "n0", State: placement.Down},
		SetNodeState{ID: "n0", State: placement.Active},
		SetSettings{Settings: Settings{Replicas: 3}},
		SetNodeState{ID: "n1", State: placement.Draining},
		FinishDrain{ID: "n1"},
		RetireNode{ID: "n2"},
		DeleteUser{Name: "u007"},
	}
	for _, c := range steps {
		apply(c)
		checkUserIndex(t, f)
	}
	_, _, _, v := f.UsersPage("n3", "", 1)
	if v == 0 || v > idx {
		t.Fatalf("version %d, last index %d", v, idx)
	}

	// Restore rebuilds the index; versions are unknown until the next
	// cluster change, which then bounds every list.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	checkUserIndex(t, g)
	for _, id := range []string{"n0", "n3", "n4"} {
		p1, _, m1, _ := f.UsersPage(id, "u050", 40)
		p2, _, m2, v2 := g.UsersPage(id, "u050", 40)
		if !slices.EqualFunc(p1, p2, func(a, b UserAssignment) bool { return a.User == b.User && a.Set.Equal(b.Set) }) || m1 != m2 {
			t.Fatalf("node %s: restored page differs", id)
		}
		if v2 != 0 {
			t.Fatalf("node %s: version %d right after a restore, want 0 (unknown)", id, v2)
		}
	}
	idx++
	applyCmd(t, g, idx, SetEmail{Name: "u001", Email: "x@y"}) // not a cluster change
	if _, _, _, v := g.UsersPage("n3", "", 1); v != 0 {
		t.Fatalf("version %d after an account-only change", v)
	}
	idx++
	applyCmd(t, g, idx, CreateUser{Name: "zz-new", Hash: "h"})
	for _, id := range []string{"n0", "n3", "n4"} {
		if _, _, _, v := g.UsersPage(id, "", 1); v != idx {
			t.Fatalf("node %s: version %d after the first change since restore at %d", id, v, idx)
		}
	}
	checkUserIndex(t, g)
}

// TestUserSet checks the ordered set against a sorted slice under random
// inserts and removals, enough to split and merge blocks many times.
func TestUserSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newUserSet(nil)
	ref := map[string]bool{}
	name := func() string { return fmt.Sprintf("u%05d", rng.IntN(6000)) }
	check := func() {
		t.Helper()
		want := make([]string, 0, len(ref))
		for u := range ref {
			want = append(want, u)
		}
		slices.Sort(want)
		if s.len() != len(want) {
			t.Fatalf("len %d, want %d", s.len(), len(want))
		}
		for _, b := range s.blocks {
			if len(b) == 0 || len(b) > userSetBlock {
				t.Fatalf("block of %d names", len(b))
			}
		}
		if got := s.after("", len(want)+1); !slices.Equal(got, want) {
			t.Fatalf("contents differ (%d vs %d)", len(got), len(want))
		}
		for range 20 {
			k, limit := name(), 1+rng.IntN(700)
			i, found := slices.BinarySearch(want, k)
			if found {
				i++
			}
			w := want[i:min(len(want), i+limit)]
			if got := s.after(k, limit); !slices.Equal(got, w) {
				t.Fatalf("after(%q, %d): %d names, want %d", k, limit, len(got), len(w))
			}
		}
	}
	for round := range 6 {
		// Grow, then shrink, then mix.
		for range 4000 {
			u := name()
			switch {
			case round%3 == 1:
				if s.remove(u) != ref[u] {
					t.Fatalf("remove(%q) disagrees", u)
				}
				delete(ref, u)
			case round%3 == 2 && rng.IntN(2) == 0:
				if s.remove(u) != ref[u] {
					t.Fatalf("remove(%q) disagrees", u)
				}
				delete(ref, u)
			default:
				if s.insert(u) == ref[u] {
					t.Fatalf("insert(%q) disagrees", u)
				}
				ref[u] = true
			}
		}
		check()
	}
	// Built from a sorted list, as a restore does.
	sorted := s.after("", s.len())
	b := newUserSet(slices.Clone(sorted))
	if got := b.after("", len(sorted)+1); !slices.Equal(got, sorted) {
		t.Fatal("newUserSet lost names")
	}
	if !b.insert("zzz") || !b.remove(sorted[0]) || b.remove("nope") {
		t.Fatal("insert/remove on a built set")
	}
}
