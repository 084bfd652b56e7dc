// Package bincode holds the primitives of HCE's compact binary formats —
// the node's stored values (node), the stored revision tree
// (node/revtree) and the replication messages (replication): unsigned
// varints, zig-zag varints, length-prefixed strings, bools and counts.
//
// Decoder reads them strictly, as untrusted input: a varint must be
// minimally encoded (so that a value has exactly one encoding and a
// decoded message re-encodes to the same bytes), and a count or length is
// refused before anything is allocated for it when it exceeds its bound or
// the bytes left. The first failure sticks; every later read returns a
// zero value, so a format's decoder reads all its fields and checks Err
// once.
//
// It lives under api so that every package may import it; it imports none
// of HCE's packages. The formats themselves (field order, versions,
// bounds) belong to the packages that own them.
package bincode
