package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/state"
)

// Errors of the Directory.
var (
	// ErrNotLeader means this voter is not the raft leader and could not
	// forward the write to one (no leader known, or its HTTP URL or the
	// admin token missing), or a forwarded write reached a non-leader.
	ErrNotLeader = errors.New("directory: not leader")
	// ErrClosed means the Directory has been closed.
	ErrClosed = errors.New("directory: closed")
	// ErrOutcomeUnknown means raft lost leadership or shut down after a
	// write was proposed: it may or may not have been applied.
	ErrOutcomeUnknown = errors.New("directory: write outcome unknown")
)

// Errors of the state machine that the Directory's methods return
// (the same values as package state's, so errors.Is matches either).
var (
	// ErrUnknownNode means no storage node has that ID.
	ErrUnknownNode = state.ErrUnknownNode
	// ErrNodeRetired means the node is retired; retired is final.
	ErrNodeRetired = state.ErrNodeRetired
	// ErrBadNodeState means the state change is not allowed.
	ErrBadNodeState = state.ErrBadNodeState
	// ErrMalformedCommand means a command could not be encoded or decoded.
	ErrMalformedCommand = state.ErrMalformedCommand
	// ErrUnknownCommand means a command of a type or version this build
	// does not know.
	ErrUnknownCommand = state.ErrUnknownCommand
	// ErrNotCurrentMember means a node reported a write it acknowledged
	// without every member's confirmation for a user whose set does not
	// list it as a current member: it must not acknowledge the write.
	ErrNotCurrentMember = state.ErrNotCurrentMember
	// ErrNoTransfer means a rebalancing transfer no longer applies.
	ErrNoTransfer = state.ErrNoTransfer
)

// NodeInfo describes a storage node as the directory records it (see
// state.NodeInfo).
type NodeInfo = state.NodeInfo

// Settings are the cluster-wide settings kept in the state machine (see
// state.Settings).
type Settings = state.Settings

// Replicas is a user's replica set with the nodes' records (see
// state.Replicas); MemberInfo one member of it.
type (
	Replicas   = state.Replicas
	MemberInfo = state.MemberInfo
)

// Directory is one directory voter: the state machine (package state)
// replicated through hashicorp/raft with raft-boltdb as log and stable
// store and a file snapshot store, and the voter's IO around it (the
// write path, HTTP, libp2p, the liveness loop, mail, notifications). All
// methods are safe for concurrent use.
//
// Reads (UserExists, StorageNode, CheckPassword and the checks before a
// write) answer from the local state. Writes are proposed through raft and
// return once the entry is committed (fsynced) and applied; a follower
// forwards them once to the leader over HTTP. Concurrent writes are
// coalesced into one raft entry (a Batch) by the group commit. If a
// caller's ctx ends while its write is in flight the call returns
// ctx.Err() at once, but the write may still be applied.
//
// Every background goroutine runs under one root context and is started
// by spawn; Close cancels that context and waits for all of them.
type Directory struct {
	cfg    Config
	log    *slog.Logger
	state  *state.FSM
	raft   *raft.Raft
	stores raftStores    // what raft runs on (raft.go)
	hasher *hasher       // password.go
	guard  *guard        // the login guard (guard.go)
	resets *resetLimiter // reset mails per address and in all (resetlimit.go)

	// The voter's IO around the state, each part in its own file.
	commits *committer // the group commit (commit.go)
	beats   *liveness  // heartbeats and the down-marking loop (liveness.go)
	signer  *signer    // the token signing key and its loop (signer.go)
	notes   *notifier  // account events to storage nodes (notify.go)
	members *members   // replica-set changes to storage nodes (membership.go)
	host    host.Host  // libp2p host, nil without Nodes.P2PListen (p2pvoter.go)
	stale   staleLeader
	// barriers shares the raft barriers of negative answers, which count
	// in absentUnconfirmed (no leader confirmed: 503) and absentBehind
	// (the leader's state had what this voter's lacked) (absent.go).
	barriers barrierGroup
	// termStartCache remembers the first log index of the current term
	// (fresh).
	termStartCache atomic.Pointer[termIndex]
	// leaderSent records the commit index the leader last sent (cluster
	// mode; nil otherwise), for fresh; leaderSentDone stops its watcher.
	leaderSent     *leaderCommits
	leaderSentDone chan struct{}
	// viewLag is how old, at most, the state is from which a fresh voter
	// answers who serves a user (fresh): raft's effective
	// HeartbeatTimeout. Report sends it to nodes.
	viewLag           time.Duration
	absentUnconfirmed atomic.Uint64
	absentBehind      atomic.Uint64
	// staleAnswers counts answers about who serves a user refused while
	// this voter was out of touch with the leader (absent.go).
	staleAnswers atomic.Uint64
	gate         *gate // which commands every voter decodes (gate.go)
	// fatal receives, once, why this voter must stop: it was removed from
	// the cluster, or it met a raft entry it cannot decode (Fatal).
	fatal     chan error
	fatalOnce sync.Once
	// member is set once this voter has been in the raft configuration
	// (voters.go): from then on, a configuration without it means it was
	// removed.
	member atomic.Bool
	// placed wakes the leader's placement loop (placement.go) after
	// replica sets changed.
	placed chan struct{}
	// auth counts refused credentials (metrics.go).
	auth authCounters
	// sync is the Sync 1.5 tokenserver (sync.go), nil when off.
	sync *syncServer

	// The lifecycle: ctx is the root of every background goroutine;
	// spawn starts them (counted in wg) until Close cancels ctx.
	ctx     context.Context
	cancel  context.CancelFunc
	spawnMu sync.Mutex // orders spawn against Close
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
}

