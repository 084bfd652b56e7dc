package placement

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// set builds a Set from a compact notation: space-separated members, each
// an ID, then "~N" (filling, epoch N) or "@N" (current, epoch N), then "^"
// (marked Leave); leaving lists the leaving IDs.
func set(members string, leaving ...string) Set {
	var s Set
	for _, tok := range strings.Fields(members) {
		var m Member
		if strings.HasSuffix(tok, "^") {
			m.Leave, tok = true, strings.TrimSuffix(tok, "^")
		}
		if i := strings.IndexAny(tok, "~@"); i >= 0 {
			e, err := strconv.ParseUint(tok[i+1:], 10, 64)
			if err != nil {
				panic(tok)
			}
			m.Filling, m.Epoch, tok = tok[i] == '~', e, tok[:i]
		}
		m.ID = tok
		s.Members = append(s.Members, m)
	}
	if len(leaving) > 0 {
		s.Leaving = leaving
	}
	return s
}

// notation is the inverse of set, for messages.
func notation(s Set) string {
	var b strings.Builder
	for i, m := range s.Members {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(m.ID)
		switch {
		case m.Filling:
			fmt.Fprintf(&b, "~%d", m.Epoch)
		case m.Epoch != 0:
			fmt.Fprintf(&b, "@%d", m.Epoch)
		}
		if m.Leave {
			b.WriteByte('^')
		}
	}
	if len(s.Leaving) > 0 {
		fmt.Fprintf(&b, " | leaving %v", s.Leaving)
	}
	return b.String()
}

func nd(id, op string, s State, load int) Node {
	return Node{ID: id, Operator: op, Capacity: 100, Load: load, State: s}
}

