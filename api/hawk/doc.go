// Package hawk implements the server side of the Hawk HTTP authentication
// scheme (the hueniverse/hawk specification, "hawk.1" normalization) as
// Firefox Sync 1.5 storage nodes use it: parsing the Authorization header,
// building the normalized request string, the request MAC (HMAC-SHA256 only),
// the optional payload hash, verification with a timestamp skew window and a
// bounded replay (nonce) cache, and the WWW-Authenticate answer that lets a
// client with a wrong clock learn the server's time.
//
// It also has the client half (Sign), which tests and HCE's own client use.
//
// What a Verifier checks, in order: the header's syntax (ParseHeader), the
// host and port (from the Host header, or from configured values, or from
// X-Forwarded-Host/-Port/-Proto only when Config.TrustForwarded is set), the
// credentials the caller looks up by id, the MAC, the timestamp against
// Config.Skew, and last the nonce. The timestamp is checked before the nonce
// (the reference library does the reverse) so that the nonce cache only ever
// holds nonces of acceptable timestamps, which is what bounds it. A stale
// timestamp is only reported (with WWW-Authenticate) after the MAC verified,
// so only a holder of the key learns the server's time through a tsm.
//
// The replay cache is fixed-size and time-bucketed: one bucket of nonce
// fingerprints per second of the 2*skew window, 8 MiB in all by default
// (see Config.ReplayCacheSize for the bound and the request rate it
// allows).
//
// Every authentication failure wraps api.ErrUnauthorized (a storage API
// answers 401); a full nonce cache wraps api.ErrUnavailable (503: the node is
// taking more authenticated requests per second than it was sized for).
package hawk
