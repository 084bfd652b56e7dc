package node

import (
	"encoding/binary"
	"fmt"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/bincode"
	"github.com/hce-sync/hce/node/revtree"
)

// A document's revisions as one request changes them (docState), in the
// single-path form (linPath) or as a revtree.Tree, and their stored
// encoding: embedded after the record head in the R value, or under the V
// key (see DESIGN.md, "Revisions").

// docState is a document being changed by one request. Its revisions are
// either lin (one path, no branch: nearly every document) or tree; both
// nil for a new document. Code that needs the general tree calls t(),
// which turns lin into a tree; the hot paths (a client edit of the leaf,
// a replicated extension of the path) work on lin in O(path) byte copies,
// without building a tree (a 1000-revision tree cost ~1 ms per update).
type docState struct {
	seq  uint64 // changes seq of its latest change; 0 for a new document
	cfg  revtree.Config
	tree *revtree.Tree
	lin  *linPath
	// bodies are the leaves' decoded bodies; raw holds those not decoded
	// yet, as stored (verBody and AppendBody's encoding). A leaf's body is
	// in one of them. A write decodes only the bodies it needs (body), so
	// tombstoning a document's conflicting leaves never decodes them.
	bodies map[revtree.Rev]Body
	raw    map[revtree.Rev][]byte
	dirty  bool
	run    docRun
	// hadHist: the document has a history key in the store.
	hadHist bool
	// inR: the document is stored embedded in its record's head; inV: in
	// its document key. head: the record head this request wrote for the
	// document's record, written by saveDocs (with the document embedded
	// when it is a single path with a live winner).
	inR, inV bool
	head     *head
	// inView: the live winner's body as decoded holds only its origin,
	// origin time and expiry; the other fields are in the Weave record
	// (fillFromView and GetDocs complete it). viewPlen is that record's
	// payload length, once known (-1 before).
	inView   bool
	viewPlen int64
}

// newDocState returns an empty document (a new id).
func newDocState(cfg revtree.Config) *docState {
	return &docState{cfg: cfg, bodies: map[revtree.Rev]Body{}, viewPlen: -1}
}

// body returns leaf r's body, decoding it on first use; ok is false when
// r has none (not a leaf).
func (ds *docState) body(r revtree.Rev) (x Body, ok bool, err error) {
	if x, ok := ds.bodies[r]; ok {
		return x, true, nil
	}
	raw, ok := ds.raw[r]
	if !ok {
		return Body{}, false, nil
	}
	d := newDecoder(raw)
	decodeStoredBody(&d, &x)
	if err := d.End(); err != nil {
		return Body{}, false, err
	}
	delete(ds.raw, r)
	ds.bodies[r] = x
	return x, true, nil
}

// setBody makes x leaf r's body.
func (ds *docState) setBody(r revtree.Rev, x Body) {
	delete(ds.raw, r)
	ds.bodies[r] = x
}

// clearBodies drops every body.
func (ds *docState) clearBodies() {
	clear(ds.bodies)
	clear(ds.raw)
}

// decodeAll decodes every body (a document handed out by GetDocs).
func (ds *docState) decodeAll() error {
	for r := range ds.raw {
		if _, _, err := ds.body(r); err != nil {
			return err
		}
	}
	return nil
}

// payloadLen returns the payload length of leaf r's body without
// decoding it (the live winner of a document in the view counts its
// record's payload: viewPlen, which the caller must have set).
func (ds *docState) payloadLen(r revtree.Rev) int64 {
	if raw, ok := ds.raw[r]; ok {
		return rawPayloadLen(raw)
	}
	if ds.inView && r == ds.run.orig.Rev && ds.run.hadOrig {
		return max(ds.viewPlen, 0)
	}
	return int64(len(ds.bodies[r].Payload))
}

// rawPayloadLen reads the payload length of a stored body (verBody, the
// field bits, then the payload's length): decodeDoc checked its shape.
func rawPayloadLen(raw []byte) int64 {
	if len(raw) < 3 {
		return 0
	}
	n, k := binary.Uvarint(raw[2:])
	if k <= 0 {
		return 0
	}
	return int64(n)
}

// Per-document limits count a document's size as revBytes per revision of
// its tree plus, per leaf, leafBytes and the payload: a measure every node
// computes alike from the same tree and bodies.
const (
	revBytes  = 20
	leafBytes = 64
)

