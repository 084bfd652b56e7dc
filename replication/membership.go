package replication

import (
	"context"
	"slices"
	"sort"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Membership says which nodes hold which users (the directory's replica
// sets, as libp2p peer ids). Implementations are safe for concurrent use;
// Replicas is called on every request and notice, so it should be served
// from a cache.
type Membership interface {
	// Replicas returns the replica set of user (this node included when it
	// is a replica). An unknown user has an empty set.
	Replicas(ctx context.Context, user string) ([]peer.ID, error)
	// AssignedUsers returns up to limit users whose replica set contains
	// this node, in ascending order of name after after ("" = from the
	// start), with their replica sets; more reports that there may be
	// further pages.
	AssignedUsers(ctx context.Context, after string, limit int) (users []UserReplicas, more bool, err error)
}

// UserReplicas is a user with its replica set.
type UserReplicas struct {
	User  string
	Peers []peer.ID
}

// StaticMembership is a Membership held in memory and changed by its owner
// (tests, or operators with fixed replica sets). The zero value has no
// users; it is safe for concurrent use.
type StaticMembership struct {
	// Self is the node whose assigned users AssignedUsers lists.
	Self peer.ID

	mu    sync.RWMutex
	users map[string][]peer.ID
}

var _ Membership = (*StaticMembership)(nil)

// NewStaticMembership returns a StaticMembership for node self.
func NewStaticMembership(self peer.ID) *StaticMembership {
	return &StaticMembership{Self: self}
}

// Set makes peers the replica set of user (an empty set removes the user).
func (m *StaticMembership) Set(user string, peers ...peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(peers) == 0 {
		delete(m.users, user)
		return
	}
	if m.users == nil {
		m.users = map[string][]peer.ID{}
	}
	m.users[user] = slices.Clone(peers)
}

// Replicas implements Membership.
func (m *StaticMembership) Replicas(_ context.Context, user string) ([]peer.ID, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.users[user]), nil
}

// AssignedUsers implements Membership.
func (m *StaticMembership) AssignedUsers(_ context.Context, after string, limit int) ([]UserReplicas, bool, error) {
	m.mu.RLock()
	var names []string
	for u, ps := range m.users {
		if u > after && slices.Contains(ps, m.Self) {
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
		out[i] = UserReplicas{User: u, Peers: slices.Clone(m.users[u])}
	}
	m.mu.RUnlock()
	return out, more, nil
}
