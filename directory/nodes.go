package directory

import (
	"context"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// Assignment returns the user's primary node ID and the other members of
// its replica set in promotion order. A user created before any storage
// node was registered has no set: primary is "" and replicas is empty
// (StorageNode then answers the account's fallback URL, Accounts.NodeURL).
// api.ErrUserNotFound.
func (d *Directory) Assignment(user string) (primary string, replicas []NodeInfo, err error) {
	set, _, ok := d.state.Assignment(user)
	if !ok {
		return "", nil, api.ErrUserNotFound
	}
	if len(set) == 0 {
		return "", nil, nil
	}
	return set[0].ID, set[1:], nil
}

// Replicas returns the user's replica set (members with their filling
// state and epochs, primary first, and the leaving nodes) from the local
// state; api.ErrUserNotFound.
func (d *Directory) Replicas(user string) (Replicas, error) {
	r, _, ok := d.state.Replicas(user)
	if !ok {
		return Replicas{}, api.ErrUserNotFound
	}
	return r, nil
}

// Nodes returns every registered storage node, sorted by ID, from the
// local state.
func (d *Directory) Nodes() []NodeInfo { return d.state.Nodes() }

// Settings returns the cluster settings from the local state.
func (d *Directory) Settings() Settings { return d.state.Settings() }

// SetSettings replaces the cluster settings (a raft write).
func (d *Directory) SetSettings(ctx context.Context, s Settings) error {
	return d.write(ctx, state.SetSettings{Settings: s})
}

// ApproveNode makes a pending storage node active.
func (d *Directory) ApproveNode(ctx context.Context, id string) error {
	return d.write(ctx, state.ApproveNode{ID: id})
}

// RetireNode retires a storage node for good; its users' sets are
// repaired.
func (d *Directory) RetireNode(ctx context.Context, id string) error {
	return d.write(ctx, state.RetireNode{ID: id})
}

// DrainNode starts moving every user off a storage node: the node is
// marked draining and each of its sets gains filling replacements at once
// (it stays a member and keeps serving); the leader's placement loop then
// drops it from each set once that set's replacements have reported
// their backfill (FinishLeave). The drain is done when the node's Load is
// 0 (it may still owe handoffs: NodeInfo.Leaving). Users that cannot be
// moved (no capacity elsewhere, no other current member) stay on it.
func (d *Directory) DrainNode(ctx context.Context, id string) error {
	return d.write(ctx, state.SetNodeState{ID: id, State: placement.Draining})
}
