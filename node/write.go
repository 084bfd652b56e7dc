package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
)

// commit applies b, synced, unless the disk guard refuses writes (full
// disk, failed store: a 503 wrapping ErrDiskFull or ErrStoreFailed).
func (s *Store) commit(b *pebble.Batch) error {
	if err := s.disk.writable(); err != nil {
		return err
	}
	return s.guarded(func() error {
		if err := s.db.Apply(b, pebble.Sync); err != nil {
			return fmt.Errorf("node: commit: %w", err)
		}
		return nil
	})
}

func (s *Store) quotaLeft(st *userState) int64 {
	if s.cfg.QuotaBytes <= 0 {
		return -1
	}
	return s.cfg.QuotaBytes - st.usage()
}

// checkQuotaLocked purges the user's expired records if needed and reports
// ErrOverQuota when the user's usage (userState.usage: live payloads,
// conflicting leaves, _local documents) has reached the quota. The caller
// holds the exclusive lock.
func (s *Store) checkQuotaLocked(user string, st *userState) (*userState, error) {
	st, err := s.purgedLocked(user, st)
	if err != nil {
		return nil, err
	}
	if s.cfg.QuotaBytes > 0 && st.usage() >= s.cfg.QuotaBytes {
		return nil, api.ErrOverQuota
	}
	return st, nil
}

// purgedLocked purges the user's expired records first when quotas are
// on and some record has a ttl (so that usage is exact), and returns the
// user's state. The caller holds the exclusive lock.
func (s *Store) purgedLocked(user string, st *userState) (*userState, error) {
	if s.cfg.QuotaBytes <= 0 || !st.hasTTL() {
		return st, nil
	}
	if _, err := s.purgeUserLocked(user, nil); err != nil {
		return nil, err
	}
	return s.state(user)
}

func checkPre(st *userState, coll string, pre api.Precondition) error {
	if pre.Set {
		if m, ok := st.colls[coll]; ok && m.last > int64(pre.Since) {
			return api.ErrPreconditionFailed
		}
	}
	return nil
}

// writeLocked runs one write request: lock, load, checks, tick, stage,
// commit, apply. A committing stage must persist the user meta (with the
// stamp as last); a request that changes nothing still returns its stamp,
// and persists it alone when it is above mono (nothing else covers it).
func (s *Store) writeLocked(user string, check checkFunc, stage stageFunc) (api.Stamp, *userState, error) {
	return s.writeLockedFrom(user, "", check, stage)
}

// checkFunc checks a write against the user's state under the exclusive
// lock (quota, precondition) and returns the state to write with; nil
// checks nothing.
type checkFunc func(st *userState) (*userState, error)

// stageFunc stages a write in b, stamped t, and returns the memory update
// to run after the commit (nil, or an empty batch: nothing to commit).
type stageFunc func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error)

// clientWrite runs one client write of user (whose names the caller
// checked) with writeLocked and then, when wait is set, waits until the
// write may be acknowledged (awaitReplicas, after the user's lock is
// released); a write that may not be is answered with ErrNotAcknowledged.
func (s *Store) clientWrite(ctx context.Context, user string, wait bool, check checkFunc, stage stageFunc) (api.Stamp, *userState, error) {
	if err := s.enter(); err != nil {
		return 0, nil, err
	}
	defer s.leave()
	ts, st, err := s.writeLocked(user, check, stage)
	if err != nil {
		return 0, nil, err
	}
	if wait {
		if err := s.awaitReplicas(ctx, user, st); err != nil {
			return 0, nil, err
		}
	}
	return ts, st, nil
}

// writeLockedFrom is writeLocked for a change that came from peer from
// ("" for a client's), which the change notice names.
func (s *Store) writeLockedFrom(user, from string, check checkFunc, stage stageFunc) (api.Stamp, *userState, error) {
	// A full disk refuses the write before it waits for the lock.
	if err := s.disk.writable(); err != nil {
		return 0, nil, err
	}
	mu := s.lock(user)
	mu.Lock()
	defer mu.Unlock()
	st, err := s.state(user)
	if err != nil {
		return 0, nil, err
	}
	if check != nil {
		if st, err = check(st); err != nil {
			return 0, nil, err
		}
	}
	t, err := s.tick(st)
	if err != nil {
		return 0, nil, err
	}
	ts := t.ts
	b := s.db.NewBatch()
	defer b.Close()
	pn, err := s.numberUser(user, st, b)
	if err != nil {
		return 0, nil, err
	}
	defer pn.end()
	staged := b.Count()
	sc := s.getScratch()
	defer s.putScratch(sc)
	apply, err := stage(st, t, b, sc)
	if err != nil {
		return 0, nil, fmt.Errorf("node: staging write: %w", err)
	}
	if apply == nil || b.Count() == staged {
		if int64(ts) <= t.mono {
			s.given(user, st, t)
			return ts, st, nil
		}
		b.Reset()
		if pn != nil {
			if err := putUserNumber(b, user, pn.n); err != nil {
				return 0, nil, err
			}
		}
		sc.k = metaKey(sc.k[:0], st.kp, "")
		sc.v = appendUserMeta(sc.v[:0], st.meta(int64(ts), st.chg.Load()))
		if err := b.Set(sc.k, sc.v, nil); err != nil {
			return 0, nil, err
		}
		if err := pn.commit(s, b); err != nil {
			return 0, nil, err
		}
		s.given(user, st, t)
		return ts, st, nil
	}
	before := st.chg.Load()
	if err := pn.commit(s, b); err != nil {
		return 0, nil, err
	}
	apply()
	s.given(user, st, t)
	if c := st.chg.Load(); c != before {
		s.changed(user, c, from)
	}
	return ts, st, nil
}

