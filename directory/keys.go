package directory

import (
	"context"
	"crypto/ed25519"
	"errors"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/state"
)

// ErrKeyInUse means a voter was asked to retire the key it signs with.
var ErrKeyInUse = errors.New("directory: signing key in use; rotate it first")

// startKeys loads (or creates) this voter's signing key, publishes it if
// the state does not hold it yet and starts the key loop (see signer).
func (d *Directory) startKeys(ctx context.Context) error {
	d.signer = newSigner(d)
	if err := d.signer.start(ctx); err != nil {
		return err
	}
	d.spawn(d.signer.run)
	return nil
}

// PublicKey returns the published token signing key kid (of any voter).
// Storage nodes check bearer tokens with it (see api.VerifyToken).
func (d *Directory) PublicKey(kid string) (ed25519.PublicKey, bool) {
	k, ok := d.state.SigningKey(kid)
	if !ok {
		return nil, false
	}
	return ed25519.PublicKey(k.PublicKey), true
}

// PublicKeys returns every published token signing key by kid.
func (d *Directory) PublicKeys() map[string]ed25519.PublicKey {
	ks := d.state.SigningKeys()
	out := make(map[string]ed25519.PublicKey, len(ks))
	for _, k := range ks {
		out[k.Kid] = ed25519.PublicKey(k.PublicKey)
	}
	return out
}

// SigningKeyID returns the kid this voter signs new tokens with.
func (d *Directory) SigningKeyID() string {
	_, kid := d.signer.current()
	return kid
}

// IssueToken checks user's password and returns a bearer token for the
// storage node nodeID, that node's base URL and the token's expiry
// (now + Tokens.TTL). nodeID "" means the user's primary node; a
// non-empty nodeID must be one of the user's nodes. When the user has no
// registered node (serve mode) the audience is Tokens.ServeNodeID and the
// URL the account's node URL. A wrong password gives api.ErrUnauthorized;
// no node, or a local key not yet published, an error wrapping
// api.ErrUnavailable. It implements api.TokenIssuer.
func (d *Directory) IssueToken(ctx context.Context, user, password, nodeID string) (string, string, time.Time, error) {
	if err := d.CheckPassword(ctx, user, password); err != nil {
		return "", "", time.Time{}, err
	}
	aud, nodeURL, err := d.signer.audience(user, nodeID)
	if err != nil {
		return "", "", time.Time{}, err
	}
	tok, exp, err := d.signer.sign(ctx, user, aud)
	if err != nil {
		return "", "", time.Time{}, err
	}
	return tok, nodeURL, exp, nil
}

var _ api.TokenIssuer = (*Directory)(nil)

// RotateKey replaces this voter's signing key: a new key is generated and
// published, saved to signing.key, and signs every token from then on.
// The previous key stays published until its tokens have expired; the key
// loop then retires it (see the notes in signer.go). It returns the
// new kid.
func (d *Directory) RotateKey(ctx context.Context) (string, error) {
	return d.signer.rotate(ctx)
}

// RetireKey withdraws the published key kid at once (for a compromised
// key): tokens it signed are refused from then on. A voter refuses to
// retire the key it signs with (ErrKeyInUse); rotate it first.
func (d *Directory) RetireKey(ctx context.Context, kid string) error {
	if kid == d.SigningKeyID() {
		return ErrKeyInUse
	}
	return d.write(ctx, state.RetireKey{Kid: kid})
}
