package node

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"

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
	docs                map[string]*docState
	order               []string // keys of docs in first-use order
}

func (s *Store) newRevSession(st *userState) *revSession {
	return &revSession{s: s, origin: s.origin, chg: st.chg.Load(), conf: st.conf, local: st.local, nlocal: st.nlocal}
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

func docMapKey(coll, id string) string { return coll + "\x00" + id }

// doc returns the document id of w's collection, loading it on first use.
func (w *writer) doc(id string) (*docState, error) {
	rs := w.rs
	k := docMapKey(w.coll, id)
	if ds := rs.docs[k]; ds != nil {
		return ds, nil
	}
	// Embedded in the record's head?
	w.sc.k = recKey(w.sc.k[:0], w.user, w.coll, id)
	v, closer, err := w.s.db.Get(w.sc.k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		ds, err := w.s.embeddedDoc(v)
		closer.Close()
		if err != nil {
			return nil, fmt.Errorf("node: document %s/%s of %s: %w", w.coll, id, w.user, err)
		}
		if ds != nil {
			rs.add(k, ds)
			return ds, nil
		}
	}
	w.sc.k = docKey(w.sc.k[:0], w.user, w.coll, id)
	v, closer, err = w.s.db.Get(w.sc.k)
	var ds *docState
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		ds = newDocState(w.s.revCfg)
	case err != nil:
		return nil, err
	default:
		// The value stays pinned until the request ends (putScratch):
		// the leaves' bodies are decoded from it only if they are used.
		w.sc.pins = append(w.sc.pins, closer)
		ds, err = decodeDoc(v, w.s.revCfg, true)
		if err != nil {
			return nil, fmt.Errorf("node: document %s/%s of %s: %w", w.coll, id, w.user, err)
		}
		ds.inV = true
	}
	rs.add(k, ds)
	return ds, nil
}

// embeddedDoc decodes the document embedded in a record key's value, or
// returns nil when the value holds only the head.
func (s *Store) embeddedDoc(v []byte) (*docState, error) {
	var h head
	rest, err := splitHead(v, &h)
	if err != nil || len(rest) == 0 {
		return nil, err
	}
	return s.decodeEmbedded(rest)
}

// decodeEmbedded decodes a document embedded after a record head.
func (s *Store) decodeEmbedded(rest []byte) (*docState, error) {
	ds, err := decodeDoc(rest, s.revCfg, false)
	if err != nil {
		return nil, err
	}
	ds.inR = true
	return ds, nil
}

// keepEmbedded adds the document embedded after record id's head (rest,
// what splitHead left; nothing when it is not embedded) to the request's
// documents, unless id's is loaded already: the write's document load
// (writer.doc) then does not read the key again.
func (w *writer) keepEmbedded(id string, rest []byte) error {
	if len(rest) == 0 {
		return nil
	}
	k := docMapKey(w.coll, id)
	if w.rs.docs[k] != nil {
		return nil
	}
	ds, err := w.s.decodeEmbedded(rest)
	if err != nil {
		return err
	}
	w.rs.add(k, ds)
	return nil
}

// prefetchDocs loads the documents of ids (sorted ascending, duplicates
// allowed) that are not loaded yet (prefetch took those embedded in record
// heads) with one iterator over w's collection's document keys, so that a
// large POST does not pay one Get (a seek in every level) per record. The
// caller holds the user's lock.
func (w *writer) prefetchDocs(ids []string) error {
	lo := collPrefix(nil, w.user, tagDoc, w.coll)
	hi := prefixEnd(nil, lo)
	it, err := w.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	key := append([]byte(nil), lo...)
	for i, id := range ids {
		if i > 0 && ids[i-1] == id {
			continue
		}
		k := docMapKey(w.coll, id)
		if _, ok := w.rs.docs[k]; ok {
			continue
		}
		key = append(key[:len(lo)], id...)
		var ds *docState
		if it.SeekGE(key) && bytes.Equal(it.Key(), key) {
			v, err := it.ValueAndErr()
			if err == nil {
				ds, err = decodeDoc(v, w.s.revCfg, false)
			}
			if err != nil {
				it.Close()
				return fmt.Errorf("node: document %s/%s of %s: %w", w.coll, id, w.user, err)
			}
			ds.inV = true
		} else {
			ds = newDocState(w.s.revCfg)
		}
		w.rs.add(k, ds)
	}
	return it.Close()
}

