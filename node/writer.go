package node

import (
	"encoding/binary"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
)

// writer stages the changes of one request to one collection in a Pebble
// batch, tracking the collection's and user's new metadata. Nothing in
// memory changes until commit succeeded and apply is called.
type writer struct {
	s          *Store
	b          *pebble.Batch
	sc         *scratch
	user, coll string
	kp         ukey // the user's key prefix
	ts         int64
	nowSec     int64 // mono in whole seconds: expiry is judged against it
	last       int64 // the user's last stamp, persisted in the user meta
	cm         collMeta
	nextSeq    uint64
	seqDirty   bool
	usedDelta  int64
	lastGExp   int64 // last global expiry key written (dedup)
	// pendRecs, when set (a POST), holds the records this batch staged,
	// so that a later record with the same id sees its new version (the
	// document's pend names it).
	pendRecs []record
	// ops, when set, collects the record writes so that finish hands them
	// to the batch in key order (see sortedOps).
	ops *sortedOps
	// rs holds the documents (revision trees) this request changes; the
	// writers of one request share it.
	rs *revSession
	// Sync 1.5 (sync15.go, index15.go): idx15 keeps the user's Sync 1.5
	// indexes; sem15 gives put the Sync 1.5 rules (stampAll: every record
	// gets the write's time, as a batch commit does); smod is the user's
	// Sync 1.5 storage last-modified floor, persisted by finish.
	idx15, sem15, stampAll bool
	smod                   int64
}

// sortedOps buffers the sets, deletes and merges of one request so that they reach
// the Pebble batch sorted by key: Pebble inserts a batch into the memtable
// with one skiplist inserter, which can reuse its position when each key
// follows the previous one closely, so sorted batches cost fewer
// comparisons (node/DESIGN.md has how many fewer).
// That matters most for large batches (a replicated page, a collection
// delete): every commit queued behind one waits until it is in the
// memtable. The sort is stable: writes of the same key keep their order,
// and the batch applies atomically, so the outcome is the same as
// unsorted. A range deletion goes through writer.deleteRange, which
// flushes what was staged before it.
type sortedOps struct {
	arena []byte
	ops   []bufOp
	tmp   []bufOp // the sort's scratch
}

type bufOp struct {
	off, klen, vlen int32
	kind            byte // opSet, opDel, opMerge
	// rem and ab are the sort's scratch (sortFrom): how many of the key's
	// bytes are left from the depth being sorted (9 for more than 8), and
	// the next 8 of them, big-endian and zero-padded.
	rem byte
	ab  uint64
}

const (
	opSet = iota
	opDel
	opMerge
)

var opsPool = sync.Pool{New: func() any { return new(sortedOps) }}

// getOps takes an empty sortedOps from the pool; release gives it back.
func getOps() *sortedOps { return opsPool.Get().(*sortedOps) }

func (o *sortedOps) add(k, v []byte, kind byte) {
	off := len(o.arena)
	o.arena = append(append(o.arena, k...), v...)
	o.ops = append(o.ops, bufOp{off: int32(off), klen: int32(len(k)), vlen: int32(len(v)), kind: kind})
}

func (o *sortedOps) key(op *bufOp) []byte {
	return o.arena[op.off : op.off+op.klen : op.off+op.klen]
}

// flush sorts the buffered writes by key into b and empties o.
func (o *sortedOps) flush(b *pebble.Batch) error {
	o.sort()
	var err error
	for i := range o.ops {
		op := &o.ops[i]
		k, v := o.key(op), o.arena[op.off+op.klen:op.off+op.klen+op.vlen]
		switch op.kind {
		case opDel:
			err = b.Delete(k, nil)
		case opMerge:
			err = b.Merge(k, v, nil)
		default:
			err = b.Set(k, v, nil)
		}
		if err != nil {
			break
		}
	}
	o.arena, o.ops = o.arena[:0], o.ops[:0]
	return err
}

