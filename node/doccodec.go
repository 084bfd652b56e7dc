package node

import (
	"encoding/binary"
	"fmt"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/bincode"
	"github.com/hce-sync/hce/node/revtree"
)

// Stored document forms. Version 5 is written: a single path keeps its
// leaf and its tail (at most ancTail of the newest ancestors) here, the
// older ancestors in ancestor keys (history.go). Versions 4 (the leaf
// alone here) and 3 (the recent hashes here, older ones in the history
// key tagHist) are read, and written again as version 5 when the
// document changes.
const (
	verDoc   = 5 // seq, form, revisions, leaf bodies
	verDoc4  = 4 // seq, form, revisions (the leaf alone), leaf bodies
	verDoc3  = 3 // seq, form, revisions (recent hashes, count in the history key), leaf bodies
	formTree = 0 // revtree encoding follows
	formLin  = 1 // v5: leaf position, deleted, revision count, tail length t, the leaf's and t ancestors' hashes newest first; v4: leaf position, deleted, revision count, leaf hash; v3: leaf position, deleted, count, recent hashes newest first, count in the history key
)

// maxTailRead is the longest tail a stored document may have: more than
// ancTail, so that a store written with a longer tail stays readable.
const maxTailRead = 64

// Leaf body forms in a stored document.
const (
	bodyHere   = 0 // the whole body follows
	bodyInView = 1 // (version 3) the live winner: origin, origin time and expiry follow; the rest is the Weave record
	bodyView   = 2 // the live winner: flags, then those of origin, origin time and expiry the flags do not say; the rest is the Weave record
)

// bodyView flags.
const (
	viewOriginRef = 1 << iota // the origin is an entry of the origin dictionary (uvarint), not a string
	viewTimeMod               // the origin time is the record head's modified
	viewExpHead               // the expiry is the record head's
)