// size returns the document's size in the measure of Config.MaxDocBytes,
// and its conflicts: the live leaves besides the winner.
func (ds *docState) size() (bytes int64, conflicts int) {
	if ds.lin != nil {
		bytes = int64(ds.lin.n()) * revBytes
	} else if ds.tree != nil {
		bytes = int64(ds.tree.Len()) * revBytes
	}
	for i, l := range ds.leaves() {
		bytes += leafBytes + ds.payloadLen(l.Rev)
		if i > 0 && !l.Deleted {
			conflicts++
		}
	}
	return bytes, conflicts
}

// conflictBytes returns the payload bytes of the live leaves besides the
// winner: what a document stores beyond its Weave record.
func (ds *docState) conflictBytes() int64 {
	if ds.tree == nil {
		return 0 // a single path: its one leaf is the winner
	}
	var n int64
	for i, l := range ds.tree.Leaves() {
		if i > 0 && !l.Deleted {
			n += ds.payloadLen(l.Rev)
		}
	}
	return n
}

// linPath is a document's revisions when they form a single path: the
// leaf at position start and its ancestors. The newest nRecent hashes are
// stored in the document, the more older ones in its history key (tagHist),
// which the hot paths never read: a client edit prepends to the recent
// part, and saveDocs moves all but histWindow of them to the history key
// once more than 2*histWindow have accumulated.
type linPath struct {
	start   uint64
	deleted bool
	// ids are the hashes, newest (the leaf) first, revtree.HashLen each:
	// the recent ones, followed by the older ones when loaded.
	ids      []byte
	nRecent  int  // hashes stored in the document
	more     int  // hashes stored in the history key
	loaded   bool // ids holds the older ones too (or there are none)
	oldDirty bool // the history key must be rewritten
}

// histWindow is how many recent hashes a document keeps after a spill to
// its history key (a variable so tests can exercise spills).
var histWindow = 16

func (l *linPath) n() int { return l.nRecent + l.more }

func (l *linPath) rev(i int) revtree.Rev {
	r := revtree.Rev{Pos: l.start - uint64(i)}
	copy(r.Hash[:], l.ids[i*revtree.HashLen:])
	return r
}

func (l *linPath) path(max int) revtree.Path {
	if !l.loaded {
		panic("node: path of a document whose history is not loaded")
	}
	n := l.n()
	if max > 0 && n > max {
		n = max
	}
	p := revtree.Path{Start: l.start, Deleted: l.deleted, IDs: make([][revtree.HashLen]byte, n)}
	for i := range p.IDs {
		copy(p.IDs[i][:], l.ids[i*revtree.HashLen:])
	}
	return p
}

// t returns the document's tree, building it from lin if needed (lin is
// then dropped; its history must be loaded). An empty document gets an
// empty tree.
func (ds *docState) t() *revtree.Tree {
	if ds.tree == nil {
		ds.tree, _ = revtree.New(ds.cfg)
		if ds.lin != nil {
			p := ds.lin.path(0)
			if _, err := ds.tree.Merge(p); err != nil {
				// A hash repeats along the path (linearize and
				// applyLinear never store one; only a damaged value
				// could): link it pair by pair instead, leaving a
				// pair of equal hashes unlinked.
				ds.tree, _ = revtree.New(ds.cfg)
				for i := len(p.IDs) - 1; i >= 1; i-- {
					_, _ = ds.tree.Merge(revtree.Path{Start: p.Start - uint64(i-1), IDs: p.IDs[i-1 : i+1], Deleted: i == 1 && p.Deleted})
				}
				if len(p.IDs) == 1 {
					_, _ = ds.tree.Merge(p)
				}
			}
			ds.lin = nil
		}
	}
	return ds.tree
}

// winner returns the winning leaf; ok is false for an empty document.
func (ds *docState) winner() (revtree.Leaf, bool) {
	if ds.lin != nil {
		return revtree.Leaf{Rev: ds.lin.rev(0), Deleted: ds.lin.deleted}, true
	}
	if ds.tree == nil {
		return revtree.Leaf{}, false
	}
	return ds.tree.Winner()
}