// sort orders o.ops by key, writes of the same key in the order they
// were staged (a stable sort). A comparison sort pays a call and a walk
// over the prefix the keys share (the user's, the tag's, the
// collection's) at every comparison; a POST of 100 updates stages about
// 700 writes, and sorting them that way was about a tenth of the POST's
// CPU. This is a most-significant-digit radix sort whose digits are 8
// key bytes wide: each pass orders the ops by the next 8 bytes of their
// keys (held in the op, see sortFrom) with a least-significant-byte
// counting sort that skips the bytes on which all keys agree, and the
// runs that tie on all 8 are sorted again from 8 bytes further on.
func (o *sortedOps) sort() {
	ops := o.ops
	if len(ops) < 2 {
		return
	}
	first := o.key(&ops[0])
	depth := len(first)
	for i := 1; i < len(ops) && depth > 0; i++ {
		k := o.key(&ops[i])
		n := min(depth, len(k))
		j := 0
		for j < n && k[j] == first[j] {
			j++
		}
		depth = j
	}
	if cap(o.tmp) < len(ops) {
		o.tmp = make([]bufOp, len(ops))
	}
	o.sortFrom(ops, o.tmp[:len(ops)], depth)
}

// sortFrom sorts ops, whose keys agree on their first depth bytes and
// which are in staging order among equal keys, using tmp (as long as
// ops) as scratch.
func (o *sortedOps) sortFrom(ops, tmp []bufOp, depth int) {
	for i := range ops {
		op := &ops[i]
		k := o.arena[int(op.off)+depth : op.off+op.klen]
		op.rem = byte(min(len(k), 9))
		var ab uint64
		if len(k) >= 8 {
			ab = binary.BigEndian.Uint64(k)
		} else {
			for j := range 8 {
				ab <<= 8
				if j < len(k) {
					ab |= uint64(k[j])
				}
			}
		}
		op.ab = ab
	}
	// The digits, least significant first: rem (a key that ends within
	// the 8 bytes is a prefix, zero-padded, of any longer key with the
	// same bytes, so it sorts first), then the 8 bytes from the last.
	// Equal ab and rem below 9 mean equal keys; every pass is stable, so
	// those keep their staging order.
	if len(ops) <= 16 {
		for i := 1; i < len(ops); i++ {
			for j := i; j > 0 && opLess(&ops[j], &ops[j-1]); j-- {
				ops[j], ops[j-1] = ops[j-1], ops[j]
			}
		}
	} else {
		var count [9][256]int32
		for i := range ops {
			op := &ops[i]
			ab := op.ab
			count[0][op.rem]++
			count[1][byte(ab)]++
			count[2][byte(ab>>8)]++
			count[3][byte(ab>>16)]++
			count[4][byte(ab>>24)]++
			count[5][byte(ab>>32)]++
			count[6][byte(ab>>40)]++
			count[7][byte(ab>>48)]++
			count[8][byte(ab>>56)]++
		}
		src, dst := ops, tmp
		for d := range 9 {
			c := &count[d]
			if int(c[src[0].digit(d)]) == len(src) {
				continue // every key has the same byte here
			}
			var sum int32
			for v := range c {
				sum, c[v] = sum+c[v], sum
			}
			for i := range src {
				v := src[i].digit(d)
				dst[c[v]] = src[i]
				c[v]++
			}
			src, dst = dst, src
		}
		if &src[0] != &ops[0] {
			copy(ops, src)
		}
	}
	for i := 0; i < len(ops); {
		j := i + 1
		for j < len(ops) && ops[j].ab == ops[i].ab && ops[j].rem == ops[i].rem {
			j++
		}
		if ops[i].rem > 8 && j-i > 1 {
			o.sortFrom(ops[i:j], tmp[i:j], depth+8)
		}
		i = j
	}
}

// digit is sortFrom's digit d of op, least significant first: rem, then
// the bytes of ab from the last.
func (op *bufOp) digit(d int) byte {
	if d == 0 {
		return op.rem
	}
	return byte(op.ab >> (8 * (d - 1)))
}

// opLess orders two ops by the digits sortFrom computed.
func opLess(x, y *bufOp) bool {
	if x.ab != y.ab {
		return x.ab < y.ab
	}
	return x.rem < y.rem
}

func (o *sortedOps) release() {
	if cap(o.arena) > 4<<20 || cap(o.ops) > 1<<16 || cap(o.tmp) > 1<<16 {
		return
	}
	o.arena, o.ops = o.arena[:0], o.ops[:0]
	opsPool.Put(o)
}

// set, del and merge stage one write, buffered when w.ops is set.
func (w *writer) set(k, v []byte) error {
	if w.ops != nil {
		w.ops.add(k, v, opSet)
		return nil
	}
	return w.b.Set(k, v, nil)
}

