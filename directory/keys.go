package directory

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
)

// Token signing keys.
//
// Every voter has its own Ed25519 signing key, kept in its data folder as
// signing.key (PKCS#8 PEM, mode 0600), created on first start. Its key id
// (kid) is the first 16 hex digits of SHA-256(public key). The voter
// publishes the public half in the FSM (PublishKey, owner = its raft ID)
// at start and keeps republishing it until the FSM holds it, so storage
// nodes can check the tokens it signs (IssueToken) offline, through
// Directory.PublicKey or a copy of PublicKeys.
//
// Rotation (RotateKey): a new key is generated and published, then saved
// and used for every new token. The previous key stays published so that
// tokens it signed keep verifying; once the new key is older than
// TokenTTL + api.TokenClockSkew, every token of the old key has expired and
// the owner's key loop retires it (RetireKey). The rule is derived from the
// FSM (owner, created), so it survives restarts. RetireKey retires a key at
// once (a compromised key): its tokens are refused from then on.

// Command types of the signing keys. They start at 40 so the other command
// families can grow below without clashing.
const (
	CmdPublishKey CommandType = 40
	CmdRetireKey  CommandType = 41
)

// maxPublishedKeys bounds the published keys (a few per voter at most).
const maxPublishedKeys = 64

// signingKeyFile is the name of the local private key in Config.Dir.
const signingKeyFile = "signing.key"

// Defaults of the token settings.
const (
	// DefaultTokenTTL is the default lifetime of issued tokens.
	DefaultTokenTTL = 30 * time.Minute
	// DefaultServeNodeID is the default audience of tokens when users are
	// not assigned to registered storage nodes (serve mode).
	DefaultServeNodeID = "local"
)

// Errors of the signing keys.
var (
	// ErrBadKey means a PublishKey carries a key whose size or kid is wrong,
	// or the key table is full.
	ErrBadKey = errors.New("directory: bad signing key")
	// ErrKeyInUse means a voter was asked to retire the key it signs with.
	ErrKeyInUse = errors.New("directory: signing key in use; rotate it first")
)

// PublishKey publishes the public half of a voter's token signing key.
// Kid must be KeyID(PublicKey). Publishing a kid again is a no-op.
type PublishKey struct {
	Kid       string `json:"kid"`
	PublicKey []byte `json:"pk"`
	// Owner is the raft ID of the voter holding the private half.
	Owner string `json:"owner"`
	// Created is the proposer's clock in Unix seconds.
	Created int64 `json:"c"`
}

// RetireKey withdraws a published key; tokens it signed are refused from
// then on. Retiring an unknown kid is a no-op.
type RetireKey struct {
	Kid string `json:"kid"`
}

// Type implements Command.
func (PublishKey) Type() CommandType { return CmdPublishKey }

// Type implements Command.
func (RetireKey) Type() CommandType { return CmdRetireKey }

func (PublishKey) version() uint8 { return commandV1 }
func (RetireKey) version() uint8  { return commandV1 }

// keyCommandName names the key command types for CommandType.String.
func keyCommandName(t CommandType) string {
	switch t {
	case CmdPublishKey:
		return "PublishKey"
	case CmdRetireKey:
		return "RetireKey"
	}
	return ""
}

// decodeKeyCommand decodes a version-1 key command body; ok is false for
// other types.
func decodeKeyCommand(t CommandType, body []byte) (c Command, err error, ok bool) {
	switch t {
	case CmdPublishKey:
		c, err = decodeJSON[PublishKey](t, body)
		return c, err, true
	case CmdRetireKey:
		c, err = decodeJSON[RetireKey](t, body)
		return c, err, true
	}
	return nil, nil, false
}

// KeyID returns the key id of an Ed25519 public key: the first 16 hex
// digits of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// signingKey is a published key in the FSM. Values are never modified in
// place.
type signingKey struct {
	Kid       string `json:"kid"`
	PublicKey []byte `json:"pk"`
	Owner     string `json:"owner"`
	Created   int64  `json:"created"`
}

