package api

import (
	"context"
	"net"
	"net/http"
)

// The client address travels in the request context from the HTTP layer
// to the code that limits failed logins per client (the directory's
// password checks, a node's call to them), which sees only a context.

type clientAddrKey struct{}

// WithClientAddr returns ctx carrying addr, the address of the client a
// request came from (an IP address without port).
func WithClientAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, clientAddrKey{}, addr)
}

// ClientAddr returns the client address ctx carries (WithClientAddr), or
// "" when it carries none.
func ClientAddr(ctx context.Context) string {
	s, _ := ctx.Value(clientAddrKey{}).(string)
	return s
}

// RemoteIP returns the IP address of r's client: the host part of
// RemoteAddr (the peer of the connection; X-Forwarded-For is not
// trusted).
func RemoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// withClientAddr returns r with its client's address in its context,
// unless it carries one already.
func withClientAddr(r *http.Request) *http.Request {
	if ClientAddr(r.Context()) != "" {
		return r
	}
	return r.WithContext(WithClientAddr(r.Context(), RemoteIP(r)))
}

// ClientAddrHandler puts each request's client address (RemoteIP) into
// its context for h, so that authentication behind h can limit failed
// logins per client. The user API handler does this itself.
func ClientAddrHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, withClientAddr(r))
	})
}
