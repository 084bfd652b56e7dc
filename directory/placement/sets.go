package placement

import (
	"slices"
)

// Member is one member of a user's replica set. The JSON names are part of
// the directory's snapshot format.
type Member struct {
	// ID is the node's ID.
	ID string `json:"id"`
	// Filling is true while the member may lack acknowledged writes: it was
	// added and has not reported a complete backfill, or a write was
	// acknowledged without its confirmation. A current member (Filling
	// false) holds every write acknowledged for the user.
	Filling bool `json:"f,omitempty"`
	// Epoch changes each time the member becomes filling; a backfill
	// report names the epoch it was made under (see MarkFilled). Epochs are
	// drawn from one sequence for the whole cluster (the caller's
	// *uint64), so a node that leaves a set and joins it again never sees
	// an epoch it saw before.
	Epoch uint64 `json:"e,omitempty"`
	// Leave marks the member a rebalancing transfer moves off the set: it
	// leaves once the rest of the set is current (FinishLeave).
	Leave bool `json:"l,omitempty"`
}

// Set is a user's replica set: the members in order (the first is the
// primary) and the nodes that left the set and may still hold revisions the
// members lack (Leaving), until a current member reports the handoff. A
// node is never both a member and leaving. Sets are values: the functions
// of this package return modified copies and never change their input.
type Set struct {
	Members []Member `json:"m"`
	Leaving []string `json:"lv,omitempty"`
}

// NewSet returns a set of current members with the given IDs, in order (a
// new user's set: it holds no data yet, so every member is current).
func NewSet(ids []string) Set {
	s := Set{Members: make([]Member, len(ids))}
	for i, id := range ids {
		s.Members[i] = Member{ID: id}
	}
	return s
}

// Clone returns a deep copy of s.
func (s Set) Clone() Set {
	return Set{Members: slices.Clone(s.Members), Leaving: slices.Clone(s.Leaving)}
}

// Equal reports whether s and t are the same set.
func (s Set) Equal(t Set) bool {
	return slices.Equal(s.Members, t.Members) && slices.Equal(s.Leaving, t.Leaving)
}

// Primary returns the first member's ID, or "" for an empty set.
func (s Set) Primary() string {
	if len(s.Members) == 0 {
		return ""
	}
	return s.Members[0].ID
}

// IDs returns the members' IDs in order.
func (s Set) IDs() []string {
	out := make([]string, len(s.Members))
	for i, m := range s.Members {
		out[i] = m.ID
	}
	return out
}

// Find returns the index of member id, or -1.
func (s Set) Find(id string) int {
	return slices.IndexFunc(s.Members, func(m Member) bool { return m.ID == id })
}

// IsLeaving reports whether id is in the leaving list.
func (s Set) IsLeaving(id string) bool { return slices.Contains(s.Leaving, id) }

// Names reports whether id is a member or leaving.
func (s Set) Names(id string) bool { return s.Find(id) >= 0 || s.IsLeaving(id) }

// Current reports whether some member is current.
func (s Set) Current() bool {
	return slices.ContainsFunc(s.Members, func(m Member) bool { return !m.Filling })
}

// Loads computes each node's Load from a complete list of sets: the number
// of sets listing the node as a member (leaving nodes do not count).
func Loads(sets []Set) map[string]int {
	out := make(map[string]int)
	for _, s := range sets {
		seen := make(map[string]struct{}, len(s.Members))
		for _, m := range s.Members {
			if _, dup := seen[m.ID]; dup {
				continue
			}
			seen[m.ID] = struct{}{}
			out[m.ID]++
		}
	}
	return out
}

// Alive reports whether n takes part in replication: Active or Draining.
func Alive(n Node) bool { return n.State == Active || n.State == Draining }

// gone reports whether a member is out for good: retired, or unknown to the
// caller's node list.
func gone(idx map[string]Node, id string) bool {
	n, ok := idx[id]
	return !ok || n.State == Retired
}

// alive reports whether node id is known and Active or Draining.
func alive(idx map[string]Node, id string) bool {
	n, ok := idx[id]
	return ok && Alive(n)
}

// currentAlive reports whether some member is current and alive.
func currentAlive(s Set, idx map[string]Node) bool {
	return slices.ContainsFunc(s.Members, func(m Member) bool { return !m.Filling && alive(idx, m.ID) })
}

