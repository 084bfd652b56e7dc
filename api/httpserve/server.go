package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Server is an http.Server with the platform around its Handler. Create
// it with New, run it with Serve, stop it with Shutdown or Close. Its
// methods are safe for concurrent use.
type Server struct {
	cfg       Config
	srv       *http.Server
	m         *metrics
	routes    *router
	conns     connLimiter
	flight    inFlight
	hb        *heartbeat
	certs     *certStore // nil without TLS
	metrics   http.Handler
	shedRetry string
	rejectMsg []byte
	draining  atomic.Bool

	stopWatch context.CancelFunc
	watchDone chan struct{}

	mu         sync.Mutex
	metricsSrv *http.Server

	lastShedWarn, lastConnWarn, lastAcceptWarn atomic.Int64 // unix nanos of the last rate-limited WARN
	shedSince                                  atomic.Int64 // requests shed since the last WARN
}

// New checks cfg, registers the platform's metrics in cfg.Registry and,
// with TLS, loads the certificate (an error if it cannot be loaded).
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:       cfg,
		routes:    newRouter(cfg.Routes),
		shedRetry: seconds(cfg.ShedRetryAfter),
		rejectMsg: rejectAnswer(cfg.ShedRetryAfter),
		hb:        &heartbeat{checks: cfg.Checks, timeout: cfg.CheckTimeout, ttl: cfg.CheckCacheTTL},
		metrics:   metricsHandler(cfg.Registry),
	}
	s.conns = connLimiter{maxTotal: cfg.MaxConns, maxPer: cfg.MaxConnsPerAddr, per: map[string]int{}}
	s.flight = inFlight{max: cfg.MaxInFlight, perMax: cfg.MaxInFlightPerClient, per: map[uint64]int{}}
	var err error
	if s.m, err = newMetrics(cfg.Registry, &cfg); err != nil {
		return nil, fmt.Errorf("httpserve: registering metrics: %w", err)
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,

		// HTTP/1.1 only: deadlines and caps are per connection.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	s.srv.ErrorLog = log.New(errorLogWriter{s}, "", 0)
	if cfg.IdleTimeout <= 0 {
		// net/http falls back to ReadTimeout (unset here): never close.
		s.srv.IdleTimeout = 0
	}
	if cfg.TLSCertFile != "" {
		s.certs = &certStore{certFile: cfg.TLSCertFile, keyFile: cfg.TLSKeyFile, s: s}
		if err := s.certs.load(); err != nil {
			return nil, err
		}
		s.srv.TLSConfig = s.certs.tlsConfig()
	}
	if s.certs != nil && cfg.TLSReloadInterval > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopWatch, s.watchDone = cancel, make(chan struct{})
		go func() {
			defer close(s.watchDone)
			s.certs.watch(ctx, cfg.TLSReloadInterval)
		}()
	}
	return s, nil
}

// Scheme is "https" with TLS, "http" without.
func (s *Server) Scheme() string {
	if s.certs != nil {
		return "https"
	}
	return "http"
}

// Registry is the registry /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.cfg.Registry }

// Listen listens on addr (TCP) for Serve.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("httpserve: listen: %w", err)
	}
	return ln, nil
}

// Serve accepts connections on ln (within the connection caps, with TLS
// when configured) until Shutdown or Close; it then returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	lln := net.Listener(&limitListener{Listener: ln, s: s, plain: s.certs == nil})
	if s.certs != nil {
		lln = tls.NewListener(lln, s.srv.TLSConfig)
	}
	return s.srv.Serve(lln)
}

// ServeMetrics serves /metrics alone on ln (plain HTTP, for a
// --metrics-addr on a private interface) until Shutdown or Close.
func (s *Server) ServeMetrics(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET "+PathMetrics, s.metrics)
	ms := &http.Server{Handler: mux, ReadHeaderTimeout: s.cfg.HeaderTimeout, IdleTimeout: s.cfg.IdleTimeout,
		WriteTimeout: time.Minute, MaxHeaderBytes: 16 << 10, ErrorLog: s.srv.ErrorLog}
	s.mu.Lock()
	if s.metricsSrv != nil {
		s.mu.Unlock()
		return errors.New("httpserve: ServeMetrics called twice")
	}
	s.metricsSrv = ms
	s.mu.Unlock()
	return ms.Serve(ln)
}

