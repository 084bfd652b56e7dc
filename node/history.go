package node

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/node/revtree"
)

// Ancestor keys: the older revisions of a single-path document. The
// document (in its record head or under its document key) keeps the
// leaf and its tail: the newest ancestors, at most ancTail of them, that
// no ancestor key holds yet. The older revisions' hashes are in ancestor
// keys, one per chunk of ancChunk positions,
//
//	user\0 A coll\0 len(id) id ^chunk  ->  entries: position%ancChunk (1 byte), hash (16)
//
// A revision's entry is appended to its chunk's key (a Pebble merge:
// the default merger concatenates operands, oldest first) once, when the
// revision leaves the tail: the tail grows by one revision an edit and,
// when it would pass ancTail, all of it goes to the ancestor keys (one
// operand a chunk, usually one) and the document keeps none. A chunk is
// deleted when the path is stemmed past all of its positions. Entries are
// self-describing and a later one for a position overrides an earlier
// one; readers take the positions the document says it has (histState)
// and ignore the others (stemmed, or shadowed). The id is length-prefixed
// (it may hold any byte and is not last), and the chunk number is
// inverted so that a document's keys read newest first. A client edit
// reads none of them: it rewrites the document with the old leaf in the
// tail and, every ancTail+1 edits, appends the tail's entries (one merge
// operand of 17 bytes an entry, usually one operand) and, every ancChunk
// edits at the limit, deletes the oldest chunk. Pebble folds a chunk's
// operands together as it flushes and compacts, so the store keeps about
// one key per ancChunk revisions. Replicated revisions, reads by peers
// and tree builds read them (loadPath).

// ancChunk is how many positions one ancestor key covers.
const ancChunk = 32

// ancEntry is the size of one entry of an ancestor key.
const ancEntry = 1 + revtree.HashLen

// ancTail is how many of a single path's newest ancestors its document
// keeps at most (its tail) before they go to the ancestor keys: a client
// edit then writes no ancestor key ancTail times out of ancTail+1, for
// at most ancTail*16 bytes more in the document (node/DESIGN.md has the
// measurements that chose it).
const ancTail = 2

// tail returns how many ancestors the document keeps itself (after
// saveHistory, or as decoded): those newer than its ancestor keys' range.
func (ds *docState) tail() int {
	l := &ds.lin
	switch {
	case l.n == 0:
		return 0
	case ds.hist.legacy:
		return -1 // saveHistory replaces the history key first
	case ds.hist.hi == 0:
		return l.n - 1
	}
	return int(l.start - 1 - ds.hist.hi)
}

// ancPrefix is the prefix of document coll/id's ancestor keys.
func ancPrefix(b []byte, u ukey, coll, id string) []byte {
	b = collPrefix(b, u, tagAnc, coll)
	b = append(b, byte(len(id)))
	return append(b, id...)
}

// ancKey is the ancestor key of chunk c of document coll/id.
func ancKey(b []byte, u ukey, coll, id string, c uint64) []byte {
	return appendU64(ancPrefix(b, u, coll, id), ^c)
}

// ancSlots is one chunk's entries, decoded.
type ancSlots struct {
	has [ancChunk]bool
	h   [ancChunk][revtree.HashLen]byte
}

// decode reads an ancestor key's value into a (later entries win).
func (a *ancSlots) decode(v []byte) bool {
	if len(v)%ancEntry != 0 {
		return false
	}
	for ; len(v) > 0; v = v[ancEntry:] {
		i := v[0]
		if i >= ancChunk {
			return false
		}
		a.has[i] = true
		a.h[i] = [revtree.HashLen]byte(v[1:ancEntry])
	}
	return true
}

// histState says which keys hold a document's older revision hashes: the
// ancestor keys of positions lo..hi (none when hi is 0), or, when legacy
// is set, the old-format history key (tagHist: the hashes of positions
// hi down to lo in one value), which the next save replaces by ancestor
// keys. rewrite: the ancestor keys may name other revisions than the path
// in memory at the same positions (it was rebuilt from a tree), so saving
// writes all of them again.
type histState struct {
	lo, hi  uint64
	legacy  bool
	rewrite bool
}

