package node

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/hce-sync/hce/api"
)

// RetryDiskFull is the Retry-After of a write refused because the store's
// disk is full: an operator has to free space, so clients come back in
// half a minute rather than at once.
const RetryDiskFull = 30 * time.Second

var (
	// ErrDiskFull: the store refuses writes because its disk has less free
	// space than Config.MinFreeBytes (or Pebble hit ENOSPC). Writes fail
	// with it wrapped in an api.RetryError (503, Retry-After
	// RetryDiskFull); reads go on, and writes resume by themselves once
	// there is room again.
	ErrDiskFull = errors.New("node: disk full")
	// ErrStoreFailed: Pebble failed a commit (an I/O error it cannot
	// recover from: its commit pipeline is stopped). The store refuses
	// every write from then on and reports itself unhealthy; reads go on.
	// Restart the node.
	ErrStoreFailed = errors.New("node: store failed, restart needed")
)

// ballastName is the file, in the store's folder, that reserves disk
// space for Pebble: it is removed when Pebble hits ENOSPC, so the
// operation that failed is retried with room, and made again once the
// disk has room.
const ballastName = "hce-ballast"

// diskGuard keeps Pebble off a full disk. Pebble cannot live through
// ENOSPC: a failed WAL write or sync stops its commit pipeline for good
// (later commits wait forever), a failed flush or compaction is retried at
// once, in a loop, logging each failure. So the store refuses writes (fast,
// before taking any lock) while the free space is below MinFreeBytes,
// keeping a reserve for Pebble's flushes and compactions, and a ballast
// file of half that reserve is removed by Pebble's ENOSPC hook
// (vfs.OnDiskFull) should the disk fill faster than the check sees. The
// free space is read (statfs) at most every checkEvery on the write path,
// and at every health check.
type diskGuard struct {
	fs           vfs.FS // the file system under Pebble's ENOSPC hook
	dir          string
	minFree      int64
	ballastBytes int64
	every        time.Duration
	clock        func() time.Time // for log rates
	base         time.Time        // checked and the ENOSPC throttle count from here (monotonic)
	log          *slog.Logger

	full    atomic.Bool // refuse writes (low space, or ENOSPC since the last check)
	hit     atomic.Bool // Pebble hit ENOSPC since the last check found room
	failed  atomic.Bool // a commit failed: Pebble takes no more writes
	checked atomic.Int64
	mu      sync.Mutex // one check at a time
	free    atomic.Int64

	lastHit time.Duration // since base; guarded by the ENOSPC hook's serialisation
	bgLog   rateLimit
}

// checkEvery is how often the write path reads the free space.
const checkEvery = 250 * time.Millisecond

func newDiskGuard(fs vfs.FS, dir string, minFree int64, clock func() time.Time, log *slog.Logger) *diskGuard {
	g := &diskGuard{fs: fs, dir: dir, minFree: minFree, every: checkEvery, clock: clock, base: time.Now(), log: log, bgLog: rateLimit{every: 10 * time.Second}}
	if minFree > 0 {
		g.ballastBytes = minFree / 2
	}
	return g
}

func (g *diskGuard) ballast() string { return g.fs.PathJoin(g.dir, ballastName) }

// writable returns nil when the store may take a write, else an error
// wrapping ErrDiskFull or ErrStoreFailed and api.ErrUnavailable.
func (g *diskGuard) writable() error {
	if g.failed.Load() {
		return api.Unavailable(ErrStoreFailed, api.RetryBlip)
	}
	if g.minFree <= 0 {
		return nil
	}
	if now := time.Since(g.base); int64(now)-g.checked.Load() >= int64(g.every) {
		g.check(false)
	}
	if g.full.Load() {
		return api.Unavailable(fmt.Errorf("%w: %d bytes free, %d kept in reserve", ErrDiskFull, g.free.Load(), g.minFree), RetryDiskFull)
	}
	return nil
}

// health reports, after a fresh check, what writable would.
func (g *diskGuard) health() error {
	if g.minFree > 0 {
		g.check(true)
	}
	if g.failed.Load() {
		return ErrStoreFailed
	}
	if g.full.Load() {
		return fmt.Errorf("%w: %d bytes free, %d kept in reserve", ErrDiskFull, g.free.Load(), g.minFree)
	}
	return nil
}

