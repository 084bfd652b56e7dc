package directory

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// Backups of the directory's state: a file an operator can copy off the
// machine, made online by any voter (Backup) and put back into a cluster
// by its leader (Restore); and the offline recovery of a voter whose
// cluster lost its quorum for good (Recover).
//
// A backup file is one JSON line, BackupHeader, then the state machine's
// snapshot exactly as raft stores it (directory/state's snapshot format,
// which carries its own format name and version and is checked whole
// before anything is replaced).

// Backup file format.
const (
	backupFormat  = "hce-directory-backup"
	backupVersion = 1
)

// ErrBadBackup means a backup file could not be used: not a backup, a
// format version this build does not read, truncated, or a state that
// does not pass the snapshot's checks. Nothing was changed.
var ErrBadBackup = errors.New("directory: unusable backup")

// BackupHeader starts a backup file.
type BackupHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Voter made the backup; Index and Term are the raft position of
	// the state it holds; Created is when (Unix seconds); Size is the
	// length of the snapshot that follows the header line.
	Voter   string `json:"voter"`
	Index   uint64 `json:"index"`
	Term    uint64 `json:"term"`
	Created int64  `json:"created"`
	Size    int64  `json:"size"`
}

// Backup writes a backup of this voter's state to w: it has raft take a
// snapshot now (or, with nothing new since the last one, uses the last)
// and copies it behind a BackupHeader. The state is this voter's as far
// as it has applied the log; raft and the writes go on meanwhile.
func (d *Directory) Backup(ctx context.Context, w io.Writer) (BackupHeader, error) {
	if d.closed.Load() {
		return BackupHeader{}, ErrClosed
	}
	f := d.raft.Snapshot()
	err := d.awaitFuture(ctx, f)
	var meta *raft.SnapshotMeta
	var rc io.ReadCloser
	switch {
	case errors.Is(err, raft.ErrNothingNewToSnapshot):
		list, lerr := d.stores.snaps.List()
		if lerr != nil || len(list) == 0 {
			return BackupHeader{}, fmt.Errorf("directory: backup: no snapshot to copy: %v", lerr)
		}
		meta, rc, err = d.stores.snaps.Open(list[0].ID)
	case err != nil:
		return BackupHeader{}, fmt.Errorf("directory: backup: %w", mapRaftErr(err))
	default:
		meta, rc, err = f.Open()
	}
	if err != nil {
		return BackupHeader{}, fmt.Errorf("directory: backup: opening the snapshot: %w", err)
	}
	defer rc.Close()
	h := BackupHeader{Format: backupFormat, Version: backupVersion, Voter: d.cfg.ID, Index: meta.Index,
		Term: meta.Term, Created: time.Now().Unix(), Size: meta.Size}
	line, _ := json.Marshal(h)
	if _, err := w.Write(append(line, '\n')); err != nil {
		return h, err
	}
	n, err := io.Copy(w, rc)
	if err == nil && n != meta.Size {
		err = fmt.Errorf("snapshot of %d bytes copied as %d", meta.Size, n)
	}
	if err != nil {
		return h, fmt.Errorf("directory: backup: %w", err)
	}
	return h, nil
}

// ReadBackupHeader reads a backup file's header line from r and returns
// it with the reader positioned at the snapshot; ErrBadBackup for
// anything but a backup this build reads.
func ReadBackupHeader(r io.Reader) (BackupHeader, io.Reader, error) {
	br := bufio.NewReader(r)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return BackupHeader{}, nil, fmt.Errorf("%w: no header line: %v", ErrBadBackup, err)
	}
	var h BackupHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return BackupHeader{}, nil, fmt.Errorf("%w: header: %v", ErrBadBackup, err)
	}
	if h.Format != backupFormat {
		return h, nil, fmt.Errorf("%w: format %q, want %q", ErrBadBackup, h.Format, backupFormat)
	}
	if h.Version != backupVersion {
		return h, nil, fmt.Errorf("%w: backup format version %d; this build reads version %d (a newer build wrote it?)",
			ErrBadBackup, h.Version, backupVersion)
	}
	if h.Size <= 0 {
		return h, nil, fmt.Errorf("%w: size %d", ErrBadBackup, h.Size)
	}
	return h, br, nil
}

