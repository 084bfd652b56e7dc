package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
)

// cand is a record found through an index, before its record is read.
type cand struct {
	seq   uint64
	mod   int64
	si    int64
	hasSI bool
}

// query runs one Weave query over a collection. The caller holds the
// user's lock (shared or exclusive), so the user's keys do not change while
// it runs. emit receives each matching record in order after offset; its
// record aliases Pebble memory valid only during the call. emit returning
// false stops the query.
type query struct {
	s *Store
	// r is what the query reads: the store's snapshot of a collection GET,
	// or the DB itself under the user's lock.
	r          pebble.Reader
	user, coll string
	kp         ukey // the user's key prefix
	q          *api.Query
	nowSec     int64
	sc         *scratch
	emit       func(r *record) bool
	skip       int
	taken      int
	rec        record
	// total is the collection's record count (0 = unknown); when an index
	// range holds a large share of it, re-ordering costs more than a scan.
	total int64
	// ttl is the collection's count of records with an expiry (its meta).
	ttl int64
	// out is the record handed to a collection GET's emit (kept here so
	// that it is not allocated per record).
	out api.WBO
	// data, when set, is an iterator over the collection's records that
	// the caller opened under the user's lock: scanData reads (and closes)
	// it instead of opening one on r.
	data *pebble.Iterator
}

func (e *query) matches(r *record) bool {
	q := e.q
	if r.exp != 0 && r.exp <= e.nowSec {
		return false
	}
	if q.HasParentID && (r.has&api.FieldParentID == 0 || r.parent != q.ParentID) {
		return false
	}
	if q.HasPredecessorID && (r.has&api.FieldPredecessorID == 0 || r.pred != q.PredecessorID) {
		return false
	}
	if q.HasNewer && (r.mod == 0 || r.mod <= int64(q.Newer)) {
		return false
	}
	if q.HasOlder && (r.mod == 0 || r.mod >= int64(q.Older)) {
		return false
	}
	hasSI := r.has&api.FieldSortIndex != 0
	if q.HasIndexAbove && (!hasSI || !(float64(r.si) > q.IndexAbove)) {
		return false
	}
	if q.HasIndexBelow && (!hasSI || !(float64(r.si) < q.IndexBelow)) {
		return false
	}
	return true
}

// offer applies the filters, offset and limit to r; false means stop.
func (e *query) offer(r *record) bool {
	if !e.matches(r) {
		return true
	}
	if e.skip > 0 {
		e.skip--
		return true
	}
	if !e.emit(r) {
		return false
	}
	e.taken++
	return e.q.Limit <= 0 || e.taken < e.q.Limit
}

func (e *query) run() error {
	q := e.q
	if q.Limit > 0 {
		e.skip = q.Offset
	}
	switch {
	case scansData(q):
		return e.scanData()
	case q.HasIDs:
		return e.byIDs()
	case q.Sort == api.SortIndex && (q.HasIndexAbove || q.HasIndexBelow):
		return e.scanIndex(tagIdx, false, false)
	case q.Sort == api.SortIndex:
		return e.byHeads()
	case q.Sort == api.SortOldest || q.Sort == api.SortNewest:
		return e.scanIndex(tagMod, q.Sort == api.SortNewest, false)
	case q.HasNewer || q.HasOlder:
		return e.scanIndex(tagMod, false, true)
	default: // sortindex bounds, the default order
		return e.scanIndex(tagIdx, false, true)
	}
}

