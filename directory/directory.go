package directory

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/hce-sync/hce/api"
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

// maxBatchBytes bounds the encoded size of one group-commit batch entry.
const maxBatchBytes = 1 << 20

// committers is the number of group-commit loops, i.e. the number of
// batches that can be in flight in raft at once.
const committers = 2

// Directory is the account database of one directory voter: a raft FSM
// replicated through hashicorp/raft with raft-boltdb as log and stable
// store and a file snapshot store. All methods are safe for concurrent
// use.
//
// Reads (UserExists, StorageNode, CheckPassword and the checks before a
// write) answer from the local FSM. Writes are proposed through raft and
// return once the entry is committed (fsynced) and applied; a follower
// forwards them once to the leader over HTTP. Concurrent writes are coalesced into one
// raft entry (a Batch) by a group-commit loop. If a caller's ctx ends
// while its write is in flight the call returns ctx.Err() at once, but the
// write may still be applied.
type Directory struct {
	cfg    Config
	log    *slog.Logger
	fsm    *fsm
	raft   *raft.Raft
	store  *raftboltdb.BoltStore
	snaps  *raft.FileSnapshotStore
	trans  raft.Transport
	ownTr  bool
	hasher *hasher
	fresh  bool // no raft state existed at Open

	hbMu     sync.Mutex
	hb       map[string]heartbeat // leader only: last heartbeat per node
	bg       sync.WaitGroup       // background loops (liveness)
	bgCancel context.CancelFunc   // stops them

	key localKey // this voter's token signing key (keys.go)

	host  host.Host // libp2p host (nil without Config.P2PListen); p2pvoter.go
	notes *notifier // account notifications in flight; notify.go

	queue   chan *proposal
	quit    chan struct{} // closed by Close: committers stop
	stopped chan struct{} // closed by Close once no proposal will be answered any more
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool

	batches  atomic.Uint64 // raft entries proposed by the committers
	commands atomic.Uint64 // commands in them
}

var _ api.Accounts = (*Directory)(nil)

// proposal is one write waiting for the group-commit loop.
type proposal struct {
	ctx  context.Context
	enc  []byte     // the encoded command
	done chan error // buffered(1): the command's result
}

// Open opens (or, on first start, creates and bootstraps as a single
// voter) the directory in cfg.Dir, and waits until this voter is the
// leader and has applied every committed entry (or ctx ends). On restart
// the state comes back from the latest snapshot plus the log after it.
func Open(ctx context.Context, cfg Config) (*Directory, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("directory: data folder: %w", err)
	}
	h, err := newHasher(cfg.PasswordHash, cfg.HashConcurrency)
	if err != nil {
		return nil, err
	}
	d := &Directory{
		cfg:     cfg,
		log:     cfg.Logger,
		fsm:     newFSM(cfg.Logger, cfg.CredentialsChanged),
		hb:      make(map[string]heartbeat),
		notes:   newNotifier(),
		hasher:  h,
		queue:   make(chan *proposal, 4*cfg.MaxBatch),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	d.fsm.placement = cfg.Placement
	if err := d.startRaft(); err != nil {
		d.closeStores()
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		d.shutdownRaft()
		return nil, err
	}
	for range committers {
		d.wg.Add(1)
		go d.commitLoop()
	}
	if err := d.startP2P(ctx); err != nil {
		_ = d.Close()
		return nil, err
	}
	if err := d.startCluster(ctx); err != nil {
		_ = d.Close()
		return nil, err
	}
	if err := d.startKeys(ctx); err != nil {
		_ = d.Close()
		return nil, err
	}
	d.log.Info("directory: open", "id", cfg.ID, "dir", cfg.Dir, "users", d.fsm.count(),
		"index", d.raft.AppliedIndex())
	return d, nil
}