// CheckWrite reports ErrOverQuota, then ErrPreconditionFailed, for a write
// to coll, or nil.
func (s *Store) CheckWrite(ctx context.Context, user, coll string, pre api.Precondition) error {
	if err := checkNames(user, coll); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	mu := s.lock(user)
	if s.cfg.QuotaBytes > 0 {
		mu.Lock()
		defer mu.Unlock()
	} else {
		mu.RLock()
		defer mu.RUnlock()
	}
	st, err := s.state(user)
	if err != nil {
		return err
	}
	if st, err = s.checkQuotaLocked(user, st); err != nil {
		return err
	}
	return checkPre(st, coll, pre)
}

// PutItem writes one validated record; see api.Store.
func (s *Store) PutItem(ctx context.Context, user, coll string, in api.WBO, pre api.Precondition) (api.WriteResult, error) {
	if err := checkNames(user, coll); err != nil {
		return api.WriteResult{}, err
	}
	var mod int64
	ts, st, err := s.clientWrite(ctx, user, true, func(st *userState) (*userState, error) {
		st, err := s.checkQuotaLocked(user, st)
		if err != nil {
			return nil, err
		}
		return st, checkPre(st, coll, pre)
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		w := s.newWriter(b, sc, st, user, coll, t)
		var err error
		if mod, err = w.put(&in); err != nil {
			return nil, err
		}
		return w.done(st)
	})
	if err != nil {
		return api.WriteResult{}, err
	}
	return api.WriteResult{Timestamp: ts, Modified: api.Stamp(mod), QuotaRemaining: s.quotaLeft(st)}, nil
}

// PostItems writes validated records atomically with one timestamp; later
// records with the same id win.
func (s *Store) PostItems(ctx context.Context, user, coll string, ws []api.WBO, pre api.Precondition) (api.BatchResult, error) {
	if err := checkNames(user, coll); err != nil {
		return api.BatchResult{}, err
	}
	ts, st, err := s.clientWrite(ctx, user, len(ws) > 0, func(st *userState) (*userState, error) {
		if err := checkPre(st, coll, pre); err != nil {
			return nil, err
		}
		return s.checkQuotaLocked(user, st)
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		if len(ws) == 0 {
			return nil, nil
		}
		w := s.newWriter(b, sc, st, user, coll, t)
		defer multi(w, len(ws))()
		if err := w.putAll(ws); err != nil {
			return nil, err
		}
		return w.done(st)
	})
	if err != nil {
		return api.BatchResult{}, err
	}
	res := api.BatchResult{
		Timestamp:      ts,
		Success:        make([]string, len(ws)),
		Failed:         map[string][]string{},
		QuotaRemaining: s.quotaLeft(st),
	}
	for i := range ws {
		res.Success[i] = ws[i].ID
	}
	return res, nil
}

// multi sets w up for a request of n records: the staged records (a
// record written twice sees its first write) and sorted ops, in the
// request's scratch; the caller defers the returned release.
func multi(w *writer, n int) func() {
	if n <= 1 {
		return func() {}
	}
	sc := w.sc
	w.pendRecs = slices.Grow(sc.recs[:0], n)
	w.ops = getOps()
	ops := w.ops
	return func() {
		sc.recs = w.pendRecs
		ops.release()
	}
}

// putAll stages ws through w, reading the heads and documents of a large
// request ahead with one iterator (prefetch).
func (w *writer) putAll(ws []api.WBO) error {
	if len(ws) >= prefetchMin {
		sc := w.sc
		ids := sc.ids[:0]
		for i := range ws {
			ids = append(ids, ws[i].ID)
		}
		slices.Sort(ids)
		sc.ids = ids
		if err := w.prefetch(ids); err != nil {
			return err
		}
	}
	for i := range ws {
		if _, err := w.put(&ws[i]); err != nil {
			return err
		}
	}
	return nil
}

// DeleteItem deletes one record; deleting a missing record succeeds.
func (s *Store) DeleteItem(ctx context.Context, user, coll, id string, pre api.Precondition) (api.WriteResult, error) {
	if err := checkNames(user, coll); err != nil {
		return api.WriteResult{}, err
	}
	ts, st, err := s.clientWrite(ctx, user, true, func(st *userState) (*userState, error) {
		return st, checkPre(st, coll, pre)
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		w := s.newWriter(b, sc, st, user, coll, t)
		h, _, ok, err := w.lookup(id)
		if err != nil || !ok {
			return nil, err
		}
		if err := w.deleteRecord(id, &h); err != nil {
			return nil, err
		}
		w.cm.last = max(w.cm.last, int64(t.ts))
		return w.done(st)
	})
	if err != nil {
		return api.WriteResult{}, err
	}
	return api.WriteResult{Timestamp: ts, QuotaRemaining: s.quotaLeft(st)}, nil
}

