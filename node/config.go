package node

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/hce-sync/hce/node/revtree"
)

// Default values of Config.
const (
	DefaultPurgeInterval = time.Minute
	DefaultCacheUsers    = 100000
	DefaultCacheBytes    = 128 << 20
	DefaultMemTableBytes = 32 << 20
	// DefaultMaxCompactions is Config.MaxCompactions' default.
	DefaultMaxCompactions = 2
	DefaultMaxConflicts   = 32
	DefaultMaxDocBytes    = 4 << 20
	DefaultMaxLocalDocs   = 64
	DefaultMinFreeBytes   = 128 << 20
	// MinMaxDocBytes is the least MaxDocBytes may be: a single-path
	// document at the Weave limits (a payload of 256 KiB, RevsLimit
	// revisions) always fits.
	MinMaxDocBytes = 1 << 20
)

// ErrClosed is returned by every Store method called after Close.
var ErrClosed = errors.New("node: store closed")

// Config configures a Store. A zero field means "use the default".
type Config struct {
	// Dir is the directory of the Pebble store; it is created if missing.
	// Required.
	Dir string
	// Logger receives the store's and Pebble's log messages. Default: a
	// logger that discards everything.
	Logger *slog.Logger
	// QuotaBytes is the per-user quota in bytes; 0 turns quotas off. It
	// counts the payloads of live records and of conflicting live leaves
	// and the _local documents' bodies (not tombstones, revision trees or
	// metadata). A client write (Weave, CouchDB) that adds content fails
	// with api.ErrOverQuota once the user is at or over it; replicated
	// revisions are always stored (ReplicatedOverQuota counts the
	// batches that leave a user over it).
	QuotaBytes int64
	// PurgeInterval is how often expired records are purged in the
	// background. Default 1 minute.
	PurgeInterval time.Duration
	// Clock is the wall clock. Default time.Now; tests inject their own.
	Clock func() time.Time
	// CacheUsers is the maximum number of users whose metadata stays in
	// memory. Default 100000.
	CacheUsers int
	// CacheBytes is the size of Pebble's block cache in bytes. Default
	// 128 MiB (with the default memtable, the store's memory budget; see
	// DESIGN.md, Costs). Pebble reserves the memtables' memory inside this budget, so
	// it should be several times MemTableBytes, or blocks stop being
	// cached while memtables are flushed.
	CacheBytes int64
	// MemTableBytes is the size of one Pebble memtable in bytes. Default
	// 32 MiB: updates of the same records meet in the memtable, and
	// flushes and compactions write 2-7 times fewer bytes per POST than
	// with 8 MiB.
	MemTableBytes int64
	// MaxCompactions is the most compactions Pebble runs at once: one
	// while the tree is in shape, more as level 0 or the compaction debt
	// grows (so that level 0 does not reach the 12 sublevels at which
	// writes stop). Default 2.
	MaxCompactions int
	// NodeID names this node as the origin of the revisions its clients
	// make (Body.Origin). Default: the store's UUID.
	NodeID string
	// RevsLimit is how many revisions each root-to-leaf path of a
	// document's revision tree keeps (CouchDB's _revs_limit). Default
	// 1000.
	RevsLimit int
	// MaxConflicts is the most live leaves a document may have besides its
	// winner. A replicated or CouchDB revision that would add one beyond
	// it is refused (ErrTooManyConflicts); a client's Weave write
	// tombstones a document's conflicts. Default 32.
	MaxConflicts int
	// MaxDocBytes bounds a document's size: 20 bytes per revision of its
	// tree plus, per leaf, 64 bytes and the payload. A revision that
	// would take a document past it is refused (ErrDocTooLarge), so that
	// loading, fetching or serving one document (open_revs=all, a
	// replication fetch) stays within it. Default 4 MiB, at least
	// MinMaxDocBytes.
	MaxDocBytes int64
	// MaxLocalDocs is how many _local documents (CouchDB replicators'
	// checkpoints, MaxLocalDocBytes each at most) a user may keep; a new
	// one beyond it fails with ErrTooManyLocal. Default 64.
	MaxLocalDocs int
	// MinFreeBytes is the free space, in bytes, the store keeps on its
	// disk for Pebble's flushes and compactions: below it every write
	// fails at once with ErrDiskFull (503, Retry-After RetryDiskFull),
	// reads go on, Healthy fails, and writes resume by themselves when
	// there is room again. A ballast file of half of it in Dir is removed
	// if Pebble still hits ENOSPC, and made again afterwards. Default 128
	// MiB; -1 turns the check and the ballast off.
	MinFreeBytes int64
	// BatchLifetime is how long an uncommitted Sync 1.5 batch upload is
	// kept; the background purge drops older ones. Default the storage
	// API's batch lifetime (2 h) plus 10 minutes.
	BatchLifetime time.Duration

	// fs replaces Pebble's file system (tests count fsyncs and inject
	// errors with it).
	fs vfs.FS
	// diskCheckEvery replaces checkEvery (tests).
	diskCheckEvery time.Duration
	// noCompactions turns Pebble's automatic compactions off (tests that
	// need a disk that stays full).
	noCompactions bool
}

