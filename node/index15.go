package node

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Sync 1.5 indexes.
//
// The Sync 1.5 API lists a collection in total orders whose ties are
// broken by id, and pages through them by position (api/sync15's Sort and
// offset tokens). The Weave indexes break ties by insertion, so users
// served by Sync 1.5 get two more indexes of their view, whose key order
// is the ascending form of those orders (a listing in a descending order
// walks one backwards):
//
//	user\0 N coll\0 ord(mod) id        -> ver, seq, exp        (modified, id)
//	user\0 I coll\0 0 id               -> ver, seq, exp, mod   records without a sortindex, by id
//	user\0 I coll\0 1 ord(si) id       -> ver, seq, exp, mod   then by sortindex, id
//
// The values carry what a listing filters on (expiry, modified) and where
// the record is (seq), so a listing of ids reads no record. They are kept
// only for users served by Sync 1.5 (userState.sync15, a user meta flag):
// the first Sync 1.5 request of a user builds them from the record heads
// (ensure15) and from then on every change of the view maintains them
// (writer.store, writer.remove, and the range deletes of collections and
// storage). Weave-only users pay nothing for them.

const verIdx15 = 1

// new15Key is the N key of record id modified at mod.
func new15Key(b []byte, u ukey, coll string, mod int64, id string) []byte {
	b = appendU64(collPrefix(b, u, tagNew15, coll), ordInt64(mod))
	return append(b, id...)
}

// idx15Key is the I key of record id with sortindex si (when hasSI).
func idx15Key(b []byte, u ukey, coll string, hasSI bool, si int64, id string) []byte {
	b = collPrefix(b, u, tagIdx15, coll)
	if hasSI {
		b = appendU64(append(b, 1), ordInt64(si))
	} else {
		b = append(b, 0)
	}
	return append(b, id...)
}

// idx15Val is the value of an N (withMod false) or I key.
func idx15Val(b []byte, h *head, withMod bool) []byte {
	b = binary.AppendUvarint(append(b, verIdx15), h.seq)
	b = binary.AppendVarint(b, h.exp)
	if withMod {
		b = binary.AppendVarint(b, h.mod)
	}
	return b
}

// entry15 is a decoded N or I entry: a record's sort keys, where it is
// and when it expires.
type entry15 struct {
	id    string // aliases the key
	mod   int64
	si    int64
	hasSI bool
	seq   uint64
	exp   int64
}

// decodeNew15 decodes an N entry whose key starts with a prefix of plen
// bytes.
func decodeNew15(k, v []byte, plen int, e *entry15) error {
	if len(k) < plen+8 {
		return errCorrupt
	}
	e.mod = int64(binary.BigEndian.Uint64(k[plen:]) ^ signBit)
	e.id = alias(k[plen+8:])
	e.si, e.hasSI = 0, false
	return decodeIdx15Val(v, e, false)
}

// decodeIdx15 decodes an I entry whose key starts with a prefix of plen
// bytes.
func decodeIdx15(k, v []byte, plen int, e *entry15) error {
	if len(k) < plen+1 {
		return errCorrupt
	}
	switch k[plen] {
	case 0:
		e.hasSI, e.si = false, 0
		e.id = alias(k[plen+1:])
	case 1:
		if len(k) < plen+9 {
			return errCorrupt
		}
		e.hasSI, e.si = true, int64(binary.BigEndian.Uint64(k[plen+1:])^signBit)
		e.id = alias(k[plen+9:])
	default:
		return errCorrupt
	}
	return decodeIdx15Val(v, e, true)
}

func decodeIdx15Val(v []byte, e *entry15, withMod bool) error {
	if len(v) < 1 || v[0] != verIdx15 {
		return errCorrupt
	}
	d := newDecoder(v[1:])
	e.seq = d.Uvarint()
	e.exp = d.Varint()
	if withMod {
		e.mod = d.Varint()
	}
	return d.End()
}