func TestSetNotation(t *testing.T) {
	s := set("a b~3 c@2^", "x")
	want := Set{Members: []Member{{ID: "a"}, {ID: "b", Filling: true, Epoch: 3}, {ID: "c", Epoch: 2, Leave: true}}, Leaving: []string{"x"}}
	if !s.Equal(want) || notation(s) != "a b~3 c@2^ | leaving [x]" {
		t.Fatalf("set() = %+v (%s)", s, notation(s))
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name  string
		in    Set
		nodes []Node
		r     int
		want  Set
		oc    Outcome
	}{
		{
			name:  "healthy set unchanged",
			in:    set("b a"),
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 1), nd("c", "z", Active, 0)},
			r:     2, want: set("b a"),
		},
		{
			name:  "primary down, replica current: it leads, the dead one leaves, a filling replacement joins",
			in:    set("a b"),
			nodes: []Node{nd("a", "x", Down, 1), nd("b", "y", Active, 1), nd("c", "z", Active, 0)},
			r:     2, want: set("b c~1", "a"), oc: Outcome{Changed: true},
		},
		{
			name:  "the only current member is down: nothing moves, the user waits",
			in:    set("a b~5"),
			nodes: []Node{nd("a", "x", Down, 1), nd("b", "y", Active, 1), nd("c", "z", Active, 0)},
			r:     2, want: set("a b~5"), oc: Outcome{Waiting: true},
		},
		{
			name:  "both down: nothing moves",
			in:    set("a b"),
			nodes: []Node{nd("a", "x", Down, 1), nd("b", "y", Down, 1), nd("c", "z", Active, 0)},
			r:     2, want: set("a b"), oc: Outcome{Waiting: true},
		},
		{
			name:  "a filling member is never primary while a current one exists",
			in:    set("b~5 a"),
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 1)},
			r:     2, want: set("a b~5"), oc: Outcome{Changed: true},
		},
		{
			name:  "a down current primary before an alive filling member: the down one stays primary",
			in:    set("b~5 a"),
			nodes: []Node{nd("a", "x", Down, 1), nd("b", "y", Active, 1)},
			r:     2, want: set("a b~5"), oc: Outcome{Changed: true, Waiting: true},
		},
		{
			name:  "a dead member leaves when another current one is alive, even with a filling one",
			in:    set("a b~5 c"),
			nodes: []Node{nd("a", "x", Down, 1), nd("b", "y", Active, 1), nd("c", "z", Active, 1), nd("d", "w", Active, 0)},
			r:     2, want: set("c b~5", "a"), oc: Outcome{Changed: true},
		},
		{
			name:  "a draining member stays and serves; a replacement joins",
			in:    set("d a"),
			nodes: []Node{nd("d", "x", Draining, 1), nd("a", "y", Active, 1), nd("c", "z", Active, 0)},
			r:     2, want: set("d a c~1"), oc: Outcome{Changed: true},
		},
		{
			name:  "retired current member: the filling one is made current (loss)",
			in:    set("a b~3"),
			nodes: []Node{nd("a", "x", Retired, 1), nd("b", "y", Active, 1), nd("c", "z", Active, 0)},
			r:     2, want: set("b@3 c~1"), oc: Outcome{Changed: true, Lost: true},
		},
		{
			name:  "retired and unknown leaving entries are dropped",
			in:    set("a b", "x", "ghost"),
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 1), nd("x", "z", Retired, 0)},
			r:     2, want: set("a b"), oc: Outcome{Changed: true},
		},
		{
			name:  "unknown member dropped; others current: no loss",
			in:    set("ghost a"),
			nodes: []Node{nd("a", "y", Active, 1)},
			r:     1, want: set("a"), oc: Outcome{Changed: true},
		},
		{
			name:  "a node owing a handoff is not added back",
			in:    set("a", "b"),
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 0)},
			r:     2, want: set("a", "b"),
		},
		{
			name:  "under-replicated set topped up",
			in:    set("a"),
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 0)},
			r:     2, want: set("a b~1"), oc: Outcome{Changed: true},
		},
		{
			name:  "no capacity: unchanged",
			in:    set("a"),
			nodes: []Node{nd("a", "x", Active, 1), {ID: "b", Operator: "y", Capacity: 3, Load: 3, State: Active}},
			r:     2, want: set("a"),
		},
		{
			name: "replacement prefers an operator not in the set",
			in:   set("a b"),
			nodes: []Node{nd("a", "op1", Down, 1), nd("b", "op2", Active, 1),
				nd("c", "op2", Active, 0), nd("d", "op1", Active, 50)},
			r: 2, want: set("b d~1", "a"), oc: Outcome{Changed: true},
		},
		{
			name:  "a member marked Leave does not count; its transfer is under way",
			in:    set("a^ b c~7"),
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 1), nd("c", "z", Active, 1), nd("d", "w", Active, 0)},
			r:     2, want: set("a^ b c~7"),
		},
		{
			name:  "pending member treated as dead",
			in:    set("p a"),
			nodes: []Node{nd("p", "x", Pending, 1), nd("a", "y", Active, 1)},
			r:     1, want: set("a", "p"), oc: Outcome{Changed: true},
		},
		{
			name:  "no top-up while no current member is alive",
			in:    set("a"),
			nodes: []Node{nd("a", "x", Down, 1), nd("b", "y", Active, 0)},
			r:     2, want: set("a"), oc: Outcome{Waiting: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.Clone()
			var seq uint64
			got, oc := Normalize(tc.in, tc.nodes, tc.r, pol(10_000), &seq)
			if !got.Equal(tc.want) || oc != tc.oc {
				t.Fatalf("Normalize = %s %+v, want %s %+v", notation(got), oc, notation(tc.want), tc.oc)
			}
			if !tc.in.Equal(in) {
				t.Fatalf("input modified: %s", notation(tc.in))
			}
			rev := slices.Clone(tc.nodes)
			slices.Reverse(rev)
			seq = 0
			if got2, _ := Normalize(tc.in, rev, tc.r, pol(10_000), &seq); !got2.Equal(got) {
				t.Fatalf("reversed nodes: %s, want %s", notation(got2), notation(got))
			}
		})
	}
}

func TestMarkUnconfirmed(t *testing.T) {
	tests := []struct {
		name      string
		in        Set
		caller    string
		confirmed []string
		want      Set
		ok        bool
	}{
		{"one member did not confirm", set("a b c"), "a", []string{"b"}, set("a b c~11"), true},
		{"nobody confirmed, a filling one gets a new epoch", set("b a~4"), "b", nil, set("b a~11"), true},
		{"the caller need not be primary", set("a b"), "b", nil, set("a~11 b"), true},
		{"confirmed ids that are not members are ignored", set("a b"), "a", []string{"zz", "b"}, set("a b"), true},
		{"a filling caller may not acknowledge", set("a b~3"), "b", nil, set("a b~3"), false},
		{"a non-member may not acknowledge", set("a b", "c"), "c", nil, set("a b", "c"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq := uint64(10)
			got, ok := MarkUnconfirmed(tc.in, tc.caller, tc.confirmed, &seq)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Fatalf("MarkUnconfirmed = %s %v, want %s %v", notation(got), ok, notation(tc.want), tc.ok)
			}
		})
	}
}