// ReloadTLS reads the certificate files again (for SIGHUP). On failure
// the previous certificate stays in use.
func (s *Server) ReloadTLS() error {
	if s.certs == nil {
		return ErrNoTLS
	}
	if err := s.certs.load(); err != nil {
		return err
	}
	s.cfg.Logger.Info("TLS certificate reloaded", "cert", s.cfg.TLSCertFile, "not_after", s.certs.cert.Load().Leaf.NotAfter)
	return nil
}

// RegisterOnShutdown calls f when Shutdown begins (end long-lived feeds
// there).
func (s *Server) RegisterOnShutdown(f func()) { s.srv.RegisterOnShutdown(f) }

// StartDrain turns /__lbheartbeat__ to 503 and stops keeping connections
// alive, while requests are still served. Shutdown calls it.
func (s *Server) StartDrain() {
	if s.draining.CompareAndSwap(false, true) {
		s.srv.SetKeepAlivesEnabled(false)
	}
}

// Shutdown drains (DrainDelay), stops accepting, waits for the requests
// in flight until ctx ends, and stops the metrics listener and the
// certificate watcher.
func (s *Server) Shutdown(ctx context.Context) error {
	s.StartDrain()
	if d := s.cfg.DrainDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	err := s.srv.Shutdown(ctx)
	s.mu.Lock()
	ms := s.metricsSrv
	s.mu.Unlock()
	if ms != nil {
		err = errors.Join(err, ms.Shutdown(ctx))
	}
	s.stopWatcher()
	return err
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.draining.Store(true)
	err := s.srv.Close()
	s.mu.Lock()
	ms := s.metricsSrv
	s.mu.Unlock()
	if ms != nil {
		err = errors.Join(err, ms.Close())
	}
	s.stopWatcher()
	return err
}

func (s *Server) stopWatcher() {
	if s.stopWatch != nil {
		s.stopWatch()
		<-s.watchDone
	}
}

// ServeHTTP runs the platform around the Handler: request id, health,
// version and metrics paths, the Basic-over-plain-HTTP rule, the body
// limits and deadlines, the in-flight bounds, then metrics and the access
// log.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &respWriter{ResponseWriter: w, ctl: http.NewResponseController(w), s: s}
	id := requestID(r.Header.Get(RequestIDHeader))
	rw.Header().Set(RequestIDHeader, id)
	route := s.route(r.URL.Path)
	defer s.finish(rw, r, route, id, start)

	switch r.URL.Path {
	case PathLBHeartbeat:
		s.serveLBHeartbeat(rw)
		return
	case PathHeartbeat:
		s.serveHeartbeat(rw, r)
		return
	case PathVersion:
		writeJSON(rw, http.StatusOK, s.cfg.Version)
		return
	case PathMetrics:
		if !s.cfg.SeparateMetrics {
			s.metrics.ServeHTTP(rw, r)
			return
		}
	}
	if r.TLS == nil && !s.cfg.InsecureBasic && isBasic(r) && !isLoopback(r.RemoteAddr) {
		s.m.basicRefused.Inc()
		writeText(rw, http.StatusUnauthorized, "HTTP Basic credentials are refused over plain HTTP: "+
			"connect with https://, or use a bearer token\n")
		return
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		if s.cfg.MaxBodyBytes > 0 && r.ContentLength > s.cfg.MaxBodyBytes {
			writeText(rw, http.StatusRequestEntityTooLarge, "request body too large\n")
			return
		}
		if s.cfg.BodyTimeout > 0 {
			_ = rw.ctl.SetReadDeadline(start.Add(s.cfg.BodyTimeout))
		}
		rw.body = &bodyReader{ReadCloser: r.Body, w: rw, start: start, length: r.ContentLength}
		// net/http looks at its own body type once the handler returns
		// (to discard what is left, or to close the connection gently so
		// the client reads the answer): give it back.
		orig := r.Body
		defer func() { r.Body = orig }()
		// The raw writer: net/http then closes the connection after a 413.
		r.Body = http.MaxBytesReader(w, rw.body, s.maxBody())
	}
	if s.cfg.LongLived == nil || !s.cfg.LongLived(r) {
		key := s.cfg.ClientKey(r)
		hk := hashKey(key)
		reason, ok := s.flight.acquire(hk, key != "")
		if !ok {
			s.shed(rw, reason)
			return
		}
		s.m.inFlight.Inc()
		defer func() {
			s.m.inFlight.Dec()
			s.flight.release(hk, key != "")
		}()
	}
	s.cfg.Handler.ServeHTTP(rw, r)
}

