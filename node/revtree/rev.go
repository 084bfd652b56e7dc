package revtree

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxPos is the largest revision position accepted anywhere in this package:
// 2^53-1, the largest integer a JavaScript peer (PouchDB) represents exactly.
// ParseRev, Merge and Decode refuse anything above it.
const MaxPos = 1<<53 - 1

// maxPosDigits is the number of decimal digits of MaxPos.
const maxPosDigits = 16

// HashLen is the length of a revision hash in bytes (32 hex characters).
const HashLen = 16

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	// ErrInvalidRev reports a malformed revision string or hash.
	ErrInvalidRev = errors.New("revtree: invalid revision")
	// ErrInvalidPath reports a path that fails validation (empty, too long,
	// inconsistent positions, duplicate ids, position overflow).
	ErrInvalidPath = errors.New("revtree: invalid path")
	// ErrParentMismatch reports a path that gives a known revision a
	// different parent than the tree already records. Rev hashes cover the
	// parent, so this only happens with forged or corrupted input.
	ErrParentMismatch = errors.New("revtree: parent mismatch")
	// ErrDeletedMismatch reports a path whose leaf is a known leaf with the
	// opposite deleted flag (the hash covers the flag, so the input is bad).
	ErrDeletedMismatch = errors.New("revtree: deleted flag mismatch")
	// ErrNotLeaf reports an operation that needs a leaf revision.
	ErrNotLeaf = errors.New("revtree: not a leaf")
	// ErrCorrupt reports an encoded tree that fails strict validation.
	ErrCorrupt = errors.New("revtree: corrupt encoding")
	// ErrInvalidConfig reports a Config that fails Validate.
	ErrInvalidConfig = errors.New("revtree: invalid config")
)

// Rev is a revision id "Pos-Hash". The zero Rev means "no revision" (for
// example the parent of a first edit); valid revisions have 1 <= Pos <= MaxPos.
type Rev struct {
	// Pos is the depth of the revision in the document's history, 1 for a
	// document's first revision.
	Pos uint64
	// Hash identifies the content and the parent; printed as 32 lowercase
	// hex characters.
	Hash [HashLen]byte
}

// IsZero reports whether r is the zero Rev.
func (r Rev) IsZero() bool { return r == Rev{} }

// String returns the wire form "N-<32 lowercase hex>". The zero Rev prints
// as "0-" followed by 32 zeros, which ParseRev refuses.
func (r Rev) String() string {
	var b strings.Builder
	b.Grow(maxPosDigits + 1 + 2*HashLen)
	b.WriteString(strconv.FormatUint(r.Pos, 10))
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString(r.Hash[:]))
	return b.String()
}

// HashString returns the hash part of r as 32 lowercase hex characters, the
// form used in the ids of CouchDB's _revisions.
func (r Rev) HashString() string { return hex.EncodeToString(r.Hash[:]) }

// MarshalText implements encoding.TextMarshaler with the String form.
func (r Rev) MarshalText() ([]byte, error) {
	if r.Pos < 1 || r.Pos > MaxPos {
		return nil, fmt.Errorf("%w: position %d out of range", ErrInvalidRev, r.Pos)
	}
	return []byte(r.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseRev.
func (r *Rev) UnmarshalText(b []byte) error {
	v, err := ParseRev(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Compare orders revisions by position, then by hash bytes. Because hashes
// print as fixed-length lowercase hex, the byte order of Hash equals the
// string order CouchDB and PouchDB use for the hash part. It returns -1, 0
// or +1.
func Compare(a, b Rev) int {
	if c := cmp.Compare(a.Pos, b.Pos); c != 0 {
		return c
	}
	return bytes.Compare(a.Hash[:], b.Hash[:])
}

// Less reports whether r sorts before o under Compare.
func (r Rev) Less(o Rev) bool { return Compare(r, o) < 0 }

// ParseRev parses the strict wire form "N-<32 lowercase hex>": N is a
// decimal position in [1, MaxPos] without sign or leading zeros, the hash is
// exactly 32 lowercase hex characters. Anything else (uppercase hex, other
// hash lengths, "01-...", overflow) fails with ErrInvalidRev.
func ParseRev(s string) (Rev, error) {
	posStr, hashStr, ok := strings.Cut(s, "-")
	if !ok {
		return Rev{}, fmt.Errorf("%w: %q has no '-'", ErrInvalidRev, s)
	}
	pos, err := parsePos(posStr)
	if err != nil {
		return Rev{}, fmt.Errorf("%w: %q: %v", ErrInvalidRev, s, err)
	}
	h, err := ParseHash(hashStr)
	if err != nil {
		return Rev{}, fmt.Errorf("%w: %q: bad hash", ErrInvalidRev, s)
	}
	return Rev{Pos: pos, Hash: h}, nil
}

func parsePos(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty position")
	}
	if len(s) > maxPosDigits {
		return 0, errors.New("position too large")
	}
	if s[0] == '0' {
		return 0, errors.New("position must be >= 1 without leading zeros")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("position is not decimal")
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > MaxPos {
		return 0, errors.New("position too large")
	}
	return v, nil
}

// ParseHash parses exactly 32 lowercase hex characters into a hash, as found
// in the ids of CouchDB's _revisions. Uppercase is refused (ErrInvalidRev):
// CouchDB would read "AB..." and "ab..." as the same rev, PouchDB would not.
func ParseHash(s string) ([HashLen]byte, error) {
	var h [HashLen]byte
	if len(s) != 2*HashLen {
		return h, fmt.Errorf("%w: hash %q is not %d hex characters", ErrInvalidRev, s, 2*HashLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return h, fmt.Errorf("%w: hash %q is not lowercase hex", ErrInvalidRev, s)
		}
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("%w: hash %q: %v", ErrInvalidRev, s, err)
	}
	return h, nil
}