// flushOps hands the writes staged so far to the batch, sorted.
func (w *writer) flushOps() error {
	if w.ops == nil {
		return nil
	}
	return w.ops.flush(w.b)
}

// deleteRange stages a range deletion after every write staged before
// it, so that it covers them as it would unbuffered (it deletes what
// precedes it in the batch).
func (w *writer) deleteRange(lo, hi []byte) error {
	if err := w.flushOps(); err != nil {
		return err
	}
	return w.b.DeleteRange(lo, hi, nil)
}

func (w *writer) del(k []byte) error {
	if w.ops != nil {
		w.ops.add(k, nil, opDel)
		return nil
	}
	return w.b.Delete(k, nil)
}

// merge appends v to k's value (Pebble's default merger concatenates
// operands, oldest first).
func (w *writer) merge(k, v []byte) error {
	if w.ops != nil {
		w.ops.add(k, v, opMerge)
		return nil
	}
	return w.b.Merge(k, v, nil)
}

// known is a record head read from Pebble before staging (see
// writer.doc and prefetch).
type known struct {
	h  head
	ok bool
}

// prefetchMin is the batch size from which PostItems reads the heads with
// one iterator (prefetch) rather than a Get per record.
const prefetchMin = 8

func (s *Store) newWriter(b *pebble.Batch, sc *scratch, st *userState, user, coll string, t stamp) *writer {
	if st.kp == noUserKey {
		panic("node: a write of a user without a number") // writes call ensureUserKey first
	}
	return &writer{
		s: s, b: b, sc: sc, user: user, coll: coll, kp: st.kp,
		ts: int64(t.ts), nowSec: t.mono / 100, last: max(int64(t.ts), st.last.Load()),
		cm: st.colls[coll], nextSeq: st.nextSeq, lastGExp: -1,
		rs: sc.session(s, st), idx15: st.sync15, smod: st.smod,
	}
}

// next returns a writer for another collection of the same request: it
// shares w's batch, scratch and documents and continues w's counters. w
// must be finished first.
func (w *writer) next(st *userState, coll string) *writer {
	n := *w
	n.coll, n.cm = coll, st.colls[coll]
	n.seqDirty, n.usedDelta, n.lastGExp = false, 0, -1
	n.pendRecs, n.ops = nil, nil
	return &n
}

// lookup returns the current head of id: from this batch's earlier
// writes (then pend is that record; it is valid until the next store), or
// as Pebble has it (then pend is nil), read with the document (doc).
func (w *writer) lookup(id string) (h head, pend *record, ok bool, err error) {
	ds, err := w.doc(id)
	if err != nil {
		return head{}, nil, false, err
	}
	if ds.pend > 0 && w.pendRecs != nil {
		p := &w.pendRecs[ds.pend-1]
		return p.head(), p, true, nil
	}
	return ds.pre.h, nil, ds.pre.ok, nil
}

// body reads the stored record with insertion number seq, copied.
func (w *writer) body(seq uint64) (*record, error) {
	w.sc.k2 = dataKey(w.sc.k2[:0], w.kp, w.coll, seq)
	v, closer, err := w.s.db.Get(w.sc.k2)
	if err != nil {
		return nil, err
	}
	cp := append([]byte(nil), v...)
	closer.Close()
	r := &record{}
	if err := decodeRecord(cp, r); err != nil {
		return nil, err
	}
	return r, nil
}

// remove deletes the record id with head h and all its index entries.
func (w *writer) remove(id string, h *head) error {
	sc := w.sc
	var err error
	del := func(k []byte) {
		if err == nil {
			err = w.del(k)
		}
	}
	sc.k = recKey(sc.k[:0], w.kp, w.coll, id)
	del(sc.k)
	sc.k = dataKey(sc.k[:0], w.kp, w.coll, h.seq)
	del(sc.k)
	sc.k = modKey(sc.k[:0], w.kp, w.coll, h.mod, h.seq)
	del(sc.k)
	if h.hasSI() {
		sc.k = idxKey(sc.k[:0], w.kp, w.coll, h.si, h.seq)
		del(sc.k)
	}
	if h.exp != 0 {
		sc.k = expKey(sc.k[:0], w.kp, w.coll, h.exp, h.seq)
		del(sc.k)
		w.cm.ttl--
	}
	if w.idx15 && err == nil {
		err = w.unindex15(id, h)
	}
	w.cm.count--
	w.cm.bytes -= h.plen
	w.usedDelta -= h.plen
	if ds := w.rs.find(w.coll, id); ds != nil {
		ds.pend = 0
	}
	return err
}

