package sync15

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
)

// memStore is an in-memory Store with the semantics the Store interface
// documents, for the handler's tests. It copies a page out under its lock
// before emitting it (a real store streams from a snapshot instead).
type memStore struct {
	mu    sync.Mutex
	clock func() time.Time
	quota int64 // bytes; 0 = none
	users map[string]*memUser
	// fail, when set, is returned by every method (a backend failure).
	fail error
}

type memUser struct {
	modified api.Stamp
	colls    map[string]*memColl
	batches  map[string]*memBatch // coll + "\x00" + id
}

type memColl struct {
	modified api.Stamp
	recs     map[string]*memRec
}

type memRec struct {
	bso    BSO       // ID, Modified, Has (payload always), SortIndex, Payload
	expiry api.Stamp // 0 = never
}

type memBatch struct {
	order []string
	recs  map[string]BSO // merged client fields (Has includes FieldTTL)
}

func newMemStore(clock func() time.Time) *memStore {
	return &memStore{clock: clock, users: map[string]*memUser{}}
}

func (s *memStore) now() api.Stamp { return stampOf(s.clock()) }

func (s *memStore) user(name string) *memUser {
	u := s.users[name]
	if u == nil {
		u = &memUser{colls: map[string]*memColl{}, batches: map[string]*memBatch{}}
		s.users[name] = u
	}
	return u
}

// next returns the timestamp of a write: now, or just after the user's
// last-modified time when the clock has not moved past it.
func (s *memStore) next(u *memUser) api.Stamp { return max(s.now(), u.modified+1) }

func (r *memRec) live(now api.Stamp) bool { return r.expiry == 0 || r.expiry > now }

func (s *memStore) liveRec(u *memUser, coll, id string) *memRec {
	c := u.colls[coll]
	if c == nil {
		return nil
	}
	r := c.recs[id]
	if r == nil || !r.live(s.now()) {
		return nil
	}
	return r
}

func (s *memStore) usage(u *memUser) int64 {
	now := s.now()
	var n int64
	for _, c := range u.colls {
		for _, r := range c.recs {
			if r.live(now) {
				n += int64(len(r.bso.Payload))
			}
		}
	}
	return n
}

func (s *memStore) checkQuota(u *memUser) error {
	if s.quota > 0 && s.usage(u) >= s.quota {
		return api.ErrOverQuota
	}
	return nil
}

// apply writes one record at t; stampAll gives it modified = t whatever
// fields it has (batch commits).
func (s *memStore) apply(c *memColl, b *BSO, t api.Stamp, stampAll bool) {
	r := c.recs[b.ID]
	fresh := r == nil || !r.live(s.now())
	if fresh {
		r = &memRec{bso: BSO{ID: b.ID, Has: FieldPayload}}
		c.recs[b.ID] = r
	}
	if b.Has&FieldPayload != 0 {
		r.bso.Payload = b.Payload
	}
	if b.Has&FieldSortIndex != 0 {
		r.bso.SortIndex = b.SortIndex
		r.bso.Has |= FieldSortIndex
	}
	if b.Has&FieldTTL != 0 {
		r.expiry = t + api.Stamp(b.TTL*100)
	}
	if fresh || stampAll || b.Has&(FieldPayload|FieldSortIndex) != 0 {
		r.bso.Modified = t
	}
}

func (s *memStore) coll(u *memUser, name string) *memColl {
	c := u.colls[name]
	if c == nil {
		c = &memColl{recs: map[string]*memRec{}}
		u.colls[name] = c
	}
	return c
}

func (s *memStore) collTS(u *memUser, coll string) api.Stamp {
	if c := u.colls[coll]; c != nil {
		return c.modified
	}
	return 0
}

func (s *memStore) CollectionTimestamps(_ context.Context, user string) (map[string]api.Stamp, api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, 0, s.fail
	}
	u := s.user(user)
	m := map[string]api.Stamp{}
	for name, c := range u.colls {
		m[name] = c.modified
	}
	return m, u.modified, nil
}

func (s *memStore) perCollection(user string, f func(*memRec) int64) (map[string]int64, api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, 0, s.fail
	}
	u := s.user(user)
	now := s.now()
	m := map[string]int64{}
	for name, c := range u.colls {
		for _, r := range c.recs {
			if r.live(now) {
				m[name] += f(r)
			}
		}
	}
	return m, u.modified, nil
}

func (s *memStore) CollectionCounts(_ context.Context, user string) (map[string]int64, api.Stamp, error) {
	return s.perCollection(user, func(*memRec) int64 { return 1 })
}

func (s *memStore) CollectionUsage(_ context.Context, user string) (map[string]int64, api.Stamp, error) {
	return s.perCollection(user, func(r *memRec) int64 { return int64(len(r.bso.Payload)) })
}

func (s *memStore) StorageUsage(_ context.Context, user string) (int64, api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, 0, s.fail
	}
	u := s.user(user)
	return s.usage(u), u.modified, nil
}