// loadPath completes a single-path document's hashes from its ancestor
// keys (or old-format history key): a no-op when they are loaded. The
// caller holds the user's lock; the keys are read as Pebble has them
// (this request's batch is not applied yet).
func (s *Store) loadPath(user string, kp ukey, ds *docState) error {
	l := &ds.lin
	if l.n == 0 || l.loaded() {
		return nil
	}
	const hl = revtree.HashLen
	k := l.known()
	top := l.start - uint64(k) // the newest position to read
	bot := l.start - uint64(l.n) + 1
	h := ds.hist
	if h.hi == 0 || bot < h.lo || top > h.hi {
		return fmt.Errorf("node: history of %s/%s of %s: positions %d-%d not stored: %w", ds.coll, ds.id, user, bot, top, errCorrupt)
	}
	ids := make([]byte, k*hl, l.n*hl)
	copy(ids, l.ids)
	if h.legacy {
		v, closer, err := s.db.Get(histKey(nil, kp, ds.coll, ds.id))
		if err != nil {
			return fmt.Errorf("node: history of %s/%s of %s: %w", ds.coll, ds.id, user, err)
		}
		defer closer.Close()
		// Its first hash is position hi; the code that wrote it stemmed
		// by lowering the count in the document, so the value may hold
		// more hashes than the document names.
		if uint64(len(v)) < (h.hi-h.lo+1)*hl {
			return fmt.Errorf("node: history of %s/%s of %s: %w", ds.coll, ds.id, user, errCorrupt)
		}
		off := (h.hi - top) * hl
		l.ids = append(ids, v[off:off+(top-bot+1)*hl]...)
		return nil
	}
	prefix := ancPrefix(nil, kp, ds.coll, ds.id)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(nil, prefix)})
	if err != nil {
		return err
	}
	want := top // the next position to append
	var slots ancSlots
	for ok := it.SeekGE(ancKey(nil, kp, ds.coll, ds.id, top/ancChunk)); ok && want >= bot; ok = it.Next() {
		key := it.Key()
		if len(key) != len(prefix)+8 {
			break
		}
		c := ^binary.BigEndian.Uint64(key[len(prefix):])
		if c != want/ancChunk {
			break // a chunk is missing
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		slots = ancSlots{}
		if !slots.decode(v) {
			break
		}
		for ; want >= bot && want/ancChunk == c; want-- {
			if !slots.has[want%ancChunk] {
				break
			}
			ids = append(ids, slots.h[want%ancChunk][:]...)
		}
		if want >= bot && want/ancChunk == c || want < bot {
			break // a position missing in its chunk, or done
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	if len(ids) != l.n*hl {
		return fmt.Errorf("node: history of %s/%s of %s: position %d missing: %w", ds.coll, ds.id, user, want, errCorrupt)
	}
	l.ids = ids
	return nil
}

// ancestorAt reads the hash of position pos of a single-path document
// from its ancestor keys (or old-format history key), without loading
// the rest; ok is false when the store has none there.
func (s *Store) ancestorAt(user string, kp ukey, ds *docState, pos uint64) (h [revtree.HashLen]byte, ok bool, err error) {
	st := ds.hist
	if st.hi == 0 || pos < st.lo || pos > st.hi {
		return h, false, nil
	}
	if st.legacy {
		if err := s.loadPath(user, kp, ds); err != nil {
			return h, false, err
		}
		l := &ds.lin
		if pos > l.start || l.start-pos >= uint64(l.n) {
			return h, false, nil
		}
		return l.hash(int(l.start - pos)), true, nil
	}
	v, closer, err := s.db.Get(ancKey(nil, kp, ds.coll, ds.id, pos/ancChunk))
	if errors.Is(err, pebble.ErrNotFound) {
		return h, false, nil
	}
	if err != nil {
		return h, false, err
	}
	defer closer.Close()
	var slots ancSlots
	if !slots.decode(v) {
		return h, false, errCorrupt
	}
	return slots.h[pos%ancChunk], slots.has[pos%ancChunk], nil
}

// saveHistory stages the ancestor keys of a document being saved: for a
// single path, entries for positions start-n+1 .. start-1, appended where
// the store lacks them (or every chunk written afresh after a rebuild),
// and the chunks it no longer needs deleted; for a tree or a dropped
// document, none. An old-format history key is replaced. The path's
// hashes the new entries need are in memory on the hot paths; otherwise
// they are loaded first.
func (w *writer) saveHistory(ds *docState, keepLin bool) error {
	st := &ds.hist
	var tlo, thi uint64
	if keepLin && ds.lin.n > 1 {
		tlo, thi = ds.lin.start-uint64(ds.lin.n)+1, ds.lin.start-1
		if top, ok := ds.keepTail(tlo); ok {
			// The document keeps the ancestors above top; the keys
			// hold tlo..top (none when top < tlo).
			thi = top
			if thi < tlo {
				tlo, thi = 0, 0
			}
		}
	}
	if !st.legacy && !st.rewrite && st.lo == tlo && st.hi == thi {
		return nil // the usual replicated no-op, or a document without history
	}
	if keepLin && (st.legacy || st.rewrite) {
		if err := w.s.loadPath(w.user, w.kp, ds); err != nil {
			return err
		}
	}
	if st.legacy {
		w.sc.k = histKey(w.sc.k[:0], w.kp, ds.coll, ds.id)
		if err := w.del(w.sc.k); err != nil {
			return err
		}
		*st = histState{rewrite: true}
	}
	// Delete the stored chunks without a position in the new range.
	if st.hi != 0 {
		lo, hi := st.lo/ancChunk, st.hi/ancChunk
		if thi == 0 {
			if err := w.delChunks(ds, lo, hi); err != nil {
				return err
			}
		} else {
			if tc := tlo / ancChunk; lo < tc {
				if err := w.delChunks(ds, lo, min(hi, tc-1)); err != nil {
					return err
				}
			}
			if tc := thi / ancChunk; hi > tc {
				if err := w.delChunks(ds, max(lo, tc+1), hi); err != nil {
					return err
				}
			}
		}
	}
	// Add the entries the store lacks: after a rebuild, every chunk
	// written whole (a set hides what an older path left in it).
	if thi != 0 {
		for c := tlo / ancChunk; c <= thi/ancChunk; c++ {
			plo, phi := max(tlo, c*ancChunk), min(thi, c*ancChunk+ancChunk-1)
			if !st.rewrite && st.hi != 0 {
				// Only positions outside the stored range are new.
				if plo >= st.lo && phi <= st.hi {
					continue
				}
				if err := w.addEntries(ds, c, plo, phi, st.lo, st.hi, false); err != nil {
					return err
				}
				continue
			}
			if err := w.addEntries(ds, c, plo, phi, 1, 0, st.rewrite); err != nil {
				return err
			}
		}
	}
	*st = histState{lo: tlo, hi: thi}
	return nil
}

// keepTail reports whether a single path whose ancestor keys will hold
// positions from tlo up can keep its newest ancestors in the document:
// those above the keys' current range, when they are at most ancTail and
// in memory (a rebuilt or old-format path writes all its keys afresh).
// top is the newest position the keys then hold (tlo-1: none).
func (ds *docState) keepTail(tlo uint64) (top uint64, ok bool) {
	st, l := &ds.hist, &ds.lin
	if st.legacy || st.rewrite || st.hi >= l.start {
		return 0, false
	}
	top = tlo - 1
	if st.hi != 0 && st.hi >= tlo {
		top = st.hi
	}
	t := l.start - 1 - top
	if t > ancTail || uint64(l.known()) < 1+t {
		return 0, false
	}
	return top, true
}

// addEntries stages the entries of positions plo..phi of chunk c of ds's
// path, leaving out those in slo..shi (stored already): appended to the
// chunk, or, with whole, as the chunk's new value.
func (w *writer) addEntries(ds *docState, c, plo, phi, slo, shi uint64, whole bool) error {
	l := &ds.lin
	low := plo // the oldest position to add
	if low >= slo && low <= shi {
		low = shi + 1
	}
	if low <= phi && int(l.start-low) >= l.known() {
		if err := w.s.loadPath(w.user, w.kp, ds); err != nil {
			return err
		}
	}
	sc := w.sc
	sc.k2 = sc.k2[:0]
	for p := plo; p <= phi; p++ {
		if p >= slo && p <= shi {
			continue
		}
		i := int(l.start - p)
		sc.k2 = append(sc.k2, byte(p%ancChunk))
		sc.k2 = append(sc.k2, l.ids[i*revtree.HashLen:(i+1)*revtree.HashLen]...)
	}
	sc.k = ancKey(sc.k[:0], w.kp, ds.coll, ds.id, c)
	if whole {
		return w.set(sc.k, sc.k2)
	}
	return w.merge(sc.k, sc.k2)
}

// maxPointDeletes is how many ancestor keys are deleted one by one; more
// go in one range deletion.
const maxPointDeletes = 8

// delChunks stages the deletion of ds's ancestor keys of chunks lo..hi.
func (w *writer) delChunks(ds *docState, lo, hi uint64) error {
	if hi-lo+1 <= maxPointDeletes {
		for c := lo; c <= hi; c++ {
			w.sc.k = ancKey(w.sc.k[:0], w.kp, ds.coll, ds.id, c)
			if err := w.del(w.sc.k); err != nil {
				return err
			}
		}
		return nil
	}
	// Keys run from the highest chunk to the lowest; the range ends
	// after chunk lo.
	w.sc.k = ancKey(w.sc.k[:0], w.kp, ds.coll, ds.id, hi)
	if lo == 0 {
		w.sc.k2 = prefixEnd(w.sc.k2[:0], ancPrefix(nil, w.kp, ds.coll, ds.id))
	} else {
		w.sc.k2 = ancKey(w.sc.k2[:0], w.kp, ds.coll, ds.id, lo-1)
	}
	return w.deleteRange(w.sc.k, w.sc.k2)
}
