package state

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/hce-sync/hce/api/tokenserver"
	"github.com/hce-sync/hce/directory/placement"
)

// Sync 1.5: the tokenserver's user records and the storage nodes' Hawk
// keys. Command types 60 to 69 belong to this family.
const (
	// CmdSetNodeHawkKey records a storage node's X25519 public key, to
	// which the Hawk keys of its users' Sync 1.5 credentials are sealed.
	CmdSetNodeHawkKey CommandType = 60
	// CmdSyncLogin creates or updates the Sync user record of a Firefox
	// account (the tokenserver's consistency rules, applied again here).
	CmdSyncLogin CommandType = 61
)

func init() {
	codecs[CmdSetNodeHawkKey] = v1[SetNodeHawkKey]("SetNodeHawkKey")
	codecs[CmdSyncLogin] = v1[SyncLogin]("SyncLogin")
}

// HawkKeySize is the size of a node's X25519 public key.
const HawkKeySize = 32

// SetNodeHawkKey records Key, a storage node's X25519 public key, in its
// record (replacing an earlier one: rotation). Credentials sealed to the
// old key stop opening on the node once it uses the new one; the
// tokenserver seals new ones to the key recorded here. Fails with
// ErrUnknownNode or ErrNodeRetired.
type SetNodeHawkKey struct {
	ID  string `json:"id"`
	Key []byte `json:"k"`
}

// SyncLogin records a token request of a Firefox account (FxA, the
// account's uid at the accounts server) that the proposer verified: its
// generation, keys_changed_at and client state. The state machine applies
// tokenserver.Decide to the stored record again:
//
//   - no record (or its account is gone): a new record with the next uid
//     and a new account, SyncAccountName(uid), placed like any user;
//   - Update: the record takes the new generation and keys_changed_at; a
//     generation above a stored non-zero one (a password change at the
//     accounts server) is a credential change of the account: every Hawk
//     credential issued before it is revoked;
//   - Replace (the client changed its keys): a new record with a new uid
//     and account, and the old account is deleted as DeleteUser would
//     (its data was encrypted with the old keys), leaving a tombstone;
//   - Keep: nothing changes.
//
// A request Decide refuses fails with ErrSyncRefused (the proposer
// decided on an older state; it decides again on the new one).
type SyncLogin struct {
	FxA           string `json:"fxa"`
	Generation    int64  `json:"g,omitempty"`
	KeysChangedAt int64  `json:"k,omitempty"`
	ClientState   string `json:"cs,omitempty"`
	// At is the proposer's clock in Unix seconds.
	At int64 `json:"at"`
	// Node is the fallback storage node URL of a new account, as for
	// CreateUser.
	Node string `json:"node,omitempty"`
}

// Type implements Command.
func (SetNodeHawkKey) Type() CommandType { return CmdSetNodeHawkKey }

// Type implements Command.
func (SyncLogin) Type() CommandType { return CmdSyncLogin }

func (SetNodeHawkKey) version() uint8 { return commandV1 }
func (SyncLogin) version() uint8      { return commandV1 }

// ErrSyncRefused means the tokenserver's rules refused a SyncLogin on the
// state it was applied to (another request changed the record first).
var ErrSyncRefused = errors.New("directory: sync login refused by the current record")

// MaxOldClientStates bounds the client states a record remembers of its
// replaced records (a client may not go back to one of them).
const MaxOldClientStates = 32

// maxFxAUID bounds an FxA uid (the access token's sub).
const maxFxAUID = 256

// SyncUser is the Sync 1.5 record of a Firefox account: its current
// numeric uid and the HCE account that holds its data, and what the
// tokenserver's rules need (tokenserver.UserState). Records are never
// modified in place.
type SyncUser struct {
	// FxA is the account's uid at the accounts server (the token's sub).
	FxA string `json:"fxa"`
	// UID is the current record's Sync uid.
	UID uint64 `json:"uid"`
	// Account is the HCE account of the current record.
	Account       string   `json:"account"`
	Generation    int64    `json:"gen,omitempty"`
	KeysChangedAt int64    `json:"kca,omitempty"`
	ClientState   string   `json:"cs,omitempty"`
	OldStates     []string `json:"old,omitempty"`
	// Created is when the current record was made (Unix s, proposer's
	// clock).
	Created int64 `json:"created"`
}

// UserState returns the record as tokenserver.Decide takes it.
func (u *SyncUser) UserState() *tokenserver.UserState {
	return &tokenserver.UserState{UID: u.UID, Generation: u.Generation, KeysChangedAt: u.KeysChangedAt,
		ClientState: u.ClientState, OldClientStates: slices.Clone(u.OldStates)}
}

// validate checks a record read from a snapshot.
func (u *SyncUser) validate() error {
	if u.FxA == "" || len(u.FxA) > maxFxAUID || u.UID == 0 || u.Account == "" || u.Generation < 0 ||
		u.KeysChangedAt < 0 || len(u.OldStates) > MaxOldClientStates {
		return fmt.Errorf("directory: snapshot sync user %q malformed", u.FxA)
	}
	return nil
}

