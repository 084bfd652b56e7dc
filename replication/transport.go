package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hce-sync/hce/api/p2p"
)

// ProtocolID is the libp2p protocol of replication: one request and one
// response per stream (SessionProtocolID: many, one after another), each a length-prefixed frame (p2p.WriteFrame) of a
// message (Encode) of at most MaxFrameSize bytes. The version follows
// WireVersion: 2.0.0 added ChangesResponse.Final (1.0.0 peers are not
// understood).
const ProtocolID protocol.ID = "/hce/repl/2.0.0"

// SessionProtocolID carries the messages of ProtocolID, any number of
// requests per stream, one after another (p2p.ServeSessions): a caller
// keeps its streams to a peer for the next calls instead of opening one
// per request. Libp2pTransport serves both and calls with this one,
// falling back to ProtocolID for a peer without it.
const SessionProtocolID protocol.ID = "/hce/repl/2.1.0"

// Error codes of the replication protocol's error frames.
const (
	// CodeForbidden: the source does not hold the user, or the caller is
	// not in the user's replica set.
	CodeForbidden = p2p.CodeForbidden
	// CodeBadRequest: the request could not be decoded or is out of
	// bounds.
	CodeBadRequest = p2p.CodeBadRequest
)

// ErrUnreachable is returned by MemTransport.Call for a peer that is not
// on the network or is cut off from the caller.
var ErrUnreachable = errors.New("replication: peer unreachable")

// Handler answers requests of the replication protocol; *Replicator
// implements it. Handle gets the authenticated calling peer and the
// encoded request and returns the encoded response; a *p2p.RemoteError
// chooses the error code the caller sees. It is called concurrently.
type Handler interface {
	Handle(ctx context.Context, from peer.ID, req []byte) ([]byte, error)
}

// Transport carries requests between replicators. Implementations are safe
// for concurrent use.
type Transport interface {
	// Self is this node's peer id.
	Self() peer.ID
	// Call sends the encoded request to p and returns the encoded
	// response, or an error (a *p2p.RemoteError when p's handler refused
	// the request). It respects ctx.
	Call(ctx context.Context, p peer.ID, req []byte) ([]byte, error)
	// Listen makes h answer the requests of other peers; nil stops
	// answering.
	Listen(h Handler)
}

// Libp2pTransport is the Transport over a libp2p host, protocol
// ProtocolID. The host's peerstore must know the addresses of the peers
// (the caller adds them, for example from the directory); its connection
// gater decides which peers may connect at all.
type Libp2pTransport struct {
	h     host.Host
	rpc   p2p.RPCConfig
	calls *p2p.Sessions

	mu  sync.Mutex
	srv *p2p.SessionServer
}

var _ Transport = (*Libp2pTransport)(nil)

// NewLibp2pTransport returns a Transport over h. timeout bounds one RPC
// (0: p2p.DefaultRPCTimeout); log (nil: discard) receives refused streams
// at debug level.
func NewLibp2pTransport(h host.Host, timeout time.Duration, log *slog.Logger) *Libp2pTransport {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rpc := p2p.RPCConfig{MaxFrameSize: MaxFrameSize, Timeout: timeout, Logger: log}
	return &Libp2pTransport{h: h, rpc: rpc, calls: p2p.NewSessions(h, SessionProtocolID, ProtocolID, rpc)}
}

// Self implements Transport.
func (t *Libp2pTransport) Self() peer.ID { return t.h.ID() }

// Call implements Transport.
//
// Dials skip libp2p's dial backoff: after a peer was down or cut off, the
// swarm would refuse to dial it again for seconds to minutes (the backoff
// grows with every failure), stalling replication and write
// acknowledgements long after the peer came back. The replicator keeps
// its own, shorter backoff (Config.RetryMin..RetryMax).
func (t *Libp2pTransport) Call(ctx context.Context, p peer.ID, req []byte) ([]byte, error) {
	ctx = network.WithForceDirectDial(ctx, "replication has its own backoff")
	return t.calls.Call(ctx, p, req)
}

