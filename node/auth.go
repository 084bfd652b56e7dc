package node

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
)

// PasswordChecker verifies a user's password; the directory implements it.
// It returns nil for a valid password, api.ErrUnauthorized (possibly
// wrapped) for a wrong one or an unknown user, and any other error when the
// check could not be made.
type PasswordChecker interface {
	CheckPassword(ctx context.Context, user, password string) error
}

// Membership says whether this node may serve a user's clients: the
// directory client implements it. Serves reports true only while this
// node is a current member of the user's replica set (in the set and not
// filling: it holds every write acknowledged for the user), as the
// directory said at most the membership cache lifetime ago; a filling or
// leaving member, or a node outside the set, gets false. It returns an
// error when it cannot tell (the directory unreachable for longer than
// the cache lifetime): the storage API then answers 503 rather than a
// wrong 401 or a read that may lack acknowledged writes.
type Membership interface {
	Serves(ctx context.Context, user string) (bool, error)
}

// CredentialSource says what the directory holds about a user's
// credentials (api.CredentialState): whether the account exists, when its
// credentials last changed and their generation. The directory implements
// it in `serve`; a node's directory client implements it from its cached
// replica sets (so the answer may be as old as the membership cache
// lifetime) and the account events it received. It returns an error when
// it cannot tell (503). Implementations must be safe for concurrent use.
type CredentialSource interface {
	Credentials(ctx context.Context, user string) (api.CredentialState, error)
}

// KeyRefresher is a KeySource that can fetch the directory's keys again
// when a token names a key id it does not know (a voter's key published
// after the last periodic refresh). RefreshKey reports whether kid is
// known afterwards; implementations bound how often they ask the
// directory.
type KeyRefresher interface {
	RefreshKey(ctx context.Context, kid string) bool
}

// Defaults of AuthConfig.
const (
	// DefaultAuthCacheTTL is an hour: a Sync client comes back every few
	// minutes to every few hours, and with a minute most of its syncs
	// cost an argon2 hash at the directory (the capacity measurement in
	// docs/capacity.md found that hash in front of a quarter of all
	// requests). The lifetime does not weaken revocation: every use of a
	// cached answer checks the credential generation the directory
	// reports (cached at most the membership lifetime, 2 s), and a
	// password change or deletion drops the entries at once (Forget).
	DefaultAuthCacheTTL  = time.Hour
	DefaultAuthCacheSize = 100000
)

// AuthConfig configures an Authenticator. A zero field means "use the
// default".
type AuthConfig struct {
	// Checker verifies Basic credentials. Required unless DisableBasic.
	Checker PasswordChecker
	// CacheTTL is how long a positive answer is reused. Default
	// DefaultAuthCacheTTL (1 h).
	CacheTTL time.Duration
	// CacheSize bounds the number of cached positive answers. Default
	// 100000.
	CacheSize int
	// DisableBasic refuses HTTP Basic credentials (401), leaving only
	// directory-signed tokens; an operator or the directory policy may set
	// it. Default false: Basic is accepted.
	DisableBasic bool
	// Clock is the time source of cache expiry and of token checks.
	// Default time.Now.
	Clock func() time.Time
	// Keys, when set, lets the node accept directory-signed bearer tokens
	// (api.VerifyToken) checked against these public keys; nil refuses
	// every bearer token.
	Keys KeySource
	// NodeID is this node's id, the audience a bearer token must name.
	// Required when Keys is set.
	NodeID string
	// Membership, when set, is asked after the credentials are found
	// valid: a user this node may not serve (not a current member of the
	// user's replica set) is refused with api.ErrUnauthorized (401), so
	// that a Weave client re-reads node/weave and finds its node; when
	// Membership cannot tell, its error (503) is returned. Nil serves
	// every user (serve).
	Membership Membership
	// Credentials, when set, revokes credentials without waiting for an
	// account event: a token issued at or before the user's last
	// credential change, or for an account that does not exist, is
	// refused (api.ErrTokenRevoked), and a cached Basic answer of
	// another credential generation is dropped and checked again. Nil:
	// tokens live until they expire, cached answers until CacheTTL or
	// Forget.
	Credentials CredentialSource
}