var _ api.Accounts = (*Directory)(nil)

// Open opens (or, on first start, creates and bootstraps) the directory
// in cfg.Dir. A single voter waits until it leads and has applied every
// committed entry; a new cluster voter until its own record is committed
// (see startCluster); a restarted cluster voter returns at once and
// catches up in the background. ctx bounds the wait. On restart the
// state comes back from the latest snapshot plus the log after it.
func Open(ctx context.Context, cfg Config) (*Directory, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("directory: data folder: %w", err)
	}
	if err := checkRemoved(cfg.Dir); err != nil {
		return nil, err
	}
	h := newHasher(cfg.Accounts.PasswordHash, cfg.Accounts.HashConcurrency)
	g, err := newGuard(cfg.Accounts.Limits, cfg.Clock)
	if err != nil {
		return nil, err
	}
	d := &Directory{
		cfg:    cfg,
		log:    cfg.Logger,
		hasher: h,
		guard:  g,
		resets: newResetLimiter(cfg.Accounts.Resets, cfg.Accounts.Limits.MaxEntries),
		placed: make(chan struct{}, 1),
		fatal:  make(chan error, 1),
	}
	d.gate = newGate(d, cfg.Dir)
	d.members = newMembers(d)
	d.state = state.New(cfg.Logger, cfg.Nodes.Placement, state.Hooks{
		Revoked:     cfg.Accounts.CredentialsChanged,
		SetsChanged: d.setsChanged,
		Undecodable: func(index uint64, err error) {
			d.fail(fmt.Errorf("%w: entry %d: %w; this voter runs an older build than the leader's: upgrade it "+
				"(it replays the entry at its next start)", ErrUndecodableEntry, index, err))
		},
	})
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.notes = &notifier{spawn: d.spawn, log: d.log}
	if err := d.startRaft(); err != nil {
		d.cancel()
		d.closeStores()
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		d.cancel()
		d.shutdownRaft()
		return nil, err
	}
	d.commits = newCommitter(d.raft, cfg.Raft, d.log)
	d.beats = newLiveness(d)
	for range committers {
		d.spawn(d.commits.run)
	}
	if cfg.Sync.Enabled() {
		if d.sync, err = newSyncServer(d); err != nil {
			_ = d.Close()
			return nil, err
		}
		d.sync.start(ctx)
	}
	for _, start := range []func(context.Context) error{d.startP2P, d.startCluster, d.startKeys} {
		if err := start(ctx); err != nil {
			_ = d.Close()
			return nil, err
		}
	}
	d.log.Info("directory: open", "id", cfg.ID, "dir", cfg.Dir, "users", d.state.Accounts(),
		"index", d.raft.AppliedIndex())
	return d, nil
}

