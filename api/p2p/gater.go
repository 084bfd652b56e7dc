package p2p

import (
	"context"
	"log/slog"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Allowlist says which peers may connect. Implementations must be safe for
// concurrent use and fast: the gater asks on every connection.
type Allowlist interface {
	Allowed(id peer.ID) bool
}

// AllowFunc adapts a function to Allowlist.
type AllowFunc func(id peer.ID) bool

// Allowed implements Allowlist.
func (f AllowFunc) Allowed(id peer.ID) bool { return f(id) }

// StaticAllowlist is an Allowlist backed by a set the owner updates (for
// example from the directory's list of active nodes). The zero value
// admits nobody and is ready for use; it is safe for concurrent use.
type StaticAllowlist struct {
	mu  sync.RWMutex
	ids map[peer.ID]struct{}
}

var _ Allowlist = (*StaticAllowlist)(nil)

// NewStaticAllowlist returns a StaticAllowlist admitting ids.
func NewStaticAllowlist(ids ...peer.ID) *StaticAllowlist {
	a := &StaticAllowlist{}
	a.Replace(ids)
	return a
}

// Allowed implements Allowlist.
func (a *StaticAllowlist) Allowed(id peer.ID) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.ids[id]
	return ok
}

// Add admits ids.
func (a *StaticAllowlist) Add(ids ...peer.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ids == nil {
		a.ids = make(map[peer.ID]struct{}, len(ids))
	}
	for _, id := range ids {
		a.ids[id] = struct{}{}
	}
}

// Remove stops admitting ids. Connections already open stay open; the
// owner closes them (host.Network().ClosePeer) if it wants them gone.
func (a *StaticAllowlist) Remove(ids ...peer.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range ids {
		delete(a.ids, id)
	}
}

// Replace makes ids the whole set.
func (a *StaticAllowlist) Replace(ids []peer.ID) {
	m := make(map[peer.ID]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids = m
}

// List returns the admitted peers, sorted.
func (a *StaticAllowlist) List() []peer.ID {
	a.mu.RLock()
	out := make([]peer.ID, 0, len(a.ids))
	for id := range a.ids {
		out = append(out, id)
	}
	a.mu.RUnlock()
	slices.Sort(out)
	return out
}

// Gater is a libp2p connection gater that admits only peers of its
// Allowlist. The peer's identity is known (authenticated by the security
// handshake) only at InterceptSecured, which is where it decides, for
// inbound and outbound connections alike; outbound dials to peers not
// listed are also refused early at InterceptPeerDial.
type Gater struct {
	allow Allowlist
	log   *slog.Logger
}

var _ connmgr.ConnectionGater = (*Gater)(nil)

// NewGater returns a Gater admitting the peers of allow. log (nil: discard)
// receives a debug line per refused connection.
func NewGater(allow Allowlist, log *slog.Logger) *Gater {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gater{allow: allow, log: log}
}

// InterceptPeerDial refuses dialing a peer that is not listed.
func (g *Gater) InterceptPeerDial(p peer.ID) bool {
	if g.allow.Allowed(p) {
		return true
	}
	g.log.Debug("p2p: refused dial to unlisted peer", "peer", p)
	return false
}

// InterceptAddrDial admits every address; the peer was checked already.
func (g *Gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

// InterceptAccept admits every inbound connection until its peer is known.
func (g *Gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured admits the connection only if its authenticated peer is
// listed, in either direction.
func (g *Gater) InterceptSecured(dir network.Direction, p peer.ID, addrs network.ConnMultiaddrs) bool {
	if g.allow.Allowed(p) {
		return true
	}
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		var remote string
		if addrs != nil {
			remote = addrs.RemoteMultiaddr().String()
		}
		g.log.Debug("p2p: refused connection from unlisted peer", "peer", p, "direction", dir.String(), "remote", remote)
	}
	return false
}

// InterceptUpgraded admits every connection that passed InterceptSecured.
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
