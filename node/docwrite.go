package node

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api/bincode"
	"github.com/hce-sync/hce/node/revtree"
)

// revSession holds the documents one request changes, shared by the
// request's writers; saveDocs writes them with fresh changes-feed numbers.
type revSession struct {
	s      *Store
	origin string
	chg    uint64 // the last changes-feed number given (the user's, then this request's)
	// conf is the user's conflict bytes (userMeta.conf) as this request
	// changes them (saveDocs); local and nlocal are the user's, carried
	// into the user meta.
	conf, local, nlocal int64
	// docs are the request's documents sorted by collection and id (a
	// request adds them mostly in that order: prefetches and range scans
	// go in key order); slab is where new ones are made, a block at a
	// time, so a POST of n records allocates its documents at once.
	docs []*docState
	slab []docState
}

// session returns the request's revision session: one per request (its
// writers share it), kept in the request's scratch so that its document
// storage is reused by later requests (putScratch empties it).
func (sc *scratch) session(s *Store, st *userState) *revSession {
	rs := &sc.rs
	if !sc.rsInit {
		sc.rsInit = true
		*rs = revSession{s: s, origin: s.origin, chg: st.chg.Load(), conf: st.conf, local: st.local, nlocal: st.nlocal,
			docs: rs.docs[:0], slab: rs.slab[:0]}
	}
	return rs
}

// reset empties rs for reuse, dropping what its documents referred to;
// storage grown past a large request is let go.
func (rs *revSession) reset() {
	clear(rs.slab)
	clear(rs.docs)
	docs, slab := rs.docs[:0], rs.slab[:0]
	if cap(slab) > 1024 {
		slab = nil
	}
	if cap(docs) > 4096 {
		docs = nil
	}
	*rs = revSession{docs: docs, slab: slab}
}

// reserve makes room for n more documents in one allocation.
func (rs *revSession) reserve(n int) {
	if cap(rs.slab)-len(rs.slab) < n {
		rs.slab = make([]docState, 0, n)
	}
	if cap(rs.docs)-len(rs.docs) < n {
		docs := make([]*docState, len(rs.docs), len(rs.docs)+n)
		copy(docs, rs.docs)
		rs.docs = docs
	}
}

// cmpDoc orders documents by collection, then id.
func cmpDoc(ds *docState, coll, id string) int {
	if c := strings.Compare(ds.coll, coll); c != 0 {
		return c
	}
	return strings.Compare(ds.id, id)
}

// search returns the position of coll/id in docs and whether it is there.
func (rs *revSession) search(coll, id string) (int, bool) {
	n := len(rs.docs)
	if n > 0 {
		// Documents mostly arrive in order: the last is the usual answer.
		switch c := cmpDoc(rs.docs[n-1], coll, id); {
		case c == 0:
			return n - 1, true
		case c < 0:
			return n, false
		}
	}
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cmpDoc(rs.docs[m], coll, id) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < n && cmpDoc(rs.docs[lo], coll, id) == 0
}

// find returns the request's document coll/id, or nil.
func (rs *revSession) find(coll, id string) *docState {
	if i, ok := rs.search(coll, id); ok {
		return rs.docs[i]
	}
	return nil
}

// create adds an empty document coll/id (not in docs yet) and returns it;
// the caller fills it from the store and calls started.
func (rs *revSession) create(coll, id string) *docState {
	if len(rs.slab) == cap(rs.slab) {
		rs.slab = make([]docState, 0, max(8, min(2*cap(rs.slab), 256)))
	}
	rs.slab = rs.slab[:len(rs.slab)+1]
	ds := &rs.slab[len(rs.slab)-1]
	ds.init(coll, id, rs.s.revCfg)
	i, _ := rs.search(coll, id)
	rs.docs = append(rs.docs, nil)
	copy(rs.docs[i+1:], rs.docs[i:])
	rs.docs[i] = ds
	return ds
}