// CheckBackup reads a whole backup from r and checks it as a restore
// would (header, size, every check of the state's snapshot), without
// changing anything; it returns the header and the number of accounts.
func CheckBackup(r io.Reader) (BackupHeader, int, error) {
	h, body, err := ReadBackupHeader(r)
	if err != nil {
		return h, 0, err
	}
	f := state.New(slog.New(slog.DiscardHandler), placement.Policy{}, state.Hooks{})
	cr := &countingReader{r: io.LimitReader(body, h.Size)}
	if err := f.Restore(io.NopCloser(cr)); err != nil {
		return h, 0, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	if cr.n != h.Size {
		return h, 0, fmt.Errorf("%w: %d snapshot bytes, the header says %d", ErrBadBackup, cr.n, h.Size)
	}
	if n, _ := body.Read(make([]byte, 1)); n != 0 {
		return h, 0, fmt.Errorf("%w: data after the snapshot", ErrBadBackup)
	}
	return h, f.Accounts(), nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// RestoreInfo says what Restore put in place.
type RestoreInfo struct {
	Header BackupHeader `json:"backup"`
	// Users is the number of accounts restored.
	Users int `json:"users"`
}

// Restore replaces the whole cluster's state with the backup read from
// r (leader only: ErrNotLeader elsewhere). The backup is spooled into
// the data folder and checked whole first (ErrBadBackup leaves the state
// untouched); then raft installs it (raft.Restore) under the current
// configuration, at a log index past every earlier one, and the
// followers receive it as a snapshot. It rewinds the directory to the
// backup: accounts, nodes and replica sets created or changed since are
// gone, and storage nodes wipe the users the directory no longer lists
// for them at their next sweeps. Meant for disaster recovery into a
// fresh cluster (docs/directory-backup.md).
func (d *Directory) Restore(ctx context.Context, r io.Reader) (RestoreInfo, error) {
	if !d.IsLeader() {
		return RestoreInfo{}, ErrNotLeader
	}
	path := filepath.Join(d.cfg.Dir, "restore.tmp")
	defer os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return RestoreInfo{}, fmt.Errorf("directory: restore: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return RestoreInfo{}, fmt.Errorf("directory: restore: receiving the backup: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return RestoreInfo{}, err
	}
	h, users, err := CheckBackup(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return RestoreInfo{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return RestoreInfo{}, err
	}
	_, body, err := ReadBackupHeader(f)
	if err != nil {
		return RestoreInfo{}, err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: h.Index, Term: h.Term, Size: h.Size}
	timeout := max(d.cfg.Raft.ApplyTimeout, time.Minute)
	errc := make(chan error, 1)
	go func() { errc <- d.raft.Restore(meta, io.LimitReader(body, h.Size), timeout) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		// raft goes on with the restore; wait for it before the spooled
		// file goes.
		err = <-errc
	}
	if err != nil {
		return RestoreInfo{}, fmt.Errorf("directory: restore: %w", mapRaftErr(err))
	}
	d.log.Warn("directory: state restored from a backup", "backup_voter", h.Voter, "backup_index", h.Index,
		"backup_created", time.Unix(h.Created, 0).UTC(), "users", users, "index", d.raft.LastIndex())
	return RestoreInfo{Header: h, Users: users}, nil
}

// RecoverVoter is one voter of the configuration Recover writes.
type RecoverVoter struct {
	ID       string
	RaftAddr string
}

// RecoverInfo describes a voter's raft state (Recover, InspectRaft).
type RecoverInfo struct {
	// LastIndex and LastTerm are the last log entry's; SnapshotIndex the
	// latest snapshot's.
	LastIndex, LastTerm, SnapshotIndex uint64
	// Users is the number of accounts in the state the log holds (every
	// entry applied, as a recovered voter will).
	Users int
}

// InspectRaft reads the raft state in dir (the voter must be stopped)
// and reports its last entry and the accounts it holds, so an operator
// can pick the most advanced survivor before Recover.
func InspectRaft(dir string) (RecoverInfo, error) {
	var info RecoverInfo
	err := withRaftStores(dir, func(logs *raftboltdb.BoltStore, snaps *raft.FileSnapshotStore) error {
		f := state.New(slog.New(slog.DiscardHandler), placement.Policy{}, state.Hooks{})
		var err error
		info, err = replay(f, logs, snaps)
		return err
	})
	return info, err
}

// replay restores the latest snapshot into f and applies every log
// entry after it.
func replay(f *state.FSM, logs *raftboltdb.BoltStore, snaps *raft.FileSnapshotStore) (RecoverInfo, error) {
	var info RecoverInfo
	list, err := snaps.List()
	if err != nil {
		return info, err
	}
	if len(list) > 0 {
		meta, rc, err := snaps.Open(list[0].ID)
		if err != nil {
			return info, err
		}
		if err := f.Restore(rc); err != nil {
			return info, fmt.Errorf("directory: snapshot %s: %w", meta.ID, err)
		}
		info.SnapshotIndex, info.LastIndex, info.LastTerm = meta.Index, meta.Index, meta.Term
	}
	last, err := logs.LastIndex()
	if err != nil {
		return info, err
	}
	for i := info.SnapshotIndex + 1; i <= last; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue
			}
			return info, err
		}
		if l.Type == raft.LogCommand {
			f.Apply(&l)
		}
		info.LastIndex, info.LastTerm = l.Index, l.Term
	}
	info.Users = f.Accounts()
	return info, nil
}

