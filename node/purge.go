package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
)

// purgeBatchKeys bounds how many global expiry entries one purge round
// reads.
const purgeBatchKeys = 4096

// anyExpired reports whether the user has a record with expiry <= nowSec.
// The caller holds the user's lock.
func (s *Store) anyExpired(user string, st *userState, nowSec int64) (bool, error) {
	sc := s.getScratch()
	defer s.putScratch(sc)
	sc.k = userTag(sc.k[:0], st.kp, tagExp)
	sc.k2 = prefixEnd(sc.k2[:0], sc.k)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: sc.k, UpperBound: sc.k2})
	if err != nil {
		return false, err
	}
	defer it.Close()
	for coll, m := range st.colls {
		if m.ttl == 0 {
			continue
		}
		sc.v = collPrefix(sc.v[:0], st.kp, tagExp, coll)
		plen := len(sc.v)
		if !it.SeekGE(sc.v) {
			continue
		}
		k := it.Key()
		if len(k) == plen+16 && string(k[:plen]) == string(sc.v) && int64(tailU64(k, 8)^signBit) <= nowSec {
			return true, nil
		}
	}
	return false, it.Error()
}

// purgeUserLocked deletes the user's expired records in one synced batch,
// together with the extra keys given (global expiry entries), and returns
// how many records it removed. The caller holds the user's exclusive lock.
func (s *Store) purgeUserLocked(user string, extra [][]byte) (int, error) {
	st, err := s.state(user)
	if err != nil {
		return 0, err
	}
	m, err := s.clock.mono()
	if err != nil {
		return 0, err
	}
	nowSec := m / 100
	now := stamp{ts: api.Stamp(m), mono: m}
	b := s.db.NewBatch()
	defer b.Close()
	sc := s.getScratch()
	defer s.putScratch(sc)
	var writers []*writer
	removed := 0
	ops := getOps()
	defer ops.release()
	// One revision session for every collection: each writer's finish
	// writes the user meta, with the counters of the whole request.
	for coll, m := range st.colls {
		if m.ttl == 0 {
			continue
		}
		w := s.newWriter(b, sc, st, user, coll, now)
		w.ops = ops
		type victim struct {
			id  string
			seq uint64
			key []byte
		}
		var victims []victim
		lo := collPrefix(nil, st.kp, tagExp, coll)
		hi := appendU64(collPrefix(nil, st.kp, tagExp, coll), ordInt64(nowSec+1))
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return 0, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			victims = append(victims, victim{id: string(it.Value()), seq: tailU64(it.Key(), 0), key: append([]byte(nil), it.Key()...)})
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return 0, err
		}
		for _, v := range victims {
			h, _, ok, err := w.lookup(v.id)
			if err != nil {
				return 0, err
			}
			if !ok || h.seq != v.seq {
				// Stale entry (cannot happen with a consistent store): drop it.
				if err := b.Delete(v.key, nil); err != nil {
					return 0, err
				}
				continue
			}
			if err := w.remove(v.id, &h); err != nil {
				return 0, err
			}
			if err := w.dropDoc(v.id); err != nil {
				return 0, err
			}
			removed++
		}
		if len(victims) > 0 {
			if err := w.finish(); err != nil {
				return 0, err
			}
			writers = append(writers, w)
		}
	}
	for _, k := range extra {
		if err := b.Delete(k, nil); err != nil {
			return 0, err
		}
	}
	if b.Empty() {
		return 0, nil
	}
	if err := s.commit(b); err != nil {
		return 0, err
	}
	for _, w := range writers {
		w.apply(st)
	}
	if removed > 0 {
		s.log.Debug("purged expired records", "user", user, "records", removed)
	}
	return removed, nil
}

// PurgeExpired deletes every expired record of every user now, walking the
// global expiry index, and returns how many records it removed. The
// background purge calls it every Config.PurgeInterval.
func (s *Store) PurgeExpired(ctx context.Context) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		m, err := s.clock.mono()
		if err != nil {
			return total, err
		}
		hi := appendU64(append([]byte(nil), globalExpPrefix...), ordInt64(m/100+1))
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: globalExpPrefix, UpperBound: hi})
		if err != nil {
			return total, err
		}
		byUser := map[string][][]byte{}
		var order []string
		n := 0
		for ok := it.First(); ok && n < purgeBatchKeys; ok = it.Next() {
			k := append([]byte(nil), it.Key()...)
			_, user, _, ok := parseGlobalExpKey(k)
			if !ok {
				continue
			}
			if _, seen := byUser[user]; !seen {
				order = append(order, user)
			}
			byUser[user] = append(byUser[user], k)
			n++
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return total, err
		}
		for _, user := range order {
			mu := s.lock(user)
			mu.Lock()
			r, err := s.purgeUserLocked(user, byUser[user])
			mu.Unlock()
			total += r
			if err != nil {
				return total, fmt.Errorf("node: purging %s: %w", strings.Clone(user), err)
			}
		}
		if n < purgeBatchKeys {
			return total, nil
		}
	}
}

func (s *Store) purgeLoop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		n, err := s.PurgeExpired(context.Background())
		switch {
		case errors.Is(err, ErrClosed):
			return
		case err != nil:
			s.log.Error("purging expired records", "err", err)
		case n > 0:
			s.log.Info("purged expired records", "records", n)
		}
		n, err = s.PurgeBatches(context.Background())
		switch {
		case errors.Is(err, ErrClosed):
			return
		case err != nil:
			s.log.Error("dropping expired Sync 1.5 batches", "err", err)
		case n > 0:
			s.log.Info("dropped expired Sync 1.5 batches", "batches", n)
		}
	}
}
