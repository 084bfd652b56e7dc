// Package raftls carries hashicorp/raft traffic between directory voters over
// mutual TLS, and holds the small certificate authority that vouches for them.
//
// Trust model: every voter has a certificate issued by the directory CA
// (CA.Issue) that is valid both as a TLS server and a TLS client certificate
// and names the voter by a URI SAN of the form hce://directory/<id>. The
// configuration built by ServerClientTLS accepts TLS 1.3 only, requires and
// verifies a client certificate, and on both ends of every connection checks
// that the peer's chain leads to the directory CA and that the peer's leaf
// certificate carries the directory-voter role (the hce://directory/ URI). A
// storage node's or a stranger's certificate, a certificate from another CA,
// or no certificate at all is refused during the handshake. The dialing side
// also checks the usual host name against the address it dialed, so a voter's
// certificate must list the IPs or DNS names it advertises.
//
// StreamLayer implements raft.StreamLayer over any net.Listener (normally
// TCP). Handshakes of accepted connections run in their own goroutines with a
// deadline, so a silent or garbage-sending client can neither crash nor stall
// the listener; only completed, verified connections reach raft. NewTransport
// wraps a StreamLayer in a raft.NetworkTransport without pipelined replication
// (raft's pipeline can deadlock after a leadership change). Config.Refuse lets a test
// harness cut chosen voters off (a partition): their connections are refused
// after the handshake and closed on their next read or write.
//
// The CA is deliberately minimal: Ed25519 keys, one self-signed root, PEM
// files on disk (ca.pem, ca-key.pem with mode 0600). There is no revocation:
// a voter is removed from the cluster through raft membership, and its
// certificate's lifetime bounds the rest.
package raftls
