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
// leaf; each ancestor has a key of its own,
//
//	user\0 A coll\0 len(id) id ^pos  ->  16-byte hash
//
// written once, when the revision stops being the leaf, and deleted by
// position when the path is stemmed past Config.RevsLimit. The id is
// length-prefixed (it may hold any byte and is not last), and the
// position is inverted so that a document's keys read newest first. A
// client edit reads none of them: it writes the old leaf's key and, at
// the limit, deletes the oldest one. Replicated revisions, reads by peers
// and tree builds read them (loadPath).

// ancPrefix is the prefix of document coll/id's ancestor keys.
func ancPrefix(b []byte, user, coll, id string) []byte {
	b = collPrefix(b, user, tagAnc, coll)
	b = append(b, byte(len(id)))
	return append(b, id...)
}

// ancKey is the ancestor key of position pos of document coll/id.
func ancKey(b []byte, user, coll, id string, pos uint64) []byte {
	return appendU64(ancPrefix(b, user, coll, id), ^pos)
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
func (s *Store) loadPath(user string, ds *docState) error {
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
		v, closer, err := s.db.Get(histKey(nil, user, ds.coll, ds.id))
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
	prefix := ancPrefix(nil, user, ds.coll, ds.id)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(nil, prefix)})
	if err != nil {
		return err
	}
	want := top
	for ok := it.SeekGE(binary.BigEndian.AppendUint64(prefix, ^top)); ok && want >= bot; ok = it.Next() {
		key := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		if len(key) != len(prefix)+8 || ^binary.BigEndian.Uint64(key[len(prefix):]) != want || len(v) != hl {
			break
		}
		ids = append(ids, v...)
		want--
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
func (s *Store) ancestorAt(user string, ds *docState, pos uint64) (h [revtree.HashLen]byte, ok bool, err error) {
	st := ds.hist
	if st.hi == 0 || pos < st.lo || pos > st.hi {
		return h, false, nil
	}
	if st.legacy {
		if err := s.loadPath(user, ds); err != nil {
			return h, false, err
		}
		l := &ds.lin
		if pos > l.start || l.start-pos >= uint64(l.n) {
			return h, false, nil
		}
		return l.hash(int(l.start - pos)), true, nil
	}
	v, closer, err := s.db.Get(ancKey(nil, user, ds.coll, ds.id, pos))
	if errors.Is(err, pebble.ErrNotFound) {
		return h, false, nil
	}
	if err != nil {
		return h, false, err
	}
	defer closer.Close()
	if len(v) != revtree.HashLen {
		return h, false, errCorrupt
	}
	return [revtree.HashLen]byte(v), true, nil
}

// saveHistory stages the ancestor keys of a document being saved: for a
// single path, those of positions start-n+1 .. start-1, written where the
// store lacks them (or all of them after a rebuild) and deleted where it
// has them no more; for a tree or a dropped document, none. An
// old-format history key is replaced. The path's hashes the new keys need
// are in memory on the hot paths; otherwise they are loaded first.
func (w *writer) saveHistory(ds *docState, keepLin bool) error {
	st := &ds.hist
	var tlo, thi uint64
	if keepLin && ds.lin.n > 1 {
		tlo, thi = ds.lin.start-uint64(ds.lin.n)+1, ds.lin.start-1
	}
	if !st.legacy && !st.rewrite && st.lo == tlo && st.hi == thi {
		return nil // the usual replicated no-op, or a document without history
	}
	if keepLin && (st.legacy || st.rewrite) {
		if err := w.s.loadPath(w.user, ds); err != nil {
			return err
		}
	}
	if st.legacy {
		w.sc.k = histKey(w.sc.k[:0], w.user, ds.coll, ds.id)
		if err := w.del(w.sc.k); err != nil {
			return err
		}
		*st = histState{}
	}
	// Delete what is stored outside the new range.
	if st.hi != 0 {
		if thi == 0 {
			if err := w.delAnc(ds, st.lo, st.hi); err != nil {
				return err
			}
		} else {
			if st.lo < tlo {
				if err := w.delAnc(ds, st.lo, min(st.hi, tlo-1)); err != nil {
					return err
				}
			}
			if st.hi > thi {
				if err := w.delAnc(ds, max(st.lo, thi+1), st.hi); err != nil {
					return err
				}
			}
		}
	}
	// Write what the store lacks in it.
	if thi != 0 {
		for p := thi; p >= tlo; p-- {
			if !st.rewrite && st.hi != 0 && p >= st.lo && p <= st.hi {
				p = st.lo // the stored range agrees: skip it
				continue
			}
			if err := w.setAnc(ds, p); err != nil {
				return err
			}
		}
	}
	*st = histState{lo: tlo, hi: thi}
	return nil
}

// setAnc stages the ancestor key of position p of ds's path.
func (w *writer) setAnc(ds *docState, p uint64) error {
	l := &ds.lin
	i := int(l.start - p)
	if i >= l.known() {
		if err := w.s.loadPath(w.user, ds); err != nil {
			return err
		}
	}
	w.sc.k = ancKey(w.sc.k[:0], w.user, ds.coll, ds.id, p)
	return w.set(w.sc.k, l.ids[i*revtree.HashLen:(i+1)*revtree.HashLen])
}

// maxPointDeletes is how many ancestor keys are deleted one by one; more
// go in one range deletion.
const maxPointDeletes = 8

// delAnc stages the deletion of the ancestor keys of positions lo..hi.
func (w *writer) delAnc(ds *docState, lo, hi uint64) error {
	if hi-lo+1 <= maxPointDeletes {
		for p := lo; p <= hi; p++ {
			w.sc.k = ancKey(w.sc.k[:0], w.user, ds.coll, ds.id, p)
			if err := w.del(w.sc.k); err != nil {
				return err
			}
		}
		return nil
	}
	// Keys run from the highest position to the lowest (position 0,
	// which no revision has, is the exclusive end of position 1).
	w.sc.k = ancKey(w.sc.k[:0], w.user, ds.coll, ds.id, hi)
	w.sc.k2 = ancKey(w.sc.k2[:0], w.user, ds.coll, ds.id, lo-1)
	return w.b.DeleteRange(w.sc.k, w.sc.k2, nil)
}
