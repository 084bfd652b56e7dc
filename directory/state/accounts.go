package state

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/placement"
)

// Account is one user's record. Records stored in the FSM are never
// modified in place (a change stores a new copy), so a snapshot can share
// them with later applies without locking; readers get copies.
type Account struct {
	Name string `json:"name"`
	// Hash is the encoded argon2id password hash.
	Hash  string `json:"hash"`
	Email string `json:"email,omitempty"`
	// Created is the creation time in Unix seconds (proposer's clock).
	Created int64 `json:"created"`
	// Node is the fallback storage node base URL ("" = none): the node of
	// a user created while no storage node was registered.
	Node string `json:"node,omitempty"`
	// ResetCodeHash is the hex SHA-256 of the pending reset code, or "".
	ResetCodeHash string `json:"reset_code_hash,omitempty"`
	// ResetExpires is when the pending reset code expires (Unix seconds).
	ResetExpires int64 `json:"reset_expires,omitempty"`
	// Resets are the times (Unix seconds, oldest first) of the reset
	// codes issued within the window of the last SetResetCode with a
	// limit: the per-account limit on reset mails counts them.
	Resets []int64 `json:"resets,omitempty"`
	// CredsAt is when the credentials last changed (creation, password
	// set or reset), Unix seconds of the proposer's clock; 0 in records
	// written before it was kept (Created stands in for it).
	CredsAt int64 `json:"creds_at,omitempty"`
	// CredsIndex is the raft index of the entry that last changed the
	// credentials (the creation included); 0 in records written before it
	// was kept.
	CredsIndex uint64 `json:"creds_index,omitempty"`
	// FxA is, for the account of a Sync 1.5 record (SyncLogin), the
	// Firefox account's uid; such an account has no password (Hash is
	// empty) and is reached with Hawk credentials only. Snapshot
	// version 5.
	FxA string `json:"fxa,omitempty"`
}

// Credentials returns the account's api.CredentialState: tokens issued
// at or before its ChangedAt are revoked, a cached Basic answer whose
// generation differs is stale.
func (a *Account) Credentials() api.CredentialState {
	return api.CredentialState{Exists: true, ChangedAt: max(a.CredsAt, a.Created), Gen: a.CredsIndex}
}

// ResetWait reports whether a (limit max per window seconds) may be
// sent another reset code at now: ok, or how many seconds until the
// oldest counted one leaves the window. max <= 0 means no limit.
func (a *Account) ResetWait(now int64, max int, window int64) (wait int64, ok bool) {
	if max <= 0 {
		return 0, true
	}
	recent := 0
	oldest := int64(0)
	for _, t := range a.Resets {
		if t > now-window {
			if recent == 0 {
				oldest = t
			}
			recent++
		}
	}
	if recent < max {
		return 0, true
	}
	return oldest + window - now, false
}

// ErrTooManyResets means an account was sent as many reset codes as its
// limit allows within the window (SetResetCode).
var ErrTooManyResets = errors.New("directory: too many password reset mails for the account")

// MaxResetTimes bounds Account.Resets, whatever limit a command asks for.
const MaxResetTimes = 64

// ResetCodeValid reports whether codeHash is a's pending, unexpired reset
// code at time now (Unix seconds). The comparison takes constant time.
func (a *Account) ResetCodeValid(codeHash string, now int64) bool {
	if a.ResetCodeHash == "" || now >= a.ResetExpires {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(a.ResetCodeHash), []byte(codeHash)) == 1
}

// CreateUser creates an account. Fails with api.ErrUserExists if Name is
// taken, api.ErrBadInvite if Invite names no unexpired invite (at
// Created). The FSM allocates the user's replica set (see FSM.Apply) and
// uses the invite up. Version 2 adds Invite; without one it is written as
// version 1.
type CreateUser struct {
	Name string `json:"n"`
	// Hash is the encoded argon2id hash of the password.
	Hash  string `json:"h"`
	Email string `json:"e,omitempty"`
	// Created is the proposer's clock in Unix seconds.
	Created int64 `json:"c"`
	// Node is the fallback storage node base URL, kept when no storage
	// node is registered or none has room.
	Node string `json:"node,omitempty"`
	// Invite is the hash of the invite code (InviteHash) the account is
	// created with, "" for none (version 2).
	Invite string `json:"inv,omitempty"`
}

