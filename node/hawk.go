package node

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawk"
	"github.com/hce-sync/hce/api/hawkid"
	"github.com/hce-sync/hce/api/sync15"
)

// Sync 1.5 authentication: Hawk with credentials the directory's
// tokenserver issues (api/hawkid). The Hawk id is verified offline against
// the directory's published Ed25519 keys (the same KeySource as bearer
// tokens), names this node as its audience, and carries the Hawk key
// sealed to this node's X25519 key, which only this node (and the
// directory that made it) can open.

// HawkKeyFile is the name of a node's X25519 key in its data folder.
const HawkKeyFile = "hawk.key"

// LoadOrCreateHawkKey reads the node's X25519 key from dir/hawk.key
// (PKCS #8 PEM, mode 0600), creating it on first use.
func LoadOrCreateHawkKey(dir string) (*ecdh.PrivateKey, error) {
	path := filepath.Join(dir, HawkKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := hawkid.GenerateNodeKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("node: generate Hawk key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("node: encode Hawk key: %w", err)
		}
		if err := writeFileSync(dir, HawkKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
			return nil, fmt.Errorf("node: save Hawk key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: read Hawk key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("node: %s is not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("node: parse %s: %w", path, err)
	}
	xk, ok := k.(*ecdh.PrivateKey)
	if !ok || xk.Curve() != ecdh.X25519() {
		return nil, fmt.Errorf("node: %s holds a %T, not an X25519 key", path, k)
	}
	return xk, nil
}

// writeFileSync writes dir/name atomically with mode 0600.
func writeFileSync(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, name+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// Defaults of HawkConfig.
const (
	// DefaultExpiredGrace is how long after their expiry credentials
	// still read info/collections (as Mozilla's servers allow, so that a
	// client can poll before it fetches new ones).
	DefaultExpiredGrace = 5 * time.Minute
	// DefaultHawkKeyCache bounds the opened Hawk keys kept in memory.
	DefaultHawkKeyCache = 100000
)

// HawkConfig configures a HawkAuthenticator. A zero field means "use the
// default".
type HawkConfig struct {
	// Keys gives the directory's token signing keys (required); a
	// KeyRefresher is asked again once for an unknown key id.
	Keys KeySource
	// NodeID is this node's id, the audience credentials must name.
	// Required.
	NodeID string
	// NodeKey is this node's X25519 private key (LoadOrCreateHawkKey).
	// Required.
	NodeKey *ecdh.PrivateKey
	// Membership and Credentials are the serving and revocation rules of
	// AuthConfig: a user this node does not currently serve gets 401 (the
	// client asks the tokenserver again and is sent to its node), and
	// credentials issued at or before the account's last credential
	// change, or of an account that does not exist, are refused. Nil:
	// every user is served / credentials live until they expire.
	Membership  Membership
	Credentials CredentialSource
	// Hawk configures the Hawk verifier (skew, replay cache, host and
	// port behind a proxy); its Clock is taken from Clock.
	Hawk hawk.Config
	// Clock is the time source. Default time.Now.
	Clock func() time.Time
	// ExpiredGrace is how long expired credentials still read
	// info/collections. Default DefaultExpiredGrace; negative: none.
	ExpiredGrace time.Duration
	// KeyCache bounds the number of verified ids and opened Hawk keys
	// kept (an Ed25519 verification and an X25519 operation saved per
	// request; a kept id is still checked for expiry and for its signing
	// key being published). Default DefaultHawkKeyCache.
	KeyCache int
}

// DefaultHawkConfig returns a HawkConfig with the defaults filled in;
// Keys, NodeID and NodeKey still need to be set.
func DefaultHawkConfig() HawkConfig {
	return HawkConfig{Hawk: hawk.DefaultConfig(), Clock: time.Now, ExpiredGrace: DefaultExpiredGrace, KeyCache: DefaultHawkKeyCache}
}

// Validate reports whether c is usable.
func (c HawkConfig) Validate() error {
	switch {
	case c.Keys == nil:
		return errors.New("node: HawkConfig.Keys is required")
	case c.NodeID == "":
		return errors.New("node: HawkConfig.NodeID is required")
	case c.NodeKey == nil || c.NodeKey.Curve() != ecdh.X25519():
		return errors.New("node: HawkConfig.NodeKey must be an X25519 key")
	case c.KeyCache < 0:
		return fmt.Errorf("node: HawkConfig.KeyCache %d is negative", c.KeyCache)
	}
	return c.Hawk.Validate()
}

// HawkAuthenticator implements sync15.Authenticator for a storage node:
// Hawk request MACs (with the timestamp window and the bounded replay
// cache of api/hawk) keyed by the Hawk keys sealed in directory-issued
// ids. Safe for concurrent use.
type HawkAuthenticator struct {
	cfg   HawkConfig
	v     *hawk.Verifier
	grace time.Duration

	mu    sync.Mutex
	cache map[[sha256.Size]byte]openedKey

	failures, notServing, errs atomic.Uint64
}

type openedKey struct {
	claims hawkid.Claims
	mac    []byte
	exp    time.Time
}

var _ sync15.Authenticator = (*HawkAuthenticator)(nil)

// NewHawkAuthenticator returns a HawkAuthenticator for cfg.
func NewHawkAuthenticator(cfg HawkConfig) (*HawkAuthenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.KeyCache == 0 {
		cfg.KeyCache = DefaultHawkKeyCache
	}
	grace := cfg.ExpiredGrace
	if grace == 0 {
		grace = DefaultExpiredGrace
	}
	hc := cfg.Hawk
	hc.Clock = cfg.Clock
	v, err := hawk.NewVerifier(hc)
	if err != nil {
		return nil, err
	}
	return &HawkAuthenticator{cfg: cfg, v: v, grace: max(grace, 0), cache: make(map[[sha256.Size]byte]openedKey)}, nil
}

// HawkStats counts refused Sync 1.5 requests.
type HawkStats struct {
	// Failures are requests with bad, expired or revoked credentials.
	Failures uint64
	// NotServing are valid credentials of users this node does not serve
	// now (401: the client fetches new credentials).
	NotServing uint64
	// Errors are checks that could not be made (503).
	Errors uint64
}

// Stats returns the counters.
func (a *HawkAuthenticator) Stats() HawkStats {
	return HawkStats{Failures: a.failures.Load(), NotServing: a.notServing.Load(), Errors: a.errs.Load()}
}

// Authenticate implements sync15.Authenticator.
func (a *HawkAuthenticator) Authenticate(ctx context.Context, r sync15.AuthRequest) (sync15.Identity, error) {
	id, err := a.authenticate(ctx, r)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotServing):
		a.notServing.Add(1)
	case errors.Is(err, api.ErrUnauthorized):
		a.failures.Add(1)
	default:
		a.errs.Add(1)
	}
	return id, err
}

func (a *HawkAuthenticator) authenticate(ctx context.Context, r sync15.AuthRequest) (sync15.Identity, error) {
	now := a.cfg.Clock()
	var grace time.Duration
	if r.AllowExpired {
		grace = a.grace
	}
	var claims hawkid.Claims
	res, err := a.v.Verify(r.HTTP, func(id string) ([]byte, error) {
		if e, ok := a.cached(id); ok {
			// Verified before: only what changes with time is checked
			// again (expiry, and that its signing key is still
			// published).
			if e.claims.Exp <= now.Add(-grace).Unix() {
				return nil, hawkid.ErrExpired
			}
			if _, ok := a.cfg.Keys.PublicKey(e.claims.Kid); ok {
				claims = e.claims
				return e.mac, nil
			}
		}
		c, err := hawkid.Verify(id, a.cfg.Keys.PublicKey, a.cfg.NodeID, now, grace)
		if errors.Is(err, hawkid.ErrUnknownKey) {
			if kr, ok := a.cfg.Keys.(KeyRefresher); ok {
				if pc, _, _, perr := hawkid.Parse(id); perr == nil && kr.RefreshKey(ctx, pc.Kid) {
					c, err = hawkid.Verify(id, a.cfg.Keys.PublicKey, a.cfg.NodeID, now, grace)
				}
			}
		}
		if err != nil {
			return nil, err
		}
		claims = c
		return a.open(id, &c, now)
	})
	if err != nil {
		return sync15.Identity{}, fmt.Errorf("node: hawk: %w", err)
	}
	if strconv.FormatUint(claims.UID, 10) != r.UID {
		return sync15.Identity{}, fmt.Errorf("node: hawk credentials of uid %d used for %s: %w", claims.UID, r.UID, api.ErrUnauthorized)
	}
	if a.cfg.Credentials != nil {
		st, err := a.cfg.Credentials.Credentials(ctx, claims.Sub)
		if err != nil {
			return sync15.Identity{}, err
		}
		if st.Revokes(api.TokenClaims{Iat: claims.Iat}) {
			return sync15.Identity{}, fmt.Errorf("node: hawk credentials of %q issued at %d, credentials changed at %d (exists %v): %w",
				claims.Sub, claims.Iat, st.ChangedAt, st.Exists, api.ErrTokenRevoked)
		}
	}
	if a.cfg.Membership != nil {
		serves, err := a.cfg.Membership.Serves(ctx, claims.Sub)
		if err != nil {
			return sync15.Identity{}, err
		}
		if !serves {
			return sync15.Identity{}, fmt.Errorf("%w: not a current member of %q's replica set: %w", ErrNotServing, claims.Sub, api.ErrUnauthorized)
		}
	}
	return sync15.Identity{User: claims.Sub, VerifyBody: res.VerifyPayload}, nil
}

// cached returns the cache entry of an id verified and opened before.
func (a *HawkAuthenticator) cached(id string) (openedKey, bool) {
	k := sha256.Sum256([]byte(id))
	a.mu.Lock()
	e, ok := a.cache[k]
	a.mu.Unlock()
	return e, ok
}

// open returns the MAC key of a verified id by opening its sealed key,
// and caches both.
func (a *HawkAuthenticator) open(id string, c *hawkid.Claims, now time.Time) ([]byte, error) {
	k := sha256.Sum256([]byte(id))
	raw, err := hawkid.Open(a.cfg.NodeKey, c)
	if err != nil {
		return nil, err
	}
	mac := hawkid.MACKey(raw)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.cfg.KeyCache {
		n := 0
		for ck, ce := range a.cache {
			if now.After(ce.exp) || n >= 64 {
				delete(a.cache, ck)
			}
			if n++; n >= 128 {
				break
			}
		}
	}
	// Kept past exp by the grace of info/collections.
	a.cache[k] = openedKey{claims: *c, mac: mac, exp: time.Unix(c.Exp, 0).Add(a.grace)}
	return mac, nil
}