// Outcome says what Normalize did besides returning the set.
type Outcome struct {
	// Changed: the set differs from the input.
	Changed bool
	// Lost: the set's current members were all retired (or unknown) and its
	// filling members were made current: writes acknowledged on the
	// retired nodes only are lost. The caller logs it loudly.
	Lost bool
	// Waiting: no current member is alive. The set is kept as it is (a
	// down member may hold the only current copy) and the user waits for
	// it; clients are told to retry.
	Waiting bool
}

// Normalize restores s to the placement rules after any change to it or to
// the nodes, and returns the result with what it did:
//
//  1. Members and leaving entries that are retired or unknown are dropped.
//     If that leaves no current member (Outcome.Lost: the retired nodes
//     held the only current copies), the remaining members are made
//     current, or, when none remains, the set starts afresh as Assign would
//     choose it (its leaving nodes keep their handoff).
//  2. While some member is current and alive (Active or Draining), members
//     that are not alive (Down, Pending) move to Leaving: they may hold
//     revisions the others lack and hand them off later. A set whose only
//     current members are down is left as it is (Outcome.Waiting).
//  3. While some member is current and alive, filling replacements (with
//     fresh epochs from seq) are appended until the set has r members that
//     are Active and not marked Leave, choosing as Assign does for replica
//     slots among Active nodes with spare capacity that are neither
//     members nor leaving (a node still owing the user a handoff is not
//     added back before the handoff is done).
//  4. The primary is the first current alive member, or when none is alive
//     the first current member; it is moved to the front. So the primary is
//     never a filling member while the set has a current one, which every
//     function of this package preserves (only retirement can end it, see 1).
//
// r < 1 is treated as 1. Normalize of its own result (with loads updated)
// changes nothing.
func Normalize(s Set, nodes []Node, r int, cfg Policy, seq *uint64) (Set, Outcome) {
	return normalize(s, index(nodes), r, cfg.withDefaults(), seq)
}

func normalize(s Set, idx map[string]Node, r int, p Policy, seq *uint64) (Set, Outcome) {
	r = max(r, 1)
	var oc Outcome
	out := Set{Members: make([]Member, 0, len(s.Members)+r)}
	removed := false
	for _, m := range s.Members {
		if gone(idx, m.ID) || out.Find(m.ID) >= 0 {
			removed = true
			continue
		}
		out.Members = append(out.Members, m)
	}
	for _, id := range s.Leaving {
		if !gone(idx, id) && !out.Names(id) {
			out.Leaving = append(out.Leaving, id)
		}
	}
	if removed && !out.Current() {
		// Retirement took every current copy: the rest is all there is.
		for i := range out.Members {
			out.Members[i].Filling = false
		}
		if len(out.Members) == 0 {
			ex := make(map[string]bool, len(out.Leaving))
			for _, id := range out.Leaving {
				ex[id] = true
			}
			out = NewSet(choose(candidates(idx, ex), r, true, map[string]bool{}, p))
		}
		oc.Lost = true
	}
	if currentAlive(out, idx) {
		kept := out.Members[:0:0]
		for _, m := range out.Members {
			if alive(idx, m.ID) {
				kept = append(kept, m)
			} else {
				out.Leaving = append(out.Leaving, m.ID)
			}
		}
		out.Members = kept
		var serving []string
		for _, m := range out.Members {
			if idx[m.ID].State == Active && !m.Leave {
				serving = append(serving, m.ID)
			}
		}
		exclude := append(out.IDs(), out.Leaving...)
		for _, id := range replacements(exclude, serving, idx, r-len(serving), p) {
			out.Members = append(out.Members, Member{ID: id, Filling: true, Epoch: nextEpoch(seq)})
		}
	} else {
		oc.Waiting = len(out.Members) > 0
	}
	out = pickPrimary(out, idx)
	if len(out.Leaving) == 0 {
		out.Leaving = nil
	}
	oc.Changed = !out.Equal(s)
	return out, oc
}

// nextEpoch draws the next epoch from seq.
func nextEpoch(seq *uint64) uint64 {
	*seq++
	return *seq
}

// pickPrimary moves the first current alive member (or, when none is alive,
// the first current member) to the front.
func pickPrimary(s Set, idx map[string]Node) Set {
	i := slices.IndexFunc(s.Members, func(m Member) bool { return !m.Filling && alive(idx, m.ID) })
	if i < 0 {
		i = slices.IndexFunc(s.Members, func(m Member) bool { return !m.Filling })
	}
	if i > 0 {
		m := s.Members[i]
		copy(s.Members[1:i+1], s.Members[:i])
		s.Members[0] = m
	}
	return s
}

