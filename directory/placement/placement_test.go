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

func TestRepair(t *testing.T) {
	const now = 10_000
	n := func(id, op string, s State, load int) Node {
		return Node{ID: id, Operator: op, Capacity: 100, Load: load, State: s}
	}
	tests := []struct {
		name    string
		set     []string
		nodes   []Node
		r       int
		want    []string
		changed bool
	}{
		{
			name:  "healthy set unchanged",
			set:   []string{"b", "a"},
			nodes: []Node{n("a", "x", Active, 1), n("b", "y", Active, 1), n("c", "z", Active, 0)},
			r:     2, want: []string{"b", "a"},
		},
		{
			name:  "primary down: first replica promoted, replacement appended",
			set:   []string{"a", "b", "c"},
			nodes: []Node{n("a", "x", Down, 1), n("b", "y", Active, 1), n("c", "z", Active, 1), n("d", "w", Active, 0)},
			r:     3, want: []string{"b", "c", "d"}, changed: true,
		},
		{
			name:  "replica retired",
			set:   []string{"a", "b"},
			nodes: []Node{n("a", "x", Active, 1), n("b", "y", Retired, 1), n("c", "y", Active, 5)},
			r:     2, want: []string{"a", "c"}, changed: true,
		},
		{
			name: "replacement prefers an operator not left in the set",
			set:  []string{"a", "b"},
			nodes: []Node{n("a", "op1", Down, 1), n("b", "op2", Active, 1),
				n("c", "op2", Active, 0), n("d", "op1", Active, 50)},
			r: 2, want: []string{"b", "d"}, changed: true,
		},
		{
			name:  "draining primary with a live replica is dropped",
			set:   []string{"a", "b"},
			nodes: []Node{n("a", "x", Draining, 1), n("b", "y", Active, 1), n("c", "z", Active, 0)},
			r:     2, want: []string{"b", "c"}, changed: true,
		},
		{
			name:  "sole draining member kept until replacement exists",
			set:   []string{"a"},
			nodes: []Node{n("a", "x", Draining, 1), n("c", "z", Active, 0)},
			r:     1, want: []string{"a", "c"}, changed: true,
		},
		{
			name:  "second repair drops draining member",
			set:   []string{"a", "c"},
			nodes: []Node{n("a", "x", Draining, 1), n("c", "z", Active, 1)},
			r:     1, want: []string{"c"}, changed: true,
		},
		{
			name:  "all dead and no capacity: unchanged",
			set:   []string{"a", "b"},
			nodes: []Node{n("a", "x", Down, 1), n("b", "y", Down, 1), {ID: "c", Operator: "z", Capacity: 3, Load: 3, State: Active}},
			r:     2, want: []string{"a", "b"},
		},
		{
			name: "all dead: replacements, primary chosen with primary rules",
			set:  []string{"a", "gone"},
			nodes: []Node{n("a", "x", Down, 1), withAdded(n("new", "y", Active, 0), now-1),
				n("old", "y", Active, 40)},
			r: 2, want: []string{"old", "new"}, changed: true,
		},
		{
			name:  "under-replicated set topped up when capacity appears",
			set:   []string{"a"},
			nodes: []Node{n("a", "x", Active, 1), n("b", "y", Active, 0)},
			r:     2, want: []string{"a", "b"}, changed: true,
		},
		{
			name:  "nothing to add: repaired to what exists",
			set:   []string{"a", "b"},
			nodes: []Node{n("a", "x", Active, 1), n("b", "y", Down, 1)},
			r:     2, want: []string{"a"}, changed: true,
		},
		{
			name:  "pending and unknown members dropped",
			set:   []string{"p", "a", "ghost"},
			nodes: []Node{n("p", "x", Pending, 1), n("a", "y", Active, 1)},
			r:     1, want: []string{"a"}, changed: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := Assignment{User: "u", Nodes: slices.Clone(tc.set)}
			got, changed := Repair(in, tc.nodes, tc.r, pol(now))
			if !slices.Equal(got.Nodes, tc.want) || changed != tc.changed || got.User != "u" {
				t.Fatalf("Repair = %v changed=%v, want %v changed=%v", got.Nodes, changed, tc.want, tc.changed)
			}
			if !slices.Equal(in.Nodes, tc.set) {
				t.Fatalf("input modified: %v", in.Nodes)
			}
			rev := slices.Clone(tc.nodes)
			slices.Reverse(rev)
			got2, _ := Repair(in, rev, tc.r, pol(now))
			if !slices.Equal(got.Nodes, got2.Nodes) {
				t.Fatalf("reversed input: %v, want %v", got2.Nodes, got.Nodes)
			}
		})
	}
}