// leaves returns the leaves, winner first.
func (ds *docState) leaves() []revtree.Leaf {
	if ds.tree == nil {
		if l, ok := ds.winner(); ok {
			return []revtree.Leaf{l}
		}
		return nil
	}
	return ds.tree.Leaves()
}

// contains reports whether r is a revision of the document (a single
// path's history must be loaded).
func (ds *docState) contains(r revtree.Rev) bool {
	if l := ds.lin; l != nil {
		if r.Pos > l.start || l.start-r.Pos >= uint64(l.n()) || !l.loaded && l.start-r.Pos >= uint64(l.nRecent) {
			return false
		}
		return l.rev(int(l.start-r.Pos)) == r
	}
	return ds.tree != nil && ds.tree.Contains(r)
}

func (ds *docState) isLeaf(r revtree.Rev) bool {
	if ds.lin != nil {
		return r == ds.lin.rev(0)
	}
	return ds.tree != nil && ds.tree.IsLeaf(r)
}

// linearize turns a tree that is a single path back into lin.
func (ds *docState) linearize() {
	if ds.tree == nil || ds.tree.Len() == 0 {
		return
	}
	ls := ds.tree.Leaves()
	if len(ls) != 1 {
		return
	}
	p, _ := ds.tree.PathTo(ls[0].Rev, 0)
	if len(p.IDs) != ds.tree.Len() {
		return // several roots (stemmed branches)
	}
	if !validPath(p, revtree.HardMaxPathLen) {
		return // a hash repeats at two positions: only a tree holds that
	}
	l := &linPath{start: p.Start, deleted: ls[0].Deleted, ids: make([]byte, 0, len(p.IDs)*revtree.HashLen),
		nRecent: len(p.IDs), loaded: true, oldDirty: true}
	for _, h := range p.IDs {
		l.ids = append(l.ids, h[:]...)
	}
	ds.lin, ds.tree = l, nil
}

// newLin returns the single-path document of path p (ids newest first),
// with all its hashes loaded.
func newLin(start uint64, deleted bool, ids []byte) *linPath {
	n := len(ids) / revtree.HashLen
	return &linPath{start: start, deleted: deleted, ids: ids, nRecent: n, loaded: true, oldDirty: true}
}

// extend makes the leaf of lin the parent of a new leaf h (deleted or
// not), keeping at most limit revisions. It needs no history: the oldest
// ones are dropped by lowering the count of those kept in the history key.
func (l *linPath) extend(h [revtree.HashLen]byte, deleted bool, limit int) {
	have := len(l.ids) / revtree.HashLen
	keep := min(have, limit-1) * revtree.HashLen
	ids := make([]byte, revtree.HashLen+keep, revtree.HashLen*(1+min(have+1, limit)))
	copy(ids, h[:])
	copy(ids[revtree.HashLen:], l.ids[:keep])
	l.ids, l.start, l.deleted = ids, l.start+1, deleted
	l.nRecent = min(l.nRecent+1, limit)
	l.more = max(0, min(l.more, limit-l.nRecent))
}

// Stored document forms.
const (
	verDoc   = 3 // seq, form, revisions, leaf bodies
	formTree = 0 // revtree encoding follows
	formLin  = 1 // leaf position, deleted, count, recent hashes newest first, count in the history key
)

// appendDoc encodes a document: version, seq, its revisions (a single
// path as a plain list of hashes, else the tree), then the bodies of its
// leaves, winner first (bodies never decoded are copied as stored). Its
// error is a stored body that does not decode.
func appendDoc(b []byte, d *docState) ([]byte, error) {
	b = binary.AppendUvarint(append(b, verDoc), d.seq)
	d.linearize()
	if l := d.lin; l != nil {
		b = append(b, formLin)
		b = binary.AppendUvarint(b, l.start)
		b = bincode.AppendBool(b, l.deleted)
		b = binary.AppendUvarint(b, uint64(l.nRecent))
		b = append(b, l.ids[:l.nRecent*revtree.HashLen]...)
		b = binary.AppendUvarint(b, uint64(l.more))
	} else {
		tb := d.tree.Encode()
		b = append(b, formTree)
		b = binary.AppendUvarint(b, uint64(len(tb)))
		b = append(b, tb...)
	}
	leaves := d.leaves()
	for i, l := range leaves {
		if raw, ok := d.raw[l.Rev]; ok && (i > 0 || l.Deleted) {
			b = append(b, bodyHere)
			b = append(b, raw...)
			continue
		}
		x, _, err := d.body(l.Rev)
		if err != nil {
			return nil, err
		}
		if i == 0 && !l.Deleted {
			// A live winner's fields are the Weave record's: only what
			// the record lacks is kept here (see DESIGN.md).
			b = append(b, bodyInView)
			b = bincode.AppendString(b, x.Origin)
			b = binary.AppendVarint(b, x.OriginTime)
			b = binary.AppendVarint(b, x.Expiry)
			continue
		}
		b = append(b, bodyHere)
		b = appendStoredBody(b, &x)
	}
	return b, nil
}

