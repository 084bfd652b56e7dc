package testnet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/httpserve"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/couch"
)

// DefaultListenAddr is the default of every listen address of StartVoter
// and StartNode (HTTP, raft, libp2p): a free loopback port.
const DefaultListenAddr = "127.0.0.1:0"

// HTTPConfig is the HTTP side of a voter, a node or a Standalone: the
// platform every hce process serves on (package api/httpserve) and what
// the process trusts when it calls other members over HTTPS.
type HTTPConfig struct {
	// Server adjusts the platform: timeouts, connection caps, in-flight
	// bounds, TLS certificate files, Basic over plain HTTP, access log,
	// metrics registry (nil: a new one). Handler, Routes, Checks,
	// LongLived and Logger are set by the wiring; zero fields take
	// httpserve's defaults.
	Server httpserve.Config
	// MetricsAddr, when set, serves /metrics on this address (plain
	// HTTP) instead of on the main listener.
	MetricsAddr string
	// RootCAs, when set, are the roots this process trusts for its own
	// HTTPS calls (a node reading the directory and registering, a voter
	// joining and forwarding); nil: the system's roots.
	RootCAs *x509.CertPool
}

// scheme is the scheme the listener serves.
func (c HTTPConfig) scheme() string {
	if c.Server.TLSCertFile != "" {
		return "https"
	}
	return "http"
}

// client is an HTTP client for calls to other members, trusting RootCAs.
func (c HTTPConfig) client(timeout time.Duration) *http.Client {
	if c.RootCAs == nil {
		return &http.Client{Timeout: timeout}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: c.RootCAs, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: timeout, Transport: tr}
}

// httpRoutes are the route templates requests are counted under in
// metrics and the access log (see httpserve.Config.Routes): the Weave
// storage and user APIs, the CouchDB endpoint and the directory's routes.
var httpRoutes = []string{
	"/{ver}/{user}/info/collections", "/{ver}/{user}/info/collection_counts", "/{ver}/{user}/info/collection_usage",
	"/{ver}/{user}/info/quota", "/{ver}/{user}/storage", "/{ver}/{user}/storage/{coll}", "/{ver}/{user}/storage/{coll}/{id}",
	"/user/{ver}/{user}", "/user/{ver}/{user}/node/weave", "/user/{ver}/{user}/password_reset", "/user/{ver}/{user}/email",
	"/user/{ver}/{user}/password", "/user/{ver}/{user}/token", "/misc/{ver}/captcha_html", "/weave-password-reset",
	"/couch", "/couch/{db}", "/couch/{db}/_changes", "/couch/{db}/_revs_diff", "/couch/{db}/_bulk_get",
	"/couch/{db}/_bulk_docs", "/couch/{db}/_ensure_full_commit", "/couch/{db}/_local/{id}", "/couch/{db}/{doc...}",
	"/internal/v1/join", "/internal/v1/forward", "/internal/v1/nodes/register", "/internal/v1/p2p",
	"/admin/v1/status", "/admin/v1/nodes", "/admin/v1/users/{user}", "/admin/v1/nodes/{id}/{action}",
}

// longLived reports the requests that stay open while their client
// waits: CouchDB _changes feeds other than "normal".
func longLived(r *http.Request) bool {
	if !strings.HasSuffix(r.URL.Path, "/_changes") || !strings.HasPrefix(r.URL.Path, couch.DefaultPrefix+"/") {
		return false
	}
	switch r.URL.Query().Get("feed") {
	case "longpoll", "continuous", "eventsource":
		return true
	}
	return false
}

// httpServer is a member's platform server and its listeners.
type httpServer struct {
	srv  *httpserve.Server
	ln   net.Listener
	mln  net.Listener // metrics listener, or nil
	done chan error   // Serve's result
	mdon chan error
}

// newHTTPServer wraps h in the platform configured by hc, with the
// member's checks and metrics registry, serving on ln (and on
// hc.MetricsAddr). Shutting it down closes stop, which ends long-lived
// CouchDB _changes feeds instead of letting them hold Shutdown until
// their timeout.
func newHTTPServer(hc HTTPConfig, ln net.Listener, h http.Handler, checks map[string]httpserve.Checker, logger *slog.Logger, stop chan struct{}) (*httpServer, error) {
	cfg := hc.Server
	cfg.Handler = h
	cfg.Routes = httpRoutes
	cfg.Checks = checks
	cfg.LongLived = longLived
	cfg.Logger = logger.With("component", "http")
	cfg.SeparateMetrics = hc.MetricsAddr != ""
	srv, err := httpserve.New(cfg)
	if err != nil {
		return nil, err
	}
	hs := &httpServer{srv: srv, ln: ln, done: make(chan error, 1)}
	if hc.MetricsAddr != "" {
		if hs.mln, err = httpserve.Listen(hc.MetricsAddr); err != nil {
			_ = srv.Close()
			return nil, err
		}
	}
	if stop != nil {
		var once sync.Once
		srv.RegisterOnShutdown(func() { once.Do(func() { close(stop) }) })
	}
	return hs, nil
}

// start serves until shutdown.
func (hs *httpServer) start() {
	go func() { hs.done <- hs.srv.Serve(hs.ln) }()
	if hs.mln != nil {
		hs.mdon = make(chan error, 1)
		go func() { hs.mdon <- hs.srv.ServeMetrics(hs.mln) }()
	}
}

// wait collects Serve's results after Shutdown or Close.
func (hs *httpServer) wait() error {
	err := <-hs.done
	if hs.mdon != nil {
		err = errors.Join(err, <-hs.mdon)
	} else if hs.mln != nil {
		hs.mln.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// listenHTTP listens on addr and returns the listener with the base URL
// clients reach it at: public, or <scheme>://<listen address>/, ending in
// "/".
func listenHTTP(addr, public, scheme string) (net.Listener, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("HTTP listener: %w", err)
	}
	url := public
	if url == "" {
		url = scheme + "://" + ln.Addr().String() + "/"
	}
	if !strings.HasSuffix(url, "/") {
		url += "/"
	}
	return ln, url, nil
}

// withCouch serves the store's CouchDB replication endpoint (package
// node/couch) under /couch beside next, with the same authenticator as the
// Weave storage API. Closing stop ends its waiting _changes feeds.
func withCouch(store *node.Store, auth api.Authenticator, logger *slog.Logger, stop <-chan struct{}, next http.Handler) (http.Handler, error) {
	ccfg := couch.DefaultConfig()
	ccfg.Store = store
	ccfg.Auth = auth
	ccfg.Logger = logger.With("component", "couch")
	ccfg.Stop = stop
	ch, err := couch.NewHandler(ccfg)
	if err != nil {
		return nil, err
	}
	// The client's address goes into each request's context: the
	// directory limits failed logins per client.
	under := ccfg.Prefix + "/"
	return api.ClientAddrHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == ccfg.Prefix || strings.HasPrefix(p, under) {
			ch.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})), nil
}

// toMultiaddr turns host:port (or a multiaddress) into a TCP multiaddress.
func toMultiaddr(addr string) (string, error) {
	if strings.HasPrefix(addr, "/") {
		if _, err := ma.NewMultiaddr(addr); err != nil {
			return "", err
		}
		return addr, nil
	}
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("p2p listen address %q: %w", addr, err)
	}
	ip := net.ParseIP(h)
	switch {
	case ip == nil:
		return fmt.Sprintf("/dns/%s/tcp/%s", h, port), nil
	case ip.To4() != nil:
		return fmt.Sprintf("/ip4/%s/tcp/%s", h, port), nil
	}
	return fmt.Sprintf("/ip6/%s/tcp/%s", h, port), nil
}