// createUserV1 is the version 1 body of CreateUser.
type createUserV1 struct {
	Name    string `json:"n"`
	Hash    string `json:"h"`
	Email   string `json:"e,omitempty"`
	Created int64  `json:"c"`
	Node    string `json:"node,omitempty"`
}

// DeleteUser removes an account. Fails with api.ErrUserNotFound. Version
// 2 adds At, the proposer's time of the deletion: the state keeps, for
// TombstoneTTL, a floor for the credential time of an account created
// again under the name (every token of the deleted one was issued at or
// before it). Without At it is written as version 1.
type DeleteUser struct {
	Name string `json:"n"`
	At   int64  `json:"at,omitempty"`
}

// deleteUserV1 is the version 1 body of DeleteUser.
type deleteUserV1 struct {
	Name string `json:"n"`
}

// Tombstone is what the state remembers of a deleted account for
// TombstoneTTL: the floor of the credential time of an account created
// again under its name (every token of the deleted one has iat <= Floor)
// and the nodes that held it, which a re-creation makes wipe the name
// first. Records are never modified in place.
type Tombstone struct {
	Name  string   `json:"name"`
	Floor int64    `json:"floor"`
	Nodes []string `json:"nodes,omitempty"`
}

// Tombstone returns the tombstone of a deleted account name, if any.
func (f *FSM) Tombstone(name string) (Tombstone, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ts, ok := f.deleted[name]
	return ts, ok
}

// TombstoneTTL is how long the state remembers a deleted account's
// credential floor (Unix seconds of the deletion's At): longer than any
// token lives (api.MaxTokenLifetime) plus the clock skew nodes allow.
const TombstoneTTL = 2 * 60 * 60

// SetPassword replaces an account's hash and drops any pending reset
// code. Fails with api.ErrUserNotFound. Version 2 adds At, the time of
// the change (Account.CredsAt); without it it is written as version 1.
type SetPassword struct {
	Name string `json:"n"`
	Hash string `json:"h"`
	// At is the proposer's clock in Unix seconds (version 2).
	At int64 `json:"at,omitempty"`
}

// setPasswordV1 is the version 1 body of SetPassword.
type setPasswordV1 struct {
	Name string `json:"n"`
	Hash string `json:"h"`
}

// SetEmail replaces an account's e-mail address. Fails with
// api.ErrUserNotFound.
type SetEmail struct {
	Name  string `json:"n"`
	Email string `json:"e"`
}

// SetResetCode stores the SHA-256 (hex) of a new reset code and its expiry
// (Unix seconds), replacing any earlier code. Fails with
// api.ErrUserNotFound. Version 2 adds the limit on reset mails: at Now
// (the proposer's clock), an account sent Max codes within the last
// Window seconds gets ErrTooManyResets and keeps its pending code; the
// times are kept in Account.Resets. Without Now it is written as version
// 1 (no limit).
type SetResetCode struct {
	Name     string `json:"n"`
	CodeHash string `json:"ch"`
	Expires  int64  `json:"x"`
	Now      int64  `json:"now,omitempty"`
	Max      int    `json:"max,omitempty"`
	Window   int64  `json:"win,omitempty"`
}

// setResetCodeV1 is the version 1 body of SetResetCode.
type setResetCodeV1 struct {
	Name     string `json:"n"`
	CodeHash string `json:"ch"`
	Expires  int64  `json:"x"`
}

// ClearResetCode drops a pending reset code (no-op when none). Fails with
// api.ErrUserNotFound.
type ClearResetCode struct {
	Name string `json:"n"`
}

// ResetPassword sets Hash as the account's password and clears the reset
// code, if CodeHash is the pending code's hash and it has not expired at
// Now (Unix seconds, the proposer's clock). Fails with api.ErrUserNotFound
// or api.ErrBadResetCode.
type ResetPassword struct {
	Name     string `json:"n"`
	CodeHash string `json:"ch"`
	Hash     string `json:"h"`
	Now      int64  `json:"now"`
}

// Type implements Command.
func (CreateUser) Type() CommandType { return CmdCreateUser }

