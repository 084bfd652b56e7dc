package placement

import (
	"errors"
	"slices"
	"testing"
)

// pol is a policy with small steps so release effects show in small tables.
func pol(now uint64) Policy {
	return Policy{ReleaseStep: 10, ReleaseInterval: 100, NewNodeWindow: 50, Now: now}
}

func act(id, op string, capacity, load int) Node {
	return Node{ID: id, Operator: op, Capacity: capacity, Load: load, State: Active}
}

func withState(n Node, s State) Node  { n.State = s; return n }
func withAdded(n Node, a uint64) Node { n.Added = a; return n }

func TestAssign(t *testing.T) {
	const now = 10_000
	tests := []struct {
		name  string
		nodes []Node
		r     int
		p     Policy
		want  []string
		err   error
	}{
		{
			name:  "least loaded first",
			nodes: []Node{act("a", "x", 100, 5), act("b", "x", 100, 3), act("c", "x", 100, 4)},
			r:     1, p: pol(now), want: []string{"b"},
		},
		{
			name:  "ties broken by id",
			nodes: []Node{act("c", "x", 100, 3), act("a", "x", 100, 3), act("b", "x", 100, 3)},
			r:     2, p: pol(now), want: []string{"a", "b"},
		},
		{
			name:  "load relative to capacity",
			nodes: []Node{act("small", "x", 10, 5), act("big", "x", 1000, 200)},
			r:     1, p: pol(now), want: []string{"big"},
		},
		{
			name:  "fill after placement decides empty nodes of different size",
			nodes: []Node{act("a", "x", 10, 0), act("b", "x", 1000, 0)},
			r:     1, p: pol(now), want: []string{"b"},
		},
		{
			name:  "replicas on distinct operators",
			nodes: []Node{act("a", "op1", 100, 0), act("b", "op1", 100, 0), act("c", "op2", 100, 50)},
			r:     2, p: pol(now), want: []string{"a", "c"},
		},
		{
			name: "three operators for three replicas before reusing one",
			nodes: []Node{act("a", "op1", 100, 0), act("b", "op1", 100, 0), act("c", "op2", 100, 60),
				act("d", "op3", 100, 70), act("e", "op2", 100, 1)},
			r: 3, p: pol(now), want: []string{"a", "e", "d"},
		},
		{
			name:  "same operator when not enough operators",
			nodes: []Node{act("b", "op1", 100, 0), act("a", "op1", 100, 0)},
			r:     2, p: pol(now), want: []string{"a", "b"},
		},
		{
			name: "new node not primary while an established node exists",
			nodes: []Node{withAdded(act("old", "x", 1000, 500), 0),
				withAdded(act("new", "y", 1000, 0), now-10)},
			r: 1, p: pol(now), want: []string{"old"},
		},
		{
			name: "new node takes a replica",
			nodes: []Node{withAdded(act("old", "x", 1000, 500), 0),
				withAdded(act("new", "y", 1000, 0), now-10)},
			r: 2, p: pol(now), want: []string{"old", "new"},
		},
		{
			name: "new node becomes primary when no established node can take the user",
			nodes: []Node{withAdded(act("old", "x", 500, 500), 0),
				withAdded(act("new", "y", 1000, 0), now-10)},
			r: 1, p: pol(now), want: []string{"new"},
		},
		{
			name: "node past its released capacity yields to one within release",
			// fresh (released 10, load 10) vs aged (released 1000, load 500)
			nodes: []Node{withAdded(act("fresh", "x", 1000, 10), now-60),
				withAdded(act("aged", "x", 1000, 500), 0)},
			r: 2, p: pol(now), want: []string{"aged", "fresh"},
		},
		{
			name: "release grows with age",
			// age 250 -> 3 steps -> released 30 > load 20: within release, lower fill
			nodes: []Node{withAdded(act("young", "y", 1000, 20), now-250),
				withAdded(act("aged", "x", 1000, 500), 0)},
			r: 1, p: pol(now), want: []string{"young"},
		},
		{
			name: "release is soft: beyond-release nodes used when nothing else",
			nodes: []Node{withAdded(act("b", "x", 1000, 15), now-60),
				withAdded(act("a", "x", 1000, 12), now-60)},
			r: 1, p: pol(now), want: []string{"a"},
		},
		{
			name:  "capacity is hard",
			nodes: []Node{act("full", "x", 10, 10), act("ok", "x", 10, 9)},
			r:     2, p: pol(now), want: []string{"ok"}, err: ErrUnderReplicated,
		},
		{
			name:  "no capacity",
			nodes: []Node{act("full", "x", 10, 10), act("zero", "x", 0, 0)},
			r:     1, p: pol(now), err: ErrNoCapacity,
		},
		{
			name: "only active nodes",
			nodes: []Node{withState(act("p", "x", 10, 0), Pending), withState(act("d", "x", 10, 0), Draining),
				withState(act("w", "x", 10, 0), Down), withState(act("r", "x", 10, 0), Retired),
				act("z", "x", 10, 9)},
			r: 1, p: pol(now), want: []string{"z"},
		},
		{
			name:  "under-replicated result",
			nodes: []Node{act("a", "x", 10, 0), act("b", "y", 10, 0)},
			r:     3, p: pol(now), want: []string{"a", "b"}, err: ErrUnderReplicated,
		},
		{
			name:  "duplicate ids ignored",
			nodes: []Node{act("a", "x", 10, 0), act("a", "x", 10, 5), act("b", "y", 10, 3)},
			r:     1, p: pol(now), want: []string{"b"},
		},
		{
			name:  "bad replica count",
			nodes: []Node{act("a", "x", 10, 0)},
			r:     0, p: pol(now), err: ErrBadReplicaCount,
		},
		{
			name:  "invalid policy",
			nodes: []Node{act("a", "x", 10, 0)},
			r:     1, p: Policy{ReleaseStep: -1}, err: ErrInvalidPolicy,
		},
		{
			name:  "zero policy takes defaults",
			nodes: []Node{act("b", "x", 10, 0), act("a", "x", 10, 0)},
			r:     1, p: Policy{}, want: []string{"a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Assign(tc.nodes, tc.r, tc.p)
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Assign = %v, want %v", got, tc.want)
			}
			// Input order must not matter.
			rev := slices.Clone(tc.nodes)
			slices.Reverse(rev)
			got2, _ := Assign(rev, tc.r, tc.p)
			if !slices.Equal(got, got2) {
				t.Fatalf("reversed input: %v, want %v", got2, got)
			}
		})
	}
}

