package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config. The body and write rates say what "slow but
// legitimate" means: 16 KiB/s (128 kbit/s). At that rate the largest body
// any handler takes (the CouchDB endpoint's 64 MiB) passes in about 68
// minutes and a 20 MiB Weave POST in about 21; a sender slower than that
// on average is cut once BodyTimeout has passed.
const (
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultBodyTimeout    = 30 * time.Second
	DefaultMinBodyRate    = 16 << 10
	DefaultWriteTimeout   = 30 * time.Second
	DefaultMinWriteRate   = 16 << 10
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxBodyBytes   = 64 << 20

	DefaultMaxConns        = 4096
	DefaultMaxConnsPerAddr = 256

	DefaultMaxInFlight          = 256
	DefaultMaxInFlightPerClient = 32
	// DefaultShedRetryAfter is the Retry-After and X-Weave-Backoff of a
	// shed request (api.RetryBusy).
	DefaultShedRetryAfter = 10 * time.Second

	DefaultTLSReloadInterval = 10 * time.Second
	DefaultCheckTimeout      = 5 * time.Second
	DefaultCheckCacheTTL     = time.Second
)

// ErrBadConfig is wrapped by Config.Validate's errors.
var ErrBadConfig = errors.New("httpserve: invalid configuration")

// Checker is one dependency /__heartbeat__ checks (the store is writable,
// the directory answers, a raft leader is known). Check returns nil when
// the dependency works; its error text is shown in the answer, so it must
// not contain secrets. It must honour ctx and be safe for concurrent use.
type Checker interface {
	Check(ctx context.Context) error
}

// CheckFunc adapts a function to Checker.
type CheckFunc func(ctx context.Context) error

// Check calls f.
func (f CheckFunc) Check(ctx context.Context) error { return f(ctx) }

// Config configures a Server. A zero field takes its default; for the
// timeouts, rates and limits, a negative value turns them off.
type Config struct {
	// Handler serves every request the platform does not answer itself.
	// Required.
	Handler http.Handler
	// Logger receives the platform's own messages (TLS reloads, shed
	// load, connection caps, net/http's errors). Default: discard.
	Logger *slog.Logger
	// AccessLog, when set, receives one INFO line per request: method,
	// route (template), status, bytes, duration, request id, remote
	// address. Nil: no access log.
	AccessLog *slog.Logger

	// HeaderTimeout bounds reading a request's headers (and the TLS
	// handshake). Default DefaultHeaderTimeout (10 s).
	HeaderTimeout time.Duration
	// BodyTimeout and MinBodyRate bound reading a request body: it must
	// be complete within BodyTimeout plus one second per MinBodyRate
	// bytes received. Defaults DefaultBodyTimeout (30 s) and
	// DefaultMinBodyRate (16 KiB/s).
	BodyTimeout time.Duration
	MinBodyRate int64
	// WriteTimeout and MinWriteRate bound each write of a response: a
	// write of n bytes must be taken by the client within WriteTimeout
	// plus n/MinWriteRate seconds. Defaults DefaultWriteTimeout (30 s)
	// and DefaultMinWriteRate (16 KiB/s).
	WriteTimeout time.Duration
	MinWriteRate int64
	// IdleTimeout closes keep-alive connections idle that long. Default
	// DefaultIdleTimeout (2 min).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps request headers (431 beyond). Default
	// DefaultMaxHeaderBytes (64 KiB).
	MaxHeaderBytes int
	// MaxBodyBytes caps every request body (413 beyond), whatever the
	// handler's own limit. Default DefaultMaxBodyBytes (64 MiB, the
	// CouchDB endpoint's).
	MaxBodyBytes int64

	// MaxConns caps open connections; MaxConnsPerAddr caps those from
	// one client address (an IPv6 client is its /64). Defaults
	// DefaultMaxConns (4096) and DefaultMaxConnsPerAddr (256).
	MaxConns        int
	MaxConnsPerAddr int

	// MaxInFlight bounds the requests being served at once;
	// MaxInFlightPerClient those of one client (ClientKey). Requests
	// beyond either get 503 with Retry-After and X-Weave-Backoff of
	// ShedRetryAfter before their body is read. Defaults
	// DefaultMaxInFlight (256), DefaultMaxInFlightPerClient (32),
	// DefaultShedRetryAfter (10 s).
	MaxInFlight          int
	MaxInFlightPerClient int
	ShedRetryAfter       time.Duration
	// ClientKey names the client of a request for MaxInFlightPerClient;
	// "" means no per-client bound applies. Default: the Authorization
	// header (its Hawk id for Hawk), so a user is bounded per credential
	// and nobody can use up another user's share without their password.
	ClientKey func(*http.Request) string
	// LongLived reports requests that may stay open indefinitely
	// (long-poll and continuous feeds): they are not counted in flight.
	// Default: none.
	LongLived func(*http.Request) bool

	// TLSCertFile and TLSKeyFile, when both set, serve HTTPS (TLS 1.2 or
	// later, HTTP/1.1) with that PEM certificate chain and key. They are
	// read again by ReloadTLS and when their modification time or size
	// changes (checked every TLSReloadInterval, default 10 s); a reload
	// that fails keeps the previous certificate and is logged.
	TLSCertFile       string
	TLSKeyFile        string
	TLSReloadInterval time.Duration
	// InsecureBasic accepts HTTP Basic credentials over plain HTTP from
	// any address (behind a TLS-terminating proxy). Without it they are
	// refused with 401 unless the client is on loopback.
	InsecureBasic bool

	// Routes are the route templates requests are counted under in
	// metrics and the access log, e.g. "/{ver}/{user}/storage/{coll}":
	// "{x}" matches one path segment, a final "{x...}" the rest; literal
	// segments must match exactly; the first matching template wins.
	// A path no template matches is counted as "other".
	Routes []string
	// Checks are what /__heartbeat__ checks, by name.
	Checks map[string]Checker
	// CheckTimeout bounds each check (default 5 s); CheckCacheTTL is how
	// long a heartbeat answer is reused, so that polling it cannot load
	// the dependencies (default 1 s).
	CheckTimeout  time.Duration
	CheckCacheTTL time.Duration
	// Version is what /__version__ shows. Default: ReadVersion().
	Version Version
	// Registry receives the platform's metrics and is what /metrics
	// serves; the wiring registers its own collectors in it. Default: a
	// new registry. One Server per registry.
	Registry *prometheus.Registry
	// SeparateMetrics stops serving /metrics on the main listener: it is
	// then served only by ServeMetrics (--metrics-addr).
	SeparateMetrics bool
	// DrainDelay is how long Shutdown keeps serving after
	// /__lbheartbeat__ turned 503, so load balancers stop sending first.
	// Default 0.
	DrainDelay time.Duration
}

