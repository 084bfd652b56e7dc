package directory

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/state"
)

// Token signing keys.
//
// Every voter has its own Ed25519 signing key, kept in its data folder as
// signing.key (PKCS#8 PEM, mode 0600), created on first start. Its key id
// (kid) is state.KeyID of the public key. The voter publishes the public
// half in the state (state.PublishKey, owner = its raft ID) at start and
// keeps republishing it until the state holds it, so storage nodes can
// check the tokens it signs (IssueToken) offline, through PublicKey or a
// copy of PublicKeys (dirproto.ProtoKeys).
//
// Rotation (RotateKey): a new key is generated and published, then saved
// and used for every new token. The previous key stays published so that
// tokens it signed keep verifying; once the new key is older than
// Tokens.TTL + api.TokenClockSkew, every token of the old key has expired
// and the owner's key loop retires it (state.RetireKey). The rule is
// derived from the state (owner, created), so it survives restarts.
// RetireKey retires a key at once (a compromised key): its tokens are
// refused from then on.

// signingKeyFile is the name of the local private key in Config.Dir.
const signingKeyFile = "signing.key"

// signer holds this voter's token signing key: the key file, its
// publication in the state, rotation, the retirement of the keys it
// replaced, and the signing of tokens. Safe for concurrent use.
type signer struct {
	dir   string // Config.Dir, where signing.key lives
	owner string // this voter's raft ID
	ttl   time.Duration
	// serveNodeID is the audience of users without registered nodes.
	serveNodeID string
	clock       func() time.Time
	state       *state.FSM
	// propose commits a command (Directory.write: forwarded on a
	// follower).
	propose func(ctx context.Context, c state.Command) error
	log     *slog.Logger

	mu   sync.RWMutex
	priv ed25519.PrivateKey
	kid  string
}

func newSigner(d *Directory) *signer {
	return &signer{
		dir: d.cfg.Dir, owner: d.cfg.ID, ttl: d.cfg.Tokens.TTL, serveNodeID: d.cfg.Tokens.ServeNodeID,
		clock: d.cfg.Clock, state: d.state, propose: d.write, log: d.log,
	}
}

// current returns the key new tokens are signed with, and its kid.
func (s *signer) current() (ed25519.PrivateKey, string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.priv, s.kid
}

func (s *signer) set(priv ed25519.PrivateKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.priv, s.kid = priv, state.KeyID(priv.Public().(ed25519.PublicKey))
}

// start loads (or creates) the signing key and publishes it if the state
// does not hold it yet (best effort: run retries).
func (s *signer) start(ctx context.Context) error {
	priv, created, err := loadOrCreateSigningKey(s.dir)
	if err != nil {
		return err
	}
	s.set(priv)
	_, kid := s.current()
	if created {
		s.log.Info("directory: created token signing key", "kid", kid)
	}
	if err := s.ensurePublished(ctx); err != nil {
		s.log.Warn("directory: signing key not published yet; will retry", "kid", kid, "err", err)
	}
	return nil
}

