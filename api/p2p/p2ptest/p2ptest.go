// Package p2ptest starts libp2p hosts for tests, as net/http/httptest
// starts servers: on loopback, with a fresh identity, closed when the
// test ends. It is separate from api/testkit so that the tests of
// packages without libp2p (node, node/revtree) do not link it.
package p2ptest

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/hce-sync/hce/api/p2p"
)

// NewHost starts a host with cfg (see p2p.NewHost; zero fields take
// p2p's defaults, which listen on an ephemeral 127.0.0.1 port), with a
// fresh Ed25519 key when cfg.Key is nil, and closes it when the test
// ends. It fails the test when the host cannot start.
func NewHost(t testing.TB, cfg p2p.Config) host.Host {
	t.Helper()
	if cfg.Key == nil {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Key = k
	}
	h, err := p2p.NewHost(context.Background(), cfg)
	if err != nil {
		t.Fatalf("p2p.NewHost: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Know adds b's addresses to a's peerstore for good, so that a can dial
// b by its ID.
func Know(a, b host.Host) {
	a.Peerstore().AddAddrs(b.ID(), b.Addrs(), peerstore.PermanentAddrTTL)
}
