package node

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// userState is the in-memory metadata of one user. Its fields are guarded
// by the user's stripe lock: read under the shared lock, changed under the
// exclusive lock and only after the batch that persists the change has been
// committed.
type userState struct {
	// kp is the prefix of the user's keys (userkeys.go): set when the
	// state is loaded, and by the user's first write in a store of the
	// number layout (under the exclusive lock, before its batch).
	kp      ukey
	nextSeq uint64
	// last is the highest timestamp given to the user (a read's time or a
	// write's stamp); the user's next write is stamped above it. Reads
	// raise it under the shared lock (atomically, see raiseLast), writes
	// set it under the exclusive lock.
	last atomic.Int64
	used int64 // payload bytes over all collections
	// conf, local and nlocal are the user meta's (see userMeta): the
	// quota counts them with used.
	conf, local, nlocal int64
	colls               map[string]collMeta
	ref                 atomic.Bool // recently used (clock eviction)
	// chg is the user's last changes-feed sequence number (every change
	// of a revision tree takes the next one); set under the exclusive
	// lock after the commit, read atomically by UpdateSeq and waiters.
	chg atomic.Uint64
	// sync15 is set once the user is served by Sync 1.5: writes keep its
	// Sync 1.5 indexes (index15.go). smod is its Sync 1.5 storage
	// last-modified floor (userMeta.smod).
	sync15 bool
	smod   int64
}

// usage is what the quota counts: the payloads of the live records and of
// the conflicting live leaves, and the _local documents' bytes.
func (st *userState) usage() int64 { return st.used + st.conf + st.local }

// meta returns the user meta to persist with the given last stamp and
// changes seq and st's other counters.
func (st *userState) meta(last int64, chg uint64) *userMeta {
	return &userMeta{nextSeq: st.nextSeq, last: last, chg: chg, conf: st.conf, local: st.local, nlocal: st.nlocal,
		flags: st.flags(), smod: st.smod}
}

// flags returns the user meta flags of st.
func (st *userState) flags() byte {
	if st.sync15 {
		return userSync15
	}
	return 0
}

func (st *userState) hasTTL() bool {
	for _, m := range st.colls {
		if m.ttl > 0 {
			return true
		}
	}
	return false
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]*userState
	// floor covers the stamps given to evicted users that are not
	// persisted: the largest min(last, mono) of an entry evicted from this
	// shard. Such a stamp was at most the mono of its time, so floor never
	// exceeds mono and does not drag other users ahead of wall time.
	floor int64
}

// state returns the user's metadata, loading it with one range scan on a
// cache miss. The caller holds the user's lock (shared or exclusive).
func (s *Store) state(user string) (*userState, error) {
	st, _, err := s.stateRaise(user, 0)
	return st, err
}

// stateRaise is state that also raises the entry's last to at least m,
// under the shard lock so that the entry cannot be evicted meanwhile (its
// eviction then folds the raised value into the shard's floor), and
// returns the raised last. An entry loaded from Pebble starts at the
// shard's floor or above (see loadUser).
func (s *Store) stateRaise(user string, m int64) (*userState, int64, error) {
	sh := &s.shards[(s.hash(user)/numStripes)%numShards]
	sh.mu.RLock()
	st := sh.m[user]
	var v int64
	if st != nil {
		v = raiseLast(st, m)
	}
	sh.mu.RUnlock()
	if st != nil {
		if !st.ref.Load() {
			st.ref.Store(true)
		}
		return st, v, nil
	}
	st, err := s.loadUser(user)
	if err != nil {
		return nil, 0, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if ex := sh.m[user]; ex != nil {
		return ex, raiseLast(ex, m), nil
	}
	if len(sh.m) >= s.perShard {
		sh.evictLocked(s.clock.peek())
	}
	raiseLast(st, sh.floor)
	sh.m[user] = st
	return st, raiseLast(st, m), nil
}

// evictLocked drops one entry not used since the last sweep (a clock
// algorithm over Go's randomised map order), or any entry after a short
// sweep, folding min(its last, mono) into the shard's floor (a last above
// mono is a write stamp, persisted in the user meta).
func (sh *cacheShard) evictLocked(mono int64) {
	n := 0
	for k, st := range sh.m {
		if !st.ref.Load() || n >= 16 {
			sh.floor = max(sh.floor, min(st.last.Load(), mono))
			delete(sh.m, k)
			return
		}
		st.ref.Store(false)
		n++
	}
}

func (s *Store) loadUser(user string) (*userState, error) {
	b := s.getScratch()
	defer s.putScratch(b)
	kp, err := s.lookupUserKey(user, b.k[:0])
	if err != nil {
		return nil, err
	}
	b.k = userTag(b.k[:0], kp, tagMeta)
	b.k2 = prefixEnd(b.k2[:0], b.k)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: b.k, UpperBound: b.k2})
	if err != nil {
		return nil, fmt.Errorf("node: loading user: %w", err)
	}
	defer it.Close()
	st := &userState{kp: kp, nextSeq: 1, colls: make(map[string]collMeta)}
	var last int64
	plen := len(b.k)
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("node: loading user: %w", err)
		}
		if len(k) == plen {
			m, err := decodeUserMeta(v)
			if err != nil {
				return nil, fmt.Errorf("node: user meta of %q: %w", user, err)
			}
			st.nextSeq, last = m.nextSeq, m.last
			st.conf, st.local, st.nlocal = m.conf, m.local, m.nlocal
			st.chg.Store(m.chg)
			st.sync15, st.smod = m.flags&userSync15 != 0, m.smod
			continue
		}
		var m collMeta
		if err := decodeMeta(v, &m); err != nil {
			return nil, fmt.Errorf("node: collection meta of %q: %w", user, err)
		}
		st.colls[string(k[plen:])] = m
		st.used += m.bytes
		last = max(last, m.last)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("node: loading user: %w", err)
	}
	// Write stamps above mono are persisted in the user meta (and
	// collection lasts are write stamps); stateRaise adds the shard's
	// floor, which covers the other stamps given before an eviction.
	st.last.Store(last)
	return st, nil
}
