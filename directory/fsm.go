package directory

import (
	"bufio"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/placement"
)

// account is one user's record in the FSM. Values stored in fsm.accounts
// are never modified in place (a change stores a new copy), so a snapshot
// can share them with later applies without locking.
type account struct {
	Name string `json:"name"`
	// Hash is the encoded argon2id password hash.
	Hash  string `json:"hash"`
	Email string `json:"email,omitempty"`
	// Created is the creation time in Unix seconds (proposer's clock).
	Created int64 `json:"created"`
	// Node is the assigned storage node base URL ("" = none).
	Node string `json:"node,omitempty"`
	// ResetCodeHash is the hex SHA-256 of the pending reset code, or "".
	ResetCodeHash string `json:"reset_code_hash,omitempty"`
	// ResetExpires is when the pending reset code expires (Unix seconds).
	ResetExpires int64 `json:"reset_expires,omitempty"`
}

// fsm is the directory's raft state machine. It does no IO except reading
// and writing the snapshot streams raft hands it, and never reads a clock:
// all times come inside commands. Apply is called from raft's FSM goroutine
// only; the read methods may be called concurrently from any goroutine.
type fsm struct {
	log *slog.Logger

	mu       sync.RWMutex
	accounts map[string]*account
	// cl holds storage nodes, assignments, settings and voters
	// (cluster_fsm.go); index is the raft index of the entry being
	// applied, placement's deterministic clock; placement the tunables.
	cl        clusterState
	index     uint64
	placement placement.Policy

	// keys are the published token signing keys by kid (keys.go).
	keys map[string]*signingKey

	// revoked, when non-nil, hears of every committed change that
	// invalidates a user's credentials ("" = all users).
	revoked func(user string)

	// unknown counts entries that could not be decoded (unknown type or
	// version, or malformed); each is also logged at ERROR level.
	unknown atomic.Uint64
}

func newFSM(log *slog.Logger, revoked func(user string)) *fsm {
	return &fsm{log: log, accounts: make(map[string]*account), revoked: revoked, cl: newClusterState(),
		keys: make(map[string]*signingKey)}
}

// revoke reports a credential change for user if it was applied.
func (f *fsm) revoke(user string, err error) error {
	if err == nil && f.revoked != nil {
		f.revoked(user)
	}
	return err
}

var _ raft.FSM = (*fsm)(nil)

// Apply applies one committed log entry. The result is an error (nil on
// success) for a single command, or a []error with one result per
// command for a Batch. An entry that does not decode yields its decode
// error (an *UnknownCommandError for an unknown type or version) and
// changes nothing.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		f.unknown.Add(1)
		typ, ver := -1, -1
		if len(l.Data) >= 2 {
			typ, ver = int(l.Data[0]), int(l.Data[1])
		}
		f.log.Error("directory: raft entry not applied: this build cannot decode it; "+
			"replicas running other versions may diverge",
			"index", l.Index, "term", l.Term, "type", typ, "version", ver, "err", err)
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = l.Index
	if b, ok := cmd.(Batch); ok {
		res := make([]error, len(b.Commands))
		for i, c := range b.Commands {
			res[i] = f.applyOne(c)
		}
		return res
	}
	return f.applyOne(cmd)
}

