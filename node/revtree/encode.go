package revtree

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/hce-sync/hce/api/bincode"
)

// EncodingVersion is the first byte of Encode's output.
const EncodingVersion = 1

// Flag bits of an encoded revision.
const (
	flagParent  = 1 << 0
	flagDeleted = 1 << 1
	flagValue   = 1 << 2
	flagsKnown  = flagParent | flagDeleted | flagValue
)

// minEncodedNode is the smallest encoding of one revision: a one-byte
// position delta, the hash and the flags.
const minEncodedNode = 1 + HashLen + 1

// Encode returns the canonical binary form of the tree (version 1):
//
//	version                 1 byte, EncodingVersion
//	count                   uvarint, number of revisions
//	count times, revisions in ascending (Pos, Hash) order:
//	  pos delta             uvarint, Pos minus the previous Pos (the first from 0)
//	  hash                  16 bytes
//	  flags                 1 byte: 1 parent, 2 deleted, 4 value
//	  parent back-offset    uvarint, if flag 1: index - parent's index (>= 1)
//	  value                 uvarint, if flag 4 (non-zero)
//
// Equal trees encode to equal bytes. The configuration is not encoded.
func (t *Tree) Encode() []byte {
	revs := make([]Rev, 0, len(t.nodes))
	for r := range t.nodes {
		revs = append(revs, r)
	}
	slices.SortFunc(revs, Compare)
	index := make(map[Rev]int, len(revs))
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(revs)*(minEncodedNode+2))
	buf = append(buf, EncodingVersion)
	buf = binary.AppendUvarint(buf, uint64(len(revs)))
	var prev uint64
	for i, r := range revs {
		index[r] = i
		n := t.nodes[r]
		buf = binary.AppendUvarint(buf, r.Pos-prev)
		prev = r.Pos
		buf = append(buf, r.Hash[:]...)
		var flags byte
		if !n.parent.IsZero() {
			flags |= flagParent
		}
		if n.deleted {
			flags |= flagDeleted
		}
		if n.value != 0 {
			flags |= flagValue
		}
		buf = append(buf, flags)
		if !n.parent.IsZero() {
			buf = binary.AppendUvarint(buf, uint64(i-index[n.parent]))
		}
		if n.value != 0 {
			buf = binary.AppendUvarint(buf, n.value)
		}
	}
	return buf
}

// Decode parses Encode's output with the default Config. The input is
// validated strictly as untrusted data: wrong version, non-minimal varints,
// unsorted or duplicate revisions, positions out of range, a parent that is
// not at the previous position, flags on a revision that has children,
// unknown flag bits and trailing bytes all fail with ErrCorrupt. Decode
// accepts exactly the outputs of Encode.
func Decode(data []byte) (*Tree, error) {
	d := bincode.NewDecoder(data, ErrCorrupt)
	if v := d.Byte(); d.Err() == nil && v != EncodingVersion {
		return nil, fmt.Errorf("%w: version %d", ErrCorrupt, v)
	}
	count := d.Uvarint()
	if d.Err() != nil {
		return nil, d.Err()
	}
	if count > uint64(d.Len()/minEncodedNode) {
		return nil, fmt.Errorf("%w: %d revisions cannot fit in %d bytes", ErrCorrupt, count, d.Len())
	}
	t := &Tree{}
	if count > 0 {
		t.nodes = make(map[Rev]*node, count)
	}
	revs := make([]Rev, 0, count)
	var prev Rev
	for i := 0; i < int(count); i++ {
		delta := d.Uvarint()
		var r Rev
		copy(r.Hash[:], d.Take(HashLen))
		flags := d.Byte()
		if d.Err() != nil {
			return nil, d.Err()
		}
		if delta > MaxPos-prev.Pos {
			return nil, fmt.Errorf("%w: position overflow", ErrCorrupt)
		}
		r.Pos = prev.Pos + delta
		if r.Pos < 1 || (i > 0 && Compare(prev, r) >= 0) {
			return nil, fmt.Errorf("%w: revision %d (%s) out of order", ErrCorrupt, i, r)
		}
		if flags&^flagsKnown != 0 {
			return nil, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
		}
		n := &node{deleted: flags&flagDeleted != 0}
		if flags&flagParent != 0 {
			off := d.Uvarint()
			if d.Err() != nil {
				return nil, d.Err()
			}
			if off < 1 || off > uint64(i) {
				return nil, fmt.Errorf("%w: parent offset %d at revision %d", ErrCorrupt, off, i)
			}
			pr := revs[i-int(off)]
			if pr.Pos != r.Pos-1 {
				return nil, fmt.Errorf("%w: parent %s of %s is not at the previous position", ErrCorrupt, pr, r)
			}
			n.parent = pr
			t.nodes[pr].children++
		}
		if flags&flagValue != 0 {
			n.value = d.Uvarint()
			if d.Err() != nil {
				return nil, d.Err()
			}
			if n.value == 0 {
				return nil, fmt.Errorf("%w: zero value flagged", ErrCorrupt)
			}
		}
		t.nodes[r] = n
		revs = append(revs, r)
		prev = r
	}
	if err := d.End(); err != nil {
		return nil, err
	}
	for r, n := range t.nodes {
		if n.children != 0 && (n.deleted || n.value != 0) {
			return nil, fmt.Errorf("%w: leaf flags on inner revision %s", ErrCorrupt, r)
		}
	}
	return t, nil
}
