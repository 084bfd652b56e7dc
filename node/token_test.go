package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

func TestStaticKeys(t *testing.T) {
	var s StaticKeys
	if _, ok := s.PublicKey("a"); ok {
		t.Fatal("zero StaticKeys has a key")
	}
	k := ed25519.PublicKey(bytes.Repeat([]byte{1}, ed25519.PublicKeySize))
	s.Set("a", k)
	k[0] = 9 // Set copied it
	if got, ok := s.PublicKey("a"); !ok || got[0] != 1 {
		t.Fatalf("PublicKey(a) = %v, %v", got, ok)
	}
	s.Replace(map[string]ed25519.PublicKey{"b": k})
	if _, ok := s.PublicKey("a"); ok {
		t.Fatal("Replace kept a")
	}
	s.Delete("b")
	if len(s.Keys()) != 0 {
		t.Fatal("Delete kept b")
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				s.Set(string(rune('a'+i)), k)
				s.PublicKey("a")
				s.Delete(string(rune('a' + i)))
			}
		}()
	}
	wg.Wait()
}

func TestAuthenticatorBearer(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, ed25519.SeedSize))
	keys := &StaticKeys{}
	keys.Set("k1", priv.Public().(ed25519.PublicKey))
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	a, err := NewAuthenticator(AuthConfig{DisableBasic: true, Keys: keys, NodeID: "n1", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	noKeys, err := NewAuthenticator(AuthConfig{DisableBasic: true, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(k ed25519.PrivateKey, kid, sub, aud string, iat time.Time) string {
		tok, err := api.SignToken(k, api.TokenClaims{Kid: kid, Sub: sub, Aud: aud, Iat: iat.Unix(), Exp: iat.Add(30 * time.Minute).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := sign(priv, "k1", "alice", "n1", now)
	tests := []struct {
		name string
		a    *Authenticator
		user string
		tok  string
		ok   bool
	}{
		{"ok", a, "alice", good, true},
		{"no keys", noKeys, "alice", good, false},
		{"other user", a, "bob", good, false},
		{"other node", a, "alice", sign(priv, "k1", "alice", "n2", now), false},
		{"forged", a, "alice", sign(other, "k1", "alice", "n1", now), false},
		{"unknown kid", a, "alice", sign(priv, "k9", "alice", "n1", now), false},
		{"expired", a, "alice", sign(priv, "k1", "alice", "n1", now.Add(-time.Hour)), false},
		{"garbage", a, "alice", "v1.x.y", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.a.Authenticate(context.Background(), tt.user, api.Credentials{Scheme: "bearer", Token: tt.tok})
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, api.ErrUnauthorized)) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if _, err := NewAuthenticator(AuthConfig{DisableBasic: true, Keys: keys}); err == nil {
		t.Fatal("Keys without NodeID accepted")
	}
}
