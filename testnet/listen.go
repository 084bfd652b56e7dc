package testnet

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/couch"
)

// DefaultListenAddr is the default of every listen address of StartVoter
// and StartNode (HTTP, raft, libp2p): a free loopback port.
const DefaultListenAddr = "127.0.0.1:0"

// listenHTTP listens on addr and returns the listener with the base URL
// clients reach it at: public, or http://<listen address>/, ending in "/".
func listenHTTP(addr, public string) (net.Listener, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("testnet: listen: %w", err)
	}
	url := public
	if url == "" {
		url = "http://" + ln.Addr().String() + "/"
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == ccfg.Prefix || strings.HasPrefix(p, ccfg.Prefix+"/") {
			ch.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	}), nil
}

// newHTTPServer returns the HTTP server of a node. Its Shutdown closes
// stop, which ends long-lived CouchDB _changes feeds instead of letting
// them hold Shutdown until their timeout.
func newHTTPServer(h http.Handler, stop chan struct{}) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
	}
	var once sync.Once
	srv.RegisterOnShutdown(func() { once.Do(func() { close(stop) }) })
	return srv
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
		return "", fmt.Errorf("testnet: p2p address %q: %w", addr, err)
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
