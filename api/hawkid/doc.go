// Package hawkid is the format of the Hawk credentials HCE's directory
// issues for Sync 1.5: the Hawk id is a token a storage node verifies
// offline, and it carries the Hawk key sealed to that node, so that only
// the node (and the directory that made the key) can use it.
//
// # Format
//
//	h1.<base64url(JSON claims)>.<base64url(Ed25519 signature)>
//
// The signature is the directory's, made with the same Ed25519 keys as
// api's v1 bearer tokens and over the ASCII bytes "h1." followed by the
// claims part as sent (the "h1." prefix keeps the two token kinds from
// being taken for one another). The claims name the signing key (kid), the
// numeric Sync uid, the HCE user name (sub), the node the credentials are
// for (aud), the node key the Hawk key is sealed to (nk), iat and exp
// (exp - iat <= 1 hour), and key: the 32 random bytes of the Hawk key
// sealed with HPKE (RFC 9180; DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
// ChaCha20-Poly1305, base mode) to the node's X25519 public key, with the
// other claims bound in as HPKE info. The whole id is at most MaxIDLen
// bytes and uses only characters Hawk allows in an attribute value.
//
// The Hawk key the client gets from the tokenserver (and MACs with, as the
// bytes of that string) is the base64url text of the 32 bytes: KeyString.
//
// # Why a sealed key and not a per-node shared secret
//
// Mozilla's tokenserver shares one secret per node with the storage node
// and derives each Hawk key from it (tokenlib). In a federation whose nodes
// are run by many operators that means: every directory voter stores every
// node's secret (one compromised voter, or one leaked raft snapshot,
// exposes all of them and lets the holder mint credentials for every
// node); the secret has to be agreed and carried to the node at admission
// over some confidential channel, and rotated the same way; and a node's
// secret is also enough to forge credentials for itself that the directory
// never issued.
//
// Sealing instead needs only public keys in the directory's state: the
// node publishes its X25519 public key when it joins (it is part of the
// node's record, like its libp2p identity), rotation is publishing a new
// key (nk names which one a token used), nothing secret crosses the
// network at admission, and the directory's raft log and snapshots hold no
// node secrets at all. A node can verify an id offline (Ed25519 signature
// by a published directory key, aud = itself, exp) and recover the key
// with its private key; it cannot mint ids, because it does not hold the
// directory's signing key. Compromise of a node's private key exposes the
// Hawk keys of ids sealed to that node, which that node could read anyway.
//
// The costs: ids are about 400 bytes (389 with short names) instead of
// about 200 (well within Hawk's 4096-byte header limit), and opening costs
// one X25519 operation per request (tens of microseconds; a node may cache
// opened keys by id for the id's lifetime). The directory still knows
// every Hawk key it issued, as in any tokenserver design: it is the party
// that authenticates the user.
package hawkid
