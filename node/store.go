package node

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node/revtree"
)

var (
	_ api.Store              = (*Store)(nil)
	_ api.CollectionAppender = (*Store)(nil)
)

const (
	numStripes = 4096
	numShards  = 64
)

// Store is a Pebble-backed api.Store. All methods are safe for concurrent
// use. Writes are synced to disk before they return; after a failed commit
// the store's memory is unchanged and the error is returned (a 503).
type Store struct {
	cfg   Config
	log   *slog.Logger
	db    *pebble.DB
	clock nodeClock
	seed  maphash.Seed

	locks    [numStripes]sync.RWMutex
	shards   [numShards]cacheShard
	perShard int

	closeMu sync.RWMutex
	closed  bool
	stop    chan struct{}
	done    chan struct{}

	bufs sync.Pool // *scratch

	uuid   string
	origin string
	revCfg revtree.Config
	notify atomic.Pointer[ChangeNotifier]
	watch  watchers

	waiter      ReplicaWaiter
	waitTimeout time.Duration
	unconfirmed atomic.Uint64
}

// userState is the in-memory metadata of one user. Its fields are guarded
// by the user's stripe lock: read under the shared lock, changed under the
// exclusive lock and only after the batch that persists the change has been
// committed.
type userState struct {
	nextSeq uint64
	// last is the highest timestamp given to the user (a read's time or a
	// write's stamp); the user's next write is stamped above it. Reads
	// raise it under the shared lock (atomically, see raiseLast), writes
	// set it under the exclusive lock.
	last  atomic.Int64
	used  int64 // payload bytes over all collections
	colls map[string]collMeta
	ref   atomic.Bool // recently used (clock eviction)
	// chg is the user's last changes-feed sequence number (every change
	// of a revision tree takes the next one); set under the exclusive
	// lock after the commit, read atomically by UpdateSeq and waiters.
	chg atomic.Uint64
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

// scratch holds reusable buffers of one request.
type scratch struct {
	k, k2, v []byte
	q        query // the running query (kept here so it is not allocated per request)
}

// Open opens (creating if needed) the store in cfg.Dir and starts the
// background purge.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.CacheBytes < 4*cfg.MemTableBytes {
		cfg.Logger.Warn("block cache is small for the memtable size; memtables are reserved in the cache",
			"cache_bytes", cfg.CacheBytes, "memtable_bytes", cfg.MemTableBytes)
	}
	cache := pebble.NewCache(cfg.CacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		Cache:              cache,
		MemTableSize:       uint64(cfg.MemTableBytes),
		Logger:             pebbleLogger{cfg.Logger},
		FormatMajorVersion: pebble.FormatNewest,
	}
	if cfg.fs != nil {
		opts.FS = cfg.fs
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("node: opening pebble in %s: %w", cfg.Dir, err)
	}
	s := &Store{
		cfg:  cfg,
		log:  cfg.Logger,
		db:   db,
		seed: maphash.MakeSeed(),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.perShard = max(1, (cfg.CacheUsers+numShards-1)/numShards)
	for i := range s.shards {
		s.shards[i].m = make(map[string]*userState)
	}
	s.bufs.New = func() any { return &scratch{} }
	bound, err := s.readClock()
	if err != nil {
		db.Close()
		return nil, err
	}
	if s.uuid, err = s.loadUUID(); err != nil {
		db.Close()
		return nil, err
	}
	s.origin = cfg.NodeID
	if s.origin == "" {
		s.origin = s.uuid
	}
	s.revCfg = revtree.Config{RevsLimit: cfg.RevsLimit, MaxPathLen: min(2*cfg.RevsLimit, revtree.HardMaxPathLen)}
	s.watch.m = make(map[string]chan struct{})
	s.clock = nodeClock{
		wall:  cfg.Clock,
		last:  bound,
		bound: bound,
		persist: func(b int64) error {
			return s.db.Set(keyClock, encodeClock(b), pebble.Sync)
		},
	}
	go s.purgeLoop()
	return s, nil
}

func (s *Store) readClock() (int64, error) {
	v, closer, err := s.db.Get(keyClock)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("node: reading clock bound: %w", err)
	}
	defer closer.Close()
	b, err := decodeClock(v)
	if err != nil {
		return 0, fmt.Errorf("node: clock bound: %w", err)
	}
	return b, nil
}

// Close stops the background purge, waits for requests in flight, flushes
// the memtables and closes Pebble. Later calls return ErrClosed.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.stop)
	s.closeMu.Unlock()
	<-s.done
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	ferr := s.db.Flush()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("node: closing pebble: %w", err)
	}
	if ferr != nil {
		return fmt.Errorf("node: flushing pebble: %w", ferr)
	}
	return nil
}

// ErrBadName is returned for an empty user or collection name or one
// containing NUL (the api package only passes [a-zA-Z0-9._-]+ names; the
// key layout relies on NUL never occurring in them).
var ErrBadName = errors.New("node: invalid user or collection name")

