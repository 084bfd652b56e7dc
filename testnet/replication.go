package testnet

import (
	"context"

	"github.com/hce-sync/hce/node/dirclient"
	"github.com/hce-sync/hce/replication"
)

// dirMembership is replication.Membership over the node's directory
// client: replica sets and leaving members from the assignment protocol
// (cached for the membership TTL), assigned users from the users
// protocol.
type dirMembership struct{ dc *dirclient.Client }

var _ replication.FreshMembership = dirMembership{}

// ReplicaSet implements replication.Membership.
func (m dirMembership) ReplicaSet(ctx context.Context, user string) (replication.ReplicaSet, error) {
	nodes, leaving, err := m.dc.Assignment(ctx, user)
	if err != nil {
		return replication.ReplicaSet{}, err
	}
	return replication.SetFromDirectory(nodes, leaving), nil
}

// FreshReplicaSet implements replication.FreshMembership: the cached set
// is dropped (for the authenticator too) and the directory asked.
func (m dirMembership) FreshReplicaSet(ctx context.Context, user string) (replication.ReplicaSet, error) {
	m.dc.InvalidateUsers(user)
	return m.ReplicaSet(ctx, user)
}

// AssignedUsers implements replication.Membership.
func (m dirMembership) AssignedUsers(ctx context.Context, after string, limit int) ([]replication.UserReplicas, bool, error) {
	us, more, _, err := m.dc.AssignedUsers(ctx, after, limit)
	if err != nil {
		return nil, false, err
	}
	out := make([]replication.UserReplicas, 0, len(us))
	for _, u := range us {
		out = append(out, replication.UserReplicas{User: u.User, Set: replication.SetFromDirectory(u.Nodes, u.Leaving)})
	}
	return out, more, nil
}