// DefaultAuthConfig returns an AuthConfig with Basic accepted and the
// default cache; Checker must still be set.
func DefaultAuthConfig() AuthConfig {
	return AuthConfig{
		CacheTTL:  DefaultAuthCacheTTL,
		CacheSize: DefaultAuthCacheSize,
		Clock:     time.Now,
	}
}

// Validate reports whether c is usable.
func (c AuthConfig) Validate() error {
	switch {
	case !c.DisableBasic && c.Checker == nil:
		return errors.New("node: AuthConfig.Checker is required unless DisableBasic")
	case c.CacheTTL < 0:
		return fmt.Errorf("node: AuthConfig.CacheTTL %v is negative", c.CacheTTL)
	case c.CacheSize < 0:
		return fmt.Errorf("node: AuthConfig.CacheSize %d is negative", c.CacheSize)
	case c.Keys != nil && c.NodeID == "":
		return errors.New("node: AuthConfig.NodeID is required with Keys")
	}
	return nil
}

// Authenticator implements api.Authenticator for a storage node.
//
// Basic credentials are checked with the PasswordChecker; a positive answer
// is cached for CacheTTL under HMAC-SHA256(node-local random key, user NUL
// password), so neither passwords nor unsalted hashes are kept in memory.
// Wrong passwords are never cached. Bearer tokens are checked offline with
// api.VerifyToken against AuthConfig.Keys, with this node's NodeID as the
// audience, and must name the path's user as subject; without Keys they
// are refused. Safe for concurrent use.
type Authenticator struct {
	cfg AuthConfig
	key []byte
	// macs holds *macState for mac: an HMAC keyed once and Reset, not
	// keyed again per request.
	macs sync.Pool

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cacheEntry // credential MAC -> entry
	// watches holds, per user, a channel Forget closes (Watch).
	watches map[string]*watch
}

type cacheEntry struct {
	user    string
	expires time.Time
	gen     uint64 // the credential generation it was checked under
}

// watch is a channel closed when its user's credentials are revoked, and
// the number of watchers holding it.
type watch struct {
	ch chan struct{}
	n  int
}

var _ api.Authenticator = (*Authenticator)(nil)

// NewAuthenticator returns an Authenticator for cfg.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultAuthConfig()
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = d.CacheTTL
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = d.CacheSize
	}
	if cfg.Clock == nil {
		cfg.Clock = d.Clock
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("node: auth cache key: %w", err)
	}
	a := &Authenticator{cfg: cfg, key: key, cache: make(map[[sha256.Size]byte]cacheEntry),
		watches: make(map[string]*watch)}
	a.macs.New = func() any { return &macState{h: hmac.New(sha256.New, a.key)} }
	return a, nil
}

// macState is a keyed HMAC with its input and output buffers.
type macState struct {
	h   hash.Hash
	in  []byte
	out [sha256.Size]byte
}

// mac returns the cache key of (user, password): HMAC-SHA256 under the
// node-local key of user NUL password. The pooled input buffer is cleared
// after use (it held a password).
func (a *Authenticator) mac(user, password string) [sha256.Size]byte {
	m := a.macs.Get().(*macState)
	m.h.Reset()
	m.in = append(append(append(m.in[:0], user...), 0), password...)
	m.h.Write(m.in)
	clear(m.in)
	out := [sha256.Size]byte(m.h.Sum(m.out[:0]))
	a.macs.Put(m)
	return out
}

// ErrNotServing is wrapped (with api.ErrUnauthorized, so the client gets
// 401 and reads node/weave again) by Authenticate's error for valid
// credentials of a user this node does not serve: not a failed login but
// a reassignment.
var ErrNotServing = errors.New("node: not serving this user")

// Authenticate returns nil when c are valid credentials of pathUser and
// this node may serve pathUser (AuthConfig.Membership), an error wrapping
// api.ErrUnauthorized when they are not or it may not, and the checker's
// or the membership's error when that could not be checked.
func (a *Authenticator) Authenticate(ctx context.Context, pathUser string, c api.Credentials) error {
	if err := a.authenticate(ctx, pathUser, c); err != nil {
		return err
	}
	if a.cfg.Membership == nil {
		return nil
	}
	serves, err := a.cfg.Membership.Serves(ctx, pathUser)
	if err != nil {
		return err
	}
	if !serves {
		return fmt.Errorf("%w: not a current member of %q's replica set: %w", ErrNotServing, pathUser, api.ErrUnauthorized)
	}
	return nil
}

