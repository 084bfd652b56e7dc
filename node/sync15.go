package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/sync15"
)

// Sync15 serves the Sync 1.5 storage API (sync15.Store) from a Store:
// the same records, documents and revisions as Weave 1.1, so a Sync 1.5
// write is a client write like a Weave one (a revision of each document,
// the changes feed, replication, the acknowledgement rule of the
// ReplicaWaiter, the quota, the conflict and document caps, the disk
// guard). What differs is the protocol's view of them:
//
//   - write rules (writer.put with sem15): a new record always has a
//     payload ("" by default) and modified = T; a sortindex write moves
//     modified; a payload write keeps the expiry; a batch commit stamps
//     every record it writes;
//   - collections exist from their first Sync 1.5 write, even an empty
//     POST, until they are deleted (collMeta.keep), and every write sets
//     the collection's time to T;
//   - the storage has a last-modified time that never goes back (the
//     largest of its collections' and of userState.smod, which keeps the
//     time of deleted collections and of DELETE storage);
//   - listings come in the protocol's total orders from the Sync 1.5
//     indexes (index15.go), built at a user's first Sync 1.5 request;
//   - batch uploads are kept in Pebble until committed (batch15.go).
//
// A ttl above the Weave limit (api.MaxTTLSeconds, one year) is stored as
// that limit: revision bodies carry Weave's limits, which every replica
// checks.
//
// Not replicated: an empty collection's existence and the storage's time
// (node-local metadata), and uncommitted batches. After a failover the
// client finds its records (with the new node's timestamps, as for Weave)
// and restarts an uncommitted batch (400: no such batch).
type Sync15 struct {
	s *Store
}

var _ sync15.Store = (*Sync15)(nil)

// Sync15 returns the store's Sync 1.5 view.
func (s *Store) Sync15() *Sync15 { return &Sync15{s: s} }

// begin checks names and enters the store; end must follow.
func (x *Sync15) begin(user string, colls ...string) error {
	if err := checkNames(append([]string{user}, colls...)...); err != nil {
		return err
	}
	if err := x.s.enter(); err != nil {
		return err
	}
	if err := x.s.ensure15(user); err != nil {
		x.s.leave()
		return err
	}
	return nil
}

// storageMod is the storage's Sync 1.5 last-modified time.
func storageMod(st *userState) api.Stamp {
	t := st.smod
	for _, m := range st.colls {
		t = max(t, m.last)
	}
	return api.Stamp(t)
}

// collMod is a collection's last-modified time (0 when it does not
// exist).
func collMod(st *userState, coll string) api.Stamp {
	if m, ok := st.colls[coll]; ok && m.exists() {
		return api.Stamp(m.last)
	}
	return 0
}

// CollectionTimestamps implements sync15.Store.
func (x *Sync15) CollectionTimestamps(ctx context.Context, user string) (map[string]api.Stamp, api.Stamp, error) {
	if err := x.begin(user); err != nil {
		return nil, 0, err
	}
	defer x.s.leave()
	mu := x.s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	st, _, _, err := x.s.readStamp(user)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]api.Stamp, len(st.colls))
	for c, m := range st.colls {
		if m.exists() {
			out[c] = api.Stamp(m.last)
		}
	}
	return out, storageMod(st), nil
}

// prepare builds the user's Sync 1.5 indexes if need be, for a method
// that enters the store itself.
func (x *Sync15) prepare(user string) error {
	if err := x.begin(user); err != nil {
		return err
	}
	x.s.leave()
	return nil
}

// perCollection maps each collection with live records to f of its meta,
// after the lazy purge.
func (x *Sync15) perCollection(user string, f func(m *collMeta) int64) (map[string]int64, api.Stamp, error) {
	if err := x.prepare(user); err != nil {
		return nil, 0, err
	}
	var out map[string]int64
	var ts api.Stamp
	_, err := x.s.liveInfo(user, func(st *userState) {
		out = make(map[string]int64, len(st.colls))
		for c, m := range st.colls {
			if m.count > 0 {
				out[c] = f(&m)
			}
		}
		ts = storageMod(st)
	})
	return out, ts, err
}

