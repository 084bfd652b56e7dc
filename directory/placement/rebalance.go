package placement

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// ErrNoTransfer means a transfer is not allowed (see CanTransfer and
// Improves).
var ErrNoTransfer = errors.New("placement: transfer not allowed")

// Transfer is one rebalancing step: move one user's membership from node
// From to node To.
type Transfer struct {
	From, To string
}

// Improves reports whether moving one user from node from to node to
// lowers the imbalance enough to be worth it, with loads measured against
// released capacity (Policy.Released):
//
//	(to.Load + 1) / released(to) <= (from.Load - 1) / released(from)
//
// (compared exactly by cross-multiplication), and to is Active with
// to.Load < to.Capacity. With equal capacities that is from.Load - to.Load
// >= 2: the move strictly shrinks the spread, and the reverse move is
// never worth it afterwards. Each such move strictly lowers the sum over
// nodes of Load²/released, so repeated moves at one clock value end.
// Moves off a node with no released capacity (Capacity <= 0) always
// improve.
func Improves(from, to Node, cfg Policy) bool {
	p := cfg.withDefaults()
	if to.State != Active || to.Load >= to.Capacity || from.ID == to.ID || from.Load < 1 {
		return false
	}
	rf, rt := int64(p.Released(from)), int64(p.Released(to))
	if rt <= 0 {
		return false
	}
	return int64(to.Load+1)*rf <= int64(from.Load-1)*rt
}

// fillLess orders nodes by Load/Released, then by ID.
func fillLess(a, b Node, p Policy) int {
	ra, rb := int64(max(p.Released(a), 0)), int64(max(p.Released(b), 0))
	// a.Load/ra vs b.Load/rb; a node with nothing released is fullest.
	switch {
	case ra == 0 && rb == 0:
	case ra == 0:
		return 1
	case rb == 0:
		return -1
	default:
		if c := cmp.Compare(int64(a.Load)*rb, int64(b.Load)*ra); c != 0 {
			return c
		}
	}
	return cmp.Compare(a.ID, b.ID)
}

// Rebalance lists the transfers worth making now, best first: pairs (From,
// To) of Active nodes for which Improves holds, the fullest sources first
// and, for each, the emptiest destinations first. It returns nil while any
// node is Down or Draining (failover and drains come first). The caller
// takes what it can from the list (one user per source, a bounded number
// in flight), finds a user of From whose set allows the move (CanTransfer)
// and commits it with StartTransfer. Loads must count each transfer in
// flight on its destination and not on its source (the source's member
// leaves once the destination is current).
func Rebalance(nodes []Node, cfg Policy) []Transfer {
	p := cfg.withDefaults()
	idx := index(nodes)
	var act []Node
	for _, n := range idx {
		switch n.State {
		case Down, Draining:
			return nil
		case Active:
			act = append(act, n)
		}
	}
	slices.SortFunc(act, func(a, b Node) int { return fillLess(a, b, p) })
	var out []Transfer
	for i := len(act) - 1; i > 0; i-- {
		from := act[i]
		for _, to := range act[:i] {
			if Improves(from, to, p) {
				out = append(out, Transfer{From: from.ID, To: to.ID})
			}
		}
	}
	return out
}

// CanTransfer reports whether s may take part in transfer t: every member
// is current and Active (none draining, down or already leaving), nothing
// is left to hand off, From is a member, To is neither member nor leaving
// and Active with spare capacity, and the set spans no fewer operators
// afterwards.
func CanTransfer(s Set, t Transfer, nodes []Node) bool {
	return canTransfer(s, t, index(nodes))
}

func canTransfer(s Set, t Transfer, idx map[string]Node) bool {
	if len(s.Leaving) > 0 || s.Find(t.From) < 0 || s.Names(t.To) {
		return false
	}
	to, ok := idx[t.To]
	if !ok || to.State != Active || to.Load >= to.Capacity {
		return false
	}
	before, after := map[string]bool{}, map[string]bool{to.Operator: true}
	for _, m := range s.Members {
		n, ok := idx[m.ID]
		if !ok || m.Filling || m.Leave || n.State != Active {
			return false
		}
		before[n.Operator] = true
		if m.ID != t.From {
			after[n.Operator] = true
		}
	}
	return len(after) >= len(before)
}

// StartTransfer begins transfer t on s: From is marked Leave and To
// appended as a filling member with a fresh epoch from seq. The leaving
// member keeps serving until To is current; FinishLeave then drops it. It
// fails with ErrNoTransfer unless CanTransfer holds and Improves(From, To)
// at the given loads.
func StartTransfer(s Set, t Transfer, nodes []Node, cfg Policy, seq *uint64) (Set, error) {
	idx := index(nodes)
	if !canTransfer(s, t, idx) || !Improves(idx[t.From], idx[t.To], cfg) {
		return s, fmt.Errorf("%w: %s -> %s", ErrNoTransfer, t.From, t.To)
	}
	out := s.Clone()
	out.Members[out.Find(t.From)].Leave = true
	out.Members = append(out.Members, Member{ID: t.To, Filling: true, Epoch: nextEpoch(seq)})
	return out, nil
}