func (d *Directory) startRaft() error {
	cfg := d.cfg
	rlog := newRaftLogger(cfg.Logger, cfg.RaftLogLevel)
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.Dir, "raft.db"),
		// Fail instead of hanging when another process holds the file.
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true},
	})
	if err != nil {
		return fmt.Errorf("directory: open raft.db: %w", err)
	}
	d.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.Raft.SnapshotRetain, rlog)
	if err != nil {
		return fmt.Errorf("directory: snapshot store: %w", err)
	}
	d.snaps = snaps
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		return fmt.Errorf("directory: log cache: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = rlog
	t := cfg.Raft
	if t.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = t.HeartbeatTimeout
	}
	if t.ElectionTimeout > 0 {
		rc.ElectionTimeout = t.ElectionTimeout
	} else if rc.ElectionTimeout < rc.HeartbeatTimeout {
		rc.ElectionTimeout = rc.HeartbeatTimeout
	}
	if t.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	} else if rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	if t.CommitTimeout > 0 {
		rc.CommitTimeout = t.CommitTimeout
	}
	if t.SnapshotInterval > 0 {
		rc.SnapshotInterval = t.SnapshotInterval
	}
	if t.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = t.SnapshotThreshold
	}
	if t.TrailingLogs > 0 {
		rc.TrailingLogs = t.TrailingLogs
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("directory: raft config: %w", err)
	}

	d.trans = cfg.Transport
	if cfg.clustered() {
		if d.trans, err = newTLSTransport(cfg, rlog); err != nil {
			return err
		}
		d.ownTr = true
	}
	if d.trans == nil {
		_, d.trans = raft.NewInmemTransport(raft.ServerAddress(cfg.ID))
		d.ownTr = true
	}
	existing, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return fmt.Errorf("directory: inspect raft state: %w", err)
	}
	d.fresh = !existing
	if !existing && (!cfg.clustered() || cfg.Bootstrap) {
		boot := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: rc.LocalID, Address: d.trans.LocalAddr(),
		}}}
		if err := raft.BootstrapCluster(rc, logs, store, snaps, d.trans, boot); err != nil {
			return fmt.Errorf("directory: bootstrap: %w", err)
		}
		d.log.Info("directory: bootstrapped single-voter cluster", "id", cfg.ID)
	}
	r, err := raft.NewRaft(rc, d.fsm, logs, store, snaps, d.trans)
	if err != nil {
		return fmt.Errorf("directory: start raft: %w", err)
	}
	d.raft = r
	return nil
}

// waitReady waits until this voter leads and its FSM has applied every
// entry committed before (a barrier), so reads see the restored state.
func (d *Directory) waitReady(ctx context.Context) error {
	if d.cfg.clustered() {
		return nil // startCluster joins and waits for a leader
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for d.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return fmt.Errorf("directory: waiting for leadership: %w", ctx.Err())
		case <-tick.C:
		}
	}
	if err := awaitFuture(ctx, d.raft.Barrier(d.cfg.ApplyTimeout)); err != nil {
		return fmt.Errorf("directory: barrier: %w", mapRaftErr(err))
	}
	return nil
}

// awaitFuture waits for f or for ctx, whichever comes first.
func awaitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mapRaftErr turns raft's errors into the package's.
func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return fmt.Errorf("directory: raft: %w", err)
}

// Close stops accepting writes, lets writes already in raft finish, fails
// queued ones with ErrClosed, optionally snapshots (Config.SnapshotOnClose),
// shuts raft down and closes the bolt store. A Transport passed in Config
// is left open for its owner. Close is idempotent.
func (d *Directory) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		close(d.quit)
		d.wg.Wait()
		for drained := false; !drained; {
			select {
			case p := <-d.queue:
				p.done <- ErrClosed
			default:
				drained = true
			}
		}
		close(d.stopped)
		d.notes.close()
		if d.host != nil {
			if err := d.host.Close(); err != nil {
				d.log.Warn("directory: closing libp2p host", "err", err)
			}
		}
		if d.bgCancel != nil {
			d.bgCancel()
		}
		d.bg.Wait()
		if d.cfg.SnapshotOnClose {
			if err := d.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
				d.log.Warn("directory: snapshot on close failed", "err", err)
			}
		}
		d.closeErr = d.shutdownRaft()
		d.log.Info("directory: closed", "id", d.cfg.ID)
	})
	return d.closeErr
}

