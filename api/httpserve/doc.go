// Package httpserve is the HTTP platform every hce process serves on (a
// directory voter, a storage node, `hce serve`): one http.Server wrapped
// with what a public service needs whatever it serves.
//
//   - Timeouts that bound every phase of a connection without cutting a
//     slow but legitimate transfer: headers within HeaderTimeout; a body
//     within BodyTimeout plus one second per MinBodyRate bytes received
//     (a slow-body sender is cut after about BodyTimeout, a 64 MiB body at
//     MinBodyRate still passes); each response write within WriteTimeout
//     plus one second per MinWriteRate bytes; keep-alive connections closed
//     after IdleTimeout. No timeout bounds a whole response, so long-poll
//     and continuous feeds live as long as their client reads them. An
//     error answered before a large body is read goes out at once and
//     closes the connection (net/http would read the body first).
//   - Connection caps in total and per client address (an IPv6 client is
//     its /64), checked on accept, before anything is read: plain HTTP
//     gets a 503, TLS a closed connection.
//   - Load shedding: a bound on requests in flight for the server and per
//     client (by default its Authorization credentials); beyond it 503
//     with Retry-After and X-Weave-Backoff in seconds, before the body is
//     read. Long-lived requests (LongLived) are not counted.
//   - HTTPS (TLS 1.2+, HTTP/1.1) from certificate files that are reloaded
//     on ReloadTLS (SIGHUP in cmd/hce) and when they change on disk; HTTP
//     Basic credentials over plain HTTP are refused with 401 unless they
//     come from loopback or InsecureBasic is set.
//   - Dockerflow health: /__lbheartbeat__ (503 while draining or
//     saturated), /__heartbeat__ (the wiring's Checkers, JSON, 503 when one
//     fails), /__version__ (from the build info).
//   - Prometheus /metrics (optionally on a separate listener): request
//     counts and latency histograms per route template and status,
//     connections, shedding, TLS; the wiring registers its own collectors
//     in the same Registry.
//   - An X-Request-Id on every response (a valid incoming one is kept)
//     and an optional access log line per request that names the route
//     template, never the raw path, a credential or a payload.
//
// The package imports none of HCE's other packages: what it serves comes
// from its Config (a Handler, route templates, Checkers).
package httpserve