// appliedIndex is the raft index of the last command entry this FSM has
// applied. Unlike raft's AppliedIndex, which raft advances before its FSM
// goroutine has run the entry, a reader that sees index i here also sees
// the effects of entry i (Apply holds f.mu while it applies).
func (f *fsm) appliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// applyOne applies one non-batch command; f.mu is held.
func (f *fsm) applyOne(c Command) error {
	switch c := c.(type) {
	case CreateUser:
		if c.Name == "" || c.Hash == "" {
			return fmt.Errorf("%w: CreateUser without name or hash", ErrMalformedCommand)
		}
		if _, ok := f.accounts[c.Name]; ok {
			return api.ErrUserExists
		}
		if err := f.allocate(c.Name, c.Node); err != nil {
			return err
		}
		f.accounts[c.Name] = &account{
			Name: c.Name, Hash: c.Hash, Email: c.Email, Created: c.Created, Node: c.Node,
		}
		return nil
	case DeleteUser:
		if _, ok := f.accounts[c.Name]; !ok {
			return api.ErrUserNotFound
		}
		delete(f.accounts, c.Name)
		f.setAssignment(c.Name, nil)
		return f.revoke(c.Name, nil)
	case SetPassword:
		if c.Hash == "" {
			return fmt.Errorf("%w: SetPassword without hash", ErrMalformedCommand)
		}
		return f.revoke(c.Name, f.update(c.Name, func(a *account) error {
			a.Hash = c.Hash
			a.ResetCodeHash, a.ResetExpires = "", 0
			return nil
		}))
	case SetEmail:
		return f.update(c.Name, func(a *account) error {
			a.Email = c.Email
			return nil
		})
	case SetResetCode:
		if c.CodeHash == "" {
			return fmt.Errorf("%w: SetResetCode without code", ErrMalformedCommand)
		}
		return f.update(c.Name, func(a *account) error {
			a.ResetCodeHash, a.ResetExpires = c.CodeHash, c.Expires
			return nil
		})
	case ClearResetCode:
		return f.update(c.Name, func(a *account) error {
			a.ResetCodeHash, a.ResetExpires = "", 0
			return nil
		})
	case ResetPassword:
		if c.Hash == "" {
			return fmt.Errorf("%w: ResetPassword without hash", ErrMalformedCommand)
		}
		return f.revoke(c.Name, f.update(c.Name, func(a *account) error {
			if !resetCodeValid(a, c.CodeHash, c.Now) {
				return api.ErrBadResetCode
			}
			a.Hash = c.Hash
			a.ResetCodeHash, a.ResetExpires = "", 0
			return nil
		}))
	case PublishKey, RetireKey:
		return f.applyKey(c)
	case RegisterNode, ApproveNode, SetNodeState, RetireNode, FinishDrain, SetSettings, SetVoter:
		return f.applyCluster(c)
	}
	// DecodeCommand only returns known commands and rejects nested
	// batches, so this is a programming error in this package.
	return fmt.Errorf("%w: %v cannot be applied here", ErrMalformedCommand, c.Type())
}

// resetCodeValid reports whether codeHash is a's pending, unexpired reset
// code at time now (Unix seconds).
func resetCodeValid(a *account, codeHash string, now int64) bool {
	if a.ResetCodeHash == "" || now >= a.ResetExpires {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(a.ResetCodeHash), []byte(codeHash)) == 1
}

// update replaces the named account with a modified copy; f.mu is held.
func (f *fsm) update(name string, fn func(*account) error) error {
	old, ok := f.accounts[name]
	if !ok {
		return api.ErrUserNotFound
	}
	a := *old
	if err := fn(&a); err != nil {
		return err
	}
	f.accounts[name] = &a
	return nil
}

// get returns a copy of the named account.
func (f *fsm) get(name string) (account, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.accounts[name]
	if !ok {
		return account{}, false
	}
	return *a, true
}

// count returns the number of accounts.
func (f *fsm) count() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.accounts)
}

// Snapshot format: JSON lines. The first line is a snapshotHeader, then
// exactly header.Accounts lines of account objects sorted by name, then
// EOF. A later version adds sections (nodes, assignments) after the
// accounts and announces their counts in the header.
const (
	snapshotFormat  = "hce-directory"
	snapshotVersion = 2
)

// snapshotHeader starts a snapshot. Version 2 adds Cluster: when true,
// one clusterState object follows the accounts. Version 1 stays readable.
type snapshotHeader struct {
	Format   string `json:"format"`
	Version  int    `json:"version"`
	Accounts int    `json:"accounts"`
	Cluster  bool   `json:"cluster,omitempty"`
	// Keys (version 2) is the number of published signing keys that
	// follow the cluster state (or the accounts); absent means none.
	Keys int `json:"keys,omitempty"`
}

