package directory

import (
	"context"
	"fmt"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/state"
)

// UserAPIRetryAfter is the Retry-After, in seconds, of the 503 answers of
// a voter's Weave user API (UserAPIConfig). A voter's 503s are all
// short-lived: a write during a leader election (a few seconds at most),
// a user whose primary is down or still filling (until its backfill
// report or the node's return), a reset mail the mail server refused.
// Clients should come back within seconds, not after Mozilla's half hour
// for an overloaded storage backend.
const UserAPIRetryAfter = 5

// UserAPIConfig returns the configuration of the voter's Weave user API
// (api.NewUserHandler) over this directory: the accounts and the token
// endpoint, the directory's logger (so every 503 is logged with its crash
// id and error), UserAPIRetryAfter, and the reset code lifetime quoted on
// the reset form. The caller may change other fields (captcha, admin
// secret) before building the handler.
func (d *Directory) UserAPIConfig() api.UserConfig {
	c := api.DefaultUserConfig()
	c.Accounts = d
	c.Tokens = d
	c.Logger = d.log.With("component", "user-api")
	c.RetryAfter = UserAPIRetryAfter
	c.ResetCodeTTL = d.cfg.Accounts.ResetCodeTTL
	return c
}

// UserExists reports whether the account name is taken, from the local
// state.
func (d *Directory) UserExists(ctx context.Context, user string) (bool, error) {
	if d.closed.Load() {
		return false, ErrClosed
	}
	_, ok := d.state.Account(user)
	return ok, nil
}

// CreateUser hashes password (argon2id, outside raft) and proposes the
// account; the state machine gives it a replica set of registered storage
// nodes, or Accounts.NodeURL while there are none. api.ErrUserExists if
// the name is taken (checked locally first, and authoritatively by the
// state machine).
func (d *Directory) CreateUser(ctx context.Context, user, password, email string) error {
	if user == "" {
		return fmt.Errorf("directory: empty user name")
	}
	if _, ok := d.state.Account(user); ok {
		return api.ErrUserExists
	}
	hash, err := d.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	return d.write(ctx, state.CreateUser{
		Name: user, Hash: hash, Email: email,
		Created: d.cfg.Clock().Unix(), Node: d.cfg.Accounts.NodeURL,
	})
}

// DeleteUser removes an account; api.ErrUserNotFound if there is none.
// With Nodes.NotifyNodes, once the deletion is committed the nodes the
// user was assigned to (members and leaving nodes) are told to delete the
// user's records; DeleteUser
// waits up to a few seconds for them, and answers success anyway (a node
// that cannot be reached is logged).
func (d *Directory) DeleteUser(ctx context.Context, user string) error {
	// The members and the leaving nodes hold the user's records.
	set, _, _ := d.state.Assignment(user)
	r, _, _ := d.state.Replicas(user)
	set = append(set, r.Leaving...)
	if err := d.write(ctx, state.DeleteUser{Name: user}); err != nil {
		return err
	}
	done := d.notes.notify(user, set, true)
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
	a, ok := d.state.Account(user)
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
		d.auth.password.Add(1)
		return api.ErrUnauthorized
	}
	return nil
}

// StorageNode returns the URL of the node serving the user: the primary
// of its replica set when it is current and alive, the account's fallback
// URL when the user has no set ("" when none), api.ErrUserNotFound for an
// unknown user. When the primary is down or still filling (no member
// holding every acknowledged write is alive) it returns an error wrapping
// api.ErrUnavailable: clients are told to retry shortly (503), never sent
// to a node that may lack their data.
func (d *Directory) StorageNode(ctx context.Context, user string) (string, error) {
	if d.closed.Load() {
		return "", ErrClosed
	}
	r, fallback, ok := d.state.Replicas(user)
	if !ok {
		return "", api.ErrUserNotFound
	}
	if len(r.Members) == 0 {
		return fallback, nil
	}
	m, ok := r.Serving()
	if !ok {
		return "", fmt.Errorf("directory: primary %s of %q is %s: %w", r.Members[0].ID, user, servingState(r.Members[0]), api.ErrUnavailable)
	}
	return m.URL, nil
}

// servingState says why a member does not serve, for errors.
func servingState(m MemberInfo) string {
	if m.Filling {
		return "filling"
	}
	return m.State
}

// SetEmail changes the user's e-mail address; api.ErrUserNotFound.
func (d *Directory) SetEmail(ctx context.Context, user, email string) error {
	return d.write(ctx, state.SetEmail{Name: user, Email: email})
}

// SetPassword changes the user's password and drops any pending reset
// code; api.ErrUserNotFound.
func (d *Directory) SetPassword(ctx context.Context, user, password string) error {
	if _, ok := d.state.Account(user); !ok {
		return api.ErrUserNotFound
	}
	hash, err := d.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	if err := d.write(ctx, state.SetPassword{Name: user, Hash: hash}); err != nil {
		return err
	}
	d.notifyPasswordChanged(user)
	return nil
}

// notifyPasswordChanged tells the user's nodes (Nodes.NotifyNodes), in the
// background, that the user's password changed.
func (d *Directory) notifyPasswordChanged(user string) {
	set, _, _ := d.state.Assignment(user)
	d.notes.notify(user, set, false)
}

// RequestPasswordReset stores a new random reset code (hashed, valid for
// Accounts.ResetCodeTTL, replacing any earlier one) and mails it to the
// user. api.ErrUserNotFound, api.ErrNoEmail; a mail failure is returned
// wrapping api.ErrUnavailable (the code is stored but nobody knows it).
func (d *Directory) RequestPasswordReset(ctx context.Context, user string) error {
	a, ok := d.state.Account(user)
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
	expires := d.cfg.Clock().Add(d.cfg.Accounts.ResetCodeTTL)
	if err := d.write(ctx, state.SetResetCode{Name: user, CodeHash: codeHash, Expires: expires.Unix()}); err != nil {
		return err
	}
	subject, body := resetMail(d.cfg.Accounts.ResetURL, user, code, expires)
	if err := d.cfg.Accounts.Mailer.Send(ctx, a.Email, subject, body); err != nil {
		d.log.Warn("directory: reset mail failed", "user", user, "err", err)
		return fmt.Errorf("directory: mail reset code: %w: %w", api.ErrUnavailable, err)
	}
	return nil
}

// ClearPasswordReset drops a pending reset code; api.ErrUserNotFound.
func (d *Directory) ClearPasswordReset(ctx context.Context, user string) error {
	return d.write(ctx, state.ClearResetCode{Name: user})
}

// ResetPassword sets password if code is the user's pending, unexpired
// reset code, and clears the code, in one command (the state machine
// checks the code again, so two resets with one code cannot both
// succeed).
// api.ErrUserNotFound, api.ErrBadResetCode.
func (d *Directory) ResetPassword(ctx context.Context, user, code, password string) error {
	a, ok := d.state.Account(user)
	if !ok {
		return api.ErrUserNotFound
	}
	codeHash := hashResetCode(code)
	now := d.cfg.Clock().Unix()
	if !a.ResetCodeValid(codeHash, now) {
		return api.ErrBadResetCode
	}
	hash, err := d.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	if err := d.write(ctx, state.ResetPassword{Name: user, CodeHash: codeHash, Hash: hash, Now: now}); err != nil {
		return err
	}
	d.notifyPasswordChanged(user)
	return nil
}
