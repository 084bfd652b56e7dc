package state

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// MaxPublishedKeys bounds the published signing keys (a few per voter at
// most).
const MaxPublishedKeys = 64

// ErrBadKey means a PublishKey carries a key whose size or kid is wrong,
// or the key table is full.
var ErrBadKey = errors.New("directory: bad signing key")

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

// KeyID returns the key id of an Ed25519 public key: the first 16 hex
// digits of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// SigningKey is a published token signing key. Keys stored in the FSM are
// never modified in place.
type SigningKey struct {
	Kid       string `json:"kid"`
	PublicKey []byte `json:"pk"`
	// Owner is the raft ID of the voter holding the private half.
	Owner string `json:"owner"`
	// Created is when it was published (proposer's clock, Unix seconds).
	Created int64 `json:"created"`
}

func (k *SigningKey) validate() error {
	if len(k.PublicKey) != ed25519.PublicKeySize || k.Kid != KeyID(k.PublicKey) || k.Owner == "" {
		return fmt.Errorf("%w: kid %q", ErrBadKey, k.Kid)
	}
	return nil
}

// applyKey applies PublishKey or RetireKey; f.mu is held.
func (f *FSM) applyKey(c Command) error {
	switch c := c.(type) {
	case PublishKey:
		k := &SigningKey{Kid: c.Kid, PublicKey: slices.Clone(c.PublicKey), Owner: c.Owner, Created: c.Created}
		if err := k.validate(); err != nil {
			return err
		}
		if _, ok := f.keys[c.Kid]; ok {
			return nil
		}
		if len(f.keys) >= MaxPublishedKeys {
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

// SigningKey returns a copy of the published key kid. Its PublicKey is
// shared with the FSM and must not be modified.
func (f *FSM) SigningKey(kid string) (SigningKey, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	k, ok := f.keys[kid]
	if !ok {
		return SigningKey{}, false
	}
	return *k, true
}

// SigningKeys returns copies of the published keys, sorted by kid. Their
// PublicKeys are shared with the FSM and must not be modified.
func (f *FSM) SigningKeys() []SigningKey {
	f.mu.RLock()
	ks := sortedKeys(f.keys)
	f.mu.RUnlock()
	out := make([]SigningKey, len(ks))
	for i, k := range ks {
		out[i] = *k
	}
	return out
}

func sortedKeys(m map[string]*SigningKey) []*SigningKey {
	ks := slices.Collect(maps.Values(m))
	slices.SortFunc(ks, func(a, b *SigningKey) int { return strings.Compare(a.Kid, b.Kid) })
	return ks
}
