package raftls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Errors of the stream layer; match them with errors.Is.
var (
	// ErrNotAdvertisable is returned when the advertised address is an
	// unspecified IP (0.0.0.0 or ::), which peers cannot dial.
	ErrNotAdvertisable = errors.New("raftls: advertise address is not dialable")
	// ErrNoTLS is returned when Config.TLS is nil.
	ErrNoTLS = errors.New("raftls: no TLS configuration")
	// ErrRefused is returned (wrapped) by Dial, and by reads and writes of
	// an established connection, when Config.Refuse refuses the peer.
	ErrRefused = errors.New("raftls: peer refused")
)

// Defaults for zero Config fields.
const (
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultMaxPendingHandshakes = 64
)

// Config configures a StreamLayer. A zero field means "use the default".
type Config struct {
	// TLS is the mutual-TLS configuration, normally from ServerClientTLS.
	// Required. It is used for both accepted and dialed connections.
	TLS *tls.Config
	// Advertise is the address peers dial to reach this voter, returned by
	// Addr and thus by the raft transport's LocalAddr. Default: the
	// listener's address. It must not be an unspecified IP.
	Advertise net.Addr
	// HandshakeTimeout bounds the TLS handshake of an accepted connection,
	// and of a dialed one when raft passes no timeout. Default 10 s.
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds concurrent inbound handshakes; connections
	// beyond it are closed at once. Default 64.
	MaxPendingHandshakes int
	// Logger receives refused connections (at Debug) and accept errors.
	// Default: discard.
	Logger *slog.Logger
	// Refuse, when set, is asked about the peer voter of every connection
	// (the ID its certificate names, see PeerID) once the handshake is
	// done, and again before every read and write: a refused peer's
	// accepted connection never reaches Accept, a dial to it fails with
	// ErrRefused, and an established connection to it is closed and its
	// reads and writes fail with ErrRefused. It must be quick and safe for
	// concurrent use. Test harnesses use it to partition voters (package
	// testnet); nil refuses no one.
	Refuse func(voterID string) bool
}

// DefaultConfig returns a Config with every default filled in and no TLS.
func DefaultConfig() Config {
	return Config{
		HandshakeTimeout:     DefaultHandshakeTimeout,
		MaxPendingHandshakes: DefaultMaxPendingHandshakes,
	}
}

// Validate reports whether c can be used.
func (c Config) Validate() error {
	if c.TLS == nil {
		return ErrNoTLS
	}
	if c.HandshakeTimeout < 0 {
		return fmt.Errorf("raftls: negative HandshakeTimeout %v", c.HandshakeTimeout)
	}
	if c.MaxPendingHandshakes < 0 {
		return fmt.Errorf("raftls: negative MaxPendingHandshakes %d", c.MaxPendingHandshakes)
	}
	if c.Advertise != nil {
		return checkAdvertise(c.Advertise)
	}
	return nil
}

func checkAdvertise(a net.Addr) error {
	if ta, ok := a.(*net.TCPAddr); ok && (ta.IP == nil || ta.IP.IsUnspecified()) {
		return fmt.Errorf("%w: %s", ErrNotAdvertisable, a)
	}
	return nil
}