// appendDoc encodes a document: version, seq, its revisions (a single
// path as its leaf and length, else the tree), then the bodies of its
// leaves, winner first (bodies never decoded are copied as stored). h is
// the record head the document is embedded after (nil under its document
// key): the live winner's origin time and expiry are left out when they
// equal the head's. Its error is a stored body that does not decode.
func (s *Store) appendDoc(b []byte, d *docState, h *head) ([]byte, error) {
	b = binary.AppendUvarint(append(b, verDoc), d.seq)
	d.linearize()
	if l := &d.lin; l.n > 0 {
		b = append(b, formLin)
		b = binary.AppendUvarint(b, l.start)
		b = bincode.AppendBool(b, l.deleted)
		b = binary.AppendUvarint(b, uint64(l.n))
		t := d.tail()
		if t < 0 || t > maxTailRead || l.known() < 1+t {
			return nil, fmt.Errorf("tail of %d ancestors with %d of %d hashes in memory", t, l.known(), l.n)
		}
		b = binary.AppendUvarint(b, uint64(t))
		b = append(b, l.ids[:(1+t)*revtree.HashLen]...)
		w, _ := d.winner()
		return s.appendLeafBody(b, d, w, true, h)
	}
	tb := d.tree.Encode()
	b = append(b, formTree)
	b = binary.AppendUvarint(b, uint64(len(tb)))
	b = append(b, tb...)
	var err error
	for i, l := range d.tree.Leaves() {
		if b, err = s.appendLeafBody(b, d, l, i == 0, h); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// appendLeafBody appends the body of leaf l (the winner when win).
func (s *Store) appendLeafBody(b []byte, d *docState, l revtree.Leaf, win bool, h *head) ([]byte, error) {
	if i := d.leafAt(l.Rev); i >= 0 && d.leafs[i].raw != nil && (!win || l.Deleted) {
		b = append(b, bodyHere)
		return append(b, d.leafs[i].raw...), nil
	}
	x, _, err := d.body(l.Rev)
	if err != nil {
		return nil, err
	}
	if !win || l.Deleted {
		b = append(b, bodyHere)
		return appendStoredBody(b, &x), nil
	}
	// A live winner's fields are the Weave record's: only what the record
	// lacks is kept here (see DESIGN.md).
	var flags byte
	ref, isRef := s.originRef(x.Origin)
	if isRef {
		flags |= viewOriginRef
	}
	if h != nil && x.OriginTime == h.mod {
		flags |= viewTimeMod
	}
	if h != nil && x.Expiry == h.exp {
		flags |= viewExpHead
	}
	b = append(b, bodyView, flags)
	if isRef {
		b = binary.AppendUvarint(b, uint64(ref))
	} else {
		b = bincode.AppendString(b, x.Origin)
	}
	if flags&viewTimeMod == 0 {
		b = binary.AppendVarint(b, x.OriginTime)
	}
	if flags&viewExpHead == 0 {
		b = binary.AppendVarint(b, x.Expiry)
	}
	return b, nil
}

// decodeDoc decodes a stored document into ds (made by init). Leaf bodies
// are not decoded (see docState.body): they stay raw, aliasing v when
// pinned is set (the caller keeps v valid for the docState's lifetime),
// else copied. h is the record head the document was embedded after (nil
// for a document key's value).
func (s *Store) decodeDoc(v []byte, ds *docState, h *head, pinned bool) error {
	if len(v) < 2 || v[0] < verDoc3 || v[0] > verDoc {
		return errCorrupt
	}
	ver := v[0]
	d := newDecoder(v[1:])
	ds.seq = d.Uvarint()
	form := d.Byte()
	if d.Err() != nil {
		return errCorrupt
	}
	const hl = revtree.HashLen
	switch {
	case form == formLin && ver >= verDoc4:
		l := linPath{start: d.Uvarint()}
		l.deleted = d.Bool()
		n := d.Uvarint()
		var t uint64 // version 4 kept the leaf alone
		if ver == verDoc {
			t = d.Uvarint()
		}
		if d.Err() != nil || n == 0 || t >= n || t > maxTailRead || n > revtree.HardMaxPathLen || n > l.start || l.start > revtree.MaxPos {
			return errCorrupt
		}
		ids := d.Take(int(1+t) * hl)
		if d.Err() != nil {
			return errCorrupt
		}
		l.n = int(n)
		if len(ids) <= len(ds.idbuf) {
			l.ids = ds.idbuf[:copy(ds.idbuf[:], ids)]
		} else {
			l.ids = append([]byte(nil), ids...)
		}
		ds.lin = l
		if n-1 > t {
			ds.hist = histState{lo: l.start - n + 1, hi: l.start - 1 - t}
		}
	case form == formLin:
		// Version 3: the recent hashes here, more in the history key.
		l := linPath{start: d.Uvarint()}
		l.deleted = d.Bool()
		n := d.Count(revtree.HardMaxPathLen, hl)
		if d.Err() != nil || n == 0 || uint64(n) > l.start || l.start > revtree.MaxPos {
			return errCorrupt
		}
		l.ids = append([]byte(nil), d.Take(n*hl)...)
		more := d.Uvarint()
		if d.Err() != nil || more > revtree.HardMaxPathLen || uint64(n)+more > l.start {
			return errCorrupt
		}
		l.n = n + int(more)
		ds.lin = l
		if more > 0 {
			ds.hist = histState{lo: l.start - uint64(l.n) + 1, hi: l.start - uint64(n), legacy: true}
		}
	case form == formTree:
		tb := d.Bytes(noMax)
		if d.Err() != nil {
			return errCorrupt
		}
		t, err := revtree.Decode(tb)
		if err != nil {
			return fmt.Errorf("%w: %w", errCorrupt, err)
		}
		if err := t.SetConfig(ds.cfg); err != nil {
			return err
		}
		ds.tree = t
	default:
		return errCorrupt
	}
	if ds.lin.n > 0 {
		w, _ := ds.winner()
		if err := s.decodeLeafBody(&d, ds, w, true, ver, h, pinned); err != nil {
			return err
		}
	} else {
		for i, l := range ds.tree.Leaves() {
			if err := s.decodeLeafBody(&d, ds, l, i == 0, ver, h, pinned); err != nil {
				return err
			}
		}
	}
	if d.End() != nil {
		return errCorrupt
	}
	return nil
}

// decodeLeafBody reads the body of leaf l (the winner when win).
func (s *Store) decodeLeafBody(d *bincode.Decoder, ds *docState, l revtree.Leaf, win bool, ver byte, h *head, pinned bool) error {
	form := d.Byte()
	switch {
	case d.Err() != nil:
		return errCorrupt
	case form == bodyHere:
		raw := skipStoredBody(d)
		if d.Err() != nil {
			return errCorrupt
		}
		if !pinned {
			raw = append([]byte(nil), raw...)
		}
		ds.setRaw(l.Rev, raw)
	case form == bodyInView && ver == verDoc3 && win && !l.Deleted:
		var x Body
		x.Origin = d.String(noMax)
		x.OriginTime = d.Varint()
		x.Expiry = d.Varint()
		ds.inView = true
		ds.setBody(l.Rev, x)
	case form == bodyView && ver >= verDoc4 && win && !l.Deleted:
		flags := d.Byte()
		var x Body
		if flags&viewOriginRef != 0 {
			o, ok := s.originAt(d.Uvarint())
			if !ok {
				d.Fail("unknown origin reference")
			}
			x.Origin = o
		} else {
			x.Origin = d.String(noMax)
		}
		switch {
		case flags&viewTimeMod == 0:
			x.OriginTime = d.Varint()
		case h != nil:
			x.OriginTime = h.mod
		default:
			d.Fail("origin time of a head that is not there")
		}
		switch {
		case flags&viewExpHead == 0:
			x.Expiry = d.Varint()
		case h != nil:
			x.Expiry = h.exp
		default:
			d.Fail("expiry of a head that is not there")
		}
		if d.Err() != nil || flags&^(viewOriginRef|viewTimeMod|viewExpHead) != 0 {
			return errCorrupt
		}
		ds.inView = true
		ds.setBody(l.Rev, x)
	default:
		return errCorrupt
	}
	return nil
}

// skipStoredBody reads past a stored body (appendStoredBody's encoding),
// checking its lengths but not its contents (body decodes it strictly
// when it is used), and returns its bytes.
func skipStoredBody(d *bincode.Decoder) []byte {
	start := d.Rest()
	if v := d.Byte(); d.Err() == nil && v != verBody {
		d.Fail("body version %d", v)
		return nil
	}
	d.Byte()
	d.Bytes(api.MaxPayloadBytes)
	d.Varint()
	d.Bytes(api.MaxIDBytes)
	d.Bytes(api.MaxIDBytes)
	d.Varint()
	d.Bytes(MaxOriginLen)
	d.Varint()
	if d.Err() != nil {
		return nil
	}
	n := len(start) - len(d.Rest())
	return start[:n:n]
}