// Leaf body forms in a stored document.
const (
	bodyHere   = 0 // the whole body follows
	bodyInView = 1 // the live winner: origin, origin time and expiry follow; the rest is the Weave record
)

// decodeDoc decodes a stored document. Leaf bodies are not decoded (see
// docState.body): they stay in raw, aliasing v when pinned is set (the
// caller keeps v valid for the docState's lifetime), else copied.
func decodeDoc(v []byte, cfg revtree.Config, pinned bool) (*docState, error) {
	if len(v) < 2 || v[0] != verDoc {
		return nil, errCorrupt
	}
	d := newDecoder(v[1:])
	ds := &docState{seq: d.Uvarint(), cfg: cfg, viewPlen: -1}
	form := d.Byte()
	if d.Err() != nil {
		return nil, errCorrupt
	}
	switch form {
	case formLin:
		l := &linPath{start: d.Uvarint()}
		l.deleted = d.Bool()
		n := d.Count(revtree.HardMaxPathLen, revtree.HashLen)
		if d.Err() != nil || n == 0 || uint64(n) > l.start || l.start > revtree.MaxPos {
			return nil, errCorrupt
		}
		l.ids = append([]byte(nil), d.Take(n*revtree.HashLen)...)
		more := d.Uvarint()
		if d.Err() != nil || more > revtree.HardMaxPathLen || uint64(n)+more > l.start {
			return nil, errCorrupt
		}
		l.nRecent, l.more, l.loaded = n, int(more), more == 0
		ds.lin, ds.hadHist = l, more > 0
	case formTree:
		tb := d.Bytes(noMax)
		if d.Err() != nil {
			return nil, errCorrupt
		}
		t, err := revtree.Decode(tb)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		if err := t.SetConfig(cfg); err != nil {
			return nil, err
		}
		ds.tree = t
	default:
		return nil, errCorrupt
	}
	leaves := ds.leaves()
	ds.bodies = make(map[revtree.Rev]Body, 1)
	for i, l := range leaves {
		form := d.Byte()
		switch {
		case d.Err() != nil:
			return nil, errCorrupt
		case form == bodyHere:
			raw := skipStoredBody(&d)
			if d.Err() != nil {
				return nil, errCorrupt
			}
			if !pinned {
				raw = append([]byte(nil), raw...)
			}
			if ds.raw == nil {
				ds.raw = make(map[revtree.Rev][]byte, len(leaves))
			}
			ds.raw[l.Rev] = raw
		case form == bodyInView && i == 0 && !l.Deleted:
			var x Body
			x.Origin = d.String(noMax)
			x.OriginTime = d.Varint()
			x.Expiry = d.Varint()
			ds.inView = true
			ds.bodies[l.Rev] = x
		default:
			return nil, errCorrupt
		}
	}
	if d.End() != nil {
		return nil, errCorrupt
	}
	return ds, nil
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

// prune drops the bodies of revisions that are no longer leaves.
func (ds *docState) prune() {
	for r := range ds.bodies {
		if !ds.isLeaf(r) {
			delete(ds.bodies, r)
		}
	}
	for r := range ds.raw {
		if !ds.isLeaf(r) {
			delete(ds.raw, r)
		}
	}
}

// settle prunes and stems a changed document and marks it for saving.
func (s *Store) settle(ds *docState) {
	ds.prune()
	if ds.tree != nil && ds.tree.Len() > s.revCfg.RevsLimit {
		ds.tree.Stem(0)
		ds.prune()
	}
	ds.dirty = true
}

// applyLinear merges r into a single-path document without building a
// tree when r's path extends the leaf (the common replicated update) or
// names a revision already on the path. done is false when the general
// merge must decide (a branch, a mismatch to report, a new document).
func (ds *docState) applyLinear(r *Revision, cfg revtree.Config) (done, changed bool) {
	p := r.Path
	const hl = revtree.HashLen
	if ds.tree != nil || !validPath(p, cfg.MaxPathLen) {
		return false, false // the general merge decides, and reports
	}
	l := ds.lin
	if l == nil {
		// A new document (a backfill): the path, stemmed, is the document.
		n := min(len(p.IDs), cfg.RevsLimit)
		ids := make([]byte, 0, n*hl)
		for _, h := range p.IDs[:n] {
			ids = append(ids, h[:]...)
		}
		ds.lin = newLin(p.Start, p.Deleted, ids)
		ds.clearBodies()
		ds.bodies[p.Leaf()] = r.Body
		return true, true
	}
	if p.Start <= l.start {
		// An ancestor of the leaf, or the leaf itself: known when the
		// path agrees with ours where they overlap.
		i := int(l.start - p.Start)
		if i >= l.n() || len(p.IDs) > l.n()-i || !overlapAgrees(p.IDs, l.ids[i*hl:]) {
			return false, false // (older ancestors we lack: the merge adds them)
		}
		if i == 0 && p.Deleted != l.deleted {
			return false, false // the general merge reports the mismatch
		}
		return true, false
	}
	// p's leaf is newer: our leaf must be on p, with p agreeing below it,
	// and p's new hashes must not repeat one of ours (a single path never
	// holds a hash twice; the tree handles such crafted input).
	i := p.Start - l.start
	if i >= uint64(len(p.IDs)) || !overlapAgrees(p.IDs[i:], l.ids) {
		return false, false
	}
	for _, h := range p.IDs[:i] {
		for k := 0; k < len(l.ids); k += hl {
			if [revtree.HashLen]byte(l.ids[k:]) == h {
				return false, false
			}
		}
	}
	// Below the leaf, keep the longer of the two histories (they agree
	// where both have one), as the tree merge would, then stem.
	tail := l.n()
	if k := len(p.IDs) - int(i); k > tail {
		tail = k
	}
	n := min(int(i)+tail, cfg.RevsLimit)
	ids := make([]byte, 0, n*hl)
	for _, h := range p.IDs[:min(n, int(i))] {
		ids = append(ids, h[:]...)
	}
	for k := int(i); len(ids) < n*hl; k++ {
		if j := k - int(i); j < l.n() {
			ids = append(ids, l.ids[j*hl:(j+1)*hl]...)
		} else {
			ids = append(ids, p.IDs[k][:]...)
		}
	}
	nl := newLin(p.Start, p.Deleted, ids)
	if tail == l.n() && !l.oldDirty {
		// Our history below the old leaf is kept as stored: the new
		// revisions are recent, the history key stays as it is.
		nl.nRecent = min(int(i)+l.nRecent, n)
		nl.more, nl.oldDirty = n-nl.nRecent, false
	}
	ds.lin = nl
	ds.clearBodies()
	ds.bodies[p.Leaf()] = r.Body
	return true, true
}

// validPath applies revtree's checks of a path from a peer: ids present,
// at most max of them, positions in range, no hash twice.
func validPath(p revtree.Path, max int) bool {
	n := len(p.IDs)
	if n == 0 || n > max || p.Start > revtree.MaxPos || p.Start < uint64(n) {
		return false
	}
	if n > 1 {
		seen := make(map[[revtree.HashLen]byte]struct{}, n)
		for _, id := range p.IDs {
			if _, dup := seen[id]; dup {
				return false
			}
			seen[id] = struct{}{}
		}
	}
	return true
}

// overlapAgrees reports whether the hashes of a path (newest first) equal
// the packed hashes b (newest first) over their common length.
func overlapAgrees(ids [][revtree.HashLen]byte, b []byte) bool {
	n := min(len(ids), len(b)/revtree.HashLen)
	for k := range n {
		if [revtree.HashLen]byte(b[k*revtree.HashLen:]) != ids[k] {
			return false
		}
	}
	return true
}