// SyncAccountName is the HCE account name of Sync uid uid. No Weave
// user name has this form (those are 32 base32 characters).
func SyncAccountName(uid uint64) string { return "sync-" + strconv.FormatUint(uid, 10) }

// SyncUser returns a copy of the Sync record of the FxA uid fxa, and
// whether its account still exists (a record whose account was deleted
// is replaced by the next login).
func (f *FSM) SyncUser(fxa string) (SyncUser, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	u := f.sync[fxa]
	if u == nil {
		return SyncUser{}, false
	}
	if _, ok := f.accounts[u.Account]; !ok {
		return SyncUser{}, false
	}
	c := *u
	c.OldStates = slices.Clone(u.OldStates)
	return c, true
}

// SyncUsers returns the number of Sync records.
func (f *FSM) SyncUsers() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.sync)
}

// applySync applies a Sync 1.5 command; f.mu is held.
func (f *FSM) applySync(c Command) error {
	switch c := c.(type) {
	case SetNodeHawkKey:
		if len(c.Key) != HawkKeySize {
			return fmt.Errorf("%w: SetNodeHawkKey with a key of %d bytes", ErrMalformedCommand, len(c.Key))
		}
		n, err := f.liveNode(c.ID)
		if err != nil {
			return err
		}
		f.setNode(n, func(n *nodeRecord) { n.HawkKey = slices.Clone(c.Key) })
		return nil
	case SyncLogin:
		return f.syncLogin(c)
	}
	return fmt.Errorf("%w: %v is not a sync command", ErrMalformedCommand, c.Type())
}

func (f *FSM) syncLogin(c SyncLogin) error {
	if c.FxA == "" || len(c.FxA) > maxFxAUID {
		return fmt.Errorf("%w: SyncLogin without an FxA uid", ErrMalformedCommand)
	}
	old := f.sync[c.FxA]
	var stored *tokenserver.UserState
	if old != nil {
		if _, ok := f.accounts[old.Account]; ok {
			stored = old.UserState()
		}
	}
	out, err := tokenserver.Decide(stored, tokenserver.Claims{
		Generation: c.Generation, KeysChangedAt: c.KeysChangedAt, ClientState: c.ClientState})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSyncRefused, err)
	}
	switch out.Action {
	case tokenserver.Keep:
		return nil
	case tokenserver.Update:
		u := *old
		u.Generation, u.KeysChangedAt = out.Generation, out.KeysChangedAt
		f.sync[c.FxA] = &u
		if old.Generation > 0 && out.Generation > old.Generation {
			// A password change at the accounts server: credentials
			// issued before it are revoked.
			return f.revoke(u.Account, f.update(u.Account, func(a *Account) error {
				a.CredsAt, a.CredsIndex = changedAfter(a, c.At), f.index
				return nil
			}))
		}
		return nil
	}
	// Create or Replace: a new record, uid and account.
	seq := f.syncSeq
	uid, name := seq, ""
	for {
		uid++
		name = SyncAccountName(uid)
		if _, taken := f.accounts[name]; !taken {
			if _, dead := f.deleted[name]; !dead {
				break
			}
		}
	}
	if err := f.allocate(name, c.Node); err != nil {
		return err
	}
	f.syncSeq = uid
	u := &SyncUser{FxA: c.FxA, UID: uid, Account: name, Generation: out.Generation,
		KeysChangedAt: out.KeysChangedAt, ClientState: out.ClientState, Created: c.At}
	if old != nil {
		u.OldStates = slices.Clone(old.OldStates)
		if old.ClientState != "" && old.ClientState != out.ClientState && !slices.Contains(u.OldStates, old.ClientState) {
			u.OldStates = append(u.OldStates, old.ClientState)
		}
		if n := len(u.OldStates); n > MaxOldClientStates {
			u.OldStates = u.OldStates[n-MaxOldClientStates:]
		}
	}
	f.accounts[name] = &Account{Name: name, FxA: c.FxA, Created: c.At, Node: c.Node, CredsAt: c.At, CredsIndex: f.index}
	f.sync[c.FxA] = u
	if old != nil && old.Account != name {
		// The replaced record's account holds data under the old keys.
		f.deleteAccount(old.Account, c.At)
	}
	return nil
}

// deleteAccount removes an account as DeleteUser does (a tombstone naming
// the nodes that held it, the set released, its credentials revoked); a
// missing account is ignored. f.mu is held.
func (f *FSM) deleteAccount(name string, at int64) {
	old, ok := f.accounts[name]
	if !ok {
		return
	}
	var nodes []string
	if set := f.cl.Sets[name]; set != nil {
		nodes = append(set.IDs(), set.Leaving...)
		slices.Sort(nodes)
	}
	f.deleted[name] = Tombstone{Name: name, Floor: max(at, old.Credentials().ChangedAt+1), Nodes: nodes}
	delete(f.accounts, name)
	f.setReplicas(name, placement.Set{})
	_ = f.revoke(name, nil)
}

// SyncAccount reports whether account is the account of a Sync record
// (made by SyncLogin): such accounts have no password.
func (a *Account) SyncAccount() bool { return a.FxA != "" }