func (s *memStore) GetCollection(_ context.Context, user, coll string, q *Query, start func(*Page) error, emit func(*BSO) error) error {
	s.mu.Lock()
	if s.fail != nil {
		s.mu.Unlock()
		return s.fail
	}
	u := s.user(user)
	page := &Page{}
	var recs []BSO
	if c := u.colls[coll]; c != nil {
		page.LastModified = c.modified
		now := s.now()
		for _, r := range c.recs {
			if r.live(now) && q.Matches(&r.bso) {
				recs = append(recs, r.bso)
			}
		}
	}
	s.mu.Unlock()
	slices.SortFunc(recs, func(a, b BSO) int {
		pa, pb := PositionOf(&a), PositionOf(&b)
		return Compare(q.Sort, &pa, &pb)
	})
	if len(recs) > q.Limit {
		page.More = true
		recs = recs[:q.Limit]
	}
	page.Count = len(recs)
	if len(recs) > 0 {
		page.Last = PositionOf(&recs[len(recs)-1])
	}
	if err := start(page); err != nil {
		return err
	}
	for i := range recs {
		b := recs[i]
		if !q.Full {
			// Ids only: leave out what the handler must not need.
			b.Payload = ""
		}
		if err := emit(&b); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) GetBSO(_ context.Context, user, coll, id string) (BSO, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return BSO{}, s.fail
	}
	r := s.liveRec(s.user(user), coll, id)
	if r == nil {
		return BSO{}, api.ErrNotFound
	}
	return r.bso, nil
}

func (s *memStore) PutBSO(_ context.Context, user, coll string, b *BSO, pre Precondition) (api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	u := s.user(user)
	var target api.Stamp
	if r := s.liveRec(u, coll, b.ID); r != nil {
		target = r.bso.Modified
	}
	if err := pre.Check(target); err != nil {
		return 0, err
	}
	if err := s.checkQuota(u); err != nil {
		return 0, err
	}
	t := s.next(u)
	c := s.coll(u, coll)
	s.apply(c, b, t, false)
	c.modified, u.modified = t, t
	return t, nil
}

func (s *memStore) PostBSOs(_ context.Context, user, coll string, bs []BSO, pre Precondition) (api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	u := s.user(user)
	if err := pre.Check(s.collTS(u, coll)); err != nil {
		return 0, err
	}
	if err := s.checkQuota(u); err != nil {
		return 0, err
	}
	t := s.next(u)
	c := s.coll(u, coll)
	for i := range bs {
		s.apply(c, &bs[i], t, false)
	}
	c.modified, u.modified = t, t
	return t, nil
}

func (s *memStore) WriteBatch(_ context.Context, user, coll string, w *BatchWrite) (api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	u := s.user(user)
	key := coll + "\x00" + w.ID
	bt := u.batches[key]
	switch {
	case w.Create && bt != nil:
		return 0, ErrConflict
	case w.Create:
		bt = &memBatch{recs: map[string]BSO{}}
	case bt == nil:
		return 0, ErrBatchNotFound
	}
	if err := w.Pre.Check(s.collTS(u, coll)); err != nil {
		return 0, err
	}
	// Merge into a copy, so that a refused request changes nothing.
	merged := &memBatch{order: slices.Clone(bt.order), recs: make(map[string]BSO, len(bt.recs)+len(w.BSOs))}
	for id, b := range bt.recs {
		merged.recs[id] = b
	}
	for _, b := range w.BSOs {
		old, ok := merged.recs[b.ID]
		if !ok {
			merged.order = append(merged.order, b.ID)
			merged.recs[b.ID] = b
			continue
		}
		if b.Has&FieldPayload != 0 {
			old.Payload = b.Payload
		}
		if b.Has&FieldSortIndex != 0 {
			old.SortIndex = b.SortIndex
		}
		if b.Has&FieldTTL != 0 {
			old.TTL = b.TTL
		}
		old.Has |= b.Has
		merged.recs[b.ID] = old
	}
	var bytes int64
	for _, b := range merged.recs {
		bytes += int64(len(b.Payload))
	}
	if len(merged.recs) > w.Limits.MaxRecords || bytes > w.Limits.MaxBytes {
		return 0, ErrSizeLimitExceeded
	}
	if !w.Commit {
		u.batches[key] = merged
		return s.collTS(u, coll), nil
	}
	if err := s.checkQuota(u); err != nil {
		return 0, err
	}
	t := s.next(u)
	c := s.coll(u, coll)
	for _, id := range merged.order {
		b := merged.recs[id]
		s.apply(c, &b, t, true)
	}
	c.modified, u.modified = t, t
	delete(u.batches, key)
	return t, nil
}

func (s *memStore) DeleteCollection(_ context.Context, user, coll string, ids []string, pre Precondition) (api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	u := s.user(user)
	c := u.colls[coll]
	if err := pre.Check(s.collTS(u, coll)); err != nil {
		return 0, err
	}
	if c == nil {
		return u.modified, nil
	}
	t := s.next(u)
	if ids == nil {
		delete(u.colls, coll)
	} else {
		for _, id := range ids {
			delete(c.recs, id)
		}
		c.modified = t
	}
	u.modified = t
	return t, nil
}

func (s *memStore) DeleteBSO(_ context.Context, user, coll, id string, pre Precondition) (api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	u := s.user(user)
	r := s.liveRec(u, coll, id)
	if r == nil {
		return 0, api.ErrNotFound
	}
	if err := pre.Check(r.bso.Modified); err != nil {
		return 0, err
	}
	t := s.next(u)
	c := u.colls[coll]
	delete(c.recs, id)
	c.modified, u.modified = t, t
	return t, nil
}

func (s *memStore) DeleteStorage(_ context.Context, user string, pre Precondition) (api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	u := s.user(user)
	if err := pre.Check(u.modified); err != nil {
		return 0, err
	}
	t := s.next(u)
	u.colls = map[string]*memColl{}
	u.batches = map[string]*memBatch{}
	u.modified = t
	return t, nil
}

// setFail makes every method fail with err (nil restores).
func (s *memStore) setFail(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}
