package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
)

// clockLease is how far ahead of the node's monotonic wall time the
// persisted upper bound is set (2 s in centiseconds). A restart resumes at
// the bound, so this is also how far a restart can move the clock ahead of
// wall time.
const clockLease = 200

// nodeClock is the node-wide monotonic wall clock: mono() = max(previous
// mono, wall), in centiseconds. It follows wall readings only (it never
// ticks), so it never runs ahead of the wall clock except after the wall
// clock stepped backwards or after a restart. No value above the persisted
// bound is returned, so after a restart (which resumes at the bound) mono is
// at least every value it returned before, even if the wall clock went
// backwards.
//
// The timestamps given to clients are per user (see Store.readStamp and
// Store.tick): a user's write ticks past mono only when that one user
// writes more than 100 times a second, and never moves other users' time.
type nodeClock struct {
	mu      sync.Mutex
	wall    func() time.Time
	last    int64 // highest value returned
	bound   int64 // persisted upper bound of last
	persist func(bound int64) error
}

func wallStamp(t time.Time) int64 { return t.UnixNano() / 1e7 }

// mono returns max(previous mono, wall), first moving the persisted bound
// to mono + clockLease (synced) when mono would reach it: every value
// returned is strictly below the persisted bound.
func (c *nodeClock) mono() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := max(c.last, wallStamp(c.wall()))
	if v >= c.bound {
		nb := v + clockLease
		if err := c.persist(nb); err != nil {
			if errors.Is(err, errClockHeld) {
				// The store takes no writes: time stands still
				// below the bound, so reads go on (no write is
				// stamped while it does).
				c.last = c.bound - 1
				return c.last, nil
			}
			return 0, fmt.Errorf("node: persisting clock bound: %w", err)
		}
		c.bound = nb
	}
	c.last = v
	return v, nil
}

// errClockHeld is the clock's persist function's answer when the store
// takes no writes (its disk is full or it failed): mono stays just below
// the persisted bound.
var errClockHeld = errors.New("node: clock bound not persisted: the store takes no writes")

// peek returns the last value mono returned.
func (c *nodeClock) peek() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// readStamp returns the time of a read of user: max(u.last, mono), and
// raises u.last to it so that the user's next write is stamped above it.
// It also returns mono itself, the time expiry is judged against.
// The caller holds the user's lock (shared is enough). st is looked up (or
// loaded) after mono was taken and raised under the cache shard's lock, so
// the entry cannot be evicted between its lookup and the raise: its
// eviction folds the raised value into the shard's floor, from which a
// reload starts (see cacheShard.floor).
func (s *Store) readStamp(user string) (st *userState, now api.Stamp, mono int64, err error) {
	m, err := s.clock.mono()
	if err != nil {
		return nil, 0, 0, err
	}
	st, v, err := s.stateRaise(user, m)
	if err != nil {
		return nil, 0, 0, err
	}
	return st, api.Stamp(v), m, nil
}

// stamp is the time of a write: ts is its timestamp, mono the node's
// monotonic wall time it was taken at (expiry is computed and judged
// against mono, in whole seconds, so a user writing fast does not move
// their records' expiry).
type stamp struct {
	ts   api.Stamp
	mono int64
}

// raiseLast raises st.last to at least v and returns the result.
func raiseLast(st *userState, v int64) int64 {
	for {
		l := st.last.Load()
		if l >= v {
			return l
		}
		if st.last.CompareAndSwap(l, v) {
			return v
		}
	}
}

// tick returns the timestamp of a write of the user st: max(u.last+1,
// mono), strictly above every stamp the user was given. The caller holds
// the user's exclusive lock and records the stamp in u.last (see
// Store.given) once it is given: a stamp above mono (the user writes faster
// than the clock advances) is covered by neither mono nor its bound, only
// by the user meta that the write persists, so it must not be visible to
// readers unless that commit succeeded.
func (s *Store) tick(st *userState) (stamp, error) {
	m, err := s.clock.mono()
	if err != nil {
		return stamp{}, err
	}
	return stamp{ts: api.Stamp(max(st.last.Load()+1, m)), mono: m}, nil
}

// given records that the write stamp v of user (whose cache entry the
// writer used is st) was given. The caller holds the user's exclusive lock,
// so no other entry of the user exists; when st was evicted meanwhile, v
// goes into the shard's floor instead (as the eviction would have put it),
// which is only needed, and only done, for a v not above mono.
func (s *Store) given(user string, st *userState, t stamp) {
	v := int64(t.ts)
	st.last.Store(v)
	if v > t.mono {
		return // persisted in the user meta
	}
	sh := &s.shards[(s.hash(user)/numStripes)%numShards]
	sh.mu.RLock()
	cached := sh.m[user] == st
	sh.mu.RUnlock()
	if !cached {
		// Nobody can load the user while we hold its lock: it stays out.
		sh.mu.Lock()
		sh.floor = max(sh.floor, v)
		sh.mu.Unlock()
	}
}

func encodeClock(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decodeClock(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}