// CollectionCounts implements sync15.Store.
func (x *Sync15) CollectionCounts(ctx context.Context, user string) (map[string]int64, api.Stamp, error) {
	return x.perCollection(user, func(m *collMeta) int64 { return m.count })
}

// CollectionUsage implements sync15.Store.
func (x *Sync15) CollectionUsage(ctx context.Context, user string) (map[string]int64, api.Stamp, error) {
	return x.perCollection(user, func(m *collMeta) int64 { return m.bytes })
}

// StorageUsage implements sync15.Store: the bytes the quota counts.
func (x *Sync15) StorageUsage(ctx context.Context, user string) (int64, api.Stamp, error) {
	if err := x.prepare(user); err != nil {
		return 0, 0, err
	}
	var used int64
	var ts api.Stamp
	_, err := x.s.liveInfo(user, func(st *userState) { used, ts = st.usage(), storageMod(st) })
	return used, ts, err
}

// GetBSO implements sync15.Store.
func (x *Sync15) GetBSO(ctx context.Context, user, coll, id string) (sync15.BSO, error) {
	w, _, err := x.s.GetItem(ctx, user, coll, id)
	if err != nil {
		return sync15.BSO{}, err
	}
	b := sync15.BSO{ID: w.ID, Modified: w.Modified, Has: sync15.FieldPayload, Payload: w.Payload}
	if w.Has&api.FieldSortIndex != 0 {
		b.Has |= sync15.FieldSortIndex
		b.SortIndex = w.SortIndex
	}
	return b, nil
}

// toWBO converts a validated BSO into the record write it is.
func toWBO(b *sync15.BSO) api.WBO {
	w := api.WBO{ID: b.ID}
	if b.Has&sync15.FieldPayload != 0 {
		w.Has |= api.FieldPayload
		w.Payload = b.Payload
	}
	if b.Has&sync15.FieldSortIndex != 0 {
		w.Has |= api.FieldSortIndex
		w.SortIndex = b.SortIndex
	}
	if b.Has&sync15.FieldTTL != 0 {
		w.Has |= api.FieldTTL
		w.TTL = min(b.TTL, api.MaxTTLSeconds)
	}
	return w
}

// liveHead reads id's head under the user's lock: its modified time, or
// ok false when it is absent or expired.
func (x *Sync15) liveHead(u ukey, coll, id string, nowSec int64) (h head, ok bool, err error) {
	sc := x.s.getScratch()
	defer x.s.putScratch(sc)
	sc.k = recKey(sc.k[:0], u, coll, id)
	v, closer, err := x.s.db.Get(sc.k)
	if errors.Is(err, pebble.ErrNotFound) {
		return head{}, false, nil
	}
	if err != nil {
		return head{}, false, err
	}
	err = decodeHead(v, &h)
	closer.Close()
	if err != nil {
		return head{}, false, err
	}
	return h, h.exp == 0 || h.exp > nowSec, nil
}

// write15 runs one Sync 1.5 write: writeLocked, then the replicas' wait
// when the stage committed something (it sets *committed).
func (x *Sync15) write15(ctx context.Context, user string, committed *bool, check checkFunc, stage stageFunc) (api.Stamp, error) {
	ts, st, err := x.s.writeLocked(user, check, stage)
	if err != nil {
		return 0, err
	}
	if *committed {
		if err := x.s.awaitReplicas(ctx, user, st); err != nil {
			return 0, err
		}
	}
	return ts, nil
}

// writer15 returns a writer with the Sync 1.5 rules that makes coll
// exist and sets its time to the write's.
func (x *Sync15) writer15(b *pebble.Batch, sc *scratch, st *userState, user, coll string, t stamp) *writer {
	w := x.s.newWriter(b, sc, st, user, coll, t)
	w.sem15 = true
	w.cm.keep = true
	w.cm.last = max(w.cm.last, w.ts)
	w.smod = max(w.smod, w.ts)
	return w
}