// StreamLayer is a raft.StreamLayer whose connections are mutually
// authenticated TLS 1.3 sessions between directory voters. Accept returns
// only connections whose handshake completed and whose peer passed the
// checks of the TLS config; others are closed and counted (Rejected). All
// methods are safe for concurrent use.
type StreamLayer struct {
	ln        net.Listener
	cfg       Config
	advertise net.Addr
	log       *slog.Logger

	conns    chan net.Conn
	sem      chan struct{}
	ctx      context.Context // canceled by Close; aborts pending handshakes
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
	rejected atomic.Uint64
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer starts serving TLS handshakes on ln and returns the stream
// layer. It owns ln from now on: Close closes it.
func NewStreamLayer(ln net.Listener, cfg Config) (*StreamLayer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxPendingHandshakes == 0 {
		cfg.MaxPendingHandshakes = DefaultMaxPendingHandshakes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	adv := cfg.Advertise
	if adv == nil {
		adv = ln.Addr()
		if err := checkAdvertise(adv); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &StreamLayer{
		ln:        ln,
		cfg:       cfg,
		advertise: adv,
		log:       log,
		conns:     make(chan net.Conn),
		sem:       make(chan struct{}, cfg.MaxPendingHandshakes),
		ctx:       ctx,
		cancel:    cancel,
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Listen opens a TCP listener on addr (host:port; port 0 picks one) and
// returns a StreamLayer on it. With an unspecified host (":7000"), set
// cfg.Advertise.
func Listen(addr string, cfg Config) (*StreamLayer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("raftls: listen %s: %w", addr, err)
	}
	s, err := NewStreamLayer(ln, cfg)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return s, nil
}

func (s *StreamLayer) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Resource exhaustion (EMFILE and the like): back off and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("raftls: accept failed", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		select {
		case s.sem <- struct{}{}:
		default:
			s.rejected.Add(1)
			s.log.Warn("raftls: too many pending handshakes, closing connection", "peer", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		s.wg.Add(1)
		go s.handshake(c)
	}
}

// handshake completes the server side of one connection and hands it to
// Accept, or closes it.
func (s *StreamLayer) handshake(c net.Conn) {
	defer s.wg.Done()
	release := func() { <-s.sem }
	tc := tls.Server(c, s.cfg.TLS)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	release()
	if err != nil {
		s.rejected.Add(1)
		s.log.Debug("raftls: handshake refused", "peer", c.RemoteAddr().String(), "err", err)
		_ = tc.Close()
		return
	}
	conn, err := s.guard(tc)
	if err != nil {
		s.rejected.Add(1)
		s.log.Debug("raftls: peer refused", "peer", c.RemoteAddr().String(), "err", err)
		return
	}
	select {
	case s.conns <- conn:
	case <-s.ctx.Done():
		_ = conn.Close()
	}
}

// guard applies Config.Refuse to a connection whose handshake is done: it
// returns tc itself without Refuse, a refusing wrapper for an admitted
// peer, or closes tc and returns ErrRefused.
func (s *StreamLayer) guard(tc *tls.Conn) (net.Conn, error) {
	if s.cfg.Refuse == nil {
		return tc, nil
	}
	id := ""
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		id, _ = PeerID(certs[0])
	}
	if s.cfg.Refuse(id) {
		_ = tc.Close()
		return nil, fmt.Errorf("%w: voter %q", ErrRefused, id)
	}
	return &refusingConn{Conn: tc, id: id, refuse: s.cfg.Refuse}, nil
}

// refusingConn is a connection to voter id that closes itself, and fails
// every read and write, once refuse(id) holds.
type refusingConn struct {
	net.Conn
	id     string
	refuse func(string) bool
}

func (c *refusingConn) check() error {
	if c.refuse(c.id) {
		_ = c.Conn.Close()
		return fmt.Errorf("%w: voter %q", ErrRefused, c.id)
	}
	return nil
}

func (c *refusingConn) Read(p []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if cerr := c.check(); cerr != nil {
		// Data that arrived from a peer refused meanwhile is dropped.
		return 0, cerr
	}
	return n, err
}

func (c *refusingConn) Write(p []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Accept waits for and returns the next authenticated connection. After
// Close it returns an error wrapping net.ErrClosed.
func (s *StreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.ctx.Done():
		return nil, fmt.Errorf("raftls: accept: %w", net.ErrClosed)
	}
}

// Close stops accepting, closes the listener, aborts pending handshakes and
// waits for the layer's goroutines. Connections already returned by Accept
// or Dial are not closed. Close is idempotent.
func (s *StreamLayer) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		err = s.ln.Close()
		s.wg.Wait()
	})
	return err
}

// Addr returns the advertised address.
func (s *StreamLayer) Addr() net.Addr { return s.advertise }

// Rejected returns how many inbound connections were closed without reaching
// Accept (failed or timed-out handshakes, refused peers, overload).
func (s *StreamLayer) Rejected() uint64 { return s.rejected.Load() }

// Dial opens a mutually authenticated connection to address, spending at most
// timeout (or HandshakeTimeout if timeout is 0) on TCP connect and TLS
// handshake together. The server is verified against the CA, the dialed host
// name and the voter role. Under TLS 1.3 a server that refuses this voter's
// certificate may only say so on the first read.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = s.cfg.HandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	d := tls.Dialer{Config: s.cfg.TLS}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raftls: dial %s: %w", address, err)
	}
	conn, err := s.guard(c.(*tls.Conn))
	if err != nil {
		return nil, fmt.Errorf("raftls: dial %s: %w", address, err)
	}
	return conn, nil
}

// TransportConfig configures NewTransport. A zero field means "use the
// default".
type TransportConfig struct {
	// MaxPool is how many idle connections are kept per peer. Default 3.
	MaxPool int
	// Timeout bounds dialing and each RPC's IO. Default 10 s.
	Timeout time.Duration
	// Logger receives the transport's log lines. Default: discard (raft's
	// own default would write DEBUG to stderr).
	Logger hclog.Logger
}

// NewTransport returns a raft.NetworkTransport over stream. Closing the
// transport closes the stream layer.
func NewTransport(stream *StreamLayer, cfg TransportConfig) *raft.NetworkTransport {
	if cfg.MaxPool <= 0 {
		cfg.MaxPool = 3
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: cfg.MaxPool,
		Timeout: cfg.Timeout,
		Logger:  cfg.Logger,
		// No pipelined replication: raft's netPipeline (v1.7.3 and its
		// main branch) deadlocks when its decoder stops on a newer term or
		// a refused append while the sender is handing it one more
		// request; the replication goroutine then never ends, the follower
		// gets no more entries from that leader, and Shutdown never
		// returns. Plain AppendEntries calls, with raft's batching, are
		// what remains (TestLeadershipTransfersUnderWrites).
		MaxRPCsInFlight: 1,
	})
}
