package node

import (
	"encoding/binary"

	"github.com/hce-sync/hce/node/revtree"
)

// A document's revisions as one request changes them (docState), in the
// single-path form (linPath) or as a revtree.Tree. Their stored encoding
// is in doccodec.go, the ancestor keys of a single path in history.go (see
// DESIGN.md, "Revisions").

// docState is a document being changed or read by one request. Its
// revisions are either lin (one path, no branch: nearly every document)
// or tree; neither for a new document. Code that needs the general tree
// calls t(), which turns lin into a tree; the hot paths (a client edit of
// the leaf, a replicated extension of the path) work on lin without
// building a tree and, for a client edit, without reading the path's
// older revisions at all.
type docState struct {
	coll, id string
	seq      uint64 // changes seq of its latest change; 0 for a new document
	cfg      revtree.Config
	tree     *revtree.Tree
	lin      linPath // valid when lin.n > 0
	// leafs are the bodies of the leaves, decoded or still raw (as stored:
	// verBody and AppendBody's encoding); a write decodes only the bodies
	// it needs (body), so tombstoning a document's conflicting leaves
	// never decodes them. leafIdx indexes them when there are many.
	leafs   []leafBody
	leafIdx map[revtree.Rev]int
	one     [1]leafBody // leafs' storage for the usual single leaf
	dirty   bool
	run     docRun
	// inR: the document is stored embedded in its record's head; inV: in
	// its document key.
	inR, inV bool
	// head is the record head this request wrote for the document's
	// record (when headSet), written by saveDocs with the document
	// embedded when it is a single path with a live winner.
	head    head
	headSet bool
	// pre is the record's head as Pebble has it before this request's
	// batch (when preSet: read with the document or prefetched).
	pre    known
	preSet bool
	// pend is 1 + the index of the record this request's writer staged
	// for the document in writer.pendRecs (0: none).
	pend int
	// inView: the live winner's body as decoded holds only its origin,
	// origin time and expiry; the other fields are in the Weave record
	// (fillFromView and GetDocs complete it). viewPlen is that record's
	// payload length, once known (-1 before).
	inView   bool
	viewPlen int64
	// hist says which ancestor keys (or old-format history key) the
	// store holds for the document (see history.go).
	hist histState
	// idbuf holds lin.ids while they are the leaf and the ancestors kept
	// in the document (decodeDoc), plus one more hash (a client edit of a
	// stored document), so that path needs no allocation.
	idbuf [(ancTail + 2) * revtree.HashLen]byte
}

// leafBody is the body of one leaf of a document: decoded (x) or, when raw
// is not nil, as stored.
type leafBody struct {
	rev revtree.Rev
	x   Body
	raw []byte
}

// init makes ds an empty document coll/id (a new id).
func (ds *docState) init(coll, id string, cfg revtree.Config) {
	*ds = docState{coll: coll, id: id, cfg: cfg, viewPlen: -1}
	ds.leafs = ds.one[:0]
}

// leafAt returns the index of r's body in leafs, or -1.
func (ds *docState) leafAt(r revtree.Rev) int {
	if ds.leafIdx != nil {
		if i, ok := ds.leafIdx[r]; ok {
			return i
		}
		return -1
	}
	for i := range ds.leafs {
		if ds.leafs[i].rev == r {
			return i
		}
	}
	return -1
}

// maxScanLeaves is how many leaf bodies are searched one by one; beyond,
// an index map is kept.
const maxScanLeaves = 16

func (ds *docState) appendLeaf(l leafBody) {
	ds.leafs = append(ds.leafs, l)
	switch {
	case ds.leafIdx != nil:
		ds.leafIdx[l.rev] = len(ds.leafs) - 1
	case len(ds.leafs) > maxScanLeaves:
		ds.leafIdx = make(map[revtree.Rev]int, 2*len(ds.leafs))
		for i := range ds.leafs {
			ds.leafIdx[ds.leafs[i].rev] = i
		}
	}
}

// body returns leaf r's body, decoding it on first use; ok is false when
// r has none (not a leaf).
func (ds *docState) body(r revtree.Rev) (x Body, ok bool, err error) {
	i := ds.leafAt(r)
	if i < 0 {
		return Body{}, false, nil
	}
	l := &ds.leafs[i]
	if l.raw != nil {
		d := newDecoder(l.raw)
		var x Body
		decodeStoredBody(&d, &x)
		if err := d.End(); err != nil {
			return Body{}, false, err
		}
		l.x, l.raw = x, nil
	}
	return l.x, true, nil
}

// setBody makes x leaf r's body.
func (ds *docState) setBody(r revtree.Rev, x Body) {
	if i := ds.leafAt(r); i >= 0 {
		ds.leafs[i] = leafBody{rev: r, x: x}
		return
	}
	ds.appendLeaf(leafBody{rev: r, x: x})
}