func TestDrainOne(t *testing.T) {
	n := func(id, op string, s State, load int) Node {
		return Node{ID: id, Operator: op, Capacity: 100, Load: load, State: s}
	}
	tests := []struct {
		name      string
		set       []string
		nodes     []Node
		r         int
		add, fin  []string
		wantError error
	}{
		{
			name:  "primary drained: add first, primary moves to old replica",
			set:   []string{"d", "b"},
			nodes: []Node{n("d", "x", Draining, 1), n("b", "y", Active, 1), n("c", "x", Active, 0)},
			r:     2, add: []string{"d", "b", "c"}, fin: []string{"b", "c"},
		},
		{
			name:  "single replica: new node becomes primary only in step two",
			set:   []string{"d"},
			nodes: []Node{n("d", "x", Draining, 1), n("c", "y", Active, 0)},
			r:     1, add: []string{"d", "c"}, fin: []string{"c"},
		},
		{
			name:  "node still active is treated as leaving",
			set:   []string{"b", "d"},
			nodes: []Node{n("d", "x", Active, 1), n("b", "y", Active, 1), n("c", "z", Active, 0)},
			r:     2, add: []string{"b", "d", "c"}, fin: []string{"b", "c"},
		},
		{
			name:  "no replacement but another live member",
			set:   []string{"d", "b"},
			nodes: []Node{n("d", "x", Draining, 1), n("b", "y", Active, 1)},
			r:     2, add: []string{"d", "b"}, fin: []string{"b"},
		},
		{
			name:  "dead head is not made primary",
			set:   []string{"d", "w", "b"},
			nodes: []Node{n("d", "x", Draining, 1), n("w", "y", Down, 1), n("b", "z", Active, 1)},
			r:     2, add: []string{"d", "w", "b"}, fin: []string{"b", "w"},
		},
		{
			name:      "only live node and no capacity",
			set:       []string{"d"},
			nodes:     []Node{n("d", "x", Draining, 1)},
			r:         2,
			wantError: ErrNoCapacity,
		},
		{
			name:  "node not in set",
			set:   []string{"a"},
			nodes: []Node{n("a", "x", Active, 1)},
			r:     1, add: []string{"a"}, fin: []string{"a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mv, err := DrainOne(Assignment{User: "u", Nodes: tc.set}, "d", tc.nodes, tc.r, pol(0))
			if !errors.Is(err, tc.wantError) || (tc.wantError == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantError)
			}
			if err != nil {
				return
			}
			if !slices.Equal(mv.Add, tc.add) || !slices.Equal(mv.Final, tc.fin) {
				t.Fatalf("DrainOne = add %v final %v, want add %v final %v", mv.Add, mv.Final, tc.add, tc.fin)
			}
		})
	}
}

func TestDrainCountsItsOwnPlacements(t *testing.T) {
	nodes := []Node{
		{ID: "d", Operator: "x", Capacity: 10, Load: 3, State: Draining},
		{ID: "a", Operator: "y", Capacity: 10, Load: 0, State: Active},
		{ID: "b", Operator: "y", Capacity: 10, Load: 0, State: Active},
	}
	as := []Assignment{
		{User: "u3", Nodes: []string{"d"}},
		{User: "u1", Nodes: []string{"d"}},
		{User: "u2", Nodes: []string{"d"}},
		{User: "other", Nodes: []string{"a"}},
	}
	moves, err := Drain(as, "d", nodes, 1, pol(0))
	if err != nil {
		t.Fatal(err)
	}
	// Loads are counted as the plan proceeds: u1 -> a (tie by id), then a
	// holds one more than b, so u2 -> b, then u3 -> a again. Without the
	// running count every user would go to "a".
	want := []Move{
		{User: "u1", Add: []string{"d", "a"}, Final: []string{"a"}},
		{User: "u2", Add: []string{"d", "b"}, Final: []string{"b"}},
		{User: "u3", Add: []string{"d", "a"}, Final: []string{"a"}},
	}
	if len(moves) != len(want) {
		t.Fatalf("moves = %v", moves)
	}
	for i := range want {
		if moves[i].User != want[i].User || !slices.Equal(moves[i].Add, want[i].Add) || !slices.Equal(moves[i].Final, want[i].Final) {
			t.Fatalf("move %d = %+v, want %+v", i, moves[i], want[i])
		}
	}

	// Tight capacity: the plan must not overfill b.
	nodes = []Node{
		{ID: "d", Operator: "x", Capacity: 10, Load: 3, State: Draining},
		{ID: "b", Operator: "y", Capacity: 2, Load: 0, State: Active},
	}
	moves, err = Drain(as, "d", nodes, 1, pol(0))
	if !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("err = %v, want ErrNoCapacity", err)
	}
	if len(moves) != 2 || moves[0].User != "u1" || moves[1].User != "u2" {
		t.Fatalf("moves = %+v", moves)
	}
}

func TestLoads(t *testing.T) {
	got := Loads([]Assignment{
		{User: "a", Nodes: []string{"x", "y"}},
		{User: "b", Nodes: []string{"y", "y"}},
		{User: "c", Nodes: []string{"z"}},
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