// maxBody is MaxBytesReader's limit (no limit: the largest int64).
func (s *Server) maxBody() int64 {
	if s.cfg.MaxBodyBytes > 0 {
		return s.cfg.MaxBodyBytes
	}
	return 1<<63 - 1
}

// route names a path for metrics and the access log.
func (s *Server) route(p string) string {
	switch p {
	case PathLBHeartbeat, PathHeartbeat, PathVersion, PathMetrics:
		return p
	}
	return s.routes.name(p)
}

// shed answers a request beyond an in-flight bound.
func (s *Server) shed(w *respWriter, reason string) {
	s.m.shed.WithLabelValues(reason).Inc()
	s.shedSince.Add(1)
	if s.warnDue(&s.lastShedWarn) {
		s.cfg.Logger.Warn("shedding load: requests in flight at their bound", "bound", reason,
			"shed_since_last_warning", s.shedSince.Swap(0), "max_in_flight", s.cfg.MaxInFlight,
			"max_in_flight_per_client", s.cfg.MaxInFlightPerClient)
	}
	h := w.Header()
	h.Set("Retry-After", s.shedRetry)
	h.Set("X-Weave-Backoff", s.shedRetry)
	writeText(w, http.StatusServiceUnavailable, "server busy: crash id "+RequestID(w)+"; retry after "+s.shedRetry+" s\n")
}

// warnLimited logs a WARN at most once per second per kind.
func (s *Server) warnLimited(last *atomic.Int64, msg string, args ...any) {
	if s.warnDue(last) {
		s.cfg.Logger.Warn(msg, args...)
	}
}

// warnDue reports whether a rate-limited WARN may be logged now.
func (s *Server) warnDue(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(time.Second) && last.CompareAndSwap(prev, now)
}

// finish counts the request and writes its access log line.
func (s *Server) finish(w *respWriter, r *http.Request, route, id string, start time.Time) {
	// The final flush happens after the handler returns: give it time,
	// unless a write just did (a stale deadline from an earlier request
	// on the connection may be in the past).
	if time.Since(w.deadlineAt) > time.Second {
		w.writeDeadline(0)
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	d := time.Since(start)
	s.m.observe(route, r.Method, status, d.Seconds())
	if s.cfg.AccessLog != nil {
		s.cfg.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", methodLabel(r.Method)), slog.String("route", route), slog.Int("status", status),
			slog.Int64("bytes", w.bytes), slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.String("request_id", id), slog.String("remote", r.RemoteAddr))
	}
}

// isBasic reports HTTP Basic credentials.
func isBasic(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	return len(h) >= 6 && strings.EqualFold(h[:6], "basic ")
}

// writeText answers a plain-text message.
func writeText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg))
}

// errorLogWriter sends net/http's own messages to slog: panics in
// handlers as errors, accept failures (out of file descriptors) as
// warnings at most once a second, the rest (TLS handshake failures,
// malformed requests) at debug level, since any stranger can cause them.
type errorLogWriter struct{ s *Server }

func (e errorLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	l := e.s.cfg.Logger
	switch {
	case strings.Contains(msg, "panic"):
		l.Error("http: handler panicked", "detail", msg)
	case strings.Contains(msg, "Accept error"):
		e.s.warnLimited(&e.s.lastAcceptWarn, "http: cannot accept connections", "detail", msg)
	default:
		l.Debug(msg, "component", "net/http")
	}
	return len(p), nil
}
