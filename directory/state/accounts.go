package state

import (
	"crypto/subtle"
	"fmt"

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
}

// ResetCodeValid reports whether codeHash is a's pending, unexpired reset
// code at time now (Unix seconds). The comparison takes constant time.
func (a *Account) ResetCodeValid(codeHash string, now int64) bool {
	if a.ResetCodeHash == "" || now >= a.ResetExpires {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(a.ResetCodeHash), []byte(codeHash)) == 1
}

// CreateUser creates an account. Fails with api.ErrUserExists if Name is
// taken. The FSM allocates the user's replica set (see FSM.Apply).
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
}

// DeleteUser removes an account. Fails with api.ErrUserNotFound.
type DeleteUser struct {
	Name string `json:"n"`
}

// SetPassword replaces an account's hash and drops any pending reset
// code. Fails with api.ErrUserNotFound.
type SetPassword struct {
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
// api.ErrUserNotFound.
type SetResetCode struct {
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

func (CreateUser) version() uint8     { return commandV1 }
func (DeleteUser) version() uint8     { return commandV1 }
func (SetPassword) version() uint8    { return commandV1 }
func (SetEmail) version() uint8       { return commandV1 }
func (SetResetCode) version() uint8   { return commandV1 }
func (ClearResetCode) version() uint8 { return commandV1 }
func (ResetPassword) version() uint8  { return commandV1 }

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
		if err := f.allocate(c.Name, c.Node); err != nil {
			return err
		}
		f.accounts[c.Name] = &Account{
			Name: c.Name, Hash: c.Hash, Email: c.Email, Created: c.Created, Node: c.Node,
		}
		return nil
	case DeleteUser:
		if _, ok := f.accounts[c.Name]; !ok {
			return api.ErrUserNotFound
		}
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
			return nil
		}))
	}
	return fmt.Errorf("%w: %v is not an account command", ErrMalformedCommand, c.Type())
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

// Accounts returns the number of accounts.
func (f *FSM) Accounts() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.accounts)
}
