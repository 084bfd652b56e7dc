package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node/revtree"
)

var _ api.Store = (*Store)(nil)

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

	disk *diskGuard

	uuid   string
	origin string
	revCfg revtree.Config
	notify atomic.Pointer[ChangeNotifier]
	watch  watchers

	waiter      ReplicaWaiter
	unconfirmed atomic.Uint64 // writes acknowledged after an unconfirmed report
	unacked     atomic.Uint64 // writes that failed with ErrNotAcknowledged

	overQuota    atomic.Uint64 // replicated batches that left their user over quota
	overQuotaLog rateLimit

	orig origins  // the origin dictionary (origins.go)
	nums userNums // the user numbers of the number layout (userkeys.go)

	stalls *stallCounter // Pebble's write stalls (metrics.go)
}

// scratch holds reusable buffers of one request.
type scratch struct {
	k, k2, v []byte
	hb       []byte // revision hash input (writer.revHash)
	q        query  // the running query (kept here so it is not allocated per request)
	// pins keep Pebble values that the request's documents alias valid
	// until the request ends (putScratch closes them).
	pins []io.Closer
	// rs is the request's revision session (session), recs and ids a
	// POST's staged records and sorted ids: kept for the next request.
	rs     revSession
	rsInit bool
	recs   []record
	ids    []string
	// page15 and page15IDs keep a Sync 1.5 listing's page between its
	// count and its emission (Sync15.GetCollection): the entries, and
	// their ids one after the other (page15End[i] ends entry i's).
	page15    []entry15
	page15IDs []byte
	page15End []int32
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
	fs := cfg.fs
	if fs == nil {
		fs = vfs.Default
	}
	disk := newDiskGuard(fs, cfg.Dir, cfg.MinFreeBytes, cfg.Clock, cfg.Logger)
	if cfg.diskCheckEvery > 0 {
		disk.every = cfg.diskCheckEvery
	}
	opts := &pebble.Options{
		Cache:              cache,
		MemTableSize:       uint64(cfg.MemTableBytes),
		Logger:             &pebbleLogger{l: cfg.Logger, limit: rateLimit{every: 10 * time.Second}},
		FormatMajorVersion: pebble.FormatNewest,
		FS:                 fs,
	}
	stalls := &stallCounter{}
	opts.EventListener = &pebble.EventListener{
		BackgroundError: disk.backgroundError,
		WriteStallBegin: stalls.begin,
		WriteStallEnd:   stalls.end,
	}
	maxComp := cfg.MaxCompactions
	opts.CompactionConcurrencyRange = func() (int, int) { return 1, maxComp }
	if cfg.MinFreeBytes > 0 {
		opts.FS = vfs.OnDiskFull(fs, disk.onDiskFull)
	}
	opts.DisableAutomaticCompactions = cfg.noCompactions
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("node: opening pebble in %s: %w", cfg.Dir, err)
	}
	disk.init()
	s := &Store{
		stalls:       stalls,
		cfg:          cfg,
		log:          cfg.Logger,
		db:           db,
		disk:         disk,
		seed:         maphash.MakeSeed(),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		overQuotaLog: rateLimit{every: time.Minute},
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
	if err := s.loadOrigins(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadLayout(); err != nil {
		db.Close()
		return nil, err
	}
	s.revCfg = revtree.Config{RevsLimit: cfg.RevsLimit, MaxPathLen: revtree.HardMaxPathLen}
	s.watch.m = make(map[string]chan struct{})
	s.clock = nodeClock{
		wall:  cfg.Clock,
		last:  bound,
		bound: bound,
		persist: func(b int64) error {
			if !s.disk.mayPersistClock() {
				return errClockHeld
			}
			return s.guarded(func() error { return s.db.Set(keyClock, encodeClock(b), pebble.Sync) })
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
	var ferr error
	if s.disk.writable() == nil {
		// A flush on a full disk would wait for ever (Pebble retries
		// it): the WAL has everything anyway.
		ferr = s.db.Flush()
	}
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
	for i, c := range b.pins {
		c.Close()
		b.pins[i] = nil
	}
	b.pins = b.pins[:0]
	if cap(b.v) > 1<<20 {
		b.v = nil
	}
	if cap(b.hb) > 1<<20 {
		b.hb = nil
	}
	b.rs.reset()
	b.rsInit = false
	clear(b.recs)
	clear(b.ids)
	b.recs, b.ids = b.recs[:0], b.ids[:0]
	if cap(b.recs) > 1024 {
		b.recs, b.ids = nil, nil
	}
	b.page15, b.page15IDs, b.page15End = b.page15[:0], b.page15IDs[:0], b.page15End[:0]
	b.k, b.k2, b.v = b.k[:0], b.k2[:0], b.v[:0]
	s.bufs.Put(b)
}

func (s *Store) hash(user string) uint64 { return maphash.String(s.seed, user) }

func (s *Store) lock(user string) *sync.RWMutex {
	return &s.locks[s.hash(user)%numStripes]
}

// Healthy reports whether the store is open, Pebble accepts reads and the
// store takes writes: an error wrapping ErrDiskFull while the disk is
// below its reserve (Config.MinFreeBytes, read afresh), ErrStoreFailed
// after a failed commit.
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
	if err := s.disk.health(); err != nil {
		return fmt.Errorf("node: health check: %w", err)
	}
	return nil
}

// guarded runs a Pebble write: a fatal error Pebble reports through its
// logger (pebbleLogger.Fatalf panics, for Pebble's code must not go on)
// becomes ErrStoreFailed, and the store takes no more writes.
func (s *Store) guarded(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			pf, ok := r.(pebbleFatal)
			if !ok {
				panic(r)
			}
			s.disk.fail(pf)
			err = api.Unavailable(fmt.Errorf("%w: %w", ErrStoreFailed, pf), api.RetryBlip)
		}
	}()
	return fn()
}

// pebbleLogger sends Pebble's messages to slog (info at debug level,
// errors at most every 10 s with the count of the others).
type pebbleLogger struct {
	l     *slog.Logger
	limit rateLimit
}

func (p *pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p *pebbleLogger) Errorf(format string, args ...any) {
	if ok, held := p.limit.allow(time.Now()); ok {
		p.l.Error(fmt.Sprintf(format, args...), "component", "pebble", "not_logged", held)
	}
}

// Fatalf logs and panics with a pebbleFatal: Pebble calls it when it
// cannot go on (a failed WAL write), and its code must not continue (it
// would report a failed commit as done). Store.guarded recovers it.
func (p *pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble", "fatal", true)
	panic(pebbleFatal{msg})
}

// pebbleFatal is the panic value of pebbleLogger.Fatalf.
type pebbleFatal struct{ msg string }

func (f pebbleFatal) Error() string { return "pebble fatal: " + f.msg }

// UUID returns the store's identity: a random UUID made when the store was
// created and kept for its lifetime (the CouchDB server uuid; replication
// checkpoints name the source store by it, so a wiped and recreated store
// is replicated from scratch).
func (s *Store) UUID() string { return s.uuid }

// Origin returns the id this node writes as the origin of its revisions.
func (s *Store) Origin() string { return s.origin }

func (s *Store) loadUUID() (string, error) {
	v, closer, err := s.db.Get(keyUUID)
	if err == nil {
		id := string(v)
		closer.Close()
		return id, nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return "", fmt.Errorf("node: reading uuid: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	id := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	if err := s.db.Set(keyUUID, []byte(id), pebble.Sync); err != nil {
		return "", fmt.Errorf("node: writing uuid: %w", err)
	}
	return id, nil
}