// started records a loaded document's state before the request changes it.
func (ds *docState) started() {
	ds.run.orig, ds.run.hadOrig = ds.winner()
	ds.run.conf = ds.conflictBytes()
}

// collDocs returns the request's documents of collection coll.
func (rs *revSession) collDocs(coll string) []*docState {
	lo, _ := rs.search(coll, "")
	hi := lo
	for hi < len(rs.docs) && rs.docs[hi].coll == coll {
		hi++
	}
	return rs.docs[lo:hi]
}

// bodyOf is the body of the revision a client write makes of record r.
func (rs *revSession) bodyOf(r *record, ts int64) Body {
	x := Body{Expiry: r.exp, Origin: rs.origin, OriginTime: ts}
	x.setFields(r)
	return x
}

// docState extensions used while a request runs.
type docRun struct {
	orig    revtree.Leaf // the winner before this request
	hadOrig bool
	drop    bool  // delete the document (expired)
	conf    int64 // its conflict bytes as last counted (see saveDocs)
}

// doc returns the document id of w's collection, loading it and its
// record's head on first use: one Get of the record key, whose value
// holds the document when it is embedded, else one more of the
// document key.
func (w *writer) doc(id string) (*docState, error) {
	rs := w.rs
	if ds := rs.find(w.coll, id); ds != nil {
		return ds, nil
	}
	ds := rs.create(w.coll, id)
	ds.preSet = true
	w.sc.k = recKey(w.sc.k[:0], w.kp, w.coll, id)
	v, closer, err := w.s.db.Get(w.sc.k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		err := w.s.loadHead(ds, v)
		closer.Close()
		if err != nil {
			return nil, fmt.Errorf("node: document %s/%s of %s: %w", w.coll, id, w.user, err)
		}
		if ds.inR {
			ds.started()
			return ds, nil
		}
	}
	w.sc.k = docKey(w.sc.k[:0], w.kp, w.coll, id)
	v, closer, err = w.s.db.Get(w.sc.k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		// The value stays pinned until the request ends (putScratch):
		// the leaves' bodies are decoded from it only if they are used.
		w.sc.pins = append(w.sc.pins, closer)
		if err := w.s.decodeDoc(v, ds, nil, true); err != nil {
			return nil, fmt.Errorf("node: document %s/%s of %s: %w", w.coll, id, w.user, err)
		}
		ds.inV = true
	}
	ds.started()
	return ds, nil
}

// loadHead fills ds from the stored value v of its record key: the head,
// and the document when it is embedded (then ds.inR is set).
func (s *Store) loadHead(ds *docState, v []byte) error {
	ds.pre.ok = true
	rest, err := splitHead(v, &ds.pre.h)
	if err == nil && len(rest) > 0 {
		err = s.decodeDoc(rest, ds, &ds.pre.h, false)
		ds.inR = true
	}
	return err
}