// deleteRecord is a client's delete of record id with head h: the record
// and its index entries go, its document gets tombstones.
func (w *writer) deleteRecord(id string, h *head) error {
	if err := w.remove(id, h); err != nil {
		return err
	}
	return w.tombstone(id)
}

// put applies one validated WBO following PutItem's rules and returns the
// record's modified time after the write.
func (w *writer) put(in *api.WBO) (int64, error) {
	const meta = api.FieldSortIndex | api.FieldParentID | api.FieldPredecessorID
	oh, pend, exists, err := w.lookup(in.ID)
	if err != nil {
		return 0, err
	}
	if exists && oh.exp != 0 && oh.exp <= w.nowSec {
		// An expired record is gone for the client: start afresh.
		if err := w.remove(in.ID, &oh); err != nil {
			return 0, err
		}
		exists, pend = false, nil
	}
	var old *record
	if exists {
		needBody := in.Has&api.FieldPayload == 0 ||
			(oh.flags&headParent != 0 && in.Has&api.FieldParentID == 0) ||
			(oh.flags&headPred != 0 && in.Has&api.FieldPredecessorID == 0)
		if needBody {
			if old = pend; old == nil {
				if old, err = w.body(oh.seq); err != nil {
					return 0, err
				}
			}
		}
	}
	var nr record
	if old != nil {
		nr = *old
	}
	if exists {
		nr.seq, nr.mod, nr.exp = oh.seq, oh.mod, oh.exp
		if oh.hasSI() {
			nr.has |= api.FieldSortIndex
			nr.si = oh.si
		}
	} else {
		nr.seq = w.nextSeq
		w.nextSeq++
		w.seqDirty = true
	}
	nr.id = in.ID
	nr.has |= in.Has & meta
	if in.Has&api.FieldSortIndex != 0 {
		nr.si = in.SortIndex
	}
	if in.Has&api.FieldParentID != 0 {
		nr.parent = in.ParentID
	}
	if in.Has&api.FieldPredecessorID != 0 {
		nr.pred = in.PredecessorID
	}
	if in.Has&api.FieldPayload != 0 {
		nr.has |= api.FieldPayload
		nr.payload = in.Payload
		nr.mod = w.ts
		if !w.sem15 {
			nr.exp = 0
		}
	}
	if w.sem15 && (!exists || w.stampAll || in.Has&api.FieldSortIndex != 0) {
		// Sync 1.5: a new record always has a payload ("" by default),
		// and a sortindex write (or a batch commit) moves modified.
		nr.has |= api.FieldPayload
		nr.mod = w.ts
	}
	if in.Has&api.FieldTTL != 0 {
		nr.exp = w.nowSec + in.TTL
	}
	if err := w.store(&nr, &oh, exists); err != nil {
		return 0, err
	}
	x := w.rs.bodyOf(&nr, w.ts)
	if err := w.edit(in.ID, false, &x); err != nil {
		return 0, err
	}
	return nr.mod, nil
}