// PutBSO implements sync15.Store.
func (x *Sync15) PutBSO(ctx context.Context, user, coll string, b *sync15.BSO, pre sync15.Precondition) (api.Stamp, error) {
	if err := x.begin(user, coll); err != nil {
		return 0, err
	}
	defer x.s.leave()
	in := toWBO(b)
	committed := false
	return x.write15(ctx, user, &committed, func(st *userState) (*userState, error) {
		m, err := x.s.clock.mono()
		if err != nil {
			return nil, err
		}
		h, live, err := x.liveHead(st.kp, coll, in.ID, m/100)
		if err != nil {
			return nil, err
		}
		var target api.Stamp
		if live {
			target = api.Stamp(h.mod)
		}
		if err := pre.Check(target); err != nil {
			return nil, err
		}
		return x.s.checkQuotaLocked(user, st)
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		w := x.writer15(b, sc, st, user, coll, t)
		if _, err := w.put(&in); err != nil {
			return nil, err
		}
		committed = true
		return w.done(st)
	})
}

// PostBSOs implements sync15.Store.
func (x *Sync15) PostBSOs(ctx context.Context, user, coll string, bs []sync15.BSO, pre sync15.Precondition) (api.Stamp, error) {
	if err := x.begin(user, coll); err != nil {
		return 0, err
	}
	defer x.s.leave()
	ws := make([]api.WBO, len(bs))
	for i := range bs {
		ws[i] = toWBO(&bs[i])
	}
	committed := false
	return x.write15(ctx, user, &committed, func(st *userState) (*userState, error) {
		if err := pre.Check(collMod(st, coll)); err != nil {
			return nil, err
		}
		return x.s.checkQuotaLocked(user, st)
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		w := x.writer15(b, sc, st, user, coll, t)
		defer multi(w, len(ws))()
		if err := w.putAll(ws); err != nil {
			return nil, err
		}
		committed = len(ws) > 0
		return w.done(st)
	})
}

// DeleteCollection implements sync15.Store.
func (x *Sync15) DeleteCollection(ctx context.Context, user, coll string, ids []string, pre sync15.Precondition) (api.Stamp, error) {
	if err := x.begin(user, coll); err != nil {
		return 0, err
	}
	defer x.s.leave()
	committed := false
	var absent bool
	var storage api.Stamp
	ts, err := x.write15(ctx, user, &committed, func(st *userState) (*userState, error) {
		if err := pre.Check(collMod(st, coll)); err != nil {
			return nil, err
		}
		if m, ok := st.colls[coll]; !ok || !m.exists() {
			absent, storage = true, storageMod(st)
		}
		return st, nil
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		if absent {
			return nil, nil
		}
		cm := st.colls[coll]
		w := x.s.newWriter(b, sc, st, user, coll, t)
		w.ops = getOps()
		defer w.ops.release()
		w.smod = max(w.smod, cm.last, int64(t.ts))
		if ids == nil {
			if err := w.tombstoneAll(); err != nil {
				return nil, err
			}
			for _, tag := range []byte{tagData, tagMod, tagRec, tagIdx, tagExp, tagNew15, tagIdx15} {
				sc.k = collPrefix(sc.k[:0], st.kp, tag, coll)
				sc.k2 = prefixEnd(sc.k2[:0], sc.k)
				if err := w.deleteRange(sc.k, sc.k2); err != nil {
					return nil, err
				}
			}
			w.cm = collMeta{}
			w.usedDelta = -cm.bytes
		} else {
			for _, id := range slices.Compact(slices.Sorted(slices.Values(ids))) {
				h, _, ok, err := w.lookup(id)
				if err != nil {
					return nil, err
				}
				if ok {
					if err := w.deleteRecord(id, &h); err != nil {
						return nil, err
					}
				}
			}
			w.cm.keep = true
			w.cm.last = max(w.cm.last, int64(t.ts))
		}
		committed = true
		return w.done(st)
	})
	if err != nil {
		return 0, err
	}
	if absent {
		return storage, nil
	}
	return ts, nil
}

