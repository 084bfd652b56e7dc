package directory

import (
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

// listenAddrs returns d's libp2p listen addresses and its peer ID.
func listenAddrs(t *testing.T, d *Directory) ([]string, string) {
	t.Helper()
	var out []string
	for _, a := range d.P2PHost().Network().ListenAddresses() {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out, d.P2PHost().ID().String()
}

// TestP2PListenPortPersists: a voter configured with libp2p port 0 keeps
// the port it bound first (and its identity) across restarts, and falls
// back loudly to a new port, which it keeps from then on, when the old
// one is taken.
func TestP2PListenPortPersists(t *testing.T) {
	var logs syncBuffer
	cfg := testConfig(t, t.TempDir())
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Nodes.P2PListen = []string{"/ip4/127.0.0.1/tcp/0"}

	d := openDir(t, cfg)
	first, id := listenAddrs(t, d)
	if len(first) != 1 || strings.HasSuffix(first[0], "/tcp/0") {
		t.Fatalf("listening on %v", first)
	}
	d.Close()

	d = openDir(t, cfg)
	again, id2 := listenAddrs(t, d)
	if !slices.Equal(again, first) || id2 != id {
		t.Fatalf("after a restart: %v %s, want %v %s", again, id2, first, id)
	}
	d.Close()

	// Another process takes the port meanwhile.
	m, err := ma.NewMultiaddr(first[0])
	if err != nil {
		t.Fatal(err)
	}
	port, _ := m.ValueForProtocol(ma.P_TCP)
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	d = openDir(t, cfg)
	moved, id3 := listenAddrs(t, d)
	ln.Close()
	if slices.Equal(moved, first) || id3 != id {
		t.Fatalf("with the port taken: %v %s", moved, id3)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "previous libp2p address") {
		t.Fatalf("fallback not logged loudly: %s", logs.String())
	}
	d.Close()

	d = openDir(t, cfg)
	if last, _ := listenAddrs(t, d); !slices.Equal(last, moved) {
		t.Fatalf("after the fallback: %v, want the new %v", last, moved)
	}
}