// DefaultConfig returns a Config with every default filled in except Dir.
func DefaultConfig() Config {
	return Config{
		Logger:         slog.New(slog.DiscardHandler),
		PurgeInterval:  DefaultPurgeInterval,
		Clock:          time.Now,
		CacheUsers:     DefaultCacheUsers,
		CacheBytes:     DefaultCacheBytes,
		MemTableBytes:  DefaultMemTableBytes,
		MaxCompactions: DefaultMaxCompactions,
		MaxConflicts:   DefaultMaxConflicts,
		MaxDocBytes:    DefaultMaxDocBytes,
		MaxLocalDocs:   DefaultMaxLocalDocs,
		MinFreeBytes:   DefaultMinFreeBytes,
		BatchLifetime:  defaultBatchLifetime,
	}
}

// Validate reports whether c is usable: Dir must be set, no field may be
// negative (but MinFreeBytes may be -1) and MaxDocBytes, when set, is at
// least MinMaxDocBytes.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("node: Config.Dir is required")
	case c.QuotaBytes < 0:
		return fmt.Errorf("node: Config.QuotaBytes %d is negative", c.QuotaBytes)
	case c.PurgeInterval < 0:
		return fmt.Errorf("node: Config.PurgeInterval %v is negative", c.PurgeInterval)
	case c.CacheUsers < 0:
		return fmt.Errorf("node: Config.CacheUsers %d is negative", c.CacheUsers)
	case c.CacheBytes < 0:
		return fmt.Errorf("node: Config.CacheBytes %d is negative", c.CacheBytes)
	case c.MemTableBytes < 0 || c.MemTableBytes >= 4<<30:
		return fmt.Errorf("node: Config.MemTableBytes %d out of range", c.MemTableBytes)
	case c.MaxCompactions < 0 || c.MaxCompactions > 64:
		return fmt.Errorf("node: Config.MaxCompactions %d out of range", c.MaxCompactions)
	case c.RevsLimit < 0 || c.RevsLimit > revtree.HardMaxPathLen/2:
		return fmt.Errorf("node: Config.RevsLimit %d out of range", c.RevsLimit)
	case c.MinFreeBytes < -1:
		return fmt.Errorf("node: Config.MinFreeBytes %d out of range", c.MinFreeBytes)
	case c.MaxLocalDocs < 0:
		return fmt.Errorf("node: Config.MaxLocalDocs %d is negative", c.MaxLocalDocs)
	case c.BatchLifetime < 0:
		return fmt.Errorf("node: Config.BatchLifetime %v is negative", c.BatchLifetime)
	case c.MaxConflicts < 0:
		return fmt.Errorf("node: Config.MaxConflicts %d is negative", c.MaxConflicts)
	case c.MaxDocBytes != 0 && c.MaxDocBytes < MinMaxDocBytes:
		return fmt.Errorf("node: Config.MaxDocBytes %d below %d", c.MaxDocBytes, MinMaxDocBytes)
	case len(c.NodeID) > MaxOriginLen:
		return fmt.Errorf("node: Config.NodeID of %d bytes", len(c.NodeID))
	}
	return nil
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.PurgeInterval == 0 {
		c.PurgeInterval = d.PurgeInterval
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.CacheUsers == 0 {
		c.CacheUsers = d.CacheUsers
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = d.CacheBytes
	}
	if c.MemTableBytes == 0 {
		c.MemTableBytes = d.MemTableBytes
	}
	if c.MaxCompactions == 0 {
		c.MaxCompactions = d.MaxCompactions
	}
	if c.RevsLimit == 0 {
		c.RevsLimit = revtree.DefaultRevsLimit
	}
	if c.MaxConflicts == 0 {
		c.MaxConflicts = d.MaxConflicts
	}
	if c.MaxDocBytes == 0 {
		c.MaxDocBytes = d.MaxDocBytes
	}
	if c.MaxLocalDocs == 0 {
		c.MaxLocalDocs = d.MaxLocalDocs
	}
	if c.MinFreeBytes == 0 {
		c.MinFreeBytes = d.MinFreeBytes
	}
	if c.BatchLifetime == 0 {
		c.BatchLifetime = d.BatchLifetime
	}
	return c
}
