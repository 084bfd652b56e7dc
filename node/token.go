package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/hce-sync/hce/api"
)

// KeySource gives the public halves of the directory's token signing keys
// by key id. The directory implements it; a node that is not in the same
// process keeps a StaticKeys in sync with the directory's published keys.
// Implementations must be safe for concurrent use.
type KeySource interface {
	// PublicKey returns the key published under kid, or false when kid is
	// unknown or retired.
	PublicKey(kid string) (ed25519.PublicKey, bool)
}

// StaticKeys is a KeySource backed by a map the owner updates: Set adds
// or replaces a key, Delete retires one, Replace swaps the whole set (as
// after reading the directory's published keys). The zero value is an
// empty set ready for use; it is safe for concurrent use.
type StaticKeys struct {
	mu   sync.RWMutex
	keys map[string]ed25519.PublicKey
}

var _ KeySource = (*StaticKeys)(nil)

// PublicKey implements KeySource.
func (s *StaticKeys) PublicKey(kid string) (ed25519.PublicKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[kid]
	return k, ok
}

// Set publishes key under kid (a copy is kept).
func (s *StaticKeys) Set(kid string, key ed25519.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = make(map[string]ed25519.PublicKey)
	}
	s.keys[kid] = append(ed25519.PublicKey(nil), key...)
}

// Delete retires kid: tokens it signed are refused from now on.
func (s *StaticKeys) Delete(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, kid)
}

// Replace makes keys the whole set (copied), retiring every other kid.
func (s *StaticKeys) Replace(keys map[string]ed25519.PublicKey) {
	m := make(map[string]ed25519.PublicKey, len(keys))
	for kid, k := range keys {
		m[kid] = append(ed25519.PublicKey(nil), k...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = m
}

// Keys returns a copy of the current set (the key slices are shared and
// must not be modified).
func (s *StaticKeys) Keys() map[string]ed25519.PublicKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.keys)
}

// authenticateToken checks a bearer token for pathUser: its signature
// (fetching the directory's keys again once when it names an unknown key
// and Keys is a KeyRefresher), audience, times and subject, then, with
// AuthConfig.Credentials, that it was issued after the user's last
// credential change.
func (a *Authenticator) authenticateToken(ctx context.Context, pathUser, tok string) error {
	if a.cfg.Keys == nil {
		return fmt.Errorf("node: bearer tokens not accepted: %w", api.ErrUnauthorized)
	}
	c, err := api.VerifyToken(tok, a.cfg.Keys.PublicKey, a.cfg.NodeID, a.cfg.Clock())
	if errors.Is(err, api.ErrTokenUnknownKey) {
		if r, ok := a.cfg.Keys.(KeyRefresher); ok {
			if pc, _, _, perr := api.ParseToken(tok); perr == nil && r.RefreshKey(ctx, pc.Kid) {
				c, err = api.VerifyToken(tok, a.cfg.Keys.PublicKey, a.cfg.NodeID, a.cfg.Clock())
			}
		}
	}
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if c.Sub != pathUser {
		return fmt.Errorf("node: token is for %q, not %q: %w", c.Sub, pathUser, api.ErrUnauthorized)
	}
	if a.cfg.Credentials == nil {
		return nil
	}
	st, err := a.cfg.Credentials.Credentials(ctx, c.Sub)
	if err != nil {
		return err
	}
	if st.Revokes(c) {
		return fmt.Errorf("node: token of %q issued at %d, credentials changed at %d (exists %v): %w",
			c.Sub, c.Iat, st.ChangedAt, st.Exists, api.ErrTokenRevoked)
	}
	return nil
}