// Type implements Command.
func (DeleteUser) Type() CommandType { return CmdDeleteUser }

// Type implements Command.
func (SetPassword) Type() CommandType { return CmdSetPassword }

// Type implements Command.
func (SetEmail) Type() CommandType { return CmdSetEmail }

// Type implements Command.
func (SetResetCode) Type() CommandType { return CmdSetResetCode }

// Type implements Command.
func (ClearResetCode) Type() CommandType { return CmdClearResetCode }

// Type implements Command.
func (ResetPassword) Type() CommandType { return CmdResetPassword }

func (c CreateUser) version() uint8 {
	if c.Invite != "" {
		return commandV2
	}
	return commandV1
}
func (c DeleteUser) version() uint8 {
	if c.At != 0 {
		return commandV2
	}
	return commandV1
}
func (c SetPassword) version() uint8 {
	if c.At != 0 {
		return commandV2
	}
	return commandV1
}
func (SetEmail) version() uint8 { return commandV1 }
func (c SetResetCode) version() uint8 {
	if c.Now != 0 || c.Max != 0 || c.Window != 0 {
		return commandV2
	}
	return commandV1
}
func (ClearResetCode) version() uint8 { return commandV1 }
func (ResetPassword) version() uint8  { return commandV1 }

// The version 1 decoders of the commands with a version 2.
func decodeCreateUserV1(body []byte) (Command, error) {
	o, err := decodeStrict[createUserV1](CmdCreateUser, body)
	if err != nil {
		return nil, err
	}
	return CreateUser{Name: o.Name, Hash: o.Hash, Email: o.Email, Created: o.Created, Node: o.Node}, nil
}

func decodeDeleteUserV1(body []byte) (Command, error) {
	o, err := decodeStrict[deleteUserV1](CmdDeleteUser, body)
	if err != nil {
		return nil, err
	}
	return DeleteUser{Name: o.Name}, nil
}

func decodeSetPasswordV1(body []byte) (Command, error) {
	o, err := decodeStrict[setPasswordV1](CmdSetPassword, body)
	if err != nil {
		return nil, err
	}
	return SetPassword{Name: o.Name, Hash: o.Hash}, nil
}

func decodeSetResetCodeV1(body []byte) (Command, error) {
	o, err := decodeStrict[setResetCodeV1](CmdSetResetCode, body)
	if err != nil {
		return nil, err
	}
	return SetResetCode{Name: o.Name, CodeHash: o.CodeHash, Expires: o.Expires}, nil
}

