package dirproto

import (
	"context"
	"errors"
	"slices"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hce-sync/hce/api/p2p"
)

// Versioned protocols. A message that gains fields gets a new protocol
// id (ProtoCheckPassword11 beside ProtoCheckPassword, ...): messages are
// decoded strictly, so an older peer would refuse the new fields. Both
// ids are served; a caller uses the newer one and falls back to the older
// one, without the new fields, for a peer that does not speak it.

// speaksOnly reports whether h's peerstore (filled by libp2p's identify
// when a connection opens) says p speaks older but not newer.
func speaksOnly(h host.Host, p peer.ID, older, newer protocol.ID) bool {
	ps, err := h.Peerstore().SupportsProtocols(p, older, newer)
	return err == nil && slices.Contains(ps, older) && !slices.Contains(ps, newer)
}

// CallVersioned calls p over newer with req, or over older with oldReq
// when p does not speak newer: known before the call, or learnt when the
// call fails without an answer from p (a *p2p.RemoteError is an answer).
// resp receives the answer of either; proto says which protocol gave it.
func CallVersioned(ctx context.Context, cfg p2p.RPCConfig, h host.Host, p peer.ID, newer, older protocol.ID,
	req, oldReq, resp any) (proto protocol.ID, err error) {
	if speaksOnly(h, p, older, newer) {
		return older, p2p.CallJSON(ctx, cfg, h, p, older, oldReq, resp)
	}
	err = p2p.CallJSON(ctx, cfg, h, p, newer, req, resp)
	var re *p2p.RemoteError
	if err == nil || errors.As(err, &re) || ctx.Err() != nil || !speaksOnly(h, p, older, newer) {
		return newer, err
	}
	return older, p2p.CallJSON(ctx, cfg, h, p, older, oldReq, resp)
}
