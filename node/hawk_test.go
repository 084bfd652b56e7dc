package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawk"
	"github.com/hce-sync/hce/api/hawkid"
	"github.com/hce-sync/hce/api/sync15"
)

// fakeServes is a Membership answering from a flag.
type fakeServes struct {
	serves atomic.Bool
	err    error
}

func (f *fakeServes) Serves(context.Context, string) (bool, error) { return f.serves.Load(), f.err }

// lateKeys is a KeySource whose keys appear when refreshed.
type lateKeys struct {
	StaticKeys
	later     map[string]ed25519.PublicKey
	refreshes atomic.Int32
}

func (r *lateKeys) RefreshKey(_ context.Context, kid string) bool {
	r.refreshes.Add(1)
	if k, ok := r.later[kid]; ok {
		r.Set(kid, k)
		return true
	}
	return false
}

func TestLoadOrCreateHawkKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateHawkKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, HawkKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", fi, err)
	}
	k2, err := LoadOrCreateHawkKey(dir)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("reload: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, HawkKeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateHawkKey(dir); err == nil {
		t.Fatal("junk key accepted")
	}
}

// TestHawkAuthenticator checks the node's half of Sync 1.5 credentials:
// signature and audience of the id, the sealed key, the MAC, the uid of
// the path, revocation, membership, the grace for info/collections, and
// a key id learnt by refreshing.
func TestHawkAuthenticator(t *testing.T) {
	clk := newFakeClock()
	dirKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))
	lateKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{6}, ed25519.SeedSize))
	keys := &lateKeys{later: map[string]ed25519.PublicKey{"late": lateKey.Public().(ed25519.PublicKey)}}
	keys.Set("k1", dirKey.Public().(ed25519.PublicKey))
	nodeKey, err := LoadOrCreateHawkKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	otherNode, _ := hawkid.GenerateNodeKey(rand.Reader)
	now := clk.Now().Unix()
	creds := &fakeCreds{users: map[string]api.CredentialState{"sync-7": {Exists: true, ChangedAt: now - 100}}}
	mem := &fakeServes{}
	mem.serves.Store(true)
	a, err := NewHawkAuthenticator(HawkConfig{Keys: keys, NodeID: "n1", NodeKey: nodeKey, Clock: clk.Now,
		Credentials: creds, Membership: mem})
	if err != nil {
		t.Fatal(err)
	}
	type cred struct{ id, key string }
	issue := func(signer ed25519.PrivateKey, kid, aud string, uid uint64, iat int64, to *hawkid.Claims) cred {
		pub := nodeKey.PublicKey()
		if to != nil {
			pub = otherNode.PublicKey()
		}
		id, key, err := hawkid.Issue(signer, pub, hawkid.Claims{Kid: kid, UID: uid, Sub: "sync-7", Aud: aud, Iat: iat, Exp: iat + 3600}, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return cred{id, key}
	}
	req := func(c cred, path string, skew time.Duration) *http.Request {
		r, _ := http.NewRequest("GET", "http://node.example:8443"+path, nil)
		auth, err := hawk.Sign(hawk.Credentials{ID: c.id, Key: []byte(c.key)}, "GET", path, "node.example", 8443,
			hawk.SignOptions{}, clk.Now().Add(skew).Unix())
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", auth)
		return r
	}
	good := issue(dirKey, "k1", "n1", 7, now-10, nil)
	for _, tc := range []struct {
		name    string
		c       cred
		uid     string
		path    string
		allow   bool
		skew    time.Duration
		advance time.Duration
		want    error
	}{
		{"valid", good, "7", "/1.5/7/info/quota", false, 0, 0, nil},
		{"another uid's path", good, "8", "/1.5/8/info/quota", false, 0, 0, api.ErrUnauthorized},
		{"wrong audience", issue(dirKey, "k1", "n2", 7, now, nil), "7", "/1.5/7/info/quota", false, 0, 0, hawkid.ErrAudience},
		{"sealed to another node", issue(dirKey, "k1", "n1", 7, now, &hawkid.Claims{}), "7", "/1.5/7/info/quota", false, 0, 0, hawkid.ErrNodeKey},
		{"unknown signer", issue(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)), "k9", "n1", 7, now, nil), "7", "/1.5/7/x", false, 0, 0, hawkid.ErrUnknownKey},
		{"key learnt by refreshing", issue(lateKey, "late", "n1", 7, now, nil), "7", "/1.5/7/x", false, 0, 0, nil},
		{"skewed clock", good, "7", "/1.5/7/info/quota", false, 2 * time.Minute, 0, api.ErrUnauthorized},
		{"issued before the last credential change", issue(dirKey, "k1", "n1", 7, now-100, nil), "7", "/1.5/7/x", false, 0, 0, api.ErrTokenRevoked},
		{"expired", good, "7", "/1.5/7/info/quota", false, 0, time.Hour, hawkid.ErrExpired},
		{"expired, info/collections within grace", good, "7", "/1.5/7/info/collections", true, 0, 0, nil},
		{"expired past grace", good, "7", "/1.5/7/info/collections", true, 0, 6 * time.Minute, hawkid.ErrExpired},
	} {
		clk.Add(tc.advance)
		_, err := a.Authenticate(ctx, sync15.AuthRequest{HTTP: req(tc.c, tc.path, tc.skew), UID: tc.uid, AllowExpired: tc.allow})
		if !errors.Is(err, tc.want) || tc.want == nil && err != nil {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if keys.refreshes.Load() != 2 {
		t.Fatalf("%d refreshes", keys.refreshes.Load())
	}
	// A stale timestamp answers the server's time in WWW-Authenticate.
	fresh := issue(dirKey, "k1", "n1", 7, clk.Now().Unix(), nil)
	_, err = a.Authenticate(ctx, sync15.AuthRequest{HTTP: req(fresh, "/1.5/7/x", -3*time.Minute), UID: "7"})
	var se *hawk.StaleError
	if !errors.As(err, &se) || se.Now != clk.Now().Unix() {
		t.Fatalf("stale: %v", err)
	}
	// Replays are refused.
	r1 := req(fresh, "/1.5/7/x", 0)
	if _, err := a.Authenticate(ctx, sync15.AuthRequest{HTTP: r1, UID: "7"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, sync15.AuthRequest{HTTP: r1, UID: "7"}); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("replay: %v", err)
	}
	// Not a current member: 401 marked as a reassignment.
	mem.serves.Store(false)
	id, err := a.Authenticate(ctx, sync15.AuthRequest{HTTP: req(fresh, "/1.5/7/x", 0), UID: "7"})
	if !errors.Is(err, ErrNotServing) || !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("not serving: %v %+v", err, id)
	}
	mem.serves.Store(true)
	// A deleted account.
	creds.set("sync-7", api.CredentialState{})
	if _, err := a.Authenticate(ctx, sync15.AuthRequest{HTTP: req(fresh, "/1.5/7/x", 0), UID: "7"}); !errors.Is(err, api.ErrTokenRevoked) {
		t.Fatalf("deleted account: %v", err)
	}
	// A source that cannot tell: 503, not 401.
	creds.err = api.ErrUnavailable
	if _, err := a.Authenticate(ctx, sync15.AuthRequest{HTTP: req(fresh, "/1.5/7/x", 0), UID: "7"}); errors.Is(err, api.ErrUnauthorized) || err == nil {
		t.Fatalf("unavailable source: %v", err)
	}
	st := a.Stats()
	if st.Failures == 0 || st.NotServing != 1 || st.Errors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestHawkKeyCacheBounded fills the opened-key cache past its bound.
func TestHawkKeyCacheBounded(t *testing.T) {
	clk := newFakeClock()
	dirKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))
	keys := &StaticKeys{}
	keys.Set("k1", dirKey.Public().(ed25519.PublicKey))
	nodeKey, _ := hawkid.GenerateNodeKey(rand.Reader)
	a, err := NewHawkAuthenticator(HawkConfig{Keys: keys, NodeID: "n1", NodeKey: nodeKey, Clock: clk.Now, KeyCache: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		id, key, _ := hawkid.Issue(dirKey, nodeKey.PublicKey(), hawkid.Claims{Kid: "k1", UID: uint64(i + 1), Sub: "u", Aud: "n1",
			Iat: clk.Now().Unix(), Exp: clk.Now().Unix() + 60}, rand.Reader)
		path := "/1.5/" + strconv.Itoa(i+1) + "/x"
		r, _ := http.NewRequest("GET", "http://h:1"+path, nil)
		auth, _ := hawk.Sign(hawk.Credentials{ID: id, Key: []byte(key)}, "GET", path, "h", 1, hawk.SignOptions{}, clk.Now().Unix())
		r.Header.Set("Authorization", auth)
		if _, err := a.Authenticate(ctx, sync15.AuthRequest{HTTP: r, UID: strconv.Itoa(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	n := len(a.cache)
	a.mu.Unlock()
	if n > 100 {
		t.Fatalf("cache holds %d keys", n)
	}
}