// DeleteBSO implements sync15.Store.
func (x *Sync15) DeleteBSO(ctx context.Context, user, coll, id string, pre sync15.Precondition) (api.Stamp, error) {
	if err := x.begin(user, coll); err != nil {
		return 0, err
	}
	defer x.s.leave()
	committed := false
	return x.write15(ctx, user, &committed, func(st *userState) (*userState, error) {
		m, err := x.s.clock.mono()
		if err != nil {
			return nil, err
		}
		h, live, err := x.liveHead(st.kp, coll, id, m/100)
		if err != nil {
			return nil, err
		}
		if !live {
			return nil, api.ErrNotFound
		}
		return st, pre.Check(api.Stamp(h.mod))
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		w := x.writer15(b, sc, st, user, coll, t)
		h, _, ok, err := w.lookup(id)
		if err != nil {
			return nil, err
		}
		if ok {
			if err := w.deleteRecord(id, &h); err != nil {
				return nil, err
			}
		}
		committed = true
		return w.done(st)
	})
}

// DeleteStorage implements sync15.Store: every collection and record of
// the user (documents get tombstones, as for Weave) and its batches; the
// storage's time becomes T.
func (x *Sync15) DeleteStorage(ctx context.Context, user string, pre sync15.Precondition) (api.Stamp, error) {
	if err := x.begin(user); err != nil {
		return 0, err
	}
	defer x.s.leave()
	committed := false
	return x.write15(ctx, user, &committed, func(st *userState) (*userState, error) {
		return st, pre.Check(storageMod(st))
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		apply, err := x.s.stageDeleteStorage(user, st, t, b, sc)
		if err != nil {
			return nil, err
		}
		sc.k = userTag(sc.k[:0], st.kp, tagBatch)
		sc.k2 = userTag(sc.k2[:0], st.kp, tagBatch+1)
		if err := b.DeleteRange(sc.k, sc.k2, nil); err != nil {
			return nil, err
		}
		committed = true
		return apply, nil
	})
}