// setRaw makes raw (a stored body, not decoded) leaf r's body.
func (ds *docState) setRaw(r revtree.Rev, raw []byte) {
	ds.appendLeaf(leafBody{rev: r, raw: raw})
}

// clearBodies drops every body.
func (ds *docState) clearBodies() {
	clear(ds.leafs)
	ds.leafs = ds.leafs[:0]
	ds.leafIdx = nil
}

// decodeAll decodes every body (a document handed out by GetDocs).
func (ds *docState) decodeAll() error {
	for i := range ds.leafs {
		if _, _, err := ds.body(ds.leafs[i].rev); err != nil {
			return err
		}
	}
	return nil
}

// bodyMap returns the bodies as a map (the Doc's form); they must be
// decoded.
func (ds *docState) bodyMap() map[revtree.Rev]Body {
	m := make(map[revtree.Rev]Body, len(ds.leafs))
	for i := range ds.leafs {
		m[ds.leafs[i].rev] = ds.leafs[i].x
	}
	return m
}

// payloadLen returns the payload length of leaf r's body without
// decoding it (the live winner of a document in the view counts its
// record's payload: viewPlen, which the caller must have set).
func (ds *docState) payloadLen(r revtree.Rev) int64 {
	i := ds.leafAt(r)
	if i < 0 {
		return 0
	}
	if raw := ds.leafs[i].raw; raw != nil {
		return rawPayloadLen(raw)
	}
	if ds.inView && r == ds.run.orig.Rev && ds.run.hadOrig {
		return max(ds.viewPlen, 0)
	}
	return int64(len(ds.leafs[i].x.Payload))
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
	if ds.lin.n > 0 {
		bytes = int64(ds.lin.n) * revBytes
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
// leaf at position start and its ancestors, n revisions in all. ids holds
// the newest of their hashes, newest (the leaf) first: the leaf and the
// ancestors kept in the document (its tail, history.go) when the
// document was read for a client edit, all n once the path was loaded
// (loadPath). The older ones are in the document's ancestor keys.
type linPath struct {
	start   uint64
	deleted bool
	n       int
	ids     []byte
}

// known returns how many of the path's hashes ids holds.
func (l *linPath) known() int { return len(l.ids) / revtree.HashLen }

// loaded reports whether ids holds the whole path.
func (l *linPath) loaded() bool { return l.known() == l.n }

// hash returns the hash at index i (position start-i); i < known().
func (l *linPath) hash(i int) [revtree.HashLen]byte {
	return [revtree.HashLen]byte(l.ids[i*revtree.HashLen:])
}

func (l *linPath) rev(i int) revtree.Rev {
	return revtree.Rev{Pos: l.start - uint64(i), Hash: l.hash(i)}
}

func (l *linPath) path(max int) revtree.Path {
	if !l.loaded() {
		panic("node: path of a document whose history is not loaded")
	}
	n := l.n
	if max > 0 && n > max {
		n = max
	}
	p := revtree.Path{Start: l.start, Deleted: l.deleted, IDs: make([][revtree.HashLen]byte, n)}
	for i := range p.IDs {
		p.IDs[i] = l.hash(i)
	}
	return p
}

// t returns the document's tree, building it from lin if needed (lin is
// then dropped; its history must be loaded). An empty document gets an
// empty tree.
func (ds *docState) t() *revtree.Tree {
	if ds.tree == nil {
		ds.tree, _ = revtree.New(ds.cfg)
		if ds.lin.n > 0 {
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
			ds.lin = linPath{}
		}
	}
	return ds.tree
}

// winner returns the winning leaf; ok is false for an empty document.
func (ds *docState) winner() (revtree.Leaf, bool) {
	if ds.lin.n > 0 {
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

// containsKnown reports whether r is a revision of the document as far as
// the hashes in memory tell: known is false when r's position is on a
// single path but below the hashes loaded (loadPath then decides).
func (ds *docState) containsKnown(r revtree.Rev) (in, known bool) {
	if l := &ds.lin; l.n > 0 {
		if r.Pos > l.start || l.start-r.Pos >= uint64(l.n) {
			return false, true
		}
		i := int(l.start - r.Pos)
		if i >= l.known() {
			return false, false
		}
		return l.hash(i) == r.Hash, true
	}
	return ds.tree != nil && ds.tree.Contains(r), true
}

// contains reports whether r is a revision of the document (a single
// path's history must be loaded).
func (ds *docState) contains(r revtree.Rev) bool {
	in, _ := ds.containsKnown(r)
	return in
}

func (ds *docState) isLeaf(r revtree.Rev) bool {
	if ds.lin.n > 0 {
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
	ids := make([]byte, 0, len(p.IDs)*revtree.HashLen)
	for _, h := range p.IDs {
		ids = append(ids, h[:]...)
	}
	ds.lin, ds.tree = linPath{start: p.Start, deleted: ls[0].Deleted, n: len(p.IDs), ids: ids}, nil
	// The ancestor keys stored for an earlier single path may name other
	// revisions at the same positions: they are all written again.
	ds.hist.rewrite = true
}

// setLin makes the single path (start, deleted, ids newest first, all of
// them) the document's revisions.
func (ds *docState) setLin(start uint64, deleted bool, ids []byte) {
	ds.lin = linPath{start: start, deleted: deleted, n: len(ids) / revtree.HashLen, ids: ids}
}

// extend makes the leaf of lin the parent of a new leaf h (deleted or
// not), keeping at most limit revisions. It needs no history: the
// ancestor keys of the revisions it drops are deleted by position.
func (ds *docState) extend(h [revtree.HashLen]byte, deleted bool, limit int) {
	l := &ds.lin
	const hl = revtree.HashLen
	have := l.known()
	keep := min(have, limit-1)
	var ids []byte
	if (1+keep)*hl <= len(ds.idbuf) {
		// The leaf and the tail (a stored document read for a client
		// edit): the new leaf and its ancestors fit in idbuf. l.ids may
		// be idbuf itself: copy moves overlapping bytes correctly.
		ids = ds.idbuf[:(1+keep)*hl]
		copy(ids[hl:], l.ids[:keep*hl])
		copy(ids[:hl], h[:])
	} else {
		ids = make([]byte, hl*(1+keep), hl*(1+min(have+1, limit)))
		copy(ids, h[:])
		copy(ids[hl:], l.ids[:keep*hl])
	}
	l.ids, l.start, l.deleted = ids, l.start+1, deleted
	l.n = min(l.n+1, limit)
}

// prune drops the bodies of revisions that are no longer leaves.
func (ds *docState) prune() {
	k := 0
	for i := range ds.leafs {
		if ds.isLeaf(ds.leafs[i].rev) {
			ds.leafs[k] = ds.leafs[i]
			k++
		}
	}
	if k != len(ds.leafs) {
		clear(ds.leafs[k:])
		ds.leafs = ds.leafs[:k]
		ds.leafIdx = nil
		if k > maxScanLeaves {
			ds.leafIdx = make(map[revtree.Rev]int, 2*k)
			for i := range ds.leafs {
				ds.leafIdx[ds.leafs[i].rev] = i
			}
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
// merge must decide (a branch, a mismatch to report, a new document). The
// document's path must be loaded.
func (ds *docState) applyLinear(r *Revision, cfg revtree.Config) (done, changed bool) {
	p := r.Path
	const hl = revtree.HashLen
	if ds.tree != nil || !validPath(p, cfg.MaxPathLen) {
		return false, false // the general merge decides, and reports
	}
	l := &ds.lin
	if l.n == 0 {
		// A new document (a backfill): the path, stemmed, is the document.
		n := min(len(p.IDs), cfg.RevsLimit)
		ids := make([]byte, 0, n*hl)
		for _, h := range p.IDs[:n] {
			ids = append(ids, h[:]...)
		}
		ds.setLin(p.Start, p.Deleted, ids)
		ds.clearBodies()
		ds.setBody(p.Leaf(), r.Body)
		return true, true
	}
	if p.Start <= l.start {
		// An ancestor of the leaf, or the leaf itself: known when the
		// path agrees with ours where they overlap.
		i := int(l.start - p.Start)
		if i >= l.n || len(p.IDs) > l.n-i || !overlapAgrees(p.IDs, l.ids[i*hl:]) {
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
	// where both have one), as the tree merge would, then stem. The
	// ancestor keys already stored agree with the result where both have
	// a position: saving writes only the new ones.
	tail := l.n
	if k := len(p.IDs) - int(i); k > tail {
		tail = k
	}
	n := min(int(i)+tail, cfg.RevsLimit)
	ids := make([]byte, 0, n*hl)
	for _, h := range p.IDs[:min(n, int(i))] {
		ids = append(ids, h[:]...)
	}
	for k := int(i); len(ids) < n*hl; k++ {
		if j := k - int(i); j < l.n {
			ids = append(ids, l.ids[j*hl:(j+1)*hl]...)
		} else {
			ids = append(ids, p.IDs[k][:]...)
		}
	}
	ds.setLin(p.Start, p.Deleted, ids)
	ds.clearBodies()
	ds.setBody(p.Leaf(), r.Body)
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