func checkNames(names ...string) error {
	for _, n := range names {
		if n == "" || strings.IndexByte(n, 0) >= 0 {
			return ErrBadName
		}
	}
	return nil
}

// enter admits a request unless the store is closed; leave ends it.
func (s *Store) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) leave() { s.closeMu.RUnlock() }

func (s *Store) getScratch() *scratch { return s.bufs.Get().(*scratch) }

func (s *Store) putScratch(b *scratch) {
	if cap(b.v) > 1<<20 {
		b.v = nil
	}
	b.k, b.k2, b.v = b.k[:0], b.k2[:0], b.v[:0]
	s.bufs.Put(b)
}

func (s *Store) hash(user string) uint64 { return maphash.String(s.seed, user) }

func (s *Store) lock(user string) *sync.RWMutex {
	return &s.locks[s.hash(user)%numStripes]
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
	b.k = userTag(b.k[:0], user, tagMeta)
	b.k2 = prefixEnd(b.k2[:0], b.k)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: b.k, UpperBound: b.k2})
	if err != nil {
		return nil, fmt.Errorf("node: loading user: %w", err)
	}
	defer it.Close()
	st := &userState{nextSeq: 1, colls: make(map[string]collMeta)}
	var last int64
	plen := len(b.k)
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("node: loading user: %w", err)
		}
		if len(k) == plen {
			var chg uint64
			if st.nextSeq, last, chg, err = decodeUserMeta(v); err != nil {
				return nil, fmt.Errorf("node: user meta of %q: %w", user, err)
			}
			st.chg.Store(chg)
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

// Healthy reports whether the store is open and Pebble accepts reads.
func (s *Store) Healthy(ctx context.Context) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	_, closer, err := s.db.Get(keyClock)
	if err == nil {
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("node: health check: %w", err)
	}
	return nil
}

// CollectionTimestamps maps each non-empty collection to its last modified
// time. It never scans: the metadata is in memory.
func (s *Store) CollectionTimestamps(ctx context.Context, user string) (map[string]api.Stamp, api.Stamp, error) {
	if err := checkNames(user); err != nil {
		return nil, 0, err
	}
	if err := s.enter(); err != nil {
		return nil, 0, err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.RLock()
	defer mu.RUnlock()
	st, now, _, err := s.readStamp(user)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]api.Stamp, len(st.colls))
	for c, m := range st.colls {
		out[c] = api.Stamp(m.last)
	}
	return out, now, nil
}

// liveInfo calls fn with the user's metadata after expired records have
// been purged, under the user's lock, with the request's time.
func (s *Store) liveInfo(user string, fn func(st *userState)) (api.Stamp, error) {
	if err := checkNames(user); err != nil {
		return 0, err
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	mu := s.lock(user)
	mu.RLock()
	st, now, mono, err := s.readStamp(user)
	if err != nil {
		mu.RUnlock()
		return 0, err
	}
	if st.hasTTL() {
		exp, err := s.anyExpired(user, st, mono/100)
		if err != nil {
			mu.RUnlock()
			return 0, err
		}
		if exp {
			mu.RUnlock()
			mu.Lock()
			defer mu.Unlock()
			if _, err := s.purgeUserLocked(user, nil); err != nil {
				return 0, err
			}
			if st, now, _, err = s.readStamp(user); err != nil {
				return 0, err
			}
			fn(st)
			return now, nil
		}
	}
	fn(st)
	mu.RUnlock()
	return now, nil
}

// CollectionCounts maps each collection with live records to their count.
func (s *Store) CollectionCounts(ctx context.Context, user string) (map[string]int64, api.Stamp, error) {
	var out map[string]int64
	now, err := s.liveInfo(user, func(st *userState) {
		out = make(map[string]int64, len(st.colls))
		for c, m := range st.colls {
			out[c] = m.count
		}
	})
	return out, now, err
}

// CollectionUsage maps each collection with live records to the byte length
// of their payloads.
func (s *Store) CollectionUsage(ctx context.Context, user string) (map[string]int64, api.Stamp, error) {
	var out map[string]int64
	now, err := s.liveInfo(user, func(st *userState) {
		out = make(map[string]int64, len(st.colls))
		for c, m := range st.colls {
			out[c] = m.bytes
		}
	})
	return out, now, err
}

// Quota returns the user's live payload bytes and the quota (0 = off).
func (s *Store) Quota(ctx context.Context, user string) (used, limit int64, now api.Stamp, err error) {
	now, err = s.liveInfo(user, func(st *userState) { used = st.used })
	return used, s.cfg.QuotaBytes, now, err
}

// pebbleLogger sends Pebble's messages to slog (info at debug level).
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble", "fatal", true)
	panic("node: pebble fatal: " + msg)
}