// replacements picks need new members, excluding every ID in exclude, with
// the operators of keep counted as used.
func replacements(exclude, keep []string, idx map[string]Node, need int, p Policy) []string {
	if need <= 0 {
		return nil
	}
	ex := make(map[string]bool, len(exclude))
	for _, id := range exclude {
		ex[id] = true
	}
	used := make(map[string]bool)
	for _, id := range keep {
		used[idx[id].Operator] = true
	}
	return choose(candidates(idx, ex), need, false, used, p)
}

// MarkUnconfirmed applies a write that caller acknowledged without the
// confirmation of every other member: each member other than caller and
// those in confirmed becomes filling with a fresh epoch from seq (a filling
// one gets a fresh epoch too, so a backfill it started before the write
// cannot make it current). It returns s unchanged and false when caller is
// not a current member (it must not acknowledge the write). The caller
// normalizes the result.
func MarkUnconfirmed(s Set, caller string, confirmed []string, seq *uint64) (Set, bool) {
	i := s.Find(caller)
	if i < 0 || s.Members[i].Filling {
		return s, false
	}
	out := s.Clone()
	for j := range out.Members {
		m := &out.Members[j]
		if m.ID == caller || slices.Contains(confirmed, m.ID) {
			continue
		}
		m.Filling, m.Epoch = true, nextEpoch(seq)
	}
	return out, true
}

// MarkFilled applies a completed backfill: member id, filling under epoch,
// pulled the user from source. It makes id current and returns true iff id
// is a filling member whose epoch is still epoch and source is a current
// member other than id; otherwise s is returned unchanged. The caller
// normalizes the result.
func MarkFilled(s Set, id string, epoch uint64, source string) (Set, bool) {
	i, j := s.Find(id), s.Find(source)
	if i < 0 || j < 0 || i == j || !s.Members[i].Filling || s.Members[i].Epoch != epoch || s.Members[j].Filling {
		return s, false
	}
	out := s.Clone()
	out.Members[i].Filling = false
	return out, true
}

// HandOff applies a completed handoff: member id, current, pulled from
// source, a leaving node, everything source held. It removes source from
// Leaving and returns true iff source is leaving and id a current member.
// The caller normalizes the result.
func HandOff(s Set, id, source string) (Set, bool) {
	i := s.Find(id)
	if i < 0 || s.Members[i].Filling || !s.IsLeaving(source) {
		return s, false
	}
	out := s.Clone()
	out.Leaving = slices.DeleteFunc(out.Leaving, func(l string) bool { return l == source })
	if len(out.Leaving) == 0 {
		out.Leaving = nil
	}
	return out, true
}

// Index is a node list indexed by ID, for callers that check many sets
// against one list (IDs that occur more than once are dropped, as every
// function of this package does).
type Index struct{ m map[string]Node }

// NewIndex indexes nodes.
func NewIndex(nodes []Node) Index { return Index{m: index(nodes)} }

// ReadyToLeave is the package function ReadyToLeave over x's nodes.
func (x Index) ReadyToLeave(s Set, id string) bool { return readyToLeave(s, id, x.m) }

// CanTransfer is the package function CanTransfer over x's nodes.
func (x Index) CanTransfer(s Set, t Transfer) bool { return canTransfer(s, t, x.m) }

// ReadyToLeave reports whether member id, which is leaving the set (its
// node Draining, or the member marked Leave), may be dropped now: some
// other member is current and alive, and every other member that is Active
// and not itself leaving is current (the replacements have their backfill).
func ReadyToLeave(s Set, id string, nodes []Node) bool {
	return readyToLeave(s, id, index(nodes))
}

func readyToLeave(s Set, id string, idx map[string]Node) bool {
	i := s.Find(id)
	if i < 0 {
		return false
	}
	if n, ok := idx[id]; !s.Members[i].Leave && (!ok || n.State != Draining) {
		return false
	}
	source := false
	for j, m := range s.Members {
		if j == i {
			continue
		}
		n, ok := idx[m.ID]
		if !m.Filling && ok && Alive(n) {
			source = true
		}
		if m.Filling && ok && n.State == Active && !m.Leave {
			return false
		}
	}
	return source
}

// FinishLeave drops member id into Leaving when ReadyToLeave holds, and
// reports whether it did. The caller normalizes the result.
func FinishLeave(s Set, id string, nodes []Node) (Set, bool) {
	idx := index(nodes)
	if !readyToLeave(s, id, idx) {
		return s, false
	}
	out := s.Clone()
	out.Members = slices.DeleteFunc(out.Members, func(m Member) bool { return m.ID == id })
	out.Leaving = append(out.Leaving, id)
	return out, true
}