func (k *signingKey) validate() error {
	if len(k.PublicKey) != ed25519.PublicKeySize || k.Kid != KeyID(k.PublicKey) || k.Owner == "" {
		return fmt.Errorf("%w: kid %q", ErrBadKey, k.Kid)
	}
	return nil
}

// applyKey applies PublishKey or RetireKey; f.mu is held.
func (f *fsm) applyKey(c Command) error {
	if f.keys == nil {
		f.keys = make(map[string]*signingKey)
	}
	switch c := c.(type) {
	case PublishKey:
		k := &signingKey{Kid: c.Kid, PublicKey: slices.Clone(c.PublicKey), Owner: c.Owner, Created: c.Created}
		if err := k.validate(); err != nil {
			return err
		}
		if _, ok := f.keys[c.Kid]; ok {
			return nil
		}
		if len(f.keys) >= maxPublishedKeys {
			return fmt.Errorf("%w: %d keys published already", ErrBadKey, len(f.keys))
		}
		f.keys[c.Kid] = k
		return nil
	case RetireKey:
		delete(f.keys, c.Kid)
		return nil
	}
	return fmt.Errorf("%w: %v is not a key command", ErrMalformedCommand, c.Type())
}

// signingKeyInfo returns a copy of the published key kid.
func (f *fsm) signingKeyInfo(kid string) (signingKey, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	k, ok := f.keys[kid]
	if !ok {
		return signingKey{}, false
	}
	return *k, true
}

// signingKeys returns the published keys (shared, immutable), sorted by kid.
func (f *fsm) signingKeys() []*signingKey {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedKeys(f.keys)
}

func sortedKeys(m map[string]*signingKey) []*signingKey {
	ks := slices.Collect(maps.Values(m))
	slices.SortFunc(ks, func(a, b *signingKey) int { return strings.Compare(a.Kid, b.Kid) })
	return ks
}

// readSnapshotKeys decodes n key objects of a snapshot into keys.
func readSnapshotKeys(dec interface{ Decode(any) error }, n int, keys map[string]*signingKey) error {
	if n < 0 || n > maxPublishedKeys {
		return fmt.Errorf("directory: snapshot announces %d signing keys", n)
	}
	for i := range n {
		k := new(signingKey)
		if err := dec.Decode(k); err != nil {
			return fmt.Errorf("directory: snapshot key %d of %d: %w", i, n, err)
		}
		if err := k.validate(); err != nil {
			return fmt.Errorf("directory: snapshot key %d: %w", i, err)
		}
		if _, dup := keys[k.Kid]; dup {
			return fmt.Errorf("directory: snapshot key %q twice", k.Kid)
		}
		keys[k.Kid] = k
	}
	return nil
}

// localKey is this voter's current signing key.
type localKey struct {
	mu   sync.RWMutex
	priv ed25519.PrivateKey
	kid  string
}

func (l *localKey) get() (ed25519.PrivateKey, string) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.priv, l.kid
}

