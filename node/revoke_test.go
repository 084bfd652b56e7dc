package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

// fakeCreds is a CredentialSource over a map.
type fakeCreds struct {
	mu    sync.Mutex
	users map[string]api.CredentialState
	err   error
}

func (f *fakeCreds) set(user string, s api.CredentialState) {
	f.mu.Lock()
	f.users[user] = s
	f.mu.Unlock()
}

func (f *fakeCreds) Credentials(_ context.Context, user string) (api.CredentialState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.users[user], f.err
}

// TestTokenRevocation: with a CredentialSource a token issued at or
// before the user's last credential change is refused, one issued after
// is accepted, a token of an account that no longer exists is refused,
// and a source that cannot tell makes the check fail as unavailable, not
// 401.
func TestTokenRevocation(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	keys := &StaticKeys{}
	keys.Set("k1", priv.Public().(ed25519.PublicKey))
	now := time.Unix(1_800_000_000, 0)
	creds := &fakeCreds{users: map[string]api.CredentialState{"alice": {Exists: true, ChangedAt: now.Unix() - 100, Gen: 1}}}
	a, err := NewAuthenticator(AuthConfig{DisableBasic: true, Keys: keys, NodeID: "n1", Clock: func() time.Time { return now }, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(iat int64) api.Credentials {
		tok, err := api.SignToken(priv, api.TokenClaims{Kid: "k1", Sub: "alice", Aud: "n1", Iat: iat, Exp: iat + 1800})
		if err != nil {
			t.Fatal(err)
		}
		return api.Credentials{Scheme: "bearer", Token: tok}
	}
	ctx := context.Background()
	old := sign(now.Unix() - 50)
	if err := a.Authenticate(ctx, "alice", old); err != nil {
		t.Fatalf("token after the last change: %v", err)
	}
	creds.set("alice", api.CredentialState{Exists: true, ChangedAt: now.Unix() - 10, Gen: 2})
	if err := a.Authenticate(ctx, "alice", old); !errors.Is(err, api.ErrTokenRevoked) {
		t.Fatalf("token before a password change: %v", err)
	}
	if err := a.Authenticate(ctx, "alice", sign(now.Unix()-10)); !errors.Is(err, api.ErrTokenRevoked) {
		t.Fatalf("token of the change's second: %v", err)
	}
	if err := a.Authenticate(ctx, "alice", sign(now.Unix()-9)); err != nil {
		t.Fatalf("token after the change: %v", err)
	}
	creds.set("alice", api.CredentialState{})
	if err := a.Authenticate(ctx, "alice", sign(now.Unix())); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("token of a deleted account: %v", err)
	}
	creds.err = api.ErrUnavailable
	if err := a.Authenticate(ctx, "alice", sign(now.Unix())); !errors.Is(err, api.ErrUnavailable) || errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("source down: %v", err)
	}
}

// TestBasicCacheGeneration: a cached Basic answer is reused only under
// the credential generation it was checked under; after a change the
// node asks the directory again, even when no account event arrived.
func TestBasicCacheGeneration(t *testing.T) {
	chk := &fakeChecker{}
	creds := &fakeCreds{users: map[string]api.CredentialState{"alice": {Exists: true, Gen: 1}}}
	cfg := DefaultAuthConfig()
	cfg.Checker, cfg.Credentials = chk, creds
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	basic := api.Credentials{Scheme: "basic", User: "alice", Password: "right:pw"}
	for range 3 {
		if err := a.Authenticate(ctx, "alice", basic); err != nil {
			t.Fatal(err)
		}
	}
	if n := chk.calls.Load(); n != 1 {
		t.Fatalf("%d directory checks, want 1 (cached)", n)
	}
	creds.set("alice", api.CredentialState{Exists: true, Gen: 2})
	if err := a.Authenticate(ctx, "alice", basic); err != nil || chk.calls.Load() != 2 {
		t.Fatalf("after a change: %v, %d checks", err, chk.calls.Load())
	}
	creds.set("alice", api.CredentialState{})
	if err := a.Authenticate(ctx, "alice", basic); !errors.Is(err, api.ErrUnauthorized) || chk.calls.Load() != 2 {
		t.Fatalf("deleted account: %v, %d checks", err, chk.calls.Load())
	}
}

// refreshingKeys is a KeyRefresher that learns a key on refresh.
type refreshingKeys struct {
	StaticKeys
	kid       string
	key       ed25519.PublicKey
	refreshes atomic.Int32
}

func (r *refreshingKeys) RefreshKey(_ context.Context, kid string) bool {
	r.refreshes.Add(1)
	r.Set(r.kid, r.key)
	_, ok := r.PublicKey(kid)
	return ok
}

// TestUnknownKidRefresh: a token signed by a key the node has not
// fetched yet is accepted after one refresh; a kid the directory does not
// know either stays refused.
func TestUnknownKidRefresh(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))
	keys := &refreshingKeys{kid: "new", key: priv.Public().(ed25519.PublicKey)}
	now := time.Unix(1_800_000_000, 0)
	a, err := NewAuthenticator(AuthConfig{DisableBasic: true, Keys: keys, NodeID: "n1", Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(kid string) api.Credentials {
		s, _ := api.SignToken(priv, api.TokenClaims{Kid: kid, Sub: "alice", Aud: "n1", Iat: now.Unix(), Exp: now.Unix() + 60})
		return api.Credentials{Scheme: "bearer", Token: s}
	}
	if err := a.Authenticate(context.Background(), "alice", tok("new")); err != nil || keys.refreshes.Load() != 1 {
		t.Fatalf("token of a new key: %v after %d refreshes", err, keys.refreshes.Load())
	}
	if err := a.Authenticate(context.Background(), "alice", tok("bogus")); !errors.Is(err, api.ErrTokenUnknownKey) {
		t.Fatalf("unknown kid: %v", err)
	}
}

// TestWatch: Forget closes the channels of the user's watchers (and only
// theirs); Forget("") closes every one; stopped watches are dropped.
func TestWatch(t *testing.T) {
	a, err := NewAuthenticator(AuthConfig{Checker: &fakeChecker{}})
	if err != nil {
		t.Fatal(err)
	}
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	w1, stop1 := a.Watch("alice")
	w2, stop2 := a.Watch("alice")
	wb, stopb := a.Watch("bob")
	a.Forget("alice")
	if !closed(w1) || !closed(w2) || closed(wb) {
		t.Fatal("Forget(alice) closed the wrong watches")
	}
	stop1()
	stop2()
	w3, stop3 := a.Watch("alice")
	if closed(w3) {
		t.Fatal("a new watch is closed")
	}
	a.Forget("")
	if !closed(w3) || !closed(wb) {
		t.Fatal(`Forget("") left watches open`)
	}
	stop3()
	stopb()
	stopb()
	w4, stop4 := a.Watch("carol")
	stop4()
	a.mu.Lock()
	n := len(a.watches)
	a.mu.Unlock()
	if n != 0 || closed(w4) {
		t.Fatalf("%d watches left", n)
	}
}