// store writes nr (whose previous version, if exists, had head oh).
func (w *writer) store(nr *record, oh *head, exists bool) error {
	sc := w.sc
	nh := nr.head()
	var err error
	set := func(k, v []byte) {
		if err == nil {
			err = w.set(k, v)
		}
	}
	del := func(k []byte) {
		if err == nil {
			err = w.del(k)
		}
	}
	ds := w.rs.find(w.coll, nr.id)
	if ds != nil {
		// saveDocs writes the head, with the document embedded.
		ds.head, ds.headSet = nh, true
	} else {
		sc.k = recKey(sc.k[:0], w.kp, w.coll, nr.id)
		sc.v = appendHead(sc.v[:0], &nh)
		set(sc.k, sc.v)
	}
	sc.k = dataKey(sc.k[:0], w.kp, w.coll, nr.seq)
	sc.v = appendRecord(sc.v[:0], nr)
	set(sc.k, sc.v)
	if !exists || oh.mod != nh.mod {
		if exists {
			sc.k = modKey(sc.k[:0], w.kp, w.coll, oh.mod, nr.seq)
			del(sc.k)
		}
		sc.k = modKey(sc.k[:0], w.kp, w.coll, nh.mod, nr.seq)
		set(sc.k, nil)
	}
	oldSI, newSI := exists && oh.hasSI(), nh.hasSI()
	if oldSI && (!newSI || oh.si != nh.si) {
		sc.k = idxKey(sc.k[:0], w.kp, w.coll, oh.si, nr.seq)
		del(sc.k)
	}
	if newSI && (!oldSI || oh.si != nh.si) {
		sc.k = idxKey(sc.k[:0], w.kp, w.coll, nh.si, nr.seq)
		set(sc.k, nil)
	}
	oldExp := int64(0)
	if exists {
		oldExp = oh.exp
	}
	if oldExp != nh.exp {
		if oldExp != 0 {
			sc.k = expKey(sc.k[:0], w.kp, w.coll, oldExp, nr.seq)
			del(sc.k)
			w.cm.ttl--
		}
		if nh.exp != 0 {
			sc.k = expKey(sc.k[:0], w.kp, w.coll, nh.exp, nr.seq)
			sc.v = append(sc.v[:0], nr.id...)
			set(sc.k, sc.v)
			w.cm.ttl++
			if nh.exp != w.lastGExp {
				sc.k = globalExpKey(sc.k[:0], nh.exp, w.user, w.coll)
				set(sc.k, nil)
				w.lastGExp = nh.exp
			}
		}
	}
	if exists {
		w.cm.bytes += nh.plen - oh.plen
		w.usedDelta += nh.plen - oh.plen
	} else {
		w.cm.count++
		w.cm.bytes += nh.plen
		w.usedDelta += nh.plen
	}
	if nh.mod > w.cm.last {
		w.cm.last = nh.mod
	}
	if w.idx15 && err == nil {
		if exists {
			err = w.unindex15(nr.id, oh)
		}
		if err == nil {
			err = w.index15(nr.id, &nh)
		}
	}
	if w.pendRecs != nil && ds != nil {
		if ds.pend > 0 {
			w.pendRecs[ds.pend-1] = *nr
		} else {
			w.pendRecs = append(w.pendRecs, *nr)
			ds.pend = len(w.pendRecs)
		}
	}
	return err
}

// finish stages the metadata keys of the collection and the user (the
// user meta in every batch: it carries the user's last stamp).
func (w *writer) finish() error {
	sc := w.sc
	if err := w.saveDocs(); err != nil {
		return err
	}
	if err := w.flushOps(); err != nil {
		return err
	}
	if w.cm.count > 0 && w.cm.last == 0 {
		// A collection made only of payload-less records still needs a time.
		w.cm.last = w.ts
	}
	sc.k = metaKey(sc.k[:0], w.kp, w.coll)
	var err error
	if w.cm.exists() {
		sc.v = appendMeta(sc.v[:0], &w.cm)
		err = w.b.Set(sc.k, sc.v, nil)
	} else {
		if w.idx15 {
			// The collection goes: the storage's time keeps its last.
			w.smod = max(w.smod, w.cm.last)
		}
		err = w.b.Delete(sc.k, nil)
	}
	if err == nil {
		rs := w.rs
		var flags byte
		if w.idx15 {
			flags = userSync15
		}
		sc.k = metaKey(sc.k[:0], w.kp, "")
		sc.v = appendUserMeta(sc.v[:0], &userMeta{nextSeq: w.nextSeq, last: w.last, chg: rs.chg, conf: rs.conf, local: rs.local, nlocal: rs.nlocal,
			flags: flags, smod: w.smod})
		err = w.b.Set(sc.k, sc.v, nil)
	}
	return err
}

// done finishes w's staging (finish) and returns the memory update to run
// after the commit (apply): the end of a client write's stage.
func (w *writer) done(st *userState) (func(), error) {
	if err := w.finish(); err != nil {
		return nil, err
	}
	return func() { w.apply(st) }, nil
}

// apply installs the new metadata in memory after a successful commit.
func (w *writer) apply(st *userState) {
	if w.cm.exists() {
		st.colls[w.coll] = w.cm
	} else {
		delete(st.colls, w.coll)
	}
	st.smod = max(st.smod, w.smod)
	st.nextSeq = w.nextSeq
	st.used += w.usedDelta
	st.conf = w.rs.conf
	st.chg.Store(w.rs.chg)
}