func unfiltered(q *api.Query) bool {
	return q == nil || (!q.HasIDs && !q.HasParentID && !q.HasPredecessorID && !q.HasOlder &&
		!q.HasNewer && !q.HasIndexAbove && !q.HasIndexBelow && q.Limit <= 0)
}

// DeleteCollection deletes the records of coll matching q (all of them when
// q has no filter; sort, offset and limit select the first ones).
func (s *Store) DeleteCollection(ctx context.Context, user, coll string, q *api.Query, pre api.Precondition) (api.WriteResult, error) {
	if err := checkNames(user, coll); err != nil {
		return api.WriteResult{}, err
	}
	ts, st, err := s.clientWrite(ctx, user, true, func(st *userState) (*userState, error) {
		return st, checkPre(st, coll, pre)
	}, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		cm, ok := st.colls[coll]
		if !ok {
			return nil, nil
		}
		w := s.newWriter(b, sc, st, user, coll, t)
		w.ops = getOps()
		defer w.ops.release()
		if unfiltered(q) {
			if err := w.tombstoneAll(); err != nil {
				return nil, err
			}
			if w.idx15 {
				w.smod = max(w.smod, cm.last, int64(t.ts))
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
			type victim struct {
				id string
				h  head
			}
			var victims []victim
			e := query{s: s, r: s.db, user: user, kp: st.kp, coll: coll, q: q, nowSec: t.mono / 100, sc: sc, total: cm.count, ttl: cm.ttl}
			e.emit = func(r *record) bool {
				victims = append(victims, victim{id: strings.Clone(r.id), h: r.head()})
				return true
			}
			if err := e.run(); err != nil {
				return nil, err
			}
			if len(victims) == 0 {
				return nil, nil
			}
			for i := range victims {
				if err := w.deleteRecord(victims[i].id, &victims[i].h); err != nil {
					return nil, err
				}
			}
			w.cm.last = max(w.cm.last, int64(t.ts))
		}
		return w.done(st)
	})
	if err != nil {
		return api.WriteResult{}, err
	}
	return api.WriteResult{Timestamp: ts, QuotaRemaining: s.quotaLeft(st)}, nil
}

// DeleteStorage deletes every record of the user.
func (s *Store) DeleteStorage(ctx context.Context, user string) (api.WriteResult, error) {
	if err := checkNames(user); err != nil {
		return api.WriteResult{}, err
	}
	ts, st, err := s.clientWrite(ctx, user, true, nil, func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		if len(st.colls) == 0 {
			return nil, nil
		}
		return s.stageDeleteStorage(user, st, t, b, sc)
	})
	if err != nil {
		return api.WriteResult{}, err
	}
	return api.WriteResult{Timestamp: ts, QuotaRemaining: s.quotaLeft(st)}, nil
}

// stageDeleteStorage stages the deletion of every record of the user
// (DELETE storage): each live document gets a tombstone, then the view
// goes in range deletes; the user meta keeps the counters and takes t.
func (s *Store) stageDeleteStorage(user string, st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
	// Every live document gets a tombstone (so that peers cannot
	// bring the records back), then the view goes in range deletes.
	colls := make([]string, 0, len(st.colls))
	for c := range st.colls {
		colls = append(colls, c)
	}
	slices.Sort(colls)
	rs := sc.session(s, st)
	ops := getOps()
	defer ops.release()
	for _, c := range colls {
		w := s.newWriter(b, sc, st, user, c, t)
		w.ops = ops
		if err := w.tombstoneAll(); err != nil {
			return nil, err
		}
		if err := w.saveDocs(); err != nil {
			return nil, err
		}
		if err := w.flushOps(); err != nil {
			return nil, err
		}
	}
	for _, r := range viewRanges {
		sc.k = userTag(sc.k[:0], st.kp, r[0])
		sc.k2 = userTag(sc.k2[:0], st.kp, r[1])
		if err := b.DeleteRange(sc.k, sc.k2, nil); err != nil {
			return nil, err
		}
	}
	// Keep the insertion counter so numbers are never reused, and
	// the user's last stamp.
	sc.k = metaKey(sc.k[:0], st.kp, "")
	m := st.meta(int64(t.ts), rs.chg)
	m.conf = rs.conf
	if st.sync15 {
		m.smod = max(m.smod, int64(t.ts))
	}
	sc.v = appendUserMeta(sc.v[:0], m)
	if err := b.Set(sc.k, sc.v, nil); err != nil {
		return nil, err
	}
	return func() {
		clear(st.colls)
		st.used = 0
		st.conf = rs.conf
		st.chg.Store(rs.chg)
		st.smod = m.smod
	}, nil
}
