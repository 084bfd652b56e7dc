package directory

import (
	"context"
	"encoding/hex"
	"errors"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
)

// p2pTimeout bounds one directory RPC served over libp2p; a password
// check waits for the hasher, a heartbeat may commit a state change.
const p2pTimeout = 10 * time.Second

// ServeP2P serves the directory protocols of package p2p to storage nodes
// on h (which the caller owns and closes):
//
//   - dirproto.ProtoHeartbeat: Heartbeat for the calling peer, whose ID is the
//     node's ID (the hex form of its key is tried when the peer ID is not
//     registered). Only the leader takes heartbeats; other voters answer
//     dirproto.CodeNotLeader and the node tries the next voter. Unknown and
//     retired nodes get dirproto.CodeUnknownNode and dirproto.CodeRetired.
//   - dirproto.ProtoCheckPassword: CheckPassword, answered by any voter from
//     its local state. Only registered nodes that are neither pending nor
//     retired may ask (others get dirproto.CodeUnknownNode), so that a peer the
//     host's gater let in cannot use the directory as a password oracle.
//   - dirproto.ProtoKeys: PublicKeys, to any peer the gater admitted (the keys
//     are public).
//   - dirproto.ProtoAssignment: a user's replica set (primary first) as node
//     IDs, peer IDs and URLs, answered locally to admitted nodes only
//     (dirproto.CodeUnknownNode otherwise); an unknown user gets Exists false.
//   - dirproto.ProtoPeers: the peer IDs of active and draining nodes and of the
//     voters, for the nodes' connection gaters, with the nodes' registered
//     libp2p addresses, for dialling each other (replication).
//   - dirproto.ProtoUsers: one page of the users whose replica set contains
//     the calling node, each with its replica set, in user-name order,
//     answered locally to admitted nodes only (dirproto.CodeUnknownNode
//     otherwise). A page costs O(log n + page size) for a node of n
//     users, and is cut short (More set) to fit p2p.MaxMessageSize.
//
// Requests are bounded by p2p.MaxMessageSize and decoded strictly. Which
// peers may connect at all is the host's gater's business (the wiring
// admits registered nodes and the other voters).
func (d *Directory) ServeP2P(h host.Host) {
	cfg := p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize, Timeout: p2pTimeout, Logger: d.log}
	p2p.Serve(h, dirproto.ProtoHeartbeat, p2p.HandleJSON(d.p2pHeartbeat), cfg)
	p2p.Serve(h, dirproto.ProtoCheckPassword, p2p.HandleJSON(d.p2pCheckPassword), cfg)
	p2p.Serve(h, dirproto.ProtoKeys, p2p.HandleJSON(d.p2pKeys), cfg)
	p2p.Serve(h, dirproto.ProtoAssignment, p2p.HandleJSON(d.p2pAssignment), cfg)
	p2p.Serve(h, dirproto.ProtoPeers, p2p.HandleJSON(d.p2pPeers), cfg)
	p2p.Serve(h, dirproto.ProtoUsers, p2p.HandleJSON(d.p2pUsers), cfg)
}

// p2pNode returns the registered node the peer is, by peer ID or hex key.
func (d *Directory) p2pNode(from peer.ID) (NodeInfo, bool) {
	if n, ok := d.fsm.nodeByID(from.String()); ok {
		return n, true
	}
	pk, err := from.ExtractPublicKey()
	if err != nil {
		return NodeInfo{}, false
	}
	raw, err := pk.Raw()
	if err != nil {
		return NodeInfo{}, false
	}
	return d.fsm.nodeByID(hex.EncodeToString(raw))
}

func (d *Directory) p2pHeartbeat(ctx context.Context, from peer.ID, r dirproto.HeartbeatRequest) (struct{}, error) {
	id := from.String()
	if n, ok := d.p2pNode(from); ok {
		id = n.ID
	}
	return struct{}{}, p2pError(d.Heartbeat(ctx, id, r.Load))
}

func (d *Directory) p2pCheckPassword(ctx context.Context, from peer.ID, r dirproto.CheckPasswordRequest) (dirproto.CheckPasswordResponse, error) {
	if _, err := d.admittedNode(from); err != nil {
		return dirproto.CheckPasswordResponse{}, err
	}
	err := d.CheckPassword(ctx, r.User, r.Password)
	switch {
	case err == nil:
		return dirproto.CheckPasswordResponse{OK: true}, nil
	case errors.Is(err, api.ErrUnauthorized):
		return dirproto.CheckPasswordResponse{OK: false}, nil
	}
	return dirproto.CheckPasswordResponse{}, p2pError(err)
}

func (d *Directory) p2pKeys(context.Context, peer.ID, struct{}) (dirproto.KeysResponse, error) {
	if d.closed.Load() {
		return dirproto.KeysResponse{}, p2pError(ErrClosed)
	}
	keys := d.PublicKeys()
	out := dirproto.KeysResponse{Keys: make(map[string][]byte, len(keys))}
	for kid, k := range keys {
		out.Keys[kid] = k
	}
	return out, nil
}

// p2pError maps a directory error to the code a node acts on.
func p2pError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotLeader):
		return &p2p.RemoteError{Code: dirproto.CodeNotLeader, Message: err.Error()}
	case errors.Is(err, ErrUnknownNode):
		return &p2p.RemoteError{Code: dirproto.CodeUnknownNode, Message: err.Error()}
	case errors.Is(err, ErrNodeRetired):
		return &p2p.RemoteError{Code: dirproto.CodeRetired, Message: err.Error()}
	}
	return &p2p.RemoteError{Code: p2p.CodeUnavailable, Message: err.Error()}
}