func (d *Directory) shutdownRaft() error {
	var errs []error
	if d.raft != nil {
		if err := d.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("directory: raft shutdown: %w", err))
		}
	}
	if err := d.closeStores(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (d *Directory) closeStores() error {
	var errs []error
	if d.ownTr && d.trans != nil {
		if c, ok := d.trans.(raft.WithClose); ok {
			_ = c.Close()
		}
	}
	if d.store != nil {
		if err := d.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("directory: close raft.db: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Snapshot makes raft take a snapshot now and waits for it (or ctx). It
// returns nil when there was nothing new to snapshot.
func (d *Directory) Snapshot(ctx context.Context) error {
	if d.closed.Load() {
		return ErrClosed
	}
	err := awaitFuture(ctx, d.raft.Snapshot())
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
	// Users is the number of accounts in the local FSM.
	Users int
	// State is the raft state ("Leader", "Follower", ...).
	State string
	// AppliedIndex is the last raft index applied to the FSM.
	AppliedIndex uint64
	// Batches is the number of raft entries the group-commit loop proposed
	// and Commands the number of commands they carried; Commands/Batches
	// is the mean coalescing factor.
	Batches, Commands uint64
	// UndecodableEntries counts log entries the FSM could not decode
	// (unknown type or version, or malformed); each was logged as an error.
	UndecodableEntries uint64
}

// Stats returns current counters.
func (d *Directory) Stats() Stats {
	return Stats{
		Users:              d.fsm.count(),
		State:              d.raft.State().String(),
		AppliedIndex:       d.raft.AppliedIndex(),
		Batches:            d.batches.Load(),
		Commands:           d.commands.Load(),
		UndecodableEntries: d.fsm.unknown.Load(),
	}
}

// write proposes one command through the group-commit loop and waits for
// its result, for ctx, or for Close. On a follower the command is
// forwarded once to the leader (see forward).
func (d *Directory) write(ctx context.Context, c Command) error {
	if d.closed.Load() {
		return ErrClosed
	}
	enc, err := EncodeCommand(c)
	if err != nil {
		return err
	}
	if d.raft.State() != raft.Leader {
		return d.forward(ctx, enc)
	}
	return d.writeLocal(ctx, enc)
}

// writeLocal proposes an encoded command on this voter (the leader), with
// no forwarding: ErrNotLeader if this voter does not lead.
func (d *Directory) writeLocal(ctx context.Context, enc []byte) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if d.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	p := &proposal{ctx: ctx, enc: enc, done: make(chan error, 1)}
	select {
	case d.queue <- p:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.quit:
		return ErrClosed
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stopped:
		select {
		case err := <-p.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// commitLoop is one group-commit loop: it takes the first waiting
// proposal, adds whatever else is already queued (up to MaxBatch commands
// and maxBatchBytes), proposes them as one raft entry, waits for it to be
// applied and hands each proposal its own result. While it waits, new
// proposals queue up and form the next batch, so under load each fsync
// carries many commands and without load a write is proposed at once.
func (d *Directory) commitLoop() {
	defer d.wg.Done()
	batch := make([]*proposal, 0, d.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-d.queue:
			batch = append(batch, p)
		case <-d.quit:
			return
		}
		size := len(batch[0].enc)
	fill:
		for len(batch) < d.cfg.MaxBatch && size < maxBatchBytes {
			select {
			case p := <-d.queue:
				batch = append(batch, p)
				size += len(p.enc) + binary.MaxVarintLen32
			default:
				break fill
			}
		}
		live := batch[:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil {
				p.done <- err
				continue
			}
			live = append(live, p)
		}
		if len(live) > 0 {
			d.commit(live)
		}
		clear(batch[:cap(batch)])
	}
}

// commit proposes ps as one raft entry and answers each.
func (d *Directory) commit(ps []*proposal) {
	data := ps[0].enc
	if len(ps) > 1 {
		encs := make([][]byte, len(ps))
		for i, p := range ps {
			encs[i] = p.enc
		}
		data = encodeBatch(encs)
	}
	d.batches.Add(1)
	d.commands.Add(uint64(len(ps)))
	f := d.raft.Apply(data, d.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		err = mapRaftErr(err)
		for _, p := range ps {
			p.done <- err
		}
		return
	}
	resp := f.Response()
	if len(ps) == 1 {
		err, _ := resp.(error)
		ps[0].done <- err
		return
	}
	switch r := resp.(type) {
	case []error:
		if len(r) == len(ps) {
			for i, p := range ps {
				p.done <- r[i]
			}
			return
		}
		err := fmt.Errorf("directory: batch of %d got %d results", len(ps), len(r))
		d.log.Error("directory: internal error", "err", err)
		for _, p := range ps {
			p.done <- err
		}
	case error:
		for _, p := range ps {
			p.done <- r
		}
	default:
		err := fmt.Errorf("directory: unexpected apply response %T", resp)
		for _, p := range ps {
			p.done <- err
		}
	}
}

// encodeBatch builds a Batch entry from already encoded commands; it is
// the same encoding EncodeCommand produces for a Batch.
func encodeBatch(encs [][]byte) []byte {
	n := 2 + binary.MaxVarintLen64
	for _, e := range encs {
		n += binary.MaxVarintLen64 + len(e)
	}
	out := make([]byte, 0, n)
	out = append(out, byte(CmdBatch), commandV1)
	out = binary.AppendUvarint(out, uint64(len(encs)))
	for _, e := range encs {
		out = binary.AppendUvarint(out, uint64(len(e)))
		out = append(out, e...)
	}
	return out
}

// UserExists reports whether the account name is taken, from the local
// state.
func (d *Directory) UserExists(ctx context.Context, user string) (bool, error) {
	if d.closed.Load() {
		return false, ErrClosed
	}
	_, ok := d.fsm.get(user)
	return ok, nil
}

// CreateUser hashes password (argon2id, outside raft) and proposes the
// account, assigned to Config.NodeURL. api.ErrUserExists if the name is
// taken (checked locally first, and authoritatively by the FSM).
func (d *Directory) CreateUser(ctx context.Context, user, password, email string) error {
	if user == "" {
		return fmt.Errorf("directory: empty user name")
	}
	if _, ok := d.fsm.get(user); ok {
		return api.ErrUserExists
	}
	hash, err := d.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	return d.write(ctx, CreateUser{
		Name: user, Hash: hash, Email: email,
		Created: d.cfg.Clock().Unix(), Node: d.cfg.NodeURL,
	})
}

// DeleteUser removes an account; api.ErrUserNotFound if there is none.
// With Config.NotifyNodes, once the deletion is committed the nodes the
// user was assigned to are told to delete the user's records; DeleteUser
// waits up to a few seconds for them, and answers success anyway (a node
// that cannot be reached is logged).
func (d *Directory) DeleteUser(ctx context.Context, user string) error {
	set, _, _ := d.fsm.assignment(user)
	if err := d.write(ctx, DeleteUser{Name: user}); err != nil {
		return err
	}
	done := d.notifyNodes(user, set, true)
	t := time.NewTimer(deleteWait)
	defer t.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-t.C:
		d.log.Warn("directory: nodes did not confirm an account deletion in time", "user", user, "wait", deleteWait)
	}
	return nil
}

// CheckPassword returns nil when password is the user's, else
// api.ErrUnauthorized. An unknown user costs one hash computation as well,
// so response times do not reveal which names exist. A stored hash that
// does not parse is logged and reported as an error wrapping ErrBadHash.
func (d *Directory) CheckPassword(ctx context.Context, user, password string) error {
	if d.closed.Load() {
		return ErrClosed
	}
	a, ok := d.fsm.get(user)
	enc := d.hasher.dummy
	if ok {
		enc = a.Hash
	}
	match, err := d.hasher.verify(ctx, enc, password)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("directory: stored password hash unusable", "user", user, "err", err)
		}
		return fmt.Errorf("directory: check password of %q: %w", user, err)
	}
	if !ok || !match {
		return api.ErrUnauthorized
	}
	return nil
}

// StorageNode returns the node URL assigned to the user ("" when none),
// or api.ErrUserNotFound.
func (d *Directory) StorageNode(ctx context.Context, user string) (string, error) {
	if d.closed.Load() {
		return "", ErrClosed
	}
	set, fallback, ok := d.fsm.assignment(user)
	if !ok {
		return "", api.ErrUserNotFound
	}
	if len(set) > 0 {
		return set[0].URL, nil
	}
	return fallback, nil
}

// SetEmail changes the user's e-mail address; api.ErrUserNotFound.
func (d *Directory) SetEmail(ctx context.Context, user, email string) error {
	return d.write(ctx, SetEmail{Name: user, Email: email})
}

// SetPassword changes the user's password and drops any pending reset
// code; api.ErrUserNotFound.
func (d *Directory) SetPassword(ctx context.Context, user, password string) error {
	if _, ok := d.fsm.get(user); !ok {
		return api.ErrUserNotFound
	}
	hash, err := d.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	if err := d.write(ctx, SetPassword{Name: user, Hash: hash}); err != nil {
		return err
	}
	d.credentialsChanged(user)
	return nil
}

// credentialsChanged tells the user's nodes (Config.NotifyNodes), in the
// background, that the user's password changed.
func (d *Directory) credentialsChanged(user string) {
	set, _, _ := d.fsm.assignment(user)
	d.notifyNodes(user, set, false)
}

// RequestPasswordReset stores a new random reset code (hashed, valid for
// Config.ResetCodeTTL, replacing any earlier one) and mails it to the
// user. api.ErrUserNotFound, api.ErrNoEmail; a mail failure is returned
// wrapping api.ErrUnavailable (the code is stored but nobody knows it).
func (d *Directory) RequestPasswordReset(ctx context.Context, user string) error {
	a, ok := d.fsm.get(user)
	if !ok {
		return api.ErrUserNotFound
	}
	if a.Email == "" {
		return api.ErrNoEmail
	}
	code, codeHash, err := newResetCode()
	if err != nil {
		return err
	}
	expires := d.cfg.Clock().Add(d.cfg.ResetCodeTTL)
	if err := d.write(ctx, SetResetCode{Name: user, CodeHash: codeHash, Expires: expires.Unix()}); err != nil {
		return err
	}
	subject, body := d.resetMail(user, code, expires)
	if err := d.cfg.Mailer.Send(ctx, a.Email, subject, body); err != nil {
		d.log.Warn("directory: reset mail failed", "user", user, "err", err)
		return fmt.Errorf("directory: mail reset code: %w: %w", api.ErrUnavailable, err)
	}
	return nil
}

func (d *Directory) resetMail(user, code string, expires time.Time) (subject, body string) {
	var b strings.Builder
	fmt.Fprintf(&b, "Someone (hopefully you) asked to reset the password of the Weave account %q.\n\n", user)
	fmt.Fprintf(&b, "Your reset code is: %s\n", code)
	if d.cfg.ResetURL != "" {
		sep := "?"
		if strings.Contains(d.cfg.ResetURL, "?") {
			sep = "&"
		}
		fmt.Fprintf(&b, "Or open: %s%susername=%s&key=%s\n", d.cfg.ResetURL, sep, url.QueryEscape(user), code)
	}
	fmt.Fprintf(&b, "\nThe code expires at %s. If you did not ask for this, ignore this mail.\n",
		expires.UTC().Format(time.RFC1123))
	return "Weave password reset", b.String()
}

// ClearPasswordReset drops a pending reset code; api.ErrUserNotFound.
func (d *Directory) ClearPasswordReset(ctx context.Context, user string) error {
	return d.write(ctx, ClearResetCode{Name: user})
}

// ResetPassword sets password if code is the user's pending, unexpired
// reset code, and clears the code, in one command (the FSM checks the code
// again, so two resets with one code cannot both succeed).
// api.ErrUserNotFound, api.ErrBadResetCode.
func (d *Directory) ResetPassword(ctx context.Context, user, code, password string) error {
	a, ok := d.fsm.get(user)
	if !ok {
		return api.ErrUserNotFound
	}
	codeHash := hashResetCode(code)
	now := d.cfg.Clock().Unix()
	if !resetCodeValid(&a, codeHash, now) {
		return api.ErrBadResetCode
	}
	hash, err := d.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	if err := d.write(ctx, ResetPassword{Name: user, CodeHash: codeHash, Hash: hash, Now: now}); err != nil {
		return err
	}
	d.credentialsChanged(user)
	return nil
}
