package testnet

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/node/dirclient"
	"github.com/hce-sync/hce/replication"
)

// dirMembership is replication.Membership over the node's directory
// client: replica sets from the assignment protocol (cached for the
// membership TTL), assigned users from the users protocol.
type dirMembership struct{ dc *dirclient.Client }

var _ replication.Membership = dirMembership{}

func peersOf(ns []dirproto.AssignedNode) []peer.ID {
	out := make([]peer.ID, 0, len(ns))
	for _, n := range ns {
		s := n.PeerID
		if s == "" {
			s = n.ID
		}
		if id, err := peer.Decode(s); err == nil {
			out = append(out, id)
		}
	}
	return out
}

// Replicas implements replication.Membership.
func (m dirMembership) Replicas(ctx context.Context, user string) ([]peer.ID, error) {
	ns, err := m.dc.Replicas(ctx, user)
	if err != nil {
		return nil, err
	}
	return peersOf(ns), nil
}

// AssignedUsers implements replication.Membership.
func (m dirMembership) AssignedUsers(ctx context.Context, after string, limit int) ([]replication.UserReplicas, bool, error) {
	us, more, _, err := m.dc.AssignedUsers(ctx, after, limit)
	if err != nil {
		return nil, false, err
	}
	out := make([]replication.UserReplicas, 0, len(us))
	for _, u := range us {
		out = append(out, replication.UserReplicas{User: u.User, Peers: peersOf(u.Nodes)})
	}
	return out, more, nil
}
