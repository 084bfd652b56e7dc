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
	// result must still be committed; Normalize adds replicas later.
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
	// but receives none, and leaves each set once the replacements are
	// current (FinishLeave).
	Draining
	// Down: silent past the heartbeat deadline; leaves a set only while
	// another member is current and alive (Normalize).
	Down
	// Retired: permanently out of service; dropped from every set and
	// leaving list (Normalize).
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
	// Load is the number of users whose replica set lists this node as a
	// member (primary, replica, filling or leaving-marked, not in the
	// leaving list); each user counts once. See Loads.
	Load int
	// State is the node's lifecycle state.
	State State
	// Added is the value of the caller's deterministic clock (the directory
	// uses the raft index) when the node was approved. It drives the gradual
	// release of capacity and the new-node rule.
	Added uint64
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
// and should be committed, and Normalize restores r members once capacity
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