// DefaultConfig returns the defaults (Handler still to be set).
func DefaultConfig() Config {
	return Config{
		HeaderTimeout:        DefaultHeaderTimeout,
		BodyTimeout:          DefaultBodyTimeout,
		MinBodyRate:          DefaultMinBodyRate,
		WriteTimeout:         DefaultWriteTimeout,
		MinWriteRate:         DefaultMinWriteRate,
		IdleTimeout:          DefaultIdleTimeout,
		MaxHeaderBytes:       DefaultMaxHeaderBytes,
		MaxBodyBytes:         DefaultMaxBodyBytes,
		MaxConns:             DefaultMaxConns,
		MaxConnsPerAddr:      DefaultMaxConnsPerAddr,
		MaxInFlight:          DefaultMaxInFlight,
		MaxInFlightPerClient: DefaultMaxInFlightPerClient,
		ShedRetryAfter:       DefaultShedRetryAfter,
		TLSReloadInterval:    DefaultTLSReloadInterval,
		CheckTimeout:         DefaultCheckTimeout,
		CheckCacheTTL:        DefaultCheckCacheTTL,
	}
}

// Validate reports a configuration New cannot run.
func (c Config) Validate() error {
	switch {
	case c.Handler == nil:
		return fmt.Errorf("%w: Handler is nil", ErrBadConfig)
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return fmt.Errorf("%w: TLSCertFile and TLSKeyFile go together", ErrBadConfig)
	case c.ShedRetryAfter < 0 || c.DrainDelay < 0:
		return fmt.Errorf("%w: negative ShedRetryAfter or DrainDelay", ErrBadConfig)
	}
	for name, ch := range c.Checks {
		if name == "" || ch == nil {
			return fmt.Errorf("%w: a check needs a name and a Checker", ErrBadConfig)
		}
	}
	for _, r := range c.Routes {
		if _, err := parseRoute(r); err != nil {
			return fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
	}
	return nil
}

// withDefaults fills zero fields and turns negative limits into "off"
// (zero).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	durs := []struct{ v, d *time.Duration }{
		{&c.HeaderTimeout, &d.HeaderTimeout}, {&c.BodyTimeout, &d.BodyTimeout},
		{&c.WriteTimeout, &d.WriteTimeout}, {&c.IdleTimeout, &d.IdleTimeout},
		{&c.ShedRetryAfter, &d.ShedRetryAfter}, {&c.TLSReloadInterval, &d.TLSReloadInterval},
		{&c.CheckTimeout, &d.CheckTimeout}, {&c.CheckCacheTTL, &d.CheckCacheTTL},
	}
	for _, x := range durs {
		switch {
		case *x.v == 0:
			*x.v = *x.d
		case *x.v < 0:
			*x.v = 0
		}
	}
	for _, x := range []struct{ v, d *int64 }{{&c.MinBodyRate, &d.MinBodyRate}, {&c.MinWriteRate, &d.MinWriteRate}, {&c.MaxBodyBytes, &d.MaxBodyBytes}} {
		switch {
		case *x.v == 0:
			*x.v = *x.d
		case *x.v < 0:
			*x.v = 0
		}
	}
	ints := []struct{ v, d *int }{
		{&c.MaxHeaderBytes, &d.MaxHeaderBytes}, {&c.MaxConns, &d.MaxConns}, {&c.MaxConnsPerAddr, &d.MaxConnsPerAddr},
		{&c.MaxInFlight, &d.MaxInFlight}, {&c.MaxInFlightPerClient, &d.MaxInFlightPerClient},
	}
	for _, x := range ints {
		switch {
		case *x.v == 0:
			*x.v = *x.d
		case *x.v < 0:
			*x.v = 0
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ClientKey == nil {
		c.ClientKey = AuthorizationKey
	}
	if c.Version == (Version{}) {
		c.Version = ReadVersion()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return c
}
