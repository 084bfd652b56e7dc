// Package p2p is the libp2p plumbing shared by storage nodes and directory
// voters: a persistent Ed25519 identity (LoadOrCreateIdentity), a
// connection gater that admits only listed peers (Gater, Allowlist,
// StaticAllowlist), a locked-down host (NewHost: TCP, Noise and yamux
// only; no relay, NAT traversal, mDNS or DHT; bounded by a resource
// manager) and a small request/response RPC over streams (Serve, Call;
// ServeSessions, Sessions).
//
// # Wire format
//
// With Serve, one RPC is one stream: the caller writes one request frame
// and closes its write side; the server answers with one frame (data or
// error) and closes the stream. With ServeSessions a stream carries any
// number of RPCs, one after another: a request frame, its answer frame,
// the next request frame... The server closes a session stream cleanly
// only between requests (after IdleTimeout without one, when the caller
// closes its write side, or when it stops), so a caller that reads the
// stream's end before any byte of an answer knows its request was not
// read and may send it again on a new stream; Sessions does, and keeps
// its streams for the next calls to the same peer. A frame is
//
//	uvarint(n) | type (1 byte) | payload (n-1 bytes)
//
// where n counts the type byte and the payload and is at most the
// configured maximum frame size plus one (default 1 MiB payload). Type 1
// carries data, type 2 an error: the JSON object {"code":..,"message":..}
// that the caller gets back as a *RemoteError. Any malformed frame makes
// the reader reset the stream; the server keeps serving other streams.
//
// The directory protocols (ProtoHeartbeat, ProtoCheckPassword, ProtoKeys)
// carry JSON messages decoded strictly (unknown fields and trailing data
// are refused) and bounded (Validate).
package p2p
