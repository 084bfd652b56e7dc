package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

// Defaults of Config.
const (
	// DefaultListenAddr listens on an ephemeral loopback TCP port.
	DefaultListenAddr = "/ip4/127.0.0.1/tcp/0"
	// DefaultResourceMemory bounds the memory the host's connections and
	// streams may reserve.
	DefaultResourceMemory = 256 << 20
	// DefaultResourceFDs bounds the file descriptors the host may use.
	DefaultResourceFDs = 1024
)

// Config configures NewHost. A zero field means "use the default".
type Config struct {
	// Key is the host's identity (LoadOrCreateIdentity). Required.
	Key crypto.PrivKey
	// ListenAddrs are TCP multiaddresses to listen on. Default
	// [DefaultListenAddr]. Use the empty, non-nil slice for a host that
	// only dials.
	ListenAddrs []string
	// Gater admits or refuses connections; nil admits every peer that
	// completes the Noise handshake. Storage nodes pass a Gater over the
	// directory's active nodes.
	Gater connmgr.ConnectionGater
	// Logger receives the host's lifecycle messages. Default: discard.
	Logger *slog.Logger
	// ResourceMemory and ResourceFDs scale the resource manager's limits.
	// Defaults DefaultResourceMemory, DefaultResourceFDs.
	ResourceMemory int64
	ResourceFDs    int
}

// DefaultConfig returns a Config with the defaults filled in; Key must
// still be set.
func DefaultConfig() Config {
	return Config{
		ListenAddrs:    []string{DefaultListenAddr},
		Logger:         slog.New(slog.DiscardHandler),
		ResourceMemory: DefaultResourceMemory,
		ResourceFDs:    DefaultResourceFDs,
	}
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	switch {
	case c.Key == nil:
		return errors.New("p2p: Config.Key is required")
	case c.Key.Type() != crypto.Ed25519:
		return fmt.Errorf("p2p: Config.Key is %v, want Ed25519", c.Key.Type())
	case c.ResourceMemory < 0:
		return fmt.Errorf("p2p: Config.ResourceMemory %d is negative", c.ResourceMemory)
	case c.ResourceFDs < 0:
		return fmt.Errorf("p2p: Config.ResourceFDs %d is negative", c.ResourceFDs)
	}
	for _, a := range c.ListenAddrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return fmt.Errorf("p2p: listen address %q: %w", a, err)
		}
		if _, err := m.ValueForProtocol(ma.P_TCP); err != nil {
			return fmt.Errorf("p2p: listen address %q is not TCP", a)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ListenAddrs == nil {
		c.ListenAddrs = d.ListenAddrs
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.ResourceMemory == 0 {
		c.ResourceMemory = d.ResourceMemory
	}
	if c.ResourceFDs == 0 {
		c.ResourceFDs = d.ResourceFDs
	}
	return c
}

// NewHost builds a libp2p host for cfg: TCP transport, Noise security and
// yamux multiplexing only; no relay, hole punching, NAT port mapping,
// AutoNAT probing, mDNS or DHT; ping disabled; metrics off (so several
// hosts can live in one process); a resource manager with the default
// scaled limits for cfg.ResourceMemory and cfg.ResourceFDs. The caller
// closes the host. ctx bounds the construction only.
func NewHost(ctx context.Context, cfg Config) (host.Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	// WithMetricsDisabled: by default the resource manager reports every
	// reservation to Prometheus through a trace (a lock, a formatted time
	// and several counters per stream and per frame buffer), whatever the
	// host's own metrics setting.
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Scale(cfg.ResourceMemory, cfg.ResourceFDs)), rcmgr.WithMetricsDisabled())
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Key),
		// No SO_REUSEPORT: with it, two hosts dialling each other at the
		// same moment from their listen ports make one TCP connection by
		// simultaneous open, which both sides treat as outbound and the
		// security handshake fails ("noise: message is too short"); seen
		// when replicas pull from each other on loopback.
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.DisableRelay(),
		libp2p.Ping(false),
		libp2p.DisableMetrics(),
		libp2p.ForceReachabilityPublic(),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.UserAgent("hce"),
	}
	if len(cfg.ListenAddrs) == 0 {
		opts = append(opts, libp2p.NoListenAddrs)
	} else {
		opts = append(opts, libp2p.ListenAddrStrings(cfg.ListenAddrs...))
	}
	if cfg.Gater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.Gater))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: new host: %w", err)
	}
	if err := ctx.Err(); err != nil {
		h.Close()
		return nil, err
	}
	cfg.Logger.Info("p2p: host up", "peer", h.ID(), "addrs", h.Addrs())
	return h, nil
}
