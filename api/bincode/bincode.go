package bincode

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// AppendString appends s with its length as a uvarint in front.
func AppendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// AppendBool appends v as one byte, 1 or 0.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// Decoder reads the fields of one encoded value front to back. Its zero
// value reads nothing; use NewDecoder. A Decoder is not safe for
// concurrent use.
type Decoder struct {
	b   []byte
	err error
	bad error // the error failures wrap
}

// NewDecoder returns a Decoder of b whose failures wrap bad (the format's
// sentinel error, such as a package's ErrCorrupt). The Decoder keeps b:
// Bytes and Take return parts of it.
func NewDecoder(b []byte, bad error) Decoder {
	return Decoder{b: b, bad: bad}
}

// Err returns the first failure, or nil.
func (d *Decoder) Err() error { return d.err }

// Len returns the number of bytes not read yet (0 after a failure).
func (d *Decoder) Len() int { return len(d.b) }

// Rest returns the bytes not read yet, without consuming them.
func (d *Decoder) Rest() []byte { return d.b }

// Fail records a failure (unless one is recorded already) wrapping the
// Decoder's error with the formatted reason, and drops the unread bytes.
func (d *Decoder) Fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", d.bad, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

// End fails the Decoder when bytes are left over, and returns Err.
func (d *Decoder) End() error {
	if d.err == nil && len(d.b) != 0 {
		d.Fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.Fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// Take reads the next n bytes (a part of the input, not a copy); nil
// after a failure.
func (d *Decoder) Take(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.Fail("truncated")
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// Uvarint reads a minimally encoded unsigned varint.
func (d *Decoder) Uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	if b := d.b; len(b) > 0 && b[0] < 0x80 { // one byte: most lengths and flags
		d.b = b[1:]
		return uint64(b[0])
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.Fail("bad varint")
		return 0
	}
	// A last group of 0 (after the first) adds nothing: a second encoding
	// of the same value.
	if n > 1 && d.b[n-1] == 0 {
		d.Fail("non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return x
}

// Varint reads a minimally encoded zig-zag varint (binary.AppendVarint's
// encoding).
func (d *Decoder) Varint() int64 {
	u := d.Uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

// Count reads a count of at most max items that take at least minSize
// bytes each, so that a count the rest of the input cannot hold is refused
// before the caller allocates for it. minSize 0 bounds the count by max
// only.
func (d *Decoder) Count(max, minSize int) int {
	n := d.Uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(max) || (minSize > 0 && n > uint64(len(d.b)/minSize)) {
		d.Fail("count %d out of bounds", n)
		return 0
	}
	return int(n)
}

// Bool reads one byte that must be 0 or 1.
func (d *Decoder) Bool() bool {
	if d.err != nil {
		return false
	}
	if len(d.b) < 1 || d.b[0] > 1 {
		d.Fail("bad bool")
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

// Bytes reads a length-prefixed string of at most max bytes and returns it
// as a part of the input, not a copy.
func (d *Decoder) Bytes(max int) []byte {
	n := d.Uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.Fail("count %d out of bounds", n)
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// String reads a length-prefixed string of at most max bytes, copied.
func (d *Decoder) String(max int) string { return string(d.Bytes(max)) }

// Text reads a length-prefixed string of at most max bytes of valid UTF-8,
// copied.
func (d *Decoder) Text(max int) string {
	s := d.String(max)
	if d.err == nil && !utf8.ValidString(s) {
		d.Fail("invalid UTF-8")
	}
	return s
}