// applyAccount applies an account command; f.mu is held.
func (f *FSM) applyAccount(c Command) error {
	switch c := c.(type) {
	case CreateUser:
		if c.Name == "" || c.Hash == "" {
			return fmt.Errorf("%w: CreateUser without name or hash", ErrMalformedCommand)
		}
		if _, ok := f.accounts[c.Name]; ok {
			return api.ErrUserExists
		}
		if c.Invite != "" && !f.inviteValid(c.Invite, c.Created) {
			return api.ErrBadInvite
		}
		if err := f.allocate(c.Name, c.Node); err != nil {
			return err
		}
		if c.Invite != "" {
			delete(f.invites, c.Invite)
		}
		// An account created again under a deleted name starts after
		// every token of the deleted one.
		credsAt := max(c.Created, f.deleted[c.Name].Floor)
		delete(f.deleted, c.Name)
		f.accounts[c.Name] = &Account{
			Name: c.Name, Hash: c.Hash, Email: c.Email, Created: c.Created, Node: c.Node,
			CredsAt: credsAt, CredsIndex: f.index,
		}
		return nil
	case DeleteUser:
		old, ok := f.accounts[c.Name]
		if !ok {
			return api.ErrUserNotFound
		}
		if c.At != 0 {
			for name, ts := range f.deleted {
				if ts.Floor < c.At-TombstoneTTL {
					delete(f.deleted, name)
				}
			}
		}
		// Tokens were issued at or before the deletion, or (right after a
		// change) at the change's time + 1. The nodes that held the
		// account (members and leaving) are named for a re-creation to
		// wipe first.
		var nodes []string
		if set := f.cl.Sets[c.Name]; set != nil {
			nodes = append(set.IDs(), set.Leaving...)
			slices.Sort(nodes)
		}
		f.deleted[c.Name] = Tombstone{Name: c.Name, Floor: max(c.At, old.Credentials().ChangedAt+1), Nodes: nodes}
		delete(f.accounts, c.Name)
		f.setReplicas(c.Name, placement.Set{})
		return f.revoke(c.Name, nil)
	case SetPassword:
		if c.Hash == "" {
			return fmt.Errorf("%w: SetPassword without hash", ErrMalformedCommand)
		}
		return f.revoke(c.Name, f.update(c.Name, func(a *Account) error {
			a.Hash = c.Hash
			a.ResetCodeHash, a.ResetExpires = "", 0
			a.CredsAt, a.CredsIndex = changedAfter(a, c.At), f.index
			return nil
		}))
	case SetEmail:
		return f.update(c.Name, func(a *Account) error {
			a.Email = c.Email
			return nil
		})
	case SetResetCode:
		if c.CodeHash == "" {
			return fmt.Errorf("%w: SetResetCode without code", ErrMalformedCommand)
		}
		return f.update(c.Name, func(a *Account) error {
			if c.Max > 0 {
				if _, ok := a.ResetWait(c.Now, c.Max, c.Window); !ok {
					return ErrTooManyResets
				}
				a.Resets = recentResets(a.Resets, c.Now, c.Window, c.Max)
			}
			a.ResetCodeHash, a.ResetExpires = c.CodeHash, c.Expires
			return nil
		})
	case ClearResetCode:
		return f.update(c.Name, func(a *Account) error {
			a.ResetCodeHash, a.ResetExpires = "", 0
			return nil
		})
	case ResetPassword:
		if c.Hash == "" {
			return fmt.Errorf("%w: ResetPassword without hash", ErrMalformedCommand)
		}
		return f.revoke(c.Name, f.update(c.Name, func(a *Account) error {
			if !a.ResetCodeValid(c.CodeHash, c.Now) {
				return api.ErrBadResetCode
			}
			a.Hash = c.Hash
			a.ResetCodeHash, a.ResetExpires = "", 0
			a.CredsAt, a.CredsIndex = changedAfter(a, c.Now), f.index
			return nil
		}))
	}
	return fmt.Errorf("%w: %v is not an account command", ErrMalformedCommand, c.Type())
}

// changedAfter is the credential time of a change proposed at at: at,
// or later than every token issued before it. Tokens are issued with iat
// at least the last change's time + 1 (directory.IssueToken), possibly
// ahead of the clock, so the new time is at least that: the revocation
// rule (iat <= ChangedAt) then covers every token issued before the
// change, and it never goes back.
func changedAfter(a *Account, at int64) int64 {
	return max(at, a.Credentials().ChangedAt+1)
}

// recentResets returns the reset times of old within the window ending
// at now, plus now, keeping at most max (and MaxResetTimes), in a new
// slice (records are never modified in place).
func recentResets(old []int64, now, window int64, max int) []int64 {
	out := make([]int64, 0, len(old)+1)
	for _, t := range old {
		if t > now-window {
			out = append(out, t)
		}
	}
	out = append(out, now)
	keep := min(max, MaxResetTimes)
	if len(out) > keep {
		out = out[len(out)-keep:]
	}
	return out
}

// update replaces the named account with a modified copy; f.mu is held.
func (f *FSM) update(name string, fn func(*Account) error) error {
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

// revoke reports a credential change for user if it was applied.
func (f *FSM) revoke(user string, err error) error {
	if err == nil && f.hooks.Revoked != nil {
		f.hooks.Revoked(user)
	}
	return err
}

// Account returns a copy of the named account.
func (f *FSM) Account(name string) (Account, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.accounts[name]
	if !ok {
		return Account{}, false
	}
	return *a, true
}

// Credentials returns the named account's api.CredentialState (Exists
// false for an unknown name).
func (f *FSM) Credentials(name string) api.CredentialState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.accounts[name]
	if !ok {
		return api.CredentialState{}
	}
	return a.Credentials()
}

// Accounts returns the number of accounts.
func (f *FSM) Accounts() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.accounts)
}
