package dirproto

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hce-sync/hce/api/p2p"
)

// ProtoRestored: RestoredRequest -> {} (an empty JSON object). A storage
// node restored from a backup says so before it serves or replicates:
// the answering voter commits, through raft, that the node may lack
// writes acknowledged after the backup (it becomes a filling member of
// every set where another member is current, and backfills). Only
// admitted nodes may call it. A voter whose cluster cannot take the
// command yet (a voter of an older build: the feature gate) answers
// p2p.CodeUnavailable; the node asks again.
const ProtoRestored protocol.ID = "/hce/dir/1.0.0/restored"

// RestoredRequest is the body of ProtoRestored: the new UUID of the
// restored store and the one it had when the backup was taken, for the
// directory's log.
type RestoredRequest struct {
	Store    string `json:"store"`
	OldStore string `json:"old_store,omitempty"`
}

// Validate implements Validator.
func (r RestoredRequest) Validate() error {
	if r.Store == "" || len(r.Store) > MaxIDLen || len(r.OldStore) > MaxIDLen {
		return fmt.Errorf("%w: store ids of %d and %d bytes", p2p.ErrBadMessage, len(r.Store), len(r.OldStore))
	}
	return nil
}