// Snapshot captures the state in O(accounts) pointer copies under the
// read lock; the records themselves are shared (they are immutable) and
// encoded later by Persist, concurrently with further applies.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	accts := make([]*account, 0, len(f.accounts))
	for _, a := range f.accounts {
		accts = append(accts, a)
	}
	cl := f.cl.clone()
	keys := sortedKeys(f.keys)
	f.mu.RUnlock()
	return &fsmSnapshot{accounts: accts, cl: &cl, keys: keys}, nil
}

// Restore replaces the whole state with the snapshot read from rc. On
// error the state is left unchanged.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	accts, cl, keys, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.accounts = accts
	f.cl = cl
	f.keys = keys
	f.mu.Unlock()
	if f.revoked != nil {
		f.revoked("")
	}
	return nil
}

func readSnapshot(r io.Reader) (map[string]*account, clusterState, map[string]*signingKey, error) {
	cl := newClusterState()
	keys := make(map[string]*signingKey)
	accts, err := readSnapshotInto(r, &cl, keys)
	return accts, cl, keys, err
}

func readSnapshotInto(r io.Reader, cl *clusterState, keys map[string]*signingKey) (map[string]*account, error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 64<<10))
	dec.DisallowUnknownFields()
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("directory: snapshot header: %w", err)
	}
	if h.Format != snapshotFormat || h.Version < 1 || h.Version > snapshotVersion || h.Accounts < 0 ||
		(h.Cluster && h.Version < 2) || (h.Keys != 0 && h.Version < 2) {
		return nil, fmt.Errorf("directory: unsupported snapshot %q version %d", h.Format, h.Version)
	}
	accts := make(map[string]*account, min(h.Accounts, 1<<20))
	for i := 0; i < h.Accounts; i++ {
		a := new(account)
		if err := dec.Decode(a); err != nil {
			return nil, fmt.Errorf("directory: snapshot account %d of %d: %w", i, h.Accounts, err)
		}
		if a.Name == "" {
			return nil, fmt.Errorf("directory: snapshot account %d has no name", i)
		}
		if _, dup := accts[a.Name]; dup {
			return nil, fmt.Errorf("directory: snapshot account %q twice", a.Name)
		}
		accts[a.Name] = a
	}
	if h.Cluster {
		if err := dec.Decode(cl); err != nil {
			return nil, fmt.Errorf("directory: snapshot cluster state: %w", err)
		}
		if err := cl.validate(); err != nil {
			return nil, err
		}
		for u := range cl.Assign {
			if _, ok := accts[u]; !ok {
				return nil, fmt.Errorf("directory: snapshot assigns unknown user %q", u)
			}
		}
	}
	if err := readSnapshotKeys(dec, h.Keys, keys); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("directory: snapshot has data after the announced accounts")
	}
	return accts, nil
}

// fsmSnapshot is a point-in-time view of the accounts.
type fsmSnapshot struct {
	accounts []*account
	cl       *clusterState // nil: no cluster section
	keys     []*signingKey // published signing keys, sorted by kid
}

// Persist streams the snapshot to sink as JSON lines, sorted by name so
// that equal states give equal bytes.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("directory: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	slices.SortFunc(s.accounts, func(a, b *account) int { return strings.Compare(a.Name, b.Name) })
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(snapshotHeader{Format: snapshotFormat, Version: snapshotVersion,
		Accounts: len(s.accounts), Cluster: s.cl != nil, Keys: len(s.keys)}); err != nil {
		return err
	}
	for _, a := range s.accounts {
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	if s.cl != nil {
		// encoding/json sorts map keys, so equal states give equal bytes.
		if err := enc.Encode(s.cl); err != nil {
			return err
		}
	}
	for _, k := range s.keys {
		if err := enc.Encode(k); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {}