func (a *Authenticator) authenticate(ctx context.Context, pathUser string, c api.Credentials) error {
	switch c.Scheme {
	case "basic":
	case "bearer":
		return a.authenticateToken(ctx, pathUser, c.Token)
	default:
		return fmt.Errorf("node: unknown auth scheme %q: %w", c.Scheme, api.ErrUnauthorized)
	}
	if a.cfg.DisableBasic {
		return fmt.Errorf("node: basic auth disabled: %w", api.ErrUnauthorized)
	}
	if c.User != pathUser || c.User == "" {
		return fmt.Errorf("node: credentials are not for %q: %w", pathUser, api.ErrUnauthorized)
	}
	k := a.mac(c.User, c.Password)
	now := a.cfg.Clock()
	// The generation is read before the check: if the credentials change
	// meanwhile, the entry carries the older one and is checked again.
	var gen uint64
	if a.cfg.Credentials != nil {
		st, err := a.cfg.Credentials.Credentials(ctx, c.User)
		if err != nil {
			return err
		}
		if !st.Exists {
			a.drop(k)
			return fmt.Errorf("node: no account %q: %w", c.User, api.ErrUnauthorized)
		}
		gen = st.Gen
	}
	a.mu.Lock()
	e, ok := a.cache[k]
	if ok && (!now.Before(e.expires) || e.gen != gen) {
		delete(a.cache, k)
		ok = false
	}
	a.mu.Unlock()
	if ok {
		return nil
	}
	if err := a.cfg.Checker.CheckPassword(ctx, c.User, c.Password); err != nil {
		if errors.Is(err, api.ErrUnauthorized) {
			return fmt.Errorf("node: password check for %q: %w", c.User, err)
		}
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.cfg.CacheSize {
		a.evictLocked(now)
	}
	a.cache[k] = cacheEntry{user: c.User, expires: now.Add(a.cfg.CacheTTL), gen: gen}
	return nil
}

// drop removes one cached answer.
func (a *Authenticator) drop(k [sha256.Size]byte) {
	a.mu.Lock()
	delete(a.cache, k)
	a.mu.Unlock()
}

// Forget drops every cached positive answer for user, or for every user
// when user is "", and closes the Watch channels of that user (of every
// user): feeds opened with the old credentials end. The directory calls
// it (through the wiring in cmd or testnet) when an account is deleted or
// its password changes, so old credentials stop working at once rather
// than after CacheTTL. It costs a pass over the cache, which is bounded
// by CacheSize.
func (a *Authenticator) Forget(user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if user == "" {
		clear(a.cache)
		for u, w := range a.watches {
			close(w.ch)
			delete(a.watches, u)
		}
		return
	}
	for k, e := range a.cache {
		if e.user == user {
			delete(a.cache, k)
		}
	}
	if w, ok := a.watches[user]; ok {
		close(w.ch)
		delete(a.watches, user)
	}
}

// Watch returns a channel that is closed when user's credentials are
// revoked (Forget of user, or of every user), for long-lived requests
// such as continuous changes feeds, and a stop function the caller must
// call when it no longer watches. Safe for concurrent use.
func (a *Authenticator) Watch(user string) (revoked <-chan struct{}, stop func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.watches[user]
	if !ok {
		w = &watch{ch: make(chan struct{})}
		a.watches[user] = w
	}
	w.n++
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			if cur, ok := a.watches[user]; ok && cur == w {
				if w.n--; w.n == 0 {
					delete(a.watches, user)
				}
			}
		})
	}
}

// evictLocked drops expired entries, or an arbitrary one if none expired.
func (a *Authenticator) evictLocked(now time.Time) {
	n := 0
	for k, e := range a.cache {
		if !now.Before(e.expires) {
			delete(a.cache, k)
		}
		if n++; n >= 64 {
			break
		}
	}
	if len(a.cache) >= a.cfg.CacheSize {
		for k := range a.cache {
			delete(a.cache, k)
			break
		}
	}
}
