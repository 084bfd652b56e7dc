package revtree

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// revHashTag is the domain separator that starts every hashed message. A
// change of the encoding must change the tag.
const revHashTag = "hce/rev/v1\x00"

// NewRevHash returns the deterministic hash of an edit: the first 16 bytes
// of SHA-256 over
//
//	"hce/rev/v1\x00"            11 bytes, domain tag (fixed length)
//	deleted                     1 byte, 0x00 or 0x01
//	parent.Pos                  8 bytes, big-endian (0 for a first edit)
//	parent.Hash                 16 bytes (zeros for a first edit)
//	len(body)                   8 bytes, big-endian
//	body                        len(body) bytes
//
// body is the caller's canonical encoding of the replicated WBO fields; the
// document id is not hashed (as in CouchDB). Every field has a fixed width or
// a length prefix, so distinct inputs never produce the same message, and two
// nodes making the identical edit on the identical parent get the identical
// revision, which makes retries idempotent and avoids spurious conflicts.
func NewRevHash(parent Rev, deleted bool, body []byte) [HashLen]byte {
	buf := make([]byte, RevHashHeaderLen, RevHashHeaderLen+len(body))
	return SumRevHash(append(buf, body...), parent, deleted)
}

// RevHashHeaderLen is the room SumRevHash needs before the body.
const RevHashHeaderLen = len(revHashTag) + 1 + 8 + HashLen + 8

// SumRevHash returns NewRevHash(parent, deleted, buf[RevHashHeaderLen:])
// computed in place: it overwrites buf's first RevHashHeaderLen bytes with
// the message's header and allocates nothing, so a caller that hashes
// many edits reuses one buffer. buf must be at least RevHashHeaderLen
// long.
func SumRevHash(buf []byte, parent Rev, deleted bool) [HashLen]byte {
	hdr := buf[:RevHashHeaderLen]
	n := copy(hdr, revHashTag)
	hdr[n] = 0
	if deleted {
		hdr[n] = 1
	}
	n++
	binary.BigEndian.PutUint64(hdr[n:], parent.Pos)
	n += 8
	n += copy(hdr[n:], parent.Hash[:])
	binary.BigEndian.PutUint64(hdr[n:], uint64(len(buf)-RevHashHeaderLen))
	sum := sha256.Sum256(buf)
	return [HashLen]byte(sum[:HashLen])
}

// NewRev returns the child revision of parent (the zero Rev for a first
// edit) for an edit with the given deleted flag and canonical body: position
// parent.Pos+1 and hash NewRevHash(parent, deleted, body). It fails with
// ErrInvalidRev if the position would exceed MaxPos.
func NewRev(parent Rev, deleted bool, body []byte) (Rev, error) {
	if parent.Pos >= MaxPos {
		return Rev{}, fmt.Errorf("%w: parent position %d leaves no room for a child", ErrInvalidRev, parent.Pos)
	}
	return Rev{Pos: parent.Pos + 1, Hash: NewRevHash(parent, deleted, body)}, nil
}