func TestMarkFilledAndHandOff(t *testing.T) {
	filled := []struct {
		name   string
		in     Set
		id     string
		epoch  uint64
		source string
		want   Set
		ok     bool
	}{
		{"current epoch from a current source", set("a b~3"), "b", 3, "a", set("a b@3"), true},
		{"stale epoch", set("a b~3"), "b", 2, "a", set("a b~3"), false},
		{"source filling", set("a~1 b~3 c"), "b", 3, "a", set("a~1 b~3 c"), false},
		{"source is itself", set("a b~3"), "b", 3, "b", set("a b~3"), false},
		{"source leaving, not a member", set("a b~3", "x"), "b", 3, "x", set("a b~3", "x"), false},
		{"already current", set("a b@3"), "b", 3, "a", set("a b@3"), false},
		{"not a member", set("a b~3"), "c", 3, "a", set("a b~3"), false},
	}
	for _, tc := range filled {
		t.Run("filled/"+tc.name, func(t *testing.T) {
			got, ok := MarkFilled(tc.in, tc.id, tc.epoch, tc.source)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Fatalf("MarkFilled = %s %v, want %s %v", notation(got), ok, notation(tc.want), tc.ok)
			}
		})
	}
	handed := []struct {
		name       string
		in         Set
		id, source string
		want       Set
		ok         bool
	}{
		{"current member, leaving source", set("a b", "x", "y"), "b", "x", set("a b", "y"), true},
		{"last leaving entry", set("a", "x"), "a", "x", set("a"), true},
		{"filling member may not report", set("a b~2", "x"), "b", "x", set("a b~2", "x"), false},
		{"source not leaving", set("a b"), "a", "b", set("a b"), false},
		{"reporter not a member", set("a", "x"), "x", "x", set("a", "x"), false},
	}
	for _, tc := range handed {
		t.Run("handoff/"+tc.name, func(t *testing.T) {
			got, ok := HandOff(tc.in, tc.id, tc.source)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Fatalf("HandOff = %s %v, want %s %v", notation(got), ok, notation(tc.want), tc.ok)
			}
		})
	}
}

func TestFinishLeave(t *testing.T) {
	tests := []struct {
		name  string
		in    Set
		id    string
		nodes []Node
		want  Set
		ok    bool
	}{
		{
			name: "draining member waits for its replacement", in: set("d a c~1"), id: "d",
			nodes: []Node{nd("d", "x", Draining, 1), nd("a", "y", Active, 1), nd("c", "z", Active, 1)},
			want:  set("d a c~1"),
		},
		{
			name: "draining member leaves once the replacement is current", in: set("d a c"), id: "d",
			nodes: []Node{nd("d", "x", Draining, 1), nd("a", "y", Active, 1), nd("c", "z", Active, 1)},
			want:  set("a c", "d"), ok: true,
		},
		{
			name: "transfer source waits for the destination", in: set("a^ b c~4"), id: "a",
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 1), nd("c", "z", Active, 1)},
			want:  set("a^ b c~4"),
		},
		{
			name: "transfer source leaves once the destination is current", in: set("a^ b c@4"), id: "a",
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 1), nd("c", "z", Active, 1)},
			want:  set("b c@4", "a"), ok: true,
		},
		{
			name: "an active member not leaving stays", in: set("a b"), id: "a",
			nodes: []Node{nd("a", "x", Active, 1), nd("b", "y", Active, 1)},
			want:  set("a b"),
		},
		{
			name: "no other current alive member: stays", in: set("d b"), id: "d",
			nodes: []Node{nd("d", "x", Draining, 1), nd("b", "y", Down, 1)},
			want:  set("d b"),
		},
		{
			name: "no replacement possible but another current member: leaves", in: set("d b"), id: "d",
			nodes: []Node{nd("d", "x", Draining, 1), nd("b", "y", Active, 1)},
			want:  set("b", "d"), ok: true,
		},
		{
			name: "a filling member that is down does not hold a drain up", in: set("d a c~1"), id: "d",
			nodes: []Node{nd("d", "x", Draining, 1), nd("a", "y", Active, 1), nd("c", "z", Down, 1)},
			want:  set("a c~1", "d"), ok: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := FinishLeave(tc.in, tc.id, tc.nodes)
			if ok != tc.ok || !got.Equal(tc.want) || ok != ReadyToLeave(tc.in, tc.id, tc.nodes) {
				t.Fatalf("FinishLeave = %s %v, want %s %v", notation(got), ok, notation(tc.want), tc.ok)
			}
		})
	}
}