// GetCollection implements sync15.Store: under the user's shared lock it
// takes a Pebble snapshot, then counts the page on the snapshot (the
// Sync 1.5 index in the query's order, or the heads of the ids asked
// for), calls start, and emits the page, each record decoded from
// Pebble's memory without a copy. A page of up to maxKeptPage entries
// (and maxKeptPageIDs bytes of ids) is kept from the count to the
// emission; a larger one is read from the index a second time instead,
// so a request's memory stays bounded whatever its limit.
func (x *Sync15) GetCollection(ctx context.Context, user, coll string, q *sync15.Query, start func(*sync15.Page) error, emit func(*sync15.BSO) error) error {
	if err := x.begin(user, coll); err != nil {
		return err
	}
	defer x.s.leave()
	s := x.s
	mu := s.lock(user)
	mu.RLock()
	st, _, mono, err := s.readStamp(user)
	if err != nil {
		mu.RUnlock()
		return err
	}
	page := &sync15.Page{LastModified: collMod(st, coll)}
	if m, ok := st.colls[coll]; !ok || m.count == 0 {
		mu.RUnlock()
		return start(page)
	}
	snap := s.db.NewSnapshot()
	mu.RUnlock()
	defer snap.Close()
	sc := s.getScratch()
	defer s.putScratch(sc)
	l := &lister15{r: snap, user: user, kp: st.kp, coll: coll, q: q, nowSec: mono / 100}
	var last entry15
	var lastID []byte
	n, keep := 0, true
	more, err := l.run(q.Limit, func(e *entry15) error {
		last = *e
		lastID = append(lastID[:0], e.id...)
		n++
		if keep && (n > maxKeptPage || len(sc.page15IDs)+len(e.id) > maxKeptPageIDs) {
			keep = false
		}
		if keep {
			sc.page15 = append(sc.page15, *e)
			sc.page15IDs = append(sc.page15IDs, e.id...)
			sc.page15End = append(sc.page15End, int32(len(sc.page15IDs)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("node: sync15 query %s/%s: %w", user, coll, err)
	}
	page.Count, page.More = n, more
	if n > 0 {
		page.Last = sync15.Position{Modified: api.Stamp(last.mod), SortIndex: last.si, HasSortIndex: last.hasSI, ID: string(lastID)}
	}
	if err := start(page); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	var b sync15.BSO
	var rec record
	// The records are read with one iterator over the collection's data
	// keys, seeking to each (cheaper than a Get, which makes an iterator
	// every time).
	var data *pebble.Iterator
	if q.Full {
		sc.k2 = collPrefix(sc.k2[:0], st.kp, tagData, coll)
		if data, err = snap.NewIter(&pebble.IterOptions{LowerBound: sc.k2, UpperBound: prefixEnd(nil, sc.k2)}); err != nil {
			return err
		}
		defer data.Close()
	}
	if !keep {
		_, err = l.run(n, func(e *entry15) error { return x.emit15(e, q.Full, data, sc, &rec, &b, user, st.kp, coll, emit) })
		return err
	}
	ids := alias(sc.page15IDs)
	from := int32(0)
	for i := range sc.page15 {
		e := &sc.page15[i]
		e.id, from = ids[from:sc.page15End[i]], sc.page15End[i]
		if err := x.emit15(e, q.Full, data, sc, &rec, &b, user, st.kp, coll, emit); err != nil {
			return err
		}
	}
	return nil
}

// maxKeptPage and maxKeptPageIDs bound the Sync 1.5 page GetCollection
// keeps between its count and its emission: about 100 KB of entries and
// 64 KB of ids. (Variables for the test that compares both ways.)
var (
	maxKeptPage    = 2000
	maxKeptPageIDs = 64 << 10
)

// emit15 emits the record of entry e (only its id and sort keys unless
// full), read through data.
func (x *Sync15) emit15(e *entry15, full bool, data *pebble.Iterator, sc *scratch, rec *record, b *sync15.BSO, user string, kp ukey, coll string, emit func(*sync15.BSO) error) error {
	{
		if !full {
			*b = sync15.BSO{ID: e.id, Modified: api.Stamp(e.mod), SortIndex: e.si}
			if e.hasSI {
				b.Has = sync15.FieldSortIndex
			}
			return emit(b)
		}
		sc.k = dataKey(sc.k[:0], kp, coll, e.seq)
		if !seekNear(data, sc.k, e.seq) {
			return fmt.Errorf("node: record %d of %s/%s: %w", e.seq, user, coll, errors.Join(errCorrupt, data.Error()))
		}
		v, err := data.ValueAndErr()
		if err != nil {
			return err
		}
		if err := decodeRecord(v, rec); err != nil {
			return err
		}
		*b = sync15.BSO{ID: rec.id, Modified: api.Stamp(rec.mod), Has: sync15.FieldPayload, Payload: rec.payload,
			Plain: api.Plain(rec.plain) & (api.PlainID | api.PlainPayload)}
		if rec.has&api.FieldSortIndex != 0 {
			b.Has |= sync15.FieldSortIndex
			b.SortIndex = rec.si
		}
		return emit(b)
	}
}

// seekNear positions it (an iterator over one collection's data keys)
// at key, the key of record seq, stepping from its current record when
// that is a few records away (a listing by time visits records mostly
// in or against insertion order, and a step costs far less than a seek),
// else seeking. It reports whether the record is there.
func seekNear(it *pebble.Iterator, key []byte, seq uint64) bool {
	const maxSteps = 4
	if it.Valid() {
		k := it.Key()
		cur := tailU64(k, 0)
		switch {
		case cur == seq:
			return bytes.Equal(k, key)
		case cur > seq && cur-seq <= maxSteps:
			for it.Prev() {
				if c := tailU64(it.Key(), 0); c <= seq {
					return c == seq && bytes.Equal(it.Key(), key)
				}
			}
			return false
		case cur < seq && seq-cur <= maxSteps:
			for it.Next() {
				if c := tailU64(it.Key(), 0); c >= seq {
					return c == seq && bytes.Equal(it.Key(), key)
				}
			}
			return false
		}
	}
	return it.SeekGE(key) && bytes.Equal(it.Key(), key)
}

// lister15 walks the live records of a collection that a Sync 1.5 query
// selects, in its order, on a snapshot.
type lister15 struct {
	r          pebble.Reader
	user, coll string
	kp         ukey // the user's key prefix
	q          *sync15.Query
	nowSec     int64
}

// run calls fn for the first limit selected records, in order, and
// reports whether more follow.
func (l *lister15) run(limit int, fn func(e *entry15) error) (more bool, err error) {
	n := 0
	visit := func(e *entry15) (bool, error) {
		if e.exp != 0 && e.exp <= l.nowSec {
			return true, nil
		}
		q := l.q
		if q.HasNewer && e.mod <= int64(q.Newer) || q.HasOlder && e.mod >= int64(q.Older) {
			return true, nil
		}
		if n == limit {
			more = true
			return false, nil
		}
		n++
		return true, fn(e)
	}
	if l.q.IDs != nil {
		return more, l.byIDs(visit)
	}
	return more, l.scan(visit)
}

// position is the sync15 position of an entry.
func (e *entry15) position() sync15.Position {
	return sync15.Position{Modified: api.Stamp(e.mod), SortIndex: e.si, HasSortIndex: e.hasSI, ID: e.id}
}

// byIDs reads the heads of the ids asked for and visits them in order.
func (l *lister15) byIDs(visit func(e *entry15) (bool, error)) error {
	var es []entry15
	var h head
	var k []byte
	for _, id := range slices.Compact(slices.Sorted(slices.Values(l.q.IDs))) {
		k = recKey(k[:0], l.kp, l.coll, id)
		v, closer, err := l.r.Get(k)
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		err = decodeHead(v, &h)
		closer.Close()
		if err != nil {
			return err
		}
		e := entry15{id: id, mod: h.mod, si: h.si, hasSI: h.hasSI(), seq: h.seq, exp: h.exp}
		if l.q.After != nil {
			p := e.position()
			if sync15.Compare(l.q.Sort, &p, l.q.After) <= 0 {
				continue
			}
		}
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b entry15) int {
		pa, pb := a.position(), b.position()
		return sync15.Compare(l.q.Sort, &pa, &pb)
	})
	for i := range es {
		if more, err := visit(&es[i]); err != nil || !more {
			return err
		}
	}
	return nil
}

// scan walks the query's index: N forward for oldest, N backward for
// newest (and no sort), I backward for index; from after the query's
// position when it has one.
func (l *lister15) scan(visit func(e *entry15) (bool, error)) error {
	q := l.q
	tag, reverse := byte(tagNew15), q.Sort != sync15.SortOldest
	if q.Sort == sync15.SortIndex {
		tag = tagIdx15
	}
	prefix := collPrefix(nil, l.kp, tag, l.coll)
	plen := len(prefix)
	lo, hi := prefix, prefixEnd(nil, prefix)
	if tag == tagNew15 {
		if q.HasNewer {
			lo = appendU64(slices.Clip(prefix), ordInt64(int64(q.Newer)+1))
		}
		if q.HasOlder {
			hi = appendU64(slices.Clip(prefix), ordInt64(int64(q.Older)))
		}
		if string(lo) >= string(hi) {
			return nil
		}
	}
	it, err := l.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	var ok bool
	var from []byte
	if a := q.After; a != nil {
		if tag == tagNew15 {
			from = new15Key(nil, l.kp, l.coll, int64(a.Modified), a.ID)
		} else {
			from = idx15Key(nil, l.kp, l.coll, a.HasSortIndex, a.SortIndex, a.ID)
		}
	}
	switch {
	case from != nil && reverse:
		ok = it.SeekLT(from)
	case from != nil:
		ok = it.SeekGE(from)
		if ok && string(it.Key()) == string(from) {
			ok = it.Next()
		}
	case reverse:
		ok = it.Last()
	default:
		ok = it.First()
	}
	next := it.Next
	if reverse {
		next = it.Prev
	}
	var e entry15
	for ; ok; ok = next() {
		v, err := it.ValueAndErr()
		if err == nil {
			if tag == tagNew15 {
				err = decodeNew15(it.Key(), v, plen, &e)
			} else {
				err = decodeIdx15(it.Key(), v, plen, &e)
			}
		}
		if err != nil {
			it.Close()
			return err
		}
		more, err := visit(&e)
		if err != nil || !more {
			return errors.Join(err, it.Close())
		}
	}
	return errors.Join(it.Error(), it.Close())
}