func (rs *revSession) add(k string, ds *docState) {
	if rs.docs == nil {
		rs.docs = make(map[string]*docState)
	}
	ds.run.orig, ds.run.hadOrig = ds.winner()
	ds.run.conf = ds.conflictBytes()
	rs.docs[k] = ds
	rs.order = append(rs.order, k)
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
				if err := w.editOn(ds, id, l, true, true, &tomb); err != nil {
					return err
				}
			}
		}
	}
	if deleted {
		if ok && !parent.Deleted && ds.tree == nil {
			return w.editOn(ds, id, parent, true, true, x)
		}
		return nil
	}
	return w.editOn(ds, id, parent, ok, false, x)
}

// editOn adds the child of parent (when ok; else a first revision).
func (w *writer) editOn(ds *docState, id string, parent revtree.Leaf, ok, deleted bool, x *Body) error {
	h := RevisionHash(w.coll, id, parent.Rev, deleted, x)
	if ds.tree == nil && (ds.lin == nil) == !ok && (!ok || ds.lin.rev(0) == parent.Rev) {
		// The fast path: a new document, or a child of the only leaf.
		if ds.lin == nil {
			ds.lin = newLin(1, deleted, h[:])
			ds.lin.oldDirty = false
		} else {
			ds.lin.extend(h, deleted, w.s.revCfg.RevsLimit)
		}
		ds.clearBodies()
		ds.bodies[ds.lin.rev(0)] = *x
		ds.dirty = true
		return nil
	}
	p := revtree.Path{Start: parent.Rev.Pos + 1, IDs: [][revtree.HashLen]byte{h}, Deleted: deleted}
	if ok {
		p.IDs = append(p.IDs, parent.Rev.Hash)
	}
	changed, err := ds.t().Merge(p)
	if err != nil {
		return fmt.Errorf("node: local edit of %s/%s: %w", w.coll, id, err)
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
	lo := collPrefix(nil, w.user, tagRec, w.coll)
	hi := prefixEnd(nil, lo)
	it, err := w.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	var ids, inV []string
	for ok := it.First(); ok; ok = it.Next() {
		id := string(it.Key()[len(lo):])
		ids = append(ids, id)
		if _, seen := w.rs.docs[docMapKey(w.coll, id)]; seen {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		ds, err := w.s.embeddedDoc(v)
		if err != nil {
			it.Close()
			return fmt.Errorf("node: document %s/%s of %s: %w", w.coll, id, w.user, err)
		}
		if ds == nil {
			inV = append(inV, id)
			continue
		}
		w.rs.add(docMapKey(w.coll, id), ds)
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
	prefix := w.coll + "\x00"
	for _, k := range rs.order {
		ds := rs.docs[k]
		if (!ds.dirty && ds.head == nil) || !strings.HasPrefix(k, prefix) {
			continue
		}
		id := k[len(prefix):]
		// The conflicting leaves' payloads count against the quota.
		conf := int64(0)
		if !ds.run.drop {
			conf = ds.conflictBytes()
		}
		rs.conf = max(0, rs.conf+conf-ds.run.conf)
		ds.run.conf = conf
		if ds.run.drop {
			if ds.seq != 0 {
				sc.k = chgKey(sc.k[:0], w.user, ds.seq)
				if err := w.del(sc.k); err != nil {
					return err
				}
			}
			ds.seq = 0
			sc.k = docKey(sc.k[:0], w.user, w.coll, id)
			if err := w.del(sc.k); err != nil {
				return err
			}
			sc.k = histKey(sc.k[:0], w.user, w.coll, id)
			if err := w.del(sc.k); err != nil {
				return err
			}
			ds.dirty, ds.head, ds.inR, ds.inV = false, nil, false, false
			continue
		}
		if err := w.saveHistory(ds, id); err != nil {
			return err
		}
		if ds.dirty {
			if ds.seq != 0 {
				sc.k = chgKey(sc.k[:0], w.user, ds.seq)
				if err := w.del(sc.k); err != nil {
					return err
				}
			}
			rs.chg++
			ds.seq = rs.chg
		}
		if err := w.placeDoc(ds, id); err != nil {
			return err
		}
		if ds.dirty {
			sc.k = chgKey(sc.k[:0], w.user, ds.seq)
			v, err := appendChange(sc.v[:0], w.coll, id, ds)
			if err != nil {
				return fmt.Errorf("node: document %s/%s of %s: %w: %w", w.coll, id, w.user, errCorrupt, err)
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
func (w *writer) placeDoc(ds *docState, id string) error {
	sc := w.sc
	win, ok := ds.winner()
	live := ok && !win.Deleted
	if live && ds.head == nil && ds.inR {
		// The document changed under an unchanged record (a losing
		// replicated revision): the head is rewritten with it.
		h, _, found, err := w.lookup(id)
		if err != nil {
			return err
		}
		if found {
			ds.head = &h
		}
	}
	if live && ds.lin != nil && ds.head != nil {
		sc.k = recKey(sc.k[:0], w.user, w.coll, id)
		v, err := appendDoc(appendHead(sc.v[:0], ds.head), ds)
		if err != nil {
			return fmt.Errorf("node: document %s/%s of %s: %w: %w", w.coll, id, w.user, errCorrupt, err)
		}
		sc.v = v
		if err := w.set(sc.k, sc.v); err != nil {
			return err
		}
		if ds.inV {
			sc.k = docKey(sc.k[:0], w.user, w.coll, id)
			if err := w.del(sc.k); err != nil {
				return err
			}
		}
		ds.inR, ds.inV, ds.head = true, false, nil
		return nil
	}
	if ds.head != nil {
		sc.k = recKey(sc.k[:0], w.user, w.coll, id)
		sc.v = appendHead(sc.v[:0], ds.head)
		if err := w.set(sc.k, sc.v); err != nil {
			return err
		}
	}
	if !ds.dirty && ds.inV {
		ds.head, ds.inR = nil, false
		return nil
	}
	sc.k = docKey(sc.k[:0], w.user, w.coll, id)
	v, err := appendDoc(sc.v[:0], ds)
	if err != nil {
		return fmt.Errorf("node: document %s/%s of %s: %w: %w", w.coll, id, w.user, errCorrupt, err)
	}
	sc.v = v
	if err := w.set(sc.k, sc.v); err != nil {
		return err
	}
	ds.head, ds.inR, ds.inV = nil, false, true
	return nil
}

// loadHistory completes a single-path document's hashes from its history
// key (a no-op when they are loaded or there are none).
func (w *writer) loadHistory(ds *docState, id string) error {
	if ds.lin == nil || ds.lin.loaded {
		return nil
	}
	return w.s.loadHist(w.user, w.coll, id, ds.lin)
}

// loadHist reads the history key of coll/id into l.
func (s *Store) loadHist(user, coll, id string, l *linPath) error {
	v, closer, err := s.db.Get(histKey(nil, user, coll, id))
	if err != nil {
		return fmt.Errorf("node: history of %s/%s of %s: %w", coll, id, user, err)
	}
	defer closer.Close()
	if len(v) < l.more*revtree.HashLen {
		return fmt.Errorf("node: history of %s/%s of %s: %w", coll, id, user, errCorrupt)
	}
	ids := make([]byte, 0, (l.nRecent+l.more)*revtree.HashLen)
	ids = append(ids, l.ids[:l.nRecent*revtree.HashLen]...)
	l.ids = append(ids, v[:l.more*revtree.HashLen]...)
	l.loaded = true
	return nil
}

// saveHistory stages a single-path document's history key when it must
// change: after a rebuild (oldDirty), or when more than 2*histWindow recent
// hashes have accumulated (all but histWindow of them move to the key, so
// the key is rewritten once every histWindow updates at most).
func (w *writer) saveHistory(ds *docState, id string) error {
	ds.linearize()
	l := ds.lin
	if l == nil || (!l.oldDirty && l.nRecent <= 2*histWindow) {
		return nil
	}
	if err := w.loadHistory(ds, id); err != nil {
		return err
	}
	total := l.n()
	w.sc.k = histKey(w.sc.k[:0], w.user, w.coll, id)
	if total <= 2*histWindow {
		l.nRecent, l.more = total, 0
		l.oldDirty = false
		if !ds.hadHist {
			return nil
		}
		ds.hadHist = false
		return w.del(w.sc.k)
	}
	l.nRecent, l.more = histWindow, total-histWindow
	l.oldDirty = false
	ds.hadHist = true
	return w.set(w.sc.k, l.ids[histWindow*revtree.HashLen:total*revtree.HashLen])
}

// fillFromView completes the body of leaf r (the live winner when ds was
// loaded) from the Weave record id.
func (w *writer) fillFromView(ds *docState, id string, r revtree.Rev) error {
	h, pend, ok, err := w.lookup(id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("node: document %s/%s of %s: %w: live winner without a record", w.coll, id, w.user, errCorrupt)
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