func TestImproves(t *testing.T) {
	c := func(id string, capacity, load int) Node {
		return Node{ID: id, Operator: "x", Capacity: capacity, Load: load, State: Active}
	}
	tests := []struct {
		name     string
		from, to Node
		want     bool
	}{
		{"spread of two", c("a", 100, 10), c("b", 100, 8), true},
		{"spread of one: no", c("a", 100, 10), c("b", 100, 9), false},
		{"equal: no", c("a", 100, 10), c("b", 100, 10), false},
		{"relative to capacity: not enough", c("a", 100, 50), c("b", 200, 99), false},
		{"relative to capacity: enough", c("a", 100, 50), c("b", 200, 97), true},
		{"destination full", c("a", 100, 50), c("b", 3, 3), false},
		{"destination down", c("a", 100, 50), withState(c("b", 100, 0), Down), false},
		{"off a node with no capacity", c("a", 0, 1), c("b", 100, 0), true},
		{"onto a node with no capacity", c("a", 100, 50), c("b", 0, 0), false},
		{"from an empty node", c("a", 100, 0), c("b", 100, 0), false},
		// released(b) = 10 (age 0): (9+1)*100 <= 49*10 fails.
		{"against released capacity", c("a", 100, 50), withAdded(c("b", 1000, 9), 10_000), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Improves(tc.from, tc.to, pol(10_000)); got != tc.want {
				t.Fatalf("Improves = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRebalance(t *testing.T) {
	nodes := []Node{nd("a", "x", Active, 10), nd("b", "y", Active, 4), nd("c", "z", Active, 6)}
	want := []Transfer{{"a", "b"}, {"a", "c"}, {"c", "b"}}
	if got := Rebalance(nodes, pol(10_000)); !slices.Equal(got, want) {
		t.Fatalf("Rebalance = %v, want %v", got, want)
	}
	rev := slices.Clone(nodes)
	slices.Reverse(rev)
	if got := Rebalance(rev, pol(10_000)); !slices.Equal(got, want) {
		t.Fatalf("reversed: %v, want %v", got, want)
	}
	for _, s := range []State{Down, Draining} {
		if got := Rebalance(append(slices.Clone(nodes), nd("d", "w", s, 0)), pol(10_000)); got != nil {
			t.Fatalf("with a %v node: %v", s, got)
		}
	}
	balanced := []Node{nd("a", "x", Active, 5), nd("b", "y", Active, 4), nd("c", "z", Active, 5),
		nd("p", "z", Pending, 0), nd("r", "z", Retired, 0)}
	if got := Rebalance(balanced, pol(10_000)); len(got) != 0 {
		t.Fatalf("balanced: %v", got)
	}
}

func TestStartTransfer(t *testing.T) {
	nodes := []Node{nd("a", "op1", Active, 10), nd("b", "op2", Active, 10), nd("c", "op3", Active, 2),
		nd("d", "op2", Active, 0), nd("e", "op1", Draining, 0), nd("f", "op4", Active, 9)}
	tests := []struct {
		name string
		in   Set
		tr   Transfer
		want Set
		err  error
	}{
		{name: "healthy set", in: set("a b"), tr: Transfer{"a", "c"}, want: set("a^ b c~8")},
		{name: "fewer operators after", in: set("a b"), tr: Transfer{"a", "d"}, err: ErrNoTransfer},
		{name: "same operators after", in: set("a b"), tr: Transfer{"b", "d"}, want: set("a b^ d~8")},
		{name: "handoff pending", in: set("a b", "c"), tr: Transfer{"a", "f"}, err: ErrNoTransfer},
		{name: "filling member", in: set("a b~2"), tr: Transfer{"a", "c"}, err: ErrNoTransfer},
		{name: "transfer under way", in: set("a^ b f~1"), tr: Transfer{"b", "c"}, err: ErrNoTransfer},
		{name: "destination a member", in: set("a c"), tr: Transfer{"a", "c"}, err: ErrNoTransfer},
		{name: "source not a member", in: set("b c"), tr: Transfer{"a", "f"}, err: ErrNoTransfer},
		{name: "destination draining", in: set("a b"), tr: Transfer{"a", "e"}, err: ErrNoTransfer},
		{name: "not worth it", in: set("a b"), tr: Transfer{"a", "f"}, err: ErrNoTransfer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq := uint64(7)
			got, err := StartTransfer(tc.in, tc.tr, nodes, pol(10_000), &seq)
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && !got.Equal(tc.want) {
				t.Fatalf("StartTransfer = %s, want %s", notation(got), notation(tc.want))
			}
			if err != nil && !got.Equal(tc.in) {
				t.Fatalf("refused transfer changed the set: %s", notation(got))
			}
		})
	}
}