// Listen implements Transport: it registers (or, for nil, removes) the
// stream handlers of SessionProtocolID and ProtocolID on the host. Nil
// also closes the session streams this node serves (each once its
// request in progress is answered) and the idle ones it keeps.
func (t *Libp2pTransport) Listen(h Handler) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.srv != nil {
		t.srv.Stop()
		t.srv = nil
	}
	if h == nil {
		t.h.RemoveStreamHandler(ProtocolID)
		t.calls.CloseIdle()
		return
	}
	p2p.Serve(t.h, ProtocolID, h.Handle, t.rpc)
	t.srv = p2p.ServeSessions(t.h, SessionProtocolID, h.Handle, t.rpc)
}

// MemNetwork connects MemTransports in one process, for fast tests: calls
// are direct function calls with copied bytes. Links can be cut
// (Partition) and restored (Heal). Safe for concurrent use.
type MemNetwork struct {
	mu      sync.RWMutex
	nodes   map[peer.ID]*MemTransport
	blocked map[[2]peer.ID]bool
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: map[peer.ID]*MemTransport{}, blocked: map[[2]peer.ID]bool{}}
}

// Transport returns the transport of peer id on n, creating it.
func (n *MemNetwork) Transport(id peer.ID) *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.nodes[id]
	if t == nil {
		t = &MemTransport{net: n, id: id}
		n.nodes[id] = t
	}
	return t
}

func pair(a, b peer.ID) [2]peer.ID {
	if b < a {
		a, b = b, a
	}
	return [2]peer.ID{a, b}
}

// Partition cuts the link between a and b in both directions.
func (n *MemNetwork) Partition(a, b peer.ID) {
	n.mu.Lock()
	n.blocked[pair(a, b)] = true
	n.mu.Unlock()
}

// Heal restores the link between a and b.
func (n *MemNetwork) Heal(a, b peer.ID) {
	n.mu.Lock()
	delete(n.blocked, pair(a, b))
	n.mu.Unlock()
}

// HealAll restores every link.
func (n *MemNetwork) HealAll() {
	n.mu.Lock()
	clear(n.blocked)
	n.mu.Unlock()
}

// MemTransport is one peer's Transport on a MemNetwork.
type MemTransport struct {
	net *MemNetwork
	id  peer.ID
	mu  sync.RWMutex
	h   Handler
}

var _ Transport = (*MemTransport)(nil)

// Self implements Transport.
func (t *MemTransport) Self() peer.ID { return t.id }

// Listen implements Transport.
func (t *MemTransport) Listen(h Handler) {
	t.mu.Lock()
	t.h = h
	t.mu.Unlock()
}

// Call implements Transport. Requests and responses over MaxFrameSize are
// refused as the libp2p transport refuses them.
func (t *MemTransport) Call(ctx context.Context, p peer.ID, req []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(req) > MaxFrameSize {
		return nil, fmt.Errorf("%w: request of %d bytes", p2p.ErrFrameTooLarge, len(req))
	}
	t.net.mu.RLock()
	dst := t.net.nodes[p]
	cut := t.net.blocked[pair(t.id, p)]
	t.net.mu.RUnlock()
	if dst == nil || cut {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, p)
	}
	dst.mu.RLock()
	h := dst.h
	dst.mu.RUnlock()
	if h == nil {
		return nil, fmt.Errorf("%w: %s does not listen", ErrUnreachable, p)
	}
	resp, err := h.Handle(ctx, t.id, append([]byte(nil), req...))
	if err != nil {
		var re *p2p.RemoteError
		if !errors.As(err, &re) {
			re = &p2p.RemoteError{Code: p2p.CodeInternal, Message: err.Error()}
		}
		return nil, &p2p.RemoteError{Code: re.Code, Message: re.Message}
	}
	if len(resp) > MaxFrameSize {
		return nil, fmt.Errorf("%w: response of %d bytes", p2p.ErrFrameTooLarge, len(resp))
	}
	return append([]byte(nil), resp...), nil
}
