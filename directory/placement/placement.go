package placement

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Sentinel errors returned by the policy functions; match them with errors.Is.
var (
	// ErrNoCapacity means no candidate node can take the user: no Active node
	// has Load < Capacity (outside the user's current set).
	ErrNoCapacity = errors.New("placement: no node has capacity")
	// ErrUnderReplicated accompanies a usable but short result: fewer than R
	// candidates existed, so the returned set has fewer than R nodes. The
	// result must still be committed; Repair will add replicas later.
	ErrUnderReplicated = errors.New("placement: fewer nodes than the replica count")
	// ErrBadReplicaCount means the replica count R was below 1.
	ErrBadReplicaCount = errors.New("placement: replica count must be at least 1")
	// ErrInvalidPolicy means Policy.Validate failed.
	ErrInvalidPolicy = errors.New("placement: invalid policy")
)

// State is the lifecycle state of a storage node as the directory records it.
type State uint8

// Node states. Only Active nodes receive users. The numeric values are part of
// the directory's snapshot format: append new states, never renumber.
const (
	// Pending: registered, waiting for admin approval; holds no users.
	Pending State = iota
	// Active: approved and live; may be chosen as primary or replica.
	Active
	// Draining: being emptied by an admin; still serves the users it holds
	// but receives none and is removed from sets once a replacement exists.
	Draining
	// Down: silent past the heartbeat deadline; removed from sets by Repair.
	Down
	// Retired: permanently out of service; removed from sets by Repair.
	Retired
)

// String returns the lower-case name of s ("pending", "active", ...), or
// "state(N)" for an unknown value.
func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Active:
		return "active"
	case Draining:
		return "draining"
	case Down:
		return "down"
	case Retired:
		return "retired"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Node is the directory's view of one storage node, as far as placement needs
// it. IDs must be unique within a node list: entries whose ID occurs more than
// once are ignored by every function of this package (treated as absent), so
// the result does not depend on which duplicate comes first.
type Node struct {
	// ID is the node's identity (its libp2p peer ID); also the last tie-break.
	ID string
	// Operator names who runs the node; replicas of a user are spread over
	// distinct operators where possible.
	Operator string
	// Capacity is the maximum Load the node accepts (users). Zero or negative
	// means the node takes no users.
	Capacity int
	// Load is the number of users whose replica set lists this node in any
	// position (primary, replica, or a draining node still listed during a
	// hand-over); each user counts once. See Loads.
	Load int
	// State is the node's lifecycle state.
	State State
	// Added is the value of the caller's deterministic clock (the directory
	// uses the raft index) when the node was approved. It drives the gradual
	// release of capacity and the new-node rule.
	Added uint64
}

// Assignment is a user's replica set. Nodes[0] is the primary, the rest are
// replicas in order of preference for promotion.
type Assignment struct {
	// User is the account name.
	User string
	// Nodes lists node IDs, distinct, primary first.
	Nodes []string
}

// Primary returns the first node of the set, or "" if the set is empty.
func (a Assignment) Primary() string {
	if len(a.Nodes) == 0 {
		return ""
	}
	return a.Nodes[0]
}

// Clone returns a deep copy of a.
func (a Assignment) Clone() Assignment {
	return Assignment{User: a.User, Nodes: slices.Clone(a.Nodes)}
}

// Policy holds the tunables of the allocation policy plus Now, the caller's
// deterministic clock. A zero tunable means "use the default"; Now has no
// default and must be set on every call (the directory passes the raft index
// of the entry being applied).
type Policy struct {
	// ReleaseStep is how many users of a node's capacity are released per
	// step. Default 100. Use a value >= every Capacity to disable gradual
	// release.
	ReleaseStep int
	// ReleaseInterval is how many clock units (raft entries) pass between two
	// release steps of a node. Default 1000.
	ReleaseInterval uint64
	// NewNodeWindow is how many clock units after Added a node counts as new
	// and is not made primary while an established candidate exists.
	// Default 1000. Set it to 1 to make nodes established right after Added.
	NewNodeWindow uint64
	// Now is the current value of the deterministic clock (same unit as
	// Node.Added).
	Now uint64
}

// Policy defaults used for zero fields.
const (
	DefaultReleaseStep     = 100
	DefaultReleaseInterval = 1000
	DefaultNewNodeWindow   = 1000
)

