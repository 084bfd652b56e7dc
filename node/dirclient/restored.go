package dirclient

import (
	"context"

	"github.com/hce-sync/hce/api/dirproto"
)

// Restored tells the directory that this node's store was restored from
// a backup (dirproto.ProtoRestored), the voter that took the last
// heartbeat or report first, and returns once the directory committed
// it; it then drops every cached replica set (the node became filling in
// many). When no voter answers the error wraps ErrDirectoryUnavailable;
// a refusal (for instance a voter of an older build in the cluster)
// comes back as a *p2p.RemoteError.
func (c *Client) Restored(ctx context.Context, req dirproto.RestoredRequest) error {
	if err := req.Validate(); err != nil {
		return err
	}
	if _, err := callDirectory[struct{}](ctx, c, leaderVoter, dirproto.ProtoRestored, req); err != nil {
		return err
	}
	c.memMu.Lock()
	clear(c.mem)
	c.gen++
	c.memMu.Unlock()
	return nil
}