// spawn runs fn on a new goroutine with the root context, unless Close
// has begun; it reports whether fn runs. Close cancels the context and
// waits for fn to return.
func (d *Directory) spawn(fn func(ctx context.Context)) bool {
	d.spawnMu.Lock()
	defer d.spawnMu.Unlock()
	if d.ctx.Err() != nil {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		fn(d.ctx)
	}()
	return true
}

// Close is the Directory's one stop path. It stops accepting writes,
// cancels the root context and waits for every background goroutine
// (group-commit loops, liveness, key and voter-record loops, node
// notifications), so writes already in raft finish and queued ones fail
// with ErrClosed; then it closes the libp2p host, optionally snapshots
// (Raft.SnapshotOnClose), shuts raft down and closes the bolt store. A
// Raft.Transport passed in Config is left open for its owner. Close is
// idempotent.
func (d *Directory) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		d.spawnMu.Lock()
		d.cancel()
		d.spawnMu.Unlock()
		d.wg.Wait()
		d.commits.stop()
		if d.host != nil {
			if err := d.host.Close(); err != nil {
				d.log.Warn("directory: closing libp2p host", "err", err)
			}
		}
		if d.cfg.Raft.SnapshotOnClose {
			if err := d.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
				d.log.Warn("directory: snapshot on close failed", "err", err)
			}
		}
		d.closeErr = d.shutdownRaft()
		d.log.Info("directory: closed", "id", d.cfg.ID)
	})
	return d.closeErr
}

// Snapshot makes raft take a snapshot now and waits for it (or ctx). It
// returns nil when there was nothing new to snapshot.
func (d *Directory) Snapshot(ctx context.Context) error {
	if d.closed.Load() {
		return ErrClosed
	}
	err := d.awaitFuture(ctx, d.raft.Snapshot())
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	if err != nil && ctx.Err() == nil {
		return mapRaftErr(err)
	}
	return err
}

// Stats is a point-in-time view of a Directory for metrics and tests.
type Stats struct {
	// Users is the number of accounts in the local state.
	Users int
	// State is the raft state ("Leader", "Follower", ...).
	State string
	// AppliedIndex is the last raft index applied to the state machine.
	AppliedIndex uint64
	// Batches is the number of raft entries the group-commit loop proposed
	// and Commands the number of commands they carried; Commands/Batches
	// is the mean coalescing factor.
	Batches, Commands uint64
	// UndecodableEntries counts log entries the state machine could not
	// decode (unknown type or version, or malformed); each was logged as
	// an error.
	UndecodableEntries uint64
	// LookupsNoLeader and LookupsBehind count negative answers this voter
	// could not confirm with a leader (answered 503) and those the
	// leader's state contradicted (absent.go).
	LookupsNoLeader, LookupsBehind uint64
	// NotFresh counts answers about who serves a user refused while this
	// voter was out of touch with the leader.
	NotFresh uint64
}

// Stats returns current counters.
func (d *Directory) Stats() Stats {
	return Stats{
		Users:              d.state.Accounts(),
		State:              d.raft.State().String(),
		AppliedIndex:       d.raft.AppliedIndex(),
		Batches:            d.commits.batches.Load(),
		Commands:           d.commits.commands.Load(),
		UndecodableEntries: d.state.Undecodable(),
		LookupsNoLeader:    d.absentUnconfirmed.Load(),
		LookupsBehind:      d.absentBehind.Load(),
		NotFresh:           d.staleAnswers.Load(),
	}
}
