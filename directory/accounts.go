package directory

import (
	"context"
	"errors"
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
// id and error), UserAPIRetryAfter, the reset code lifetime quoted on
// the reset form, and the registration policy, captcha and admin secret
// of AccountConfig. The caller may change other fields before building
// the handler.
func (d *Directory) UserAPIConfig() api.UserConfig {
	a := d.cfg.Accounts
	c := api.DefaultUserConfig()
	c.Accounts = d
	c.Tokens = d
	c.Logger = d.log.With("component", "user-api")
	c.RetryAfter = UserAPIRetryAfter
	c.ResetCodeTTL = a.ResetCodeTTL
	c.Registration = a.Registration
	c.Captcha, c.CaptchaPublicKey, c.CaptchaHTML = a.Captcha, a.CaptchaSiteKey, a.CaptchaHTML
	c.AdminSecret = a.AdminSecret
	return c
}

// UserExists reports whether the account name is taken, from the local
// state.
func (d *Directory) UserExists(ctx context.Context, user string) (bool, error) {
	if d.closed.Load() {
		return false, ErrClosed
	}
	// "No such account" only from the leader's state (absent.go).
	return d.readConfirmed(ctx, user, "", func() bool {
		_, ok := d.state.Account(user)
		return ok
	})
}

// CreateUser hashes password (argon2id, outside raft) and proposes the
// account; the state machine gives it a replica set of registered storage
// nodes, or Accounts.NodeURL while there are none. api.ErrUserExists if
// the name is taken (checked locally first, and authoritatively by the
// state machine).
func (d *Directory) CreateUser(ctx context.Context, user, password, email string) error {
	return d.CreateUserWithInvite(ctx, user, password, email, "")
}

// CreateUserWithInvite is CreateUser that uses up the invite code
// invite ("" for none) in the same raft entry (api.InviteAccounts):
// api.ErrBadInvite when it is unknown, used or expired. It implements
// api.InviteAccounts. A name deleted within state.TombstoneTTL is taken
// again only once the alive nodes that held it confirmed wiping it
// (else an error wrapping api.ErrUnavailable: retry shortly).
func (d *Directory) CreateUserWithInvite(ctx context.Context, user, password, email, invite string) error {
	if user == "" {
		return fmt.Errorf("directory: empty user name")
	}
	if _, ok := d.state.Account(user); ok {
		return api.ErrUserExists
	}
	now := d.cfg.Clock().Unix()
	var inviteHash string
	if invite != "" {
		inviteHash = state.InviteHash(normalizeCode(invite))
		if !d.state.InviteValid(inviteHash, now) {
			return api.ErrBadInvite
		}
	}
	if err := d.notes.wipeBefore(ctx, d.state, user); err != nil {
		return err
	}
	hash, err := d.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	return d.write(ctx, state.CreateUser{
		Name: user, Hash: hash, Email: email,
		Created: now, Node: d.cfg.Accounts.NodeURL, Invite: inviteHash,
	})
}

var _ api.InviteAccounts = (*Directory)(nil)

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
	at := d.cfg.Clock().Unix()
	// Every token of the account was issued at or before this floor (as
	// the state machine's tombstone says): the nodes refuse them even if
	// the name is registered again before they expire.
	floor := max(at, d.state.Credentials(user).ChangedAt+1)
	if err := d.write(ctx, state.DeleteUser{Name: user, At: at}); err != nil {
		return err
	}
	d.guard.forget(user)
	done := d.notes.notify(user, set, dirEvent(user, true, api.CredentialState{ChangedAt: floor}))
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
// api.ErrUnauthorized. An unknown user is refused without hashing: the
// Weave user API says which names exist to anyone who asks (GET
// /user/1.0/{name}), so equal timing would hide nothing, while hashing
// would give a flood of made-up names the full argon2 cost for free. A
// stored hash that does not parse is logged and reported as an error
// wrapping ErrBadHash.
//
// Every check goes through the login guard (guard.go) with the client
// address ctx carries (api.ClientAddr): repeated credentials are answered
// from a short cache, an account or client address past its free wrong
// passwords gets an *api.ThrottleError (429) for a doubling wait, and
// accounts known at their client's address hash in a priority lane.
func (d *Directory) CheckPassword(ctx context.Context, user, password string) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// An account this voter does not know may be one it has not applied
	// yet: refuse the password only once the leader's state agrees
	// (absent.go).
	var a state.Account
	ok, err := d.readConfirmed(ctx, user, "", func() (found bool) {
		a, found = d.state.Account(user)
		return found
	})
	if err != nil {
		return err
	}
	if ok && a.SyncAccount() {
		ok = false // a Sync 1.5 account has no password
	}
	match, err := d.guard.check(ctx, user, password, a.Hash, api.ClientAddr(ctx), func(ctx context.Context, priority bool) (bool, error) {
		if !ok {
			return false, nil
		}
		return d.hasher.verify(ctx, a.Hash, password, priority)
	})
	if err != nil {
		var te *api.ThrottleError
		var re *api.RetryError
		if errors.As(err, &te) || errors.As(err, &re) {
			return err
		}
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
	if err := d.fresh(); err != nil {
		return "", err
	}
	var (
		r        Replicas
		fallback string
	)
	ok, err := d.readConfirmed(ctx, user, "", func() (found bool) {
		r, fallback, found = d.state.Replicas(user)
		return found
	})
	if err != nil {
		return "", err
	}
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
// code; api.ErrUserNotFound. Every token issued before it and every
// Basic answer the nodes cached are revoked (Credentials).
func (d *Directory) SetPassword(ctx context.Context, user, password string) error {
	if _, ok := d.state.Account(user); !ok {
		return api.ErrUserNotFound
	}
	hash, err := d.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	if err := d.write(ctx, state.SetPassword{Name: user, Hash: hash, At: d.cfg.Clock().Unix()}); err != nil {
		return err
	}
	d.notifyPasswordChanged(user)
	return nil
}

// notifyPasswordChanged forgets the user's failures and tells the user's
// nodes (Nodes.NotifyNodes), in the background, that the user's password
// changed, with the new credential state.
func (d *Directory) notifyPasswordChanged(user string) {
	d.guard.forget(user)
	r, _, _ := d.state.Replicas(user)
	set := make([]NodeInfo, 0, len(r.Members)+len(r.Leaving))
	for _, m := range r.Members {
		set = append(set, m.NodeInfo)
	}
	set = append(set, r.Leaving...)
	d.notes.notify(user, set, dirEvent(user, false, d.state.Credentials(user)))
}

// Credentials returns the user's credential state from the local state
// (api.CredentialState: Exists false for an unknown user). A node in the
// same process (serve) checks tokens and cached answers against it.
func (d *Directory) Credentials(ctx context.Context, user string) (api.CredentialState, error) {
	if d.closed.Load() {
		return api.CredentialState{}, ErrClosed
	}
	return d.state.Credentials(user), nil
}

// RequestPasswordReset stores a new random reset code (hashed, valid for
// Accounts.ResetCodeTTL, replacing any earlier one) and mails it to the
// user. api.ErrUserNotFound, api.ErrNoEmail; a mail failure is returned
// wrapping api.ErrUnavailable (the code is stored but nobody knows it).
// Mails are limited (Accounts.Resets): per account, by the state machine
// (so all voters together), per client address (api.ClientAddr) and in
// all on this voter; beyond, an *api.ThrottleError (429) says when to
// come back.
func (d *Directory) RequestPasswordReset(ctx context.Context, user string) error {
	a, ok := d.state.Account(user)
	if !ok {
		return api.ErrUserNotFound
	}
	if a.Email == "" {
		return api.ErrNoEmail
	}
	now := d.cfg.Clock()
	lim := d.cfg.Accounts.Resets
	window := int64(lim.Window / time.Second)
	if wait, ok := a.ResetWait(now.Unix(), lim.PerAccount, window); !ok {
		return api.TooManyRequests(state.ErrTooManyResets, time.Duration(wait)*time.Second)
	}
	if err := d.resets.take(api.ClientAddr(ctx), now); err != nil {
		return err
	}
	code, codeHash, err := newResetCode()
	if err != nil {
		return err
	}
	expires := now.Add(d.cfg.Accounts.ResetCodeTTL)
	err = d.write(ctx, state.SetResetCode{Name: user, CodeHash: codeHash, Expires: expires.Unix(),
		Now: now.Unix(), Max: lim.PerAccount, Window: window})
	if errors.Is(err, state.ErrTooManyResets) {
		wait := lim.Window / time.Duration(max(lim.PerAccount, 1))
		if a, ok := d.state.Account(user); ok {
			if w, ok := a.ResetWait(now.Unix(), lim.PerAccount, window); !ok {
				wait = time.Duration(w) * time.Second
			}
		}
		return api.TooManyRequests(err, wait)
	}
	if err != nil {
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

// CreateInvite creates a single-use invite code valid for ttl (zero:
// Accounts.InviteTTL) and returns it with its expiry. Only its hash is
// stored (in the state machine); the code is shown once, here.
func (d *Directory) CreateInvite(ctx context.Context, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		ttl = d.cfg.Accounts.InviteTTL
	}
	code, _, err := newResetCode()
	if err != nil {
		return "", time.Time{}, err
	}
	now := d.cfg.Clock()
	exp := time.Unix(now.Add(ttl).Unix(), 0)
	if err := d.write(ctx, state.CreateInvite{Hash: state.InviteHash(code), Expires: exp.Unix(), Now: now.Unix()}); err != nil {
		return "", time.Time{}, err
	}
	return code, exp, nil
}

// Invites returns the unused invites (their hashes and expiries) from
// the local state.
func (d *Directory) Invites() []state.Invite { return d.state.Invites() }