// prefetch loads the documents of ids (sorted ascending, duplicates
// allowed) of w's collection that are not loaded yet, with their records'
// heads: one iterator over the collection's record keys, seeking in
// ascending id order (each table is opened once per request instead of
// once per record, and the seeks mostly step forward), then one over the
// document keys for the ids whose document is not embedded in a head. It
// reads what doc would: the batch being staged is invisible to reads, and
// the caller holds the user's lock.
func (w *writer) prefetch(ids []string) error {
	sc := w.sc
	// The bounds must stay unchanged while the iterator lives; sc.v holds
	// the seek key (it is free until saveDocs).
	sc.k = collPrefix(sc.k[:0], w.kp, tagRec, w.coll)
	sc.k2 = prefixEnd(sc.k2[:0], sc.k)
	it, err := w.s.db.NewIter(&pebble.IterOptions{LowerBound: sc.k, UpperBound: sc.k2})
	if err != nil {
		return err
	}
	w.rs.reserve(len(ids))
	var inV []*docState
	for i, id := range ids {
		if i > 0 && ids[i-1] == id || w.rs.find(w.coll, id) != nil {
			continue
		}
		ds := w.rs.create(w.coll, id)
		ds.preSet = true
		sc.v = append(append(sc.v[:0], sc.k...), id...)
		if !it.SeekGE(sc.v) || !bytes.Equal(it.Key(), sc.v) {
			inV = append(inV, ds)
			continue
		}
		v, err := it.ValueAndErr()
		if err == nil {
			err = w.s.loadHead(ds, v)
		}
		if err != nil {
			it.Close()
			return fmt.Errorf("node: document %s/%s of %s: %w", w.coll, id, w.user, err)
		}
		if ds.inR {
			ds.started()
		} else {
			inV = append(inV, ds)
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	return w.prefetchDocs(inV)
}

// prefetchDocs loads the documents of dss (created, in ascending id
// order, not embedded in a record head) from their document keys with one
// iterator, so that a large request does not pay one Get (a seek in every
// level) per document. The caller holds the user's lock.
func (w *writer) prefetchDocs(dss []*docState) error {
	if len(dss) == 0 {
		return nil
	}
	lo := collPrefix(nil, w.kp, tagDoc, w.coll)
	hi := prefixEnd(nil, lo)
	it, err := w.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	key := append([]byte(nil), lo...)
	for _, ds := range dss {
		key = append(key[:len(lo)], ds.id...)
		if it.SeekGE(key) && bytes.Equal(it.Key(), key) {
			v, err := it.ValueAndErr()
			if err == nil {
				err = w.s.decodeDoc(v, ds, nil, false)
			}
			if err != nil {
				it.Close()
				return fmt.Errorf("node: document %s/%s of %s: %w", w.coll, ds.id, w.user, err)
			}
			ds.inV = true
		}
		ds.started()
	}
	return it.Close()
}

// edit adds a local edit of document id: a child of its current winner
// (a first revision for a new document) with body x; the child of the
// winning leaf always wins. The other live leaves (conflicts a Weave
// client never saw: its write supersedes them) get tombstones, whose
// bodies carry only the origin: a document's conflicts last until the
// next client write, and their bodies are never decoded. A delete
// (deleted set) puts a tombstone on every live leaf, so that no
// conflicting branch surfaces in place of the deleted record; it is a
// no-op for a document that does not exist or has no live leaf.
func (w *writer) edit(id string, deleted bool, x *Body) error {
	ds, err := w.doc(id)
	if err != nil {
		return err
	}
	parent, ok := ds.winner()
	if ds.tree != nil {
		tomb := Body{Origin: w.rs.origin, OriginTime: w.ts}
		if deleted {
			tomb = *x
		}
		for i, l := range ds.leaves() {
			if !l.Deleted && (deleted || i > 0) {
				if err := w.editOn(ds, l, true, true, &tomb); err != nil {
					return err
				}
			}
		}
	}
	if deleted {
		if ok && !parent.Deleted && ds.tree == nil {
			return w.editOn(ds, parent, true, true, x)
		}
		return nil
	}
	return w.editOn(ds, parent, ok, false, x)
}

// revHash is RevisionHash of an edit of ds computed in the request's
// scratch buffer (no allocation once the buffer has grown).
func (w *writer) revHash(ds *docState, parent revtree.Rev, deleted bool, x *Body) [revtree.HashLen]byte {
	b := append(w.sc.hb[:0], make([]byte, revtree.RevHashHeaderLen)...)
	b = bincode.AppendString(bincode.AppendString(b, ds.coll), ds.id)
	b = appendStoredBody(b, x)
	w.sc.hb = b
	return revtree.SumRevHash(b, parent, deleted)
}

// editOn adds the child of parent (when ok; else a first revision).
func (w *writer) editOn(ds *docState, parent revtree.Leaf, ok, deleted bool, x *Body) error {
	h := w.revHash(ds, parent.Rev, deleted, x)
	if ds.tree == nil && (ds.lin.n == 0) == !ok && (!ok || ds.lin.rev(0) == parent.Rev) {
		// The fast path: a new document, or a child of the only leaf.
		if ds.lin.n == 0 {
			copy(ds.idbuf[:], h[:])
			ds.setLin(1, deleted, ds.idbuf[:revtree.HashLen])
		} else {
			ds.extend(h, deleted, w.s.revCfg.RevsLimit)
		}
		ds.clearBodies()
		ds.setBody(ds.lin.rev(0), *x)
		ds.dirty = true
		return nil
	}
	if ds.lin.n > 0 {
		if err := w.s.loadPath(w.user, w.kp, ds); err != nil {
			return err
		}
	}
	p := revtree.Path{Start: parent.Rev.Pos + 1, IDs: [][revtree.HashLen]byte{h}, Deleted: deleted}
	if ok {
		p.IDs = append(p.IDs, parent.Rev.Hash)
	}
	changed, err := ds.t().Merge(p)
	if err != nil {
		return fmt.Errorf("node: local edit of %s/%s: %w", ds.coll, ds.id, err)
	}
	if !changed {
		return nil // the identical edit on the same parent: already there
	}
	ds.setBody(p.Leaf(), *x)
	w.s.settle(ds)
	return nil
}

// tombstone records the client's delete of id as a tombstone revision.
func (w *writer) tombstone(id string) error {
	x := Body{Origin: w.rs.origin, OriginTime: w.ts}
	return w.edit(id, true, &x)
}

// tombstoneAll loads every document of w's collection with a live winner
// (exactly those with a record: it walks the record keys) and adds a
// tombstone to each.
func (w *writer) tombstoneAll() error {
	lo := collPrefix(nil, w.kp, tagRec, w.coll)
	hi := prefixEnd(nil, lo)
	it, err := w.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	var ids []string
	var inV []*docState
	for ok := it.First(); ok; ok = it.Next() {
		id := string(it.Key()[len(lo):])
		ids = append(ids, id)
		if w.rs.find(w.coll, id) != nil {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		ds := w.rs.create(w.coll, id)
		ds.preSet = true
		if err := w.s.loadHead(ds, v); err != nil {
			it.Close()
			return fmt.Errorf("node: document %s/%s of %s: %w", w.coll, id, w.user, err)
		}
		if ds.inR {
			ds.started()
		} else {
			inV = append(inV, ds)
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	if err := w.prefetchDocs(inV); err != nil {
		return err
	}
	for _, id := range ids {
		if err := w.tombstone(id); err != nil {
			return err
		}
	}
	return nil
}

// dropDoc deletes document id entirely (its winner expired and was purged).
func (w *writer) dropDoc(id string) error {
	ds, err := w.doc(id)
	if err != nil {
		return err
	}
	ds.run.drop, ds.dirty = true, true
	return nil
}

// saveDocs stages the changed documents of w's collection: each takes the
// next changes-feed number, its old changes row goes.
func (w *writer) saveDocs() error {
	rs, sc := w.rs, w.sc
	for _, ds := range rs.collDocs(w.coll) {
		if !ds.dirty && !ds.headSet {
			continue
		}
		// The conflicting leaves' payloads count against the quota.
		conf := int64(0)
		if !ds.run.drop {
			conf = ds.conflictBytes()
		}
		rs.conf = max(0, rs.conf+conf-ds.run.conf)
		ds.run.conf = conf
		if ds.run.drop {
			if ds.seq != 0 {
				sc.k = chgKey(sc.k[:0], w.kp, ds.seq)
				if err := w.del(sc.k); err != nil {
					return err
				}
			}
			ds.seq = 0
			if ds.inV {
				sc.k = docKey(sc.k[:0], w.kp, w.coll, ds.id)
				if err := w.del(sc.k); err != nil {
					return err
				}
			}
			if err := w.saveHistory(ds, false); err != nil {
				return err
			}
			ds.dirty, ds.headSet, ds.inR, ds.inV = false, false, false, false
			continue
		}
		if ds.dirty {
			if ds.seq != 0 {
				sc.k = chgKey(sc.k[:0], w.kp, ds.seq)
				if err := w.del(sc.k); err != nil {
					return err
				}
			}
			rs.chg++
			ds.seq = rs.chg
		}
		if err := w.placeDoc(ds); err != nil {
			return err
		}
		if ds.dirty {
			sc.k = chgKey(sc.k[:0], w.kp, ds.seq)
			v, err := appendChange(sc.v[:0], w.coll, ds.id, ds)
			if err != nil {
				return fmt.Errorf("node: document %s/%s of %s: %w: %w", w.coll, ds.id, w.user, errCorrupt, err)
			}
			sc.v = v
			if err := w.set(sc.k, sc.v); err != nil {
				return err
			}
		}
		ds.dirty = false
	}
	return nil
}

// placeDoc stages a document where it belongs: a single path with a live
// winner goes into its record's head (the head this request wrote, or the
// stored one), so that the next update of the record reads and writes one
// key; any other document goes to its document key, and a head that held
// it is rewritten without it.
func (w *writer) placeDoc(ds *docState) error {
	sc := w.sc
	win, ok := ds.winner()
	live := ok && !win.Deleted
	if live && !ds.headSet && ds.inR {
		// The document changed under an unchanged record (a losing
		// replicated revision): the head is rewritten with it.
		h, _, found, err := w.lookup(ds.id)
		if err != nil {
			return err
		}
		if found {
			ds.head, ds.headSet = h, true
		}
	}
	ds.linearize()
	if live && ds.lin.n > 0 && ds.headSet {
		if err := w.saveHistory(ds, true); err != nil {
			return err
		}
		sc.k = recKey(sc.k[:0], w.kp, w.coll, ds.id)
		v, err := w.s.appendDoc(appendHead(sc.v[:0], &ds.head), ds, &ds.head)
		if err != nil {
			return fmt.Errorf("node: document %s/%s of %s: %w: %w", w.coll, ds.id, w.user, errCorrupt, err)
		}
		sc.v = v
		if err := w.set(sc.k, sc.v); err != nil {
			return err
		}
		if ds.inV {
			sc.k = docKey(sc.k[:0], w.kp, w.coll, ds.id)
			if err := w.del(sc.k); err != nil {
				return err
			}
		}
		ds.inR, ds.inV, ds.headSet = true, false, false
		return nil
	}
	if ds.headSet {
		sc.k = recKey(sc.k[:0], w.kp, w.coll, ds.id)
		sc.v = appendHead(sc.v[:0], &ds.head)
		if err := w.set(sc.k, sc.v); err != nil {
			return err
		}
	}
	if !ds.dirty && ds.inV {
		ds.headSet, ds.inR = false, false
		return nil
	}
	if err := w.saveHistory(ds, ds.lin.n > 0); err != nil {
		return err
	}
	sc.k = docKey(sc.k[:0], w.kp, w.coll, ds.id)
	v, err := w.s.appendDoc(sc.v[:0], ds, nil)
	if err != nil {
		return fmt.Errorf("node: document %s/%s of %s: %w: %w", w.coll, ds.id, w.user, errCorrupt, err)
	}
	sc.v = v
	if err := w.set(sc.k, sc.v); err != nil {
		return err
	}
	ds.headSet, ds.inR, ds.inV = false, false, true
	return nil
}

// fillFromView completes the body of leaf r (the live winner when ds was
// loaded) from the Weave record id.
func (w *writer) fillFromView(ds *docState, r revtree.Rev) error {
	h, pend, ok, err := w.lookup(ds.id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("node: document %s/%s of %s: %w: live winner without a record", w.coll, ds.id, w.user, errCorrupt)
	}
	rec := pend
	if rec == nil {
		if rec, err = w.body(h.seq); err != nil {
			return err
		}
	}
	x, _, err := ds.body(r)
	if err != nil {
		return err
	}
	fillBody(&x, rec)
	ds.setBody(r, x)
	ds.inView = false
	return nil
}
