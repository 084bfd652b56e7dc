package directory

import "github.com/libp2p/go-libp2p/core/peer"

// Faults lets a test harness cut this voter's links the way a network
// partition would (package testnet's partitions). Both methods must be
// quick and safe for concurrent use; their answers may change at any time.
type Faults interface {
	// RefuseVoter reports whether raft traffic with the voter of that raft
	// server ID is refused: its connections fail after the handshake and
	// established ones are closed on their next use (raftls.Config.Refuse).
	RefuseVoter(id string) bool
	// RefusePeer reports whether libp2p connections with the peer (a
	// storage node or another voter) are refused by this voter's gater.
	// Connections already open are the harness's to close.
	RefusePeer(id peer.ID) bool
}

// refusesPeer reports whether Config.Faults refuses the libp2p peer.
func (d *Directory) refusesPeer(id peer.ID) bool {
	return d.cfg.Faults != nil && d.cfg.Faults.RefusePeer(id)
}
