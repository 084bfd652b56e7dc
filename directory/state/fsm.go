package state

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/directory/placement"
)

// FSM is the directory's raft state machine: accounts, the cluster state
// (storage nodes, replica sets, settings, voters) and the published token
// signing keys. It does no IO except reading and writing the snapshot
// streams raft hands it, and never reads a clock: all times come inside
// commands, and placement's clock is the raft index of the entry being
// applied. Apply, Snapshot and Restore are called by raft (Apply from its
// FSM goroutine only); the read methods may be called concurrently from
// any goroutine and answer from the state as last applied.
type FSM struct {
	log       *slog.Logger
	placement placement.Policy
	hooks     Hooks
	// pending collects the set changes of the entry being applied, for
	// hooks.SetsChanged.
	pending []SetChange

	mu       sync.RWMutex
	accounts map[string]*Account
	// cl holds storage nodes, assignments, settings and voters
	// (cluster.go); keys the published signing keys by kid (keys.go).
	cl   clusterState
	keys map[string]*SigningKey
	// invites holds the unused invite codes by hash (invites.go).
	invites map[string]*Invite
	// deleted holds the tombstones of recently deleted account names
	// (DeleteUser, TombstoneTTL).
	deleted map[string]Tombstone
	// sync holds the Sync 1.5 records by FxA uid, syncSeq the last uid
	// given (sync.go); uids are never reused.
	sync    map[string]*SyncUser
	syncSeq uint64
	// index is the raft index of the last command entry applied (during
	// Apply: of the entry being applied), placement's clock.
	index uint64

	// undecodable counts entries that could not be decoded (unknown type
	// or version, or malformed); each is also logged at ERROR level.
	undecodable atomic.Uint64
}

var _ raft.FSM = (*FSM)(nil)

// Hooks are the FSM's calls into its owner. Each runs on raft's apply
// goroutine with the FSM's lock held: it must be quick and must not call
// back into the FSM. Nil hooks are skipped.
type Hooks struct {
	// Revoked is called after every committed command that invalidates a
	// user's credentials (account deleted, password changed or reset),
	// with the account name, and with "" after a snapshot restore.
	Revoked func(user string)
	// SetsChanged is called after every applied entry that changed
	// replica sets (members, their filling state or epochs, leaving
	// lists), with the changes in the order they were made. The slice is
	// the caller's to keep.
	SetsChanged func(changes []SetChange)
	// Undecodable is called after an entry could not be decoded (and was
	// not applied), with its raft index and the decode error. From then
	// on Snapshot refuses, so the entry stays in the log for a build
	// that decodes it.
	Undecodable func(index uint64, err error)
}

// New returns an empty FSM. Allocation uses policy (its Now is ignored:
// the FSM sets it to the raft index).
func New(log *slog.Logger, policy placement.Policy, hooks Hooks) *FSM {
	return &FSM{
		log: log, placement: policy, hooks: hooks,
		accounts: make(map[string]*Account), cl: newClusterState(), keys: make(map[string]*SigningKey),
		invites: make(map[string]*Invite), deleted: make(map[string]Tombstone),
		sync: make(map[string]*SyncUser),
	}
}

// Apply applies one committed log entry. The result is an error (nil on
// success) for a single command, or a []error with one result per
// command for a Batch. An entry that does not decode yields its decode
// error (an *UnknownCommandError for an unknown type or version) and
// changes nothing. Entries other than commands (barriers, no-ops) give nil.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		f.undecodable.Add(1)
		typ, ver := -1, -1
		if len(l.Data) >= 2 {
			typ, ver = int(l.Data[0]), int(l.Data[1])
		}
		f.log.Error("directory: raft entry not applied: this build cannot decode it; "+
			"replicas running other versions may diverge",
			"index", l.Index, "term", l.Term, "type", typ, "version", ver, "err", err)
		if f.hooks.Undecodable != nil {
			f.hooks.Undecodable(l.Index, err)
		}
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = l.Index
	defer f.flushChanges()
	if b, ok := cmd.(Batch); ok {
		res := make([]error, len(b.Commands))
		for i, c := range b.Commands {
			res[i] = f.applyOne(c)
		}
		return res
	}
	return f.applyOne(cmd)
}

// flushChanges hands the entry's set changes to the SetsChanged hook;
// f.mu is held.
func (f *FSM) flushChanges() {
	if len(f.pending) > 0 && f.hooks.SetsChanged != nil {
		f.hooks.SetsChanged(f.pending)
	}
	f.pending = nil
}

// applyOne applies one non-batch command; f.mu is held.
func (f *FSM) applyOne(c Command) error {
	switch c.(type) {
	case CreateUser, DeleteUser, SetPassword, SetEmail, SetResetCode, ClearResetCode, ResetPassword:
		return f.applyAccount(c)
	case CreateInvite:
		return f.applyInvite(c.(CreateInvite))
	case RegisterNode, ApproveNode, SetNodeState, RetireNode, FinishDrain, SetSettings, SetVoter:
		return f.applyCluster(c)
	case NodeReport, StartTransfer, FinishLeave:
		return f.applySets(c)
	case PublishKey, RetireKey:
		return f.applyKey(c)
	case SetNodeHawkKey, SyncLogin:
		return f.applySync(c)
	case RemoveVoter, MarkRestored, UndrainNode, RetireDrained:
		return f.applyLifecycle(c)
	}
	// DecodeCommand only returns known commands and rejects nested
	// batches, so this is a programming error in this package.
	return fmt.Errorf("%w: %v cannot be applied here", ErrMalformedCommand, c.Type())
}

// AppliedIndex is the raft index of the last command entry this FSM has
// applied. Unlike raft's AppliedIndex, which raft advances before its FSM
// goroutine has run the entry, a reader that sees index i here also sees
// the effects of entry i (Apply holds the lock while it applies). A
// snapshot restore does not change it.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// Undecodable returns the number of entries Apply could not decode.
func (f *FSM) Undecodable() uint64 { return f.undecodable.Load() }