// run republishes the key until the state holds it and retires this
// voter's rotated-out keys once their tokens have expired, until ctx
// ends.
func (s *signer) run(ctx context.Context) {
	t := time.NewTicker(min(s.ttl/4, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.ensurePublished(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("directory: publish signing key", "err", err)
		}
		if err := s.retireExpired(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("directory: retire old signing keys", "err", err)
		}
	}
}

// ensurePublished publishes the current key unless the state holds it.
func (s *signer) ensurePublished(ctx context.Context) error {
	priv, kid := s.current()
	if _, ok := s.state.SigningKey(kid); ok {
		return nil
	}
	return s.publish(ctx, priv)
}

func (s *signer) publish(ctx context.Context, priv ed25519.PrivateKey) error {
	pub := priv.Public().(ed25519.PublicKey)
	return s.propose(ctx, state.PublishKey{
		Kid: state.KeyID(pub), PublicKey: pub, Owner: s.owner, Created: s.clock().Unix(),
	})
}

// retireExpired retires this voter's published keys other than the
// current one once the current key has been published for longer than
// the token TTL + api.TokenClockSkew (so every token they signed has
// expired).
func (s *signer) retireExpired(ctx context.Context) error {
	_, kid := s.current()
	cur, ok := s.state.SigningKey(kid)
	if !ok {
		return nil // not published yet: old keys still sign nothing new, but wait
	}
	deadline := time.Unix(cur.Created, 0).Add(s.ttl + api.TokenClockSkew)
	if s.clock().Before(deadline) {
		return nil
	}
	var errs []error
	for _, k := range s.state.SigningKeys() {
		if k.Owner != s.owner || k.Kid == kid {
			continue
		}
		if err := s.propose(ctx, state.RetireKey{Kid: k.Kid}); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("directory: retired signing key", "kid", k.Kid)
	}
	return errors.Join(errs...)
}

// sign returns a token for user on node aud and its expiry, once the
// current key is published (else an error wrapping api.ErrUnavailable).
// Its iat is after the user's last credential change (at least
// ChangedAt+1, which may lie a second or so ahead of this voter's clock:
// nodes accept api.TokenClockSkew), so the revocation rule, iat <=
// ChangedAt, never refuses a token issued after a change.
func (s *signer) sign(ctx context.Context, user, aud string) (string, time.Time, error) {
	if err := s.ensurePublished(ctx); err != nil {
		return "", time.Time{}, fmt.Errorf("directory: signing key not published: %w: %w", api.ErrUnavailable, err)
	}
	priv, kid := s.current()
	iat := max(s.clock().Unix(), s.state.Credentials(user).ChangedAt+1)
	exp := iat + max(int64(s.ttl/time.Second), 1)
	tok, err := api.SignToken(priv, api.TokenClaims{Kid: kid, Sub: user, Aud: aud, Iat: iat, Exp: exp})
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, time.Unix(exp, 0), nil
}

// audience resolves the node id and URL a token for user names.
func (s *signer) audience(user, nodeID string) (string, string, error) {
	r, fallback, ok := s.state.Replicas(user)
	if !ok {
		return "", "", api.ErrUnauthorized
	}
	if len(r.Members) == 0 {
		if nodeID != "" && nodeID != s.serveNodeID {
			return "", "", fmt.Errorf("directory: node %q does not serve %q: %w", nodeID, user, api.ErrUnauthorized)
		}
		if fallback == "" {
			return "", "", fmt.Errorf("directory: no storage node for %q: %w", user, api.ErrUnavailable)
		}
		return s.serveNodeID, fallback, nil
	}
	var m MemberInfo
	if nodeID == "" {
		m = r.Members[0]
	} else {
		i := slices.IndexFunc(r.Members, func(m MemberInfo) bool { return m.ID == nodeID })
		if i < 0 {
			return "", "", fmt.Errorf("directory: node %q does not serve %q: %w", nodeID, user, api.ErrUnauthorized)
		}
		m = r.Members[i]
	}
	if m.Filling || !m.Alive() {
		return "", "", fmt.Errorf("directory: node %s of %q is %s: %w", m.ID, user, servingState(m), api.ErrUnavailable)
	}
	return m.ID, m.URL, nil
}

// rotate generates, publishes and saves a new key, which signs from then
// on; it returns the new kid.
func (s *signer) rotate(ctx context.Context) (string, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("directory: generate signing key: %w", err)
	}
	if err := s.publish(ctx, priv); err != nil {
		return "", err
	}
	if err := saveSigningKey(s.dir, priv); err != nil {
		return "", err
	}
	s.set(priv)
	_, kid := s.current()
	s.log.Info("directory: rotated token signing key", "kid", kid)
	return kid, nil
}

// loadOrCreateSigningKey reads dir/signing.key, creating it on first use.
func loadOrCreateSigningKey(dir string) (ed25519.PrivateKey, bool, error) {
	path := filepath.Join(dir, signingKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, false, fmt.Errorf("directory: generate signing key: %w", err)
		}
		if err := saveSigningKey(dir, priv); err != nil {
			return nil, false, err
		}
		return priv, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("directory: read signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, false, fmt.Errorf("directory: %s is not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("directory: parse %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, false, fmt.Errorf("directory: %s holds a %T, not an Ed25519 key", path, k)
	}
	return priv, false, nil
}

// saveSigningKey writes priv to dir/signing.key atomically (0600).
func saveSigningKey(dir string, priv ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("directory: encode signing key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tmp, err := os.CreateTemp(dir, signingKeyFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("directory: save signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("directory: save signing key: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("directory: save signing key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("directory: save signing key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("directory: save signing key: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, signingKeyFile)); err != nil {
		return fmt.Errorf("directory: save signing key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
