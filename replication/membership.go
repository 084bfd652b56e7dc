package replication

import (
	"context"
	"slices"
	"sort"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
)

// Member is one member of a user's replica set with its state as the
// directory keeps it (see dirproto.AssignedNode).
type Member struct {
	Peer peer.ID
	// Filling is true while the member may lack acknowledged writes of
	// the user; a current member (false) holds all of them.
	Filling bool
	// Epoch counts how often the member became filling; a Filled report
	// names the epoch it completes.
	Epoch uint64
	// Down is true while the directory considers the node down.
	Down bool
}

// ReplicaSet is a user's replica set as the directory assigns it: the
// members, primary first, and the leaving members, nodes that left the
// set and may still hold revisions the members lack (they hand them off
// before they delete anything).
type ReplicaSet struct {
	Members []Member
	Leaving []peer.ID
}

// Member returns p's entry in the set and whether p is a member.
func (s ReplicaSet) Member(p peer.ID) (Member, bool) {
	for _, m := range s.Members {
		if m.Peer == p {
			return m, true
		}
	}
	return Member{}, false
}

// IsMember reports whether p is a member (current or filling).
func (s ReplicaSet) IsMember(p peer.ID) bool {
	_, ok := s.Member(p)
	return ok
}

// IsCurrent reports whether p is a current (not filling) member.
func (s ReplicaSet) IsCurrent(p peer.ID) bool {
	m, ok := s.Member(p)
	return ok && !m.Filling
}

// IsLeaving reports whether p is a leaving member and not a member.
func (s ReplicaSet) IsLeaving(p peer.ID) bool {
	return slices.Contains(s.Leaving, p) && !s.IsMember(p)
}

// Holds reports whether p holds the user's data by the directory's
// account: it is a member or a leaving member.
func (s ReplicaSet) Holds(p peer.ID) bool { return s.IsMember(p) || slices.Contains(s.Leaving, p) }

// Peers lists the members' peer ids, primary first.
func (s ReplicaSet) Peers() []peer.ID {
	out := make([]peer.ID, len(s.Members))
	for i, m := range s.Members {
		out[i] = m.Peer
	}
	return out
}

// Clone returns a deep copy of s.
func (s ReplicaSet) Clone() ReplicaSet {
	return ReplicaSet{Members: slices.Clone(s.Members), Leaving: slices.Clone(s.Leaving)}
}

// SetFromDirectory converts the directory's answer (dirproto's nodes and
// leaving nodes) into a ReplicaSet; entries whose peer id does not parse
// are left out (PeerID, or ID when PeerID is empty).
func SetFromDirectory(nodes, leaving []dirproto.AssignedNode) ReplicaSet {
	id := func(n dirproto.AssignedNode) (peer.ID, bool) {
		s := n.PeerID
		if s == "" {
			s = n.ID
		}
		p, err := peer.Decode(s)
		return p, err == nil
	}
	var out ReplicaSet
	for _, n := range nodes {
		if p, ok := id(n); ok {
			out.Members = append(out.Members, Member{Peer: p, Filling: n.Filling, Epoch: n.Epoch, Down: n.Down})
		}
	}
	for _, n := range leaving {
		if p, ok := id(n); ok {
			out.Leaving = append(out.Leaving, p)
		}
	}
	return out
}

// Membership says which nodes hold which users (the directory's replica
// sets, as libp2p peer ids). Implementations are safe for concurrent use;
// ReplicaSet is called on every request and notice, so it should be
// served from a cache (at most Config.MembershipTTL old: the rules that
// keep acknowledged writes on every current member count on it).
type Membership interface {
	// ReplicaSet returns the replica set of user. An unknown user has an
	// empty set. It returns an error when it cannot tell (the directory
	// unreachable).
	ReplicaSet(ctx context.Context, user string) (ReplicaSet, error)
	// AssignedUsers returns up to limit users whose replica set contains
	// this node as a member or as a leaving member, in ascending order of
	// name after after ("" = from the start), with their replica sets;
	// more reports that there may be further pages. A nil error means a
	// positive answer of the directory: a user it does not list is not
	// held by this node.
	AssignedUsers(ctx context.Context, after string, limit int) (users []UserReplicas, more bool, err error)
}

// FreshMembership is a Membership that can also ask the directory for a
// replica set past its cache (and refresh the cache with the answer). A
// write waiting for its replicas uses it when a member refuses it as "not
// shared": one of the two views is stale, and if it is this node's (the
// user moved off it, or it was made filling) the write fails at once
// (ErrNotCurrent, a 401 for the client) instead of after ReplicaWait.
type FreshMembership interface {
	Membership
	FreshReplicaSet(ctx context.Context, user string) (ReplicaSet, error)
}

// UserReplicas is a user with its replica set.
type UserReplicas struct {
	User string
	Set  ReplicaSet
}

// Reporter sends this node's replication reports to the directory
// (dirproto.ProtoReport); the node's directory client implements it. Report
// returns once the reports are committed, or an error when that is not
// known to have happened. After a report with Unconfirmed items, the
// Membership's next ReplicaSet of those users must reflect the commit
// (the directory client drops its cached sets of them).
type Reporter interface {
	Report(ctx context.Context, req dirproto.ReportRequest) (dirproto.ReportResponse, error)
}

// StaticMembership is a Membership held in memory and changed by its owner
// (tests, or operators with fixed replica sets). The zero value has no
// users; it is safe for concurrent use.
type StaticMembership struct {
	// Self is the node whose assigned users AssignedUsers lists.
	Self peer.ID

	mu    sync.RWMutex
	users map[string]ReplicaSet
	fail  error
}

var _ Membership = (*StaticMembership)(nil)

// NewStaticMembership returns a StaticMembership for node self.
func NewStaticMembership(self peer.ID) *StaticMembership {
	return &StaticMembership{Self: self}
}

// Set makes peers the replica set of user, every one a current member
// with no leaving members (an empty set removes the user).
func (m *StaticMembership) Set(user string, peers ...peer.ID) {
	var s ReplicaSet
	for _, p := range peers {
		s.Members = append(s.Members, Member{Peer: p})
	}
	m.SetReplicaSet(user, s)
}

// SetReplicaSet makes s the replica set of user (one with neither
// members nor leaving members removes the user).
func (m *StaticMembership) SetReplicaSet(user string, s ReplicaSet) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(s.Members) == 0 && len(s.Leaving) == 0 {
		delete(m.users, user)
		return
	}
	if m.users == nil {
		m.users = map[string]ReplicaSet{}
	}
	m.users[user] = s.Clone()
}

// SetError makes every call fail with err (nil: answer again), as a
// directory that cannot be reached.
func (m *StaticMembership) SetError(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

// ReplicaSet implements Membership.
func (m *StaticMembership) ReplicaSet(_ context.Context, user string) (ReplicaSet, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.fail != nil {
		return ReplicaSet{}, m.fail
	}
	return m.users[user].Clone(), nil
}

// AssignedUsers implements Membership.
func (m *StaticMembership) AssignedUsers(_ context.Context, after string, limit int) ([]UserReplicas, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.fail != nil {
		return nil, false, m.fail
	}
	var names []string
	for u, s := range m.users {
		if u > after && s.Holds(m.Self) {
			names = append(names, u)
		}
	}
	sort.Strings(names)
	more := false
	if limit > 0 && len(names) > limit {
		names, more = names[:limit], true
	}
	out := make([]UserReplicas, len(names))
	for i, u := range names {
		out[i] = UserReplicas{User: u, Set: m.users[u].Clone()}
	}
	return out, more, nil
}