// check reads the free space and moves between the full and writable
// states (logging each move once). With wait false it does nothing when
// another check runs.
func (g *diskGuard) check(wait bool) {
	if wait {
		g.mu.Lock()
	} else if !g.mu.TryLock() {
		return
	}
	defer g.mu.Unlock()
	g.checked.Store(int64(time.Since(g.base)))
	du, err := g.fs.GetDiskUsage(g.dir)
	if err != nil {
		if ok, held := g.bgLog.allow(g.clock()); ok {
			g.log.Warn("store: cannot read the disk's free space", "dir", g.dir, "err", err, "not_logged", held)
		}
		return
	}
	free := int64(min(du.AvailBytes, uint64(1<<62)))
	g.free.Store(free)
	hadBallast := g.hasBallast()
	switch {
	case !g.full.Load() && free < g.minFree:
		g.full.Store(true)
		g.log.Warn("store: disk nearly full, refusing writes until there is room", "dir", g.dir, "free_bytes", free, "reserve_bytes", g.minFree)
	case g.full.Load() && free >= g.minFree && (hadBallast || free >= g.minFree+g.ballastBytes):
		// Room again: make the ballast first if Pebble took it.
		if !hadBallast {
			if err := g.makeBallast(); err != nil {
				g.log.Warn("store: cannot make the ballast file", "dir", g.dir, "err", err)
			}
		}
		g.hit.Store(false)
		g.full.Store(false)
		g.log.Info("store: disk has room again, writes resume", "dir", g.dir, "free_bytes", free)
	}
}

func (g *diskGuard) hasBallast() bool {
	if g.ballastBytes <= 0 {
		return true
	}
	_, err := g.fs.Stat(g.ballast())
	return err == nil
}

// makeBallast reserves ballastBytes on disk (fallocate, or zeros where
// that is not supported).
func (g *diskGuard) makeBallast() error {
	if g.ballastBytes <= 0 {
		return nil
	}
	tmp := g.ballast() + ".tmp"
	f, err := g.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if err = f.Preallocate(0, g.ballastBytes); err != nil {
		// No fallocate here: write zeros.
		err = nil
		zero := make([]byte, 1<<20)
		for n := int64(0); n < g.ballastBytes && err == nil; n += int64(len(zero)) {
			_, err = f.Write(zero[:min(int64(len(zero)), g.ballastBytes-n)])
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = g.fs.Rename(tmp, g.ballast())
	}
	if err != nil {
		_ = g.fs.Remove(tmp)
	}
	return err
}

// onDiskFull is Pebble's ENOSPC hook (vfs.OnDiskFull): it runs while
// Pebble's writes to the file system wait, then the write that failed is
// retried once. It refuses writes from now on, removes the ballast (room
// for that retry) and, when ENOSPC comes again within a second (the
// ballast is gone and Pebble retries a flush or compaction in a loop),
// waits a little, so that the loop does not spin.
func (g *diskGuard) onDiskFull() {
	g.hit.Store(true)
	wasFull := g.full.Swap(true)
	now := time.Since(g.base)
	if g.lastHit > 0 && now-g.lastHit < time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	g.lastHit = now
	removed := false
	if g.ballastBytes > 0 {
		removed = g.fs.Remove(g.ballast()) == nil
	}
	if removed || !wasFull {
		g.log.Warn("store: disk full (ENOSPC), refusing writes until there is room", "dir", g.dir, "ballast_removed", removed)
	}
}

// backgroundError is Pebble's listener for errors of flushes and
// compactions, which Pebble retries at once: logged at most every 10 s.
func (g *diskGuard) backgroundError(err error) {
	if vfs.IsNoSpaceError(err) {
		g.hit.Store(true)
		g.full.Store(true)
	}
	if ok, held := g.bgLog.allow(g.clock()); ok {
		g.log.Error("store: pebble background error", "err", err, "not_logged", held)
	}
}

// init reads the free space and makes the ballast when it is missing and
// the disk has room for it.
func (g *diskGuard) init() {
	if g.minFree <= 0 {
		return
	}
	g.check(true)
	if !g.full.Load() && !g.hasBallast() && g.free.Load() >= g.minFree+g.ballastBytes {
		if err := g.makeBallast(); err != nil {
			g.log.Warn("store: cannot make the ballast file", "dir", g.dir, "err", err)
		}
	}
}

// fail marks the store failed after a commit error Pebble cannot recover
// from.
func (g *diskGuard) fail(err error) {
	if !g.failed.Swap(true) {
		g.log.Error("store: a commit failed; the store takes no more writes until the node restarts", "err", err)
	}
}

// mayPersistClock reports whether the clock may write its bound: not
// once Pebble hit ENOSPC or failed (a failed WAL write would stop
// Pebble's commits for good), so that reads go on.
func (g *diskGuard) mayPersistClock() bool { return !g.failed.Load() && !g.hit.Load() }
