package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/host"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/hce-sync/hce/api/p2p"
)

// p2pListenFile, in the data folder, maps each configured libp2p listen
// address with TCP port 0 to the address it was first bound to (JSON), so
// that a restarted voter listens where the storage nodes and the state
// last saw it.
const p2pListenFile = "p2p-listen.json"

// newP2PHost starts the voter's libp2p host on cfg.ListenAddrs, where each
// address with TCP port 0 is replaced by the one it was bound to before
// (p2pListenFile). When that address cannot be bound again (the port was
// taken meanwhile: probed by listening on it and closing at once) it logs
// an ERROR and listens on the configured addresses instead. The addresses bound for port-0 entries are then
// saved for the next start.
func (d *Directory) newP2PHost(ctx context.Context, cfg p2p.Config) (host.Host, error) {
	path := filepath.Join(d.cfg.Dir, p2pListenFile)
	saved, err := loadListen(path)
	if err != nil {
		d.log.Warn("directory: ignoring the saved libp2p listen addresses", "file", path, "err", err)
	}
	want := make([]string, len(cfg.ListenAddrs))
	reused := false
	for i, a := range cfg.ListenAddrs {
		want[i] = a
		if b, ok := saved[a]; ok && portZero(a) {
			want[i], reused = b, true
		}
	}
	if reused {
		// Probe first: a libp2p host that fails to listen leaves
		// goroutines behind.
		if err := canListen(want); err != nil {
			d.log.Error("directory: cannot listen on this voter's previous libp2p address; listening on a new port "+
				"(storage nodes learn it from the voters' records and GET "+PathP2P+")", "addrs", want, "err", err)
			want = cfg.ListenAddrs
		}
	}
	first := cfg
	first.ListenAddrs = want
	h, err := p2p.NewHost(ctx, first)
	if err != nil {
		return nil, err
	}
	bound := boundListen(cfg.ListenAddrs, h.Network().ListenAddresses())
	if !maps.Equal(bound, saved) && len(bound) > 0 {
		if err := saveListen(path, bound); err != nil {
			d.log.Warn("directory: could not save the libp2p listen addresses; a restart may listen elsewhere", "file", path, "err", err)
		}
	}
	return h, nil
}

// canListen checks that every address can be listened on now.
func canListen(addrs []string) error {
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return err
		}
		l, err := manet.Listen(m)
		if err != nil {
			return err
		}
		l.Close()
	}
	return nil
}

// portZero reports whether a is a TCP multiaddress with port 0.
func portZero(a string) bool {
	m, err := ma.NewMultiaddr(a)
	if err != nil {
		return false
	}
	port, err := m.ValueForProtocol(ma.P_TCP)
	return err == nil && port == "0"
}

// withPortZero returns the string form of m with its TCP port set to 0.
func withPortZero(m ma.Multiaddr) string {
	port, err := m.ValueForProtocol(ma.P_TCP)
	if err != nil {
		return ""
	}
	return strings.Replace(m.String(), "/tcp/"+port, "/tcp/0", 1)
}

// boundListen maps each configured address with port 0 to the listen
// address that matches it with its port set to 0 (each listen address
// used once).
func boundListen(configured []string, listening []ma.Multiaddr) map[string]string {
	out := make(map[string]string)
	used := make(map[int]bool)
	for _, a := range configured {
		if !portZero(a) {
			continue
		}
		for i, l := range listening {
			if !used[i] && withPortZero(l) == a {
				out[a], used[i] = l.String(), true
				break
			}
		}
	}
	return out
}

// loadListen reads p2pListenFile (an empty map when it does not exist).
func loadListen(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return map[string]string{}, err
	}
	m := map[string]string{}
	if err := json.Unmarshal(b, &m); err != nil {
		return map[string]string{}, fmt.Errorf("directory: %s: %w", path, err)
	}
	for a, b := range m {
		if _, err := ma.NewMultiaddr(b); err != nil || !portZero(a) {
			return map[string]string{}, fmt.Errorf("directory: %s: bad entry %q -> %q", path, a, b)
		}
	}
	return m, nil
}

// saveListen writes p2pListenFile atomically (temporary file, rename).
func saveListen(path string, m map[string]string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