// DefaultPolicy returns the default tunables with Now = 0.
func DefaultPolicy() Policy {
	return Policy{
		ReleaseStep:     DefaultReleaseStep,
		ReleaseInterval: DefaultReleaseInterval,
		NewNodeWindow:   DefaultNewNodeWindow,
	}
}

// Validate reports whether the tunables are usable. Zero fields are valid
// (they take defaults); negative ReleaseStep is not.
func (p Policy) Validate() error {
	if p.ReleaseStep < 0 {
		return fmt.Errorf("%w: ReleaseStep %d < 0", ErrInvalidPolicy, p.ReleaseStep)
	}
	return nil
}

// withDefaults fills zero tunables.
func (p Policy) withDefaults() Policy {
	if p.ReleaseStep <= 0 {
		p.ReleaseStep = DefaultReleaseStep
	}
	if p.ReleaseInterval == 0 {
		p.ReleaseInterval = DefaultReleaseInterval
	}
	if p.NewNodeWindow == 0 {
		p.NewNodeWindow = DefaultNewNodeWindow
	}
	return p
}

// Released returns n's currently released capacity under p:
// min(Capacity, ReleaseStep × (1 + (Now − Added) / ReleaseInterval)).
func (p Policy) Released(n Node) int {
	p = p.withDefaults()
	if n.Capacity <= 0 {
		return 0
	}
	var age uint64
	if p.Now > n.Added {
		age = p.Now - n.Added
	}
	steps := age/p.ReleaseInterval + 1
	step := uint64(p.ReleaseStep)
	if steps > uint64(n.Capacity)/step+1 { // avoid overflow; already >= Capacity
		return n.Capacity
	}
	return int(min(uint64(n.Capacity), steps*step))
}

// IsNew reports whether n is still within the new-node window at p.Now.
func (p Policy) IsNew(n Node) bool {
	p = p.withDefaults()
	return p.Now < n.Added || p.Now-n.Added < p.NewNodeWindow
}

// CheckNodes reports the first duplicated node ID or empty ID in nodes, for
// callers that want to reject bad input instead of having it ignored.
func CheckNodes(nodes []Node) error {
	seen := make(map[string]struct{}, len(nodes))
	for _, n := range nodes {
		if n.ID == "" {
			return errors.New("placement: node with empty ID")
		}
		if _, dup := seen[n.ID]; dup {
			return fmt.Errorf("placement: duplicate node ID %q", n.ID)
		}
		seen[n.ID] = struct{}{}
	}
	return nil
}

// Loads computes each node's Load from a complete list of assignments: the
// number of assignments listing the node (a node listed twice in one set
// counts once).
func Loads(as []Assignment) map[string]int {
	out := make(map[string]int)
	for _, a := range as {
		seen := make(map[string]struct{}, len(a.Nodes))
		for _, id := range a.Nodes {
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = struct{}{}
			out[id]++
		}
	}
	return out
}

// index maps IDs to nodes, dropping empty and duplicated IDs.
func index(nodes []Node) map[string]Node {
	idx := make(map[string]Node, len(nodes))
	var dup map[string]bool
	for _, n := range nodes {
		if n.ID == "" {
			continue
		}
		if _, ok := idx[n.ID]; ok {
			if dup == nil {
				dup = make(map[string]bool)
			}
			dup[n.ID] = true
			continue
		}
		idx[n.ID] = n
	}
	for id := range dup {
		delete(idx, id)
	}
	return idx
}