func TestReleased(t *testing.T) {
	p := pol(1000)
	tests := []struct {
		n    Node
		want int
	}{
		{Node{Capacity: 1000, Added: 1000}, 10},
		{Node{Capacity: 1000, Added: 901}, 10},
		{Node{Capacity: 1000, Added: 900}, 20},
		{Node{Capacity: 1000, Added: 0}, 110},
		{Node{Capacity: 25, Added: 0}, 25},
		{Node{Capacity: 5, Added: 1000}, 5},
		{Node{Capacity: 0, Added: 0}, 0},
		{Node{Capacity: 1000, Added: 5000}, 10}, // clock behind Added
	}
	for _, tc := range tests {
		if got := p.Released(tc.n); got != tc.want {
			t.Errorf("Released(cap %d, added %d) = %d, want %d", tc.n.Capacity, tc.n.Added, got, tc.want)
		}
	}
	big := Policy{ReleaseStep: 1 << 40, ReleaseInterval: 1, Now: 1 << 62}
	if got := big.Released(Node{Capacity: 1 << 50}); got != 1<<50 {
		t.Errorf("overflow case: %d", got)
	}
}

func TestLoads(t *testing.T) {
	got := Loads([]Set{
		NewSet([]string{"x", "y"}),
		NewSet([]string{"y", "y"}),
		{Members: []Member{{ID: "z"}}, Leaving: []string{"x"}},
	})
	want := map[string]int{"x": 1, "y": 2, "z": 1}
	if len(got) != len(want) {
		t.Fatalf("Loads = %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("Loads = %v, want %v", got, want)
		}
	}
}

func TestCheckNodes(t *testing.T) {
	if err := CheckNodes([]Node{{ID: "a"}, {ID: "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := CheckNodes([]Node{{ID: "a"}, {ID: "a"}}); err == nil {
		t.Fatal("duplicate accepted")
	}
	if err := CheckNodes([]Node{{ID: ""}}); err == nil {
		t.Fatal("empty id accepted")
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Pending: "pending", Active: "active", Draining: "draining",
		Down: "down", Retired: "retired", State(9): "state(9)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}