// index15 stages the Sync 1.5 index entries of record id with head h.
func (w *writer) index15(id string, h *head) error {
	sc := w.sc
	sc.k = new15Key(sc.k[:0], w.kp, w.coll, h.mod, id)
	sc.v = idx15Val(sc.v[:0], h, false)
	if err := w.set(sc.k, sc.v); err != nil {
		return err
	}
	sc.k = idx15Key(sc.k[:0], w.kp, w.coll, h.hasSI(), h.si, id)
	sc.v = idx15Val(sc.v[:0], h, true)
	return w.set(sc.k, sc.v)
}

// unindex15 stages the deletion of the Sync 1.5 index entries of record
// id with head h.
func (w *writer) unindex15(id string, h *head) error {
	sc := w.sc
	sc.k = new15Key(sc.k[:0], w.kp, w.coll, h.mod, id)
	if err := w.del(sc.k); err != nil {
		return err
	}
	sc.k = idx15Key(sc.k[:0], w.kp, w.coll, h.hasSI(), h.si, id)
	return w.del(sc.k)
}

// ensure15 makes user a Sync 1.5 user: unless its indexes are kept
// already, it builds them from the record heads of every collection and
// sets the flag, in one synced batch under the user's exclusive lock. It
// runs once per user (and once more on another node after a failover).
func (s *Store) ensure15(user string) error {
	mu := s.lock(user)
	mu.RLock()
	st, err := s.state(user)
	built := err == nil && st.sync15
	mu.RUnlock()
	if err != nil || built {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if st, err = s.state(user); err != nil || st.sync15 {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	pn, err := s.numberUser(user, st, b)
	if err != nil {
		return err
	}
	defer pn.end()
	sc := s.getScratch()
	defer s.putScratch(sc)
	// Stale entries cannot exist (the flag is only cleared by WipeUser,
	// which deletes every key), but a range delete makes sure.
	for _, tag := range []byte{tagNew15, tagIdx15} {
		sc.k = userTag(sc.k[:0], st.kp, tag)
		sc.k2 = userTag(sc.k2[:0], st.kp, tag+1)
		if err := b.DeleteRange(sc.k, sc.k2, nil); err != nil {
			return err
		}
	}
	n := 0
	smod := st.smod
	for coll, cm := range st.colls {
		smod = max(smod, cm.last)
		lo := collPrefix(nil, st.kp, tagRec, coll)
		hi := prefixEnd(nil, lo)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return err
		}
		var h head
		for ok := it.First(); ok; ok = it.Next() {
			v, err := it.ValueAndErr()
			if err == nil {
				err = decodeHead(v, &h)
			}
			if err != nil {
				it.Close()
				return fmt.Errorf("node: building the Sync 1.5 indexes of %s/%s: %w", user, coll, err)
			}
			id := string(it.Key()[len(lo):])
			sc.k = new15Key(sc.k[:0], st.kp, coll, h.mod, id)
			sc.v = idx15Val(sc.v[:0], &h, false)
			if err := b.Set(sc.k, sc.v, nil); err != nil {
				it.Close()
				return err
			}
			sc.k = idx15Key(sc.k[:0], st.kp, coll, h.hasSI(), h.si, id)
			sc.v = idx15Val(sc.v[:0], &h, true)
			if err := b.Set(sc.k, sc.v, nil); err != nil {
				it.Close()
				return err
			}
			n++
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return err
		}
	}
	m := st.meta(st.last.Load(), st.chg.Load())
	m.flags |= userSync15
	m.smod = smod
	sc.k = metaKey(sc.k[:0], st.kp, "")
	sc.v = appendUserMeta(sc.v[:0], m)
	if err := b.Set(sc.k, sc.v, nil); err != nil {
		return err
	}
	if err := pn.commit(s, b); err != nil {
		return err
	}
	st.sync15, st.smod = true, smod
	if n > 0 {
		s.cfg.Logger.Info("node: built the Sync 1.5 indexes of a user", "user", user, "records", n)
	}
	return nil
}