// candidates returns the Active nodes with Load < Capacity not in exclude,
// sorted by ID so that later choices never depend on input order.
func candidates(idx map[string]Node, exclude map[string]bool) []Node {
	out := make([]Node, 0, len(idx))
	for _, n := range idx {
		if n.State != Active || n.Load >= n.Capacity || exclude[n.ID] {
			continue
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// better reports whether a should take the slot before b. primary selects the
// primary-slot keys; used holds the operators already in the set.
func better(a, b Node, primary bool, used map[string]bool, p Policy) bool {
	if !primary {
		an, bn := !used[a.Operator], !used[b.Operator]
		if an != bn {
			return an
		}
	} else {
		an, bn := !p.IsNew(a), !p.IsNew(b)
		if an != bn {
			return an
		}
	}
	ar, br := a.Load < p.Released(a), b.Load < p.Released(b)
	if ar != br {
		return ar
	}
	// (a.Load+1)/a.Capacity vs (b.Load+1)/b.Capacity, exactly.
	l := int64(a.Load+1) * int64(b.Capacity)
	r := int64(b.Load+1) * int64(a.Capacity)
	if l != r {
		return l < r
	}
	return a.ID < b.ID
}

// choose fills up to need slots from cands (which it does not modify),
// treating the first slot as the primary slot when primaryFirst is set. used
// holds operators already in the set and is updated.
func choose(cands []Node, need int, primaryFirst bool, used map[string]bool, p Policy) []string {
	rest := slices.Clone(cands)
	var out []string
	for i := 0; i < need && len(rest) > 0; i++ {
		primary := primaryFirst && i == 0
		best := 0
		for j := 1; j < len(rest); j++ {
			if better(rest[j], rest[best], primary, used, p) {
				best = j
			}
		}
		n := rest[best]
		out = append(out, n.ID)
		used[n.Operator] = true
		rest = slices.Delete(rest, best, best+1)
	}
	return out
}

// Assign chooses the replica set of a new user: up to r distinct Active nodes
// with spare capacity, primary first, by the rules in the package
// documentation.
//
// It returns ErrBadReplicaCount if r < 1 and ErrNoCapacity (with a nil slice)
// if no node can take the user. If only k, 0 < k < r, nodes can take the user,
// it returns those k nodes together with ErrUnderReplicated: the set is valid
// and should be committed, and Repair restores r members once capacity
// appears. Assign does not change the loads; the caller adds 1 to the Load of
// every returned node when it commits the assignment.
func Assign(nodes []Node, r int, cfg Policy) ([]string, error) {
	if r < 1 {
		return nil, ErrBadReplicaCount
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := cfg.withDefaults()
	cands := candidates(index(nodes), nil)
	out := choose(cands, r, true, map[string]bool{}, p)
	switch {
	case len(out) == 0:
		return nil, ErrNoCapacity
	case len(out) < r:
		return out, fmt.Errorf("%w: %d of %d", ErrUnderReplicated, len(out), r)
	}
	return out, nil
}

// classify splits the distinct members of set into Active ones, leaving ones
// (Draining, or forced) and the rest (Down, Retired, Pending, unknown), each
// in set order.
func classify(set []string, idx map[string]Node, forced string) (healthy, leaving, dead []string) {
	seen := make(map[string]bool, len(set))
	for _, id := range set {
		if seen[id] {
			continue
		}
		seen[id] = true
		n, ok := idx[id]
		switch {
		case id == forced && ok:
			leaving = append(leaving, id)
		case ok && n.State == Active:
			healthy = append(healthy, id)
		case ok && n.State == Draining:
			leaving = append(leaving, id)
		default:
			dead = append(dead, id)
		}
	}
	return healthy, leaving, dead
}

// replacements picks need new replicas for a set, excluding every ID in set,
// with the operators of keep counted as used. primaryFirst applies the
// primary-slot keys to the first pick (used when no current member can be
// primary).
func replacements(set, keep []string, idx map[string]Node, need int, primaryFirst bool, p Policy) []string {
	if need <= 0 {
		return nil
	}
	exclude := make(map[string]bool, len(set))
	for _, id := range set {
		exclude[id] = true
	}
	used := make(map[string]bool)
	for _, id := range keep {
		used[idx[id].Operator] = true
	}
	return choose(candidates(idx, exclude), need, primaryFirst, used, p)
}

// Repair returns a's set restored to health, and whether it differs from a:
//
//   - Active members are kept, in order; the first of them is the primary (so
//     a failed primary is replaced by the first live replica).
//   - Down, Retired, Pending and unknown members are dropped.
//   - Draining members are dropped when at least one Active member remains;
//     otherwise they are the user's only live copies and are kept (first, in
//     order) until a later Repair finds the replacement in place.
//   - Replacement replicas, never a node already in a (even a dead one), are
//     appended until the set has r Active members or candidates run out. If
//     no member is kept, the first replacement is chosen with the primary
//     rules.
//   - If the result would be empty (nothing live, no replacement), a is
//     returned unchanged: the user keeps its set until a node returns or
//     capacity appears.
//
// r < 1 is treated as 1. Repair does not change loads; the caller adjusts
// the Load of added and dropped nodes when it commits the result. Calling
// Repair again on its own result (with loads updated) changes nothing unless
// it just kept a Draining member, in which case the second call drops it.
func Repair(a Assignment, nodes []Node, r int, cfg Policy) (Assignment, bool) {
	r = max(r, 1)
	p := cfg.withDefaults() // a negative ReleaseStep takes the default here
	idx := index(nodes)
	healthy, leaving, _ := classify(a.Nodes, idx, "")
	keep := healthy
	if len(healthy) == 0 {
		keep = leaving
	}
	add := replacements(a.Nodes, healthy, idx, r-len(healthy), len(keep) == 0, p)
	out := append(slices.Clone(keep), add...)
	if len(out) == 0 || slices.Equal(out, a.Nodes) {
		return a.Clone(), false
	}
	return Assignment{User: a.User, Nodes: out}, true
}

// Move is the two-step plan that takes one user off a draining node.
type Move struct {
	// User is the account name.
	User string
	// Add is step one: the old set (unchanged, the draining node keeping its
	// place) followed by the replacement replicas. Commit it first and let
	// replication fill the new replicas.
	Add []string
	// Final is step two: Add without the draining node, with the first
	// Active member moved to the front if the head is not Active.
	Final []string
}

// DrainOne plans moving a's user off node nodeID (which need not be marked
// Draining yet; it is treated as leaving). Replacements are added until the
// set, without nodeID, has r Active members. If nodeID is not in the set, Add
// and Final both equal the set. If no other member is Active and no
// replacement exists, it returns ErrNoCapacity: dropping nodeID would leave the
// user without a live node.
func DrainOne(a Assignment, nodeID string, nodes []Node, r int, cfg Policy) (Move, error) {
	r = max(r, 1)
	if err := cfg.Validate(); err != nil {
		return Move{}, err
	}
	p := cfg.withDefaults()
	mv := Move{User: a.User}
	if !slices.Contains(a.Nodes, nodeID) {
		mv.Add, mv.Final = slices.Clone(a.Nodes), slices.Clone(a.Nodes)
		return mv, nil
	}
	idx := index(nodes)
	healthy, _, _ := classify(a.Nodes, idx, nodeID)
	add := replacements(a.Nodes, healthy, idx, r-len(healthy), false, p)
	if len(healthy) == 0 && len(add) == 0 {
		return Move{}, fmt.Errorf("%w: user %q has no other live node than %q", ErrNoCapacity, a.User, nodeID)
	}
	mv.Add = append(slices.Clone(a.Nodes), add...)
	for _, id := range mv.Add {
		if id != nodeID {
			mv.Final = append(mv.Final, id)
		}
	}
	if n, ok := idx[mv.Final[0]]; !ok || n.State != Active {
		for i, id := range mv.Final {
			if n, ok := idx[id]; ok && n.State == Active {
				copy(mv.Final[1:i+1], mv.Final[:i])
				mv.Final[0] = id
				break
			}
		}
	}
	return mv, nil
}

// Drain plans moving every user of assignments that lists nodeID off that
// node, in ascending user order, counting the replicas it adds against the
// loads of later users (so no node goes over capacity across the whole plan).
// Assignments not listing nodeID are skipped. Users that cannot be moved
// safely (see DrainOne) are left out of the result and reported together by
// an error wrapping ErrNoCapacity; the returned moves are still valid.
func Drain(assignments []Assignment, nodeID string, nodes []Node, r int, cfg Policy) ([]Move, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	users := make([]Assignment, 0, len(assignments))
	for _, a := range assignments {
		if slices.Contains(a.Nodes, nodeID) {
			users = append(users, a)
		}
	}
	slices.SortStableFunc(users, func(a, b Assignment) int { return strings.Compare(a.User, b.User) })
	work := slices.Clone(nodes)
	pos := make(map[string]int, len(work))
	for i, n := range work {
		pos[n.ID] = i
	}
	var moves []Move
	stuck := 0
	for _, a := range users {
		mv, err := DrainOne(a, nodeID, work, r, cfg)
		if err != nil {
			stuck++
			continue
		}
		for _, id := range mv.Add[len(a.Nodes):] {
			work[pos[id]].Load++
		}
		moves = append(moves, mv)
	}
	if stuck > 0 {
		return moves, fmt.Errorf("%w: %d users of %q have no other live node", ErrNoCapacity, stuck, nodeID)
	}
	return moves, nil
}