// withRaftStores opens the raft log and snapshots of a stopped voter.
func withRaftStores(dir string, fn func(*raftboltdb.BoltStore, *raft.FileSnapshotStore) error) error {
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
		return fmt.Errorf("directory: %s holds no raft state: %w", dir, err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(dir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true},
	})
	if err != nil {
		return fmt.Errorf("directory: open raft.db (is the voter stopped?): %w", err)
	}
	defer store.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, newRaftLogger(slog.New(slog.DiscardHandler), slog.LevelError))
	if err != nil {
		return err
	}
	return fn(store, snaps)
}

// Recover rewrites the raft configuration of the stopped voter id in dir
// to voters (raft.RecoverCluster), for a cluster that lost its quorum for
// good: started again, the voter forms a cluster with those voters only
// (usually itself alone; the others join afresh). Every entry in its log
// counts as committed, so writes acknowledged by the lost quorum that
// never reached this voter are lost: recover the survivor with the
// highest InspectRaft LastIndex. A folder whose voter was removed is
// refused.
func Recover(dir, id string, voters []RecoverVoter, log *slog.Logger) (RecoverInfo, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkRemoved(dir); err != nil {
		return RecoverInfo{}, err
	}
	cfg := raft.Configuration{}
	self := false
	for _, v := range voters {
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v.ID), Address: raft.ServerAddress(v.RaftAddr)})
		self = self || v.ID == id
	}
	if !self {
		return RecoverInfo{}, fmt.Errorf("directory: recover: the voters must include this voter (%s)", id)
	}
	var info RecoverInfo
	err := withRaftStores(dir, func(logs *raftboltdb.BoltStore, snaps *raft.FileSnapshotStore) error {
		rc := raft.DefaultConfig()
		rc.LocalID = raft.ServerID(id)
		rc.Logger = newRaftLogger(log, slog.LevelWarn)
		f := state.New(log, placement.Policy{}, state.Hooks{})
		_, trans := raft.NewInmemTransport(raft.ServerAddress(id))
		if err := raft.RecoverCluster(rc, f, logs, logs, snaps, trans, cfg); err != nil {
			return fmt.Errorf("directory: recover: %w", err)
		}
		var err error
		info, err = replay(state.New(slog.New(slog.DiscardHandler), placement.Policy{}, state.Hooks{}), logs, snaps)
		return err
	})
	return info, err
}