// scanData streams the records in insertion order.
func (e *query) scanData() error {
	it := e.data
	e.data = nil
	if it == nil {
		var err error
		if it, err = e.r.NewIter(dataBounds(e.sc, e.kp, e.coll)); err != nil {
			return err
		}
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		if err := decodeRecord(v, &e.rec); err != nil {
			it.Close()
			return err
		}
		if !e.offer(&e.rec) {
			break
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// dataBounds returns the iterator bounds of the collection's records, in
// sc.k and sc.k2.
func dataBounds(sc *scratch, u ukey, coll string) *pebble.IterOptions {
	sc.k = collPrefix(sc.k[:0], u, tagData, coll)
	sc.k2 = prefixEnd(sc.k2[:0], sc.k)
	return &pebble.IterOptions{LowerBound: sc.k, UpperBound: sc.k2}
}

// scansData reports whether run reads q by one scan of the records in
// insertion order (no ids, no index to range over, the default order).
func scansData(q *api.Query) bool {
	return !q.HasIDs && q.Sort != api.SortIndex && q.Sort != api.SortOldest && q.Sort != api.SortNewest &&
		!q.HasNewer && !q.HasOlder && !q.HasIndexAbove && !q.HasIndexBelow
}

// onePass reports whether a query of a collection whose records have no
// expiry (ttl 0) reads nothing but that one scan: count then needs no
// read (no parent or predecessor filter to count by; the meta's count is
// the answer's size).
func onePass(q *api.Query, ttl int64) bool {
	return ttl == 0 && scansData(q) && !q.HasParentID && !q.HasPredecessorID
}

// indexBounds returns the key range of the modified or sortindex index
// that can hold matches, or ok=false when none can.
func (e *query) indexBounds(tag byte) (lo, hi []byte, ok bool) {
	q := e.q
	p := collPrefix(e.sc.k[:0], e.kp, tag, e.coll)
	e.sc.k = p
	if tag == tagMod {
		lo64, hi64 := int64(math.MinInt64), int64(math.MaxInt64)
		if q.HasNewer {
			lo64 = max(int64(q.Newer)+1, 1)
		}
		if q.HasOlder {
			lo64 = max(lo64, 1)
			hi64 = int64(q.Older) - 1
		}
		if lo64 > hi64 {
			return nil, nil, false
		}
		lo = appendU64(appendU64(slices.Clip(p), ordInt64(lo64)), 0)
		hi = appendU64(appendU64(slices.Clip(p), ordInt64(hi64)), math.MaxUint64)
		return lo, hi, true
	}
	// Sortindex: keys are ordered by descending sortindex.
	const far = 1 << 50
	lo64, hi64 := int64(-far), int64(far)
	if q.HasIndexAbove {
		lo64 = clampF(math.Floor(q.IndexAbove)+1, -far, far)
	}
	if q.HasIndexBelow {
		hi64 = clampF(math.Ceil(q.IndexBelow)-1, -far, far)
	}
	if lo64 > hi64 || math.IsNaN(q.IndexAbove) || math.IsNaN(q.IndexBelow) {
		return nil, nil, false
	}
	lo = appendU64(appendU64(slices.Clip(p), ^ordInt64(hi64)), 0)
	hi = appendU64(appendU64(slices.Clip(p), ^ordInt64(lo64)), math.MaxUint64)
	return lo, hi, true
}

func clampF(f float64, lo, hi int64) int64 {
	switch {
	case f < float64(lo):
		return lo
	case f > float64(hi):
		return hi
	}
	return int64(f)
}

// scanIndex walks the modified or sortindex index. With collect false the
// index order is the answer's order and records are read as they come;
// with collect true the candidates are re-ordered by insertion first.
func (e *query) scanIndex(tag byte, reverse, collect bool) error {
	lo, hi, ok := e.indexBounds(tag)
	if !ok {
		return nil
	}
	it, err := e.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	var cands []cand
	first, next := it.First, it.Next
	if reverse {
		first, next = it.Last, it.Prev
	}
	for ok := first(); ok; ok = next() {
		seq := tailU64(it.Key(), 0)
		if collect {
			if len(cands) >= 256 && int64(len(cands)) > e.total/4 {
				// Most of the collection matches: scanning it in insertion
				// order with the filters is cheaper than sorting and
				// fetching each candidate.
				if err := it.Close(); err != nil {
					return err
				}
				return e.scanData()
			}
			cands = append(cands, cand{seq: seq})
			continue
		}
		more, err := e.fetch(seq)
		if err != nil {
			it.Close()
			return err
		}
		if !more {
			break
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	if collect {
		slices.SortFunc(cands, func(a, b cand) int { return cmp.Compare(a.seq, b.seq) })
		return e.fetchAll(cands)
	}
	return nil
}

// byHeads reads the small heads of all records, orders them by sortindex
// (records without one last) and reads the records in that order.
func (e *query) byHeads() error {
	sc := e.sc
	sc.k = collPrefix(sc.k[:0], e.kp, tagRec, e.coll)
	sc.k2 = prefixEnd(sc.k2[:0], sc.k)
	it, err := e.r.NewIter(&pebble.IterOptions{LowerBound: sc.k, UpperBound: sc.k2})
	if err != nil {
		return err
	}
	var cands []cand
	var h head
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			err = decodeHead(v, &h)
		}
		if err != nil {
			it.Close()
			return err
		}
		if h.exp != 0 && h.exp <= e.nowSec {
			continue
		}
		cands = append(cands, cand{seq: h.seq, mod: h.mod, si: h.si, hasSI: h.hasSI()})
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	e.sortCands(cands)
	return e.fetchAll(cands)
}

// byIDs looks each distinct id up, then orders the hits.
func (e *query) byIDs() error {
	ids := slices.Clone(e.q.IDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	cands := make([]cand, 0, len(ids))
	var h head
	for _, id := range ids {
		e.sc.k = recKey(e.sc.k[:0], e.kp, e.coll, id)
		v, closer, err := e.r.Get(e.sc.k)
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
		cands = append(cands, cand{seq: h.seq, mod: h.mod, si: h.si, hasSI: h.hasSI()})
	}
	e.sortCands(cands)
	return e.fetchAll(cands)
}

func (e *query) sortCands(c []cand) {
	switch e.q.Sort {
	case api.SortOldest:
		slices.SortFunc(c, func(a, b cand) int {
			return cmp.Or(cmp.Compare(a.mod, b.mod), cmp.Compare(a.seq, b.seq))
		})
	case api.SortNewest:
		slices.SortFunc(c, func(a, b cand) int {
			return cmp.Or(cmp.Compare(b.mod, a.mod), cmp.Compare(b.seq, a.seq))
		})
	case api.SortIndex:
		slices.SortFunc(c, func(a, b cand) int {
			if a.hasSI != b.hasSI {
				if a.hasSI {
					return -1
				}
				return 1
			}
			return cmp.Or(cmp.Compare(b.si, a.si), cmp.Compare(a.seq, b.seq))
		})
	default:
		slices.SortFunc(c, func(a, b cand) int { return cmp.Compare(a.seq, b.seq) })
	}
}

func (e *query) fetchAll(cands []cand) error {
	for _, c := range cands {
		more, err := e.fetch(c.seq)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// fetch reads the record with insertion number seq and offers it.
func (e *query) fetch(seq uint64) (bool, error) {
	e.sc.k2 = dataKey(e.sc.k2[:0], e.kp, e.coll, seq)
	v, closer, err := e.r.Get(e.sc.k2)
	if errors.Is(err, pebble.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	if err := decodeRecord(v, &e.rec); err != nil {
		return false, err
	}
	return e.offer(&e.rec), nil
}

// count returns how many records run would emit (filters, offset and
// limit applied), from the same reader: the collection GET's
// X-Weave-Records, known before the first record is written. Without
// filters it is the collection's count less its expired records (a scan
// of the expiry index, only when some record has a ttl); with only
// newer/older or only index_above/below and no record with a ttl, the
// number of index keys in range; otherwise a counting run of the query.
func (e *query) count() (int, error) {
	q := e.q
	var n int64
	switch {
	case q.HasIDs || q.HasParentID || q.HasPredecessorID,
		(q.HasNewer || q.HasOlder) && (q.HasIndexAbove || q.HasIndexBelow):
		return e.countRun()
	case !q.HasNewer && !q.HasOlder && !q.HasIndexAbove && !q.HasIndexBelow:
		exp, err := e.expired()
		if err != nil {
			return 0, err
		}
		n = e.total - exp
	case e.ttl > 0:
		return e.countRun()
	default:
		tag := byte(tagIdx)
		if q.HasNewer || q.HasOlder {
			tag = tagMod
		}
		lo, hi, ok := e.indexBounds(tag)
		if ok {
			c, err := e.countKeys(lo, hi)
			if err != nil {
				return 0, err
			}
			n = c
		}
	}
	if q.Limit > 0 {
		n = min(max(n-int64(q.Offset), 0), int64(q.Limit))
	}
	return int(max(n, 0)), nil
}

// countRun counts the records of a run of the query.
func (e *query) countRun() (int, error) {
	emit := e.emit
	defer func() { e.emit, e.skip, e.taken = emit, 0, 0 }()
	n := 0
	e.emit = func(*record) bool { n++; return true }
	err := e.run()
	return n, err
}

// expired counts the collection's records whose expiry has passed (its
// expiry index up to now).
func (e *query) expired() (int64, error) {
	if e.ttl == 0 {
		return 0, nil
	}
	lo := collPrefix(nil, e.kp, tagExp, e.coll)
	hi := appendU64(slices.Clip(lo), ordInt64(e.nowSec+1))
	return e.countKeys(lo, hi)
}

// countKeys counts the keys in [lo, hi).
func (e *query) countKeys(lo, hi []byte) (int64, error) {
	it, err := e.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, err
	}
	var n int64
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n, errors.Join(it.Error(), it.Close())
}

// arena copies strings into shared chunks, so a record costs one
// allocation instead of several.
type arena struct{ buf []byte }

func (a *arena) str(s string) string {
	if len(s) == 0 {
		return ""
	}
	if cap(a.buf)-len(a.buf) < len(s) {
		a.buf = make([]byte, 0, max(32<<10, len(s)))
	}
	start := len(a.buf)
	a.buf = append(a.buf, s...)
	return unsafe.String(&a.buf[start], len(s))
}

// viewWBO returns r as a WBO (only its id unless full) whose strings alias
// r's, and so the Pebble value r was decoded from: it is valid only while
// that value is. Its Plain hint is r's plain flags.
func viewWBO(r *record, full bool) api.WBO {
	if !full {
		return api.WBO{ID: r.id, Plain: api.Plain(r.plain) & api.PlainID}
	}
	return api.WBO{
		ID:            r.id,
		Modified:      api.Stamp(r.mod),
		Has:           r.has,
		SortIndex:     r.si,
		Payload:       r.payload,
		ParentID:      r.parent,
		PredecessorID: r.pred,
		Plain:         api.Plain(r.plain),
	}
}

// GetCollection streams the live records of coll matching q (see
// api.Store). Under the user's shared lock it takes the request's time
// and a Pebble snapshot, then releases the lock: the count and the
// records are read from the snapshot while emit writes to the network,
// so a slow reader never holds up the user's writers, and the answer is
// the collection as of the request's time. Each record is decoded from
// Pebble's memory and handed to emit without a copy: a request holds one
// record at a time whatever the collection's size.
func (s *Store) GetCollection(ctx context.Context, user, coll string, q *api.Query, start func(n int, now api.Stamp) error, emit func(w *api.WBO) error) error {
	if err := checkNames(user, coll); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if q == nil {
		q = &api.Query{}
	}
	mu := s.lock(user)
	mu.RLock()
	st, now, mono, err := s.readStamp(user)
	if err != nil {
		mu.RUnlock()
		return err
	}
	meta, ok := st.colls[coll]
	if !ok {
		mu.RUnlock()
		return start(0, now)
	}
	sc := s.getScratch()
	defer s.putScratch(sc)
	// The answer's size is counted before it is streamed, so every read
	// of the query must see the state of the lock's moment. A one-pass
	// query opens its only iterator now, which is that view; any other
	// reads a snapshot taken now (a snapshot's Close costs a compaction
	// check, a hot path's few percent).
	var r pebble.Reader
	var data *pebble.Iterator
	if onePass(q, meta.ttl) {
		data, err = s.db.NewIter(dataBounds(sc, st.kp, coll))
		if err != nil {
			mu.RUnlock()
			return fmt.Errorf("node: query %s/%s: %w", user, coll, err)
		}
	} else {
		snap := s.db.NewSnapshot()
		defer snap.Close()
		r = snap
	}
	mu.RUnlock()
	e := &sc.q
	*e = query{s: s, r: r, user: user, kp: st.kp, coll: coll, q: q, nowSec: mono / 100, sc: sc, total: meta.count, ttl: meta.ttl, data: data}
	defer func() { *e = query{} }()
	defer func() {
		if e.data != nil { // not handed to scanData (an empty answer)
			e.data.Close()
		}
	}()
	n, err := e.count()
	if err != nil {
		return fmt.Errorf("node: query %s/%s: %w", user, coll, err)
	}
	if err := start(n, now); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	var emitErr error
	full := q.Full
	e.emit = func(r *record) bool {
		e.out = viewWBO(r, full)
		emitErr = emit(&e.out)
		return emitErr == nil
	}
	if err := e.run(); err != nil {
		return fmt.Errorf("node: query %s/%s: %w", user, coll, err)
	}
	return emitErr
}

// GetItem returns one live record or api.ErrNotFound.
func (s *Store) GetItem(ctx context.Context, user, coll, id string) (api.WBO, api.Stamp, error) {
	if err := checkNames(user, coll); err != nil {
		return api.WBO{}, 0, err
	}
	if err := s.enter(); err != nil {
		return api.WBO{}, 0, err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	st, now, mono, err := s.readStamp(user)
	if err != nil {
		return api.WBO{}, 0, err
	}
	sc := s.getScratch()
	defer s.putScratch(sc)
	sc.k = recKey(sc.k[:0], st.kp, coll, id)
	v, closer, err := s.db.Get(sc.k)
	if errors.Is(err, pebble.ErrNotFound) {
		return api.WBO{}, now, api.ErrNotFound
	}
	if err != nil {
		return api.WBO{}, 0, fmt.Errorf("node: get %s/%s: %w", user, coll, err)
	}
	var h head
	err = decodeHead(v, &h)
	closer.Close()
	if err != nil {
		return api.WBO{}, 0, fmt.Errorf("node: get %s/%s: %w", user, coll, err)
	}
	if h.exp != 0 && h.exp <= mono/100 {
		return api.WBO{}, now, api.ErrNotFound
	}
	sc.k = dataKey(sc.k[:0], st.kp, coll, h.seq)
	v, closer, err = s.db.Get(sc.k)
	if errors.Is(err, pebble.ErrNotFound) {
		return api.WBO{}, now, api.ErrNotFound
	}
	if err != nil {
		return api.WBO{}, 0, fmt.Errorf("node: get %s/%s: %w", user, coll, err)
	}
	defer closer.Close()
	var r record
	if err := decodeRecord(v, &r); err != nil {
		return api.WBO{}, 0, fmt.Errorf("node: get %s/%s: %w", user, coll, err)
	}
	a := arena{buf: make([]byte, 0, len(r.id)+len(r.payload)+len(r.parent)+len(r.pred))}
	w := viewWBO(&r, true)
	w.Plain = 0
	w.ID, w.Payload, w.ParentID, w.PredecessorID = a.str(w.ID), a.str(w.Payload), a.str(w.ParentID), a.str(w.PredecessorID)
	return w, now, nil
}