func (l *localKey) set(priv ed25519.PrivateKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.priv, l.kid = priv, KeyID(priv.Public().(ed25519.PublicKey))
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

// tokenTTL is Config.TokenTTL with its default.
func (c Config) tokenTTL() time.Duration {
	if c.TokenTTL <= 0 {
		return DefaultTokenTTL
	}
	return c.TokenTTL
}

// serveNodeID is Config.ServeNodeID with its default.
func (c Config) serveNodeID() string {
	if c.ServeNodeID == "" {
		return DefaultServeNodeID
	}
	return c.ServeNodeID
}

// validateTokens checks the token settings.
func (c Config) validateTokens() error {
	if c.TokenTTL > api.MaxTokenLifetime {
		return fmt.Errorf("directory: TokenTTL %v above %v", c.TokenTTL, api.MaxTokenLifetime)
	}
	if c.TokenTTL < 0 {
		return fmt.Errorf("directory: TokenTTL %v is negative", c.TokenTTL)
	}
	return nil
}

// startKeys loads (or creates) this voter's signing key, publishes it if
// the FSM does not hold it yet (best effort: the key loop retries) and
// starts the key loop.
func (d *Directory) startKeys(ctx context.Context) error {
	priv, created, err := loadOrCreateSigningKey(d.cfg.Dir)
	if err != nil {
		return err
	}
	d.key.set(priv)
	_, kid := d.key.get()
	if created {
		d.log.Info("directory: created token signing key", "kid", kid)
	}
	if err := d.ensureKeyPublished(ctx); err != nil {
		d.log.Warn("directory: signing key not published yet; will retry", "kid", kid, "err", err)
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		select {
		case <-d.quit:
		case <-loopCtx.Done():
		}
		cancel()
	}()
	go func() {
		defer d.wg.Done()
		defer cancel()
		d.keyLoop(loopCtx)
	}()
	return nil
}

// keyLoop republishes the local key until the FSM holds it and retires
// this voter's rotated-out keys once their tokens have expired.
func (d *Directory) keyLoop(ctx context.Context) {
	every := min(d.cfg.tokenTTL()/4, time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.ensureKeyPublished(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("directory: publish signing key", "err", err)
		}
		if err := d.retireExpiredKeys(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("directory: retire old signing keys", "err", err)
		}
	}
}

// ensureKeyPublished publishes the local key unless the FSM holds it.
func (d *Directory) ensureKeyPublished(ctx context.Context) error {
	priv, kid := d.key.get()
	if _, ok := d.fsm.signingKeyInfo(kid); ok {
		return nil
	}
	return d.publishKey(ctx, priv)
}

func (d *Directory) publishKey(ctx context.Context, priv ed25519.PrivateKey) error {
	pub := priv.Public().(ed25519.PublicKey)
	return d.write(ctx, PublishKey{
		Kid: KeyID(pub), PublicKey: pub, Owner: d.cfg.ID, Created: d.cfg.Clock().Unix(),
	})
}

// retireExpiredKeys retires this voter's published keys other than the
// current one once the current key has been published for longer than
// TokenTTL + api.TokenClockSkew (so every token they signed has expired).
func (d *Directory) retireExpiredKeys(ctx context.Context) error {
	_, kid := d.key.get()
	cur, ok := d.fsm.signingKeyInfo(kid)
	if !ok {
		return nil // not published yet: old keys still sign nothing new, but wait
	}
	deadline := time.Unix(cur.Created, 0).Add(d.cfg.tokenTTL() + api.TokenClockSkew)
	if d.cfg.Clock().Before(deadline) {
		return nil
	}
	var errs []error
	for _, k := range d.fsm.signingKeys() {
		if k.Owner != d.cfg.ID || k.Kid == kid {
			continue
		}
		if err := d.write(ctx, RetireKey{Kid: k.Kid}); err != nil {
			errs = append(errs, err)
			continue
		}
		d.log.Info("directory: retired signing key", "kid", k.Kid)
	}
	return errors.Join(errs...)
}

// PublicKey returns the published token signing key kid (of any voter).
// It satisfies node.KeySource.
func (d *Directory) PublicKey(kid string) (ed25519.PublicKey, bool) {
	k, ok := d.fsm.signingKeyInfo(kid)
	if !ok {
		return nil, false
	}
	return ed25519.PublicKey(k.PublicKey), true
}

// PublicKeys returns every published token signing key by kid.
func (d *Directory) PublicKeys() map[string]ed25519.PublicKey {
	ks := d.fsm.signingKeys()
	out := make(map[string]ed25519.PublicKey, len(ks))
	for _, k := range ks {
		out[k.Kid] = ed25519.PublicKey(k.PublicKey)
	}
	return out
}

// SigningKeyID returns the kid this voter signs new tokens with.
func (d *Directory) SigningKeyID() string {
	_, kid := d.key.get()
	return kid
}

// IssueToken checks user's password and returns a bearer token for the
// storage node nodeID, that node's base URL and the token's expiry
// (now + Config.TokenTTL). nodeID "" means the user's primary node; a
// non-empty nodeID must be one of the user's nodes. When the user has no
// registered node (serve mode) the audience is Config.ServeNodeID and the
// URL the account's node URL. A wrong password gives api.ErrUnauthorized;
// no node, or a local key not yet published, an error wrapping
// api.ErrUnavailable. It implements api.TokenIssuer.
func (d *Directory) IssueToken(ctx context.Context, user, password, nodeID string) (string, string, time.Time, error) {
	if err := d.CheckPassword(ctx, user, password); err != nil {
		return "", "", time.Time{}, err
	}
	aud, nodeURL, err := d.tokenAudience(user, nodeID)
	if err != nil {
		return "", "", time.Time{}, err
	}
	if err := d.ensureKeyPublished(ctx); err != nil {
		return "", "", time.Time{}, fmt.Errorf("directory: signing key not published: %w: %w", api.ErrUnavailable, err)
	}
	priv, kid := d.key.get()
	now := d.cfg.Clock()
	exp := now.Add(d.cfg.tokenTTL())
	tok, err := api.SignToken(priv, api.TokenClaims{Kid: kid, Sub: user, Aud: aud, Iat: now.Unix(), Exp: exp.Unix()})
	if err != nil {
		return "", "", time.Time{}, err
	}
	return tok, nodeURL, time.Unix(exp.Unix(), 0), nil
}

var _ api.TokenIssuer = (*Directory)(nil)

// tokenAudience resolves the node id and URL a token for user names.
func (d *Directory) tokenAudience(user, nodeID string) (string, string, error) {
	set, fallback, ok := d.fsm.assignment(user)
	if !ok {
		return "", "", api.ErrUnauthorized
	}
	if len(set) == 0 {
		if nodeID != "" && nodeID != d.cfg.serveNodeID() {
			return "", "", fmt.Errorf("directory: node %q does not serve %q: %w", nodeID, user, api.ErrUnauthorized)
		}
		if fallback == "" {
			return "", "", fmt.Errorf("directory: no storage node for %q: %w", user, api.ErrUnavailable)
		}
		return d.cfg.serveNodeID(), fallback, nil
	}
	if nodeID == "" {
		return set[0].ID, set[0].URL, nil
	}
	for _, n := range set {
		if n.ID == nodeID {
			return n.ID, n.URL, nil
		}
	}
	return "", "", fmt.Errorf("directory: node %q does not serve %q: %w", nodeID, user, api.ErrUnauthorized)
}

// RotateKey replaces this voter's signing key: a new key is generated and
// published, saved to signing.key, and signs every token from then on.
// The previous key stays published until its tokens have expired; the key
// loop then retires it (see the package notes in keys.go). It returns the
// new kid.
func (d *Directory) RotateKey(ctx context.Context) (string, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("directory: generate signing key: %w", err)
	}
	if err := d.publishKey(ctx, priv); err != nil {
		return "", err
	}
	if err := saveSigningKey(d.cfg.Dir, priv); err != nil {
		return "", err
	}
	d.key.set(priv)
	_, kid := d.key.get()
	d.log.Info("directory: rotated token signing key", "kid", kid)
	return kid, nil
}

// RetireKey withdraws the published key kid at once (for a compromised
// key): tokens it signed are refused from then on. A voter refuses to
// retire the key it signs with (ErrKeyInUse); rotate it first.
func (d *Directory) RetireKey(ctx context.Context, kid string) error {
	if kid == d.SigningKeyID() {
		return ErrKeyInUse
	}
	return d.write(ctx, RetireKey{Kid: kid})
}
