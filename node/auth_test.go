package node

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

type fakeChecker struct {
	calls atomic.Int32
	err   error
}

func (f *fakeChecker) CheckPassword(ctx context.Context, user, password string) error {
	f.calls.Add(1)
	if f.err != nil {
		return f.err
	}
	if (user == "alice" && password == "right:pw") || password == "ok" {
		return nil
	}
	return api.ErrUnauthorized
}

func TestAuthenticator(t *testing.T) {
	clk := newFakeClock()
	chk := &fakeChecker{}
	cfg := DefaultAuthConfig()
	cfg.Checker, cfg.Clock, cfg.CacheTTL = chk, clk.Now, time.Minute
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	basic := func(u, p string) api.Credentials { return api.Credentials{Scheme: "basic", User: u, Password: p} }
	steps := []struct {
		name      string
		path      string
		cred      api.Credentials
		advance   time.Duration
		want      error
		wantCalls int32
	}{
		{"first check asks the directory", "alice", basic("alice", "right:pw"), 0, nil, 1},
		{"cache hit", "alice", basic("alice", "right:pw"), 30 * time.Second, nil, 1},
		{"wrong password", "alice", basic("alice", "wrong"), 0, api.ErrUnauthorized, 2},
		{"wrong password not cached", "alice", basic("alice", "wrong"), 0, api.ErrUnauthorized, 3},
		{"path user mismatch", "bob", basic("alice", "right:pw"), 0, api.ErrUnauthorized, 3},
		{"bearer not yet", "alice", api.Credentials{Scheme: "bearer", Token: "t"}, 0, api.ErrUnauthorized, 3},
		{"expired entry asks again", "alice", basic("alice", "right:pw"), 31 * time.Second, nil, 4},
		{"fresh entry", "alice", basic("alice", "right:pw"), 59 * time.Second, nil, 4},
	}
	for _, st := range steps {
		clk.Add(st.advance)
		err := a.Authenticate(ctx, st.path, st.cred)
		if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
			t.Errorf("%s: err %v, want %v", st.name, err, st.want)
		}
		if got := chk.calls.Load(); got != st.wantCalls {
			t.Errorf("%s: %d checker calls, want %d", st.name, got, st.wantCalls)
		}
	}
	// Backend failures pass through and are not cached.
	down := errors.New("directory down")
	chk.err = down
	if err := a.Authenticate(ctx, "carol", basic("carol", "x")); !errors.Is(err, down) || errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("backend failure: %v", err)
	}
	// Basic can be turned off.
	cfg.DisableBasic = true
	off, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Authenticate(ctx, "alice", basic("alice", "right:pw")); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("basic off: %v", err)
	}
}

func TestAuthCacheBounded(t *testing.T) {
	chk := &fakeChecker{}
	a, err := NewAuthenticator(AuthConfig{Checker: chk, CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		u := string(rune('a' + i))
		if err := a.Authenticate(ctx, u, api.Credentials{Scheme: "basic", User: u, Password: "ok"}); err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		n := len(a.cache)
		a.mu.Unlock()
		if n > 2 {
			t.Fatalf("cache grew to %d", n)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default with dir", func() Config { c := DefaultConfig(); c.Dir = "x"; return c }(), true},
		{"zero with dir", Config{Dir: "x"}, true},
		{"no dir", DefaultConfig(), false},
		{"negative quota", Config{Dir: "x", QuotaBytes: -1}, false},
		{"negative cache users", Config{Dir: "x", CacheUsers: -1}, false},
		{"negative purge interval", Config{Dir: "x", PurgeInterval: -time.Second}, false},
	}
	for _, tc := range tests {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
	}
	if _, err := NewAuthenticator(AuthConfig{}); err == nil {
		t.Error("NewAuthenticator without checker accepted")
	}
}

// TestAuthForget checks that Forget drops one user's cached answers (and
// only theirs), and that Forget("") drops every user's.
func TestAuthForget(t *testing.T) {
	chk := &fakeChecker{}
	cfg := DefaultAuthConfig()
	cfg.Checker = chk
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	basic := func(u string) api.Credentials { return api.Credentials{Scheme: "basic", User: u, Password: "ok"} }
	for _, u := range []string{"alice", "bob", "alice", "bob"} {
		if err := a.Authenticate(ctx, u, basic(u)); err != nil {
			t.Fatal(err)
		}
	}
	if got := chk.calls.Load(); got != 2 {
		t.Fatalf("%d checker calls, want 2 (answers cached)", got)
	}
	a.Forget("alice")
	a.Authenticate(ctx, "alice", basic("alice"))
	a.Authenticate(ctx, "bob", basic("bob"))
	if got := chk.calls.Load(); got != 3 {
		t.Fatalf("%d checker calls after Forget(alice), want 3", got)
	}
	a.Forget("")
	a.Authenticate(ctx, "alice", basic("alice"))
	a.Authenticate(ctx, "bob", basic("bob"))
	if got := chk.calls.Load(); got != 5 {
		t.Fatalf("%d checker calls after Forget(\"\"), want 5", got)
	}
}

// TestAuthCacheKey: the cache key separates user from password and
// depends on both; a key computed on a pooled state equals a fresh one.
func TestAuthCacheKey(t *testing.T) {
	a, err := NewAuthenticator(AuthConfig{Checker: &fakeChecker{}})
	if err != nil {
		t.Fatal(err)
	}
	k := a.mac("alice", "pw")
	for i := range 3 {
		if a.mac("alice", "pw") != k {
			t.Fatalf("round %d: the same credentials gave another key", i)
		}
		if a.mac("alice", "pw2") == k || a.mac("alicep", "w") == k || a.mac("bob", "pw") == k {
			t.Fatal("different credentials gave the same key")
		}
	}
}

// BenchmarkAuthenticateCached: a Basic request whose answer is cached
// (the common case: the cache key's HMAC, the lookup).
func BenchmarkAuthenticateCached(b *testing.B) {
	a, err := NewAuthenticator(AuthConfig{Checker: &fakeChecker{}, CacheSize: 1000, CacheTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	c := api.Credentials{Scheme: "basic", User: "jk4q6z7goxd5zyyzat7bncb7pfsvkvc6", Password: "ok"}
	if err := a.Authenticate(ctx, c.User, c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Authenticate(ctx, c.User, c); err != nil {
			b.Fatal(err)
		}
	}
}
