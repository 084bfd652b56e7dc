package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
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
	s          *Store
	user, coll string
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
	case q.HasIndexAbove || q.HasIndexBelow:
		return e.scanIndex(tagIdx, false, true)
	default:
		return e.scanData()
	}
}

// scanData streams the records in insertion order.
func (e *query) scanData() error {
	sc := e.sc
	sc.k = collPrefix(sc.k[:0], e.user, tagData, e.coll)
	sc.k2 = prefixEnd(sc.k2[:0], sc.k)
	it, err := e.s.db.NewIter(&pebble.IterOptions{LowerBound: sc.k, UpperBound: sc.k2})
	if err != nil {
		return err
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

// indexBounds returns the key range of the modified or sortindex index
// that can hold matches, or ok=false when none can.
func (e *query) indexBounds(tag byte) (lo, hi []byte, ok bool) {
	q := e.q
	p := collPrefix(e.sc.k[:0], e.user, tag, e.coll)
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
	it, err := e.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
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
	sc.k = collPrefix(sc.k[:0], e.user, tagRec, e.coll)
	sc.k2 = prefixEnd(sc.k2[:0], sc.k)
	it, err := e.s.db.NewIter(&pebble.IterOptions{LowerBound: sc.k, UpperBound: sc.k2})
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
		e.sc.k = recKey(e.sc.k[:0], e.user, e.coll, id)
		v, closer, err := e.s.db.Get(e.sc.k)
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
	e.sc.k2 = dataKey(e.sc.k2[:0], e.user, e.coll, seq)
	v, closer, err := e.s.db.Get(e.sc.k2)
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

// arena copies strings into shared chunks, so a page of records costs a
// few allocations instead of several per record.
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

func (a *arena) wbo(r *record, full bool) api.WBO {
	if !full {
		return api.WBO{ID: a.str(r.id)}
	}
	return api.WBO{
		ID:            a.str(r.id),
		Modified:      api.Stamp(r.mod),
		Has:           r.has,
		SortIndex:     r.si,
		Payload:       a.str(r.payload),
		ParentID:      a.str(r.parent),
		PredecessorID: a.str(r.pred),
	}
}

// viewWBO returns r as a WBO whose strings alias r's (and so the Pebble
// value r was decoded from): it is valid only while that value is.
func viewWBO(r *record) api.WBO {
	return api.WBO{
		ID:            r.id,
		Modified:      api.Stamp(r.mod),
		Has:           r.has,
		SortIndex:     r.si,
		Payload:       r.payload,
		ParentID:      r.parent,
		PredecessorID: r.pred,
	}
}

// appendJSONStr appends s as a JSON string; plain says it needs no
// escaping (see jsonPlain), so it is copied between quotes.
func appendJSONStr(b []byte, s string, plain bool) []byte {
	if !plain {
		return api.AppendJSONString(b, s)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendRecordJSON appends r's JSON object exactly as
// api.AppendWBOJSON(b, viewWBO(r)) does, copying the strings its plain
// flags mark instead of scanning them for characters to escape.
func appendRecordJSON(b []byte, r *record) []byte {
	if r.plain == 0 {
		return api.AppendWBOJSON(b, viewWBO(r))
	}
	b = append(b, `{"id":`...)
	b = appendJSONStr(b, r.id, r.plain&plainID != 0)
	if r.mod != 0 {
		b = append(b, `,"modified":`...)
		b = api.Stamp(r.mod).AppendTo(b)
	}
	if r.has&api.FieldPayload != 0 {
		b = append(b, `,"payload":`...)
		b = appendJSONStr(b, r.payload, r.plain&plainPayload != 0)
	}
	if r.has&api.FieldSortIndex != 0 {
		b = append(b, `,"sortindex":`...)
		b = strconv.AppendInt(b, r.si, 10)
	}
	if r.has&api.FieldParentID != 0 {
		b = append(b, `,"parentid":`...)
		b = appendJSONStr(b, r.parent, r.plain&plainParent != 0)
	}
	if r.has&api.FieldPredecessorID != 0 {
		b = append(b, `,"predecessorid":`...)
		b = appendJSONStr(b, r.pred, r.plain&plainPred != 0)
	}
	return append(b, '}')
}

// scan runs q over user's collection coll under the user's shared lock,
// calling emit for each record of the answer in order (see query.emit),
// and returns the request's time. A collection that does not exist has no
// records.
func (s *Store) scan(user, coll string, q *api.Query, emit func(r *record) bool) (now api.Stamp, err error) {
	if err := checkNames(user, coll); err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	st, now, mono, err := s.readStamp(user)
	if err != nil {
		return 0, err
	}
	meta, ok := st.colls[coll]
	if !ok {
		return now, nil
	}
	if q == nil {
		q = &api.Query{}
	}
	sc := s.getScratch()
	defer s.putScratch(sc)
	e := &sc.q
	*e = query{s: s, user: user, coll: coll, q: q, nowSec: mono / 100, sc: sc, emit: emit, total: meta.count}
	err = e.run()
	*e = query{}
	if err != nil {
		return 0, fmt.Errorf("node: query %s/%s: %w", user, coll, err)
	}
	return now, nil
}

// GetCollection returns the live records of coll matching q, in q's order,
// after offset and limit.
func (s *Store) GetCollection(ctx context.Context, user, coll string, q *api.Query) ([]api.WBO, api.Stamp, error) {
	var out []api.WBO
	if q != nil && q.Limit > 0 && q.Limit <= 1000 {
		out = make([]api.WBO, 0, q.Limit)
	}
	full := q != nil && q.Full
	var a arena
	now, err := s.scan(user, coll, q, func(r *record) bool {
		out = append(out, a.wbo(r, full))
		return true
	})
	if err != nil {
		return nil, 0, err
	}
	if out == nil {
		out = []api.WBO{}
	}
	return out, now, nil
}

// AppendCollection implements api.CollectionAppender: it encodes the
// answer GetCollection would return straight from Pebble's values into b,
// as a list in format f, without copying the records first.
func (s *Store) AppendCollection(ctx context.Context, user, coll string, q *api.Query, f api.Format, b []byte) ([]byte, int, api.Stamp, error) {
	full := q != nil && q.Full
	b = api.AppendListStart(b, f)
	n := 0
	now, err := s.scan(user, coll, q, func(r *record) bool {
		if full {
			b = api.AppendListElem(b, f, n == 0, func(b []byte) []byte { return appendRecordJSON(b, r) })
		} else {
			b = api.AppendListElem(b, f, n == 0, func(b []byte) []byte { return appendJSONStr(b, r.id, r.plain&plainID != 0) })
		}
		n++
		return true
	})
	if err != nil {
		return b, 0, 0, err
	}
	return api.AppendListEnd(b, f), n, now, nil
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
	_, now, mono, err := s.readStamp(user)
	if err != nil {
		return api.WBO{}, 0, err
	}
	sc := s.getScratch()
	defer s.putScratch(sc)
	sc.k = recKey(sc.k[:0], user, coll, id)
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
	sc.k = dataKey(sc.k[:0], user, coll, h.seq)
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
	return a.wbo(&r, true), now, nil
}
