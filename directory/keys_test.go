package directory

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory/state"
)

func seedKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

func TestSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	d := openDir(t, cfg)
	kid := d.SigningKeyID()
	fi, err := os.Stat(filepath.Join(dir, signingKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing.key mode %v", fi.Mode().Perm())
	}
	if _, ok := d.PublicKey(kid); !ok {
		t.Fatal("local key not published at Open")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := openDir(t, cfg)
	if d2.SigningKeyID() != kid {
		t.Fatalf("kid changed across restart: %s -> %s", kid, d2.SigningKeyID())
	}
	if ks := d2.PublicKeys(); len(ks) != 1 || ks[kid] == nil {
		t.Fatalf("published keys after restart: %v", ks)
	}
	if err := d2.RetireKey(context.Background(), kid); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("retiring the key in use: %v", err)
	}
	bad := cfg
	bad.Tokens.TTL = 2 * time.Hour
	if err := bad.Validate(); err == nil {
		t.Fatal("TokenTTL of 2 h accepted")
	}
}

// tokenChecker checks a bearer token as a storage node does: api.VerifyToken
// with the directory's published keys, this node's id as the audience and
// the node's clock, then the token's subject against the request's user.
type tokenChecker struct {
	keys   func(kid string) (ed25519.PublicKey, bool)
	nodeID string
	now    func() time.Time
}

func (c tokenChecker) check(user, tok string) error {
	cl, err := api.VerifyToken(tok, c.keys, c.nodeID, c.now())
	if err != nil {
		return err
	}
	if cl.Sub != user {
		return fmt.Errorf("token is for %q, not %q: %w", cl.Sub, user, api.ErrUnauthorized)
	}
	return nil
}

// TestTokenEndToEnd issues tokens from a real Directory and checks them
// as a storage node does, with the Directory as the source of keys.
func TestTokenEndToEnd(t *testing.T) {
	ctx := context.Background()
	clk := testkit.NewClock(time.Unix(1_800_000_000, 0))
	cfg := testConfig(t, t.TempDir())
	cfg.Clock = clk.Now
	cfg.Tokens.TTL = 20 * time.Minute
	d := openDir(t, cfg)
	for _, u := range []string{"alice", "bob"} {
		if err := d.CreateUser(ctx, u, u+"-password", ""); err != nil {
			t.Fatal(err)
		}
	}
	local := tokenChecker{keys: d.PublicKey, nodeID: DefaultServeNodeID, now: clk.Now}
	other := tokenChecker{keys: d.PublicKey, nodeID: "node-2", now: clk.Now}
	check := func(c tokenChecker, user, tok string) error { return c.check(user, tok) }

	if _, _, _, err := d.IssueToken(ctx, "alice", "wrong", ""); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, _, err := d.IssueToken(ctx, "alice", "alice-password", "node-2"); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("token for a node not holding the user: %v", err)
	}
	tok, nodeURL, exp, err := d.IssueToken(ctx, "alice", "alice-password", "")
	if err != nil {
		t.Fatal(err)
	}
	// Issued in the second the account was created: iat is the next
	// second, after the credentials' last change.
	if nodeURL != "http://node1.example:8080/" || !exp.Equal(clk.Now().Add(time.Second+20*time.Minute)) {
		t.Fatalf("node %q exp %v", nodeURL, exp)
	}
	if err := check(local, "alice", tok); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}

	// Forged: same claims and kid, signed by another key.
	c, _, _, err := api.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := api.SignToken(seedKey(7), c)
	// Unknown kid: a key that was never published.
	u := c
	u.Kid = state.KeyID(seedKey(7).Public().(ed25519.PublicKey))
	unknown, _ := api.SignToken(seedKey(7), u)

	refusals := []struct {
		name string
		a    tokenChecker
		user string
		tok  string
		want error
	}{
		{"forged signature", local, "alice", forged, api.ErrTokenSignature},
		{"unknown kid", local, "alice", unknown, api.ErrTokenUnknownKey},
		{"other node", other, "alice", tok, api.ErrTokenAudience},
		{"other user", local, "bob", tok, api.ErrUnauthorized},
		{"garbage", local, "alice", "v1.e30.", api.ErrTokenMalformed},
	}
	for _, r := range refusals {
		if err := check(r.a, r.user, r.tok); !errors.Is(err, r.want) || !errors.Is(err, api.ErrUnauthorized) {
			t.Errorf("%s: %v, want %v", r.name, err, r.want)
		}
	}

	// Expired: the node's clock passes exp.
	clk.Add(20*time.Minute + time.Second)
	if err := check(local, "alice", tok); !errors.Is(err, api.ErrTokenExpired) {
		t.Fatalf("expired token: %v", err)
	}

	// Rotation: the old key keeps verifying its tokens until retirement.
	oldKid := d.SigningKeyID()
	before, _, _, err := d.IssueToken(ctx, "alice", "alice-password", "")
	if err != nil {
		t.Fatal(err)
	}
	newKid, err := d.RotateKey(ctx)
	if err != nil || newKid == oldKid || d.SigningKeyID() != newKid {
		t.Fatalf("RotateKey = %q, %v (old %q)", newKid, err, oldKid)
	}
	after, _, _, err := d.IssueToken(ctx, "alice", "alice-password", "")
	if err != nil {
		t.Fatal(err)
	}
	if ac, _, _, _ := api.ParseToken(after); ac.Kid != newKid {
		t.Fatalf("new token signed by %q, want %q", ac.Kid, newKid)
	}
	for _, tk := range []string{before, after} {
		if err := check(local, "alice", tk); err != nil {
			t.Fatalf("token refused after rotation: %v", err)
		}
	}
	// Too early to retire: nothing changes.
	if err := d.signer.retireExpired(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.PublicKey(oldKid); !ok {
		t.Fatal("old key retired before its tokens expired")
	}
	// After TokenTTL + skew the old key is retired; its (still unexpired
	// by a lenient node clock) tokens are refused.
	clk.Add(cfg.Tokens.TTL + api.TokenClockSkew)
	if err := d.signer.retireExpired(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.PublicKey(oldKid); ok {
		t.Fatal("old key still published")
	}
	lenient := tokenChecker{keys: d.PublicKey, nodeID: DefaultServeNodeID,
		now: func() time.Time { return clk.Now().Add(-cfg.Tokens.TTL - api.TokenClockSkew) }}
	if err := check(lenient, "alice", before); !errors.Is(err, api.ErrTokenUnknownKey) {
		t.Fatalf("token of a retired key: %v", err)
	}
	if err := check(lenient, "alice", after); err != nil {
		t.Fatalf("token of the current key refused: %v", err)
	}
	fresh, _, _, err := d.IssueToken(ctx, "alice", "alice-password", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := check(local, "alice", fresh); err != nil {
		t.Fatalf("fresh token refused: %v", err)
	}

	// The rotated key is the one kept on disk.
	d.Close()
	d2 := openDir(t, cfg)
	if d2.SigningKeyID() != newKid {
		t.Fatalf("after restart kid %q, want %q", d2.SigningKeyID(), newKid)
	}
}

// TestTokenEndpoint drives GET /user/1.0/{user}/token over HTTP with the
// Directory as the api.TokenIssuer.
func TestTokenEndpoint(t *testing.T) {
	ctx := context.Background()
	d := openDir(t, testConfig(t, t.TempDir()))
	if err := d.CreateUser(ctx, "alice", "alice-password", ""); err != nil {
		t.Fatal(err)
	}
	ucfg := api.DefaultUserConfig()
	ucfg.Accounts, ucfg.Tokens = d, d
	h, err := api.NewUserHandler(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(pw string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/user/1.0/alice/token", nil)
		req.SetBasicAuth("alice", pw)
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	if res := get("wrong"); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", res.StatusCode)
	}
	res := get("alice-password")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	var body struct {
		Token   string `json:"token"`
		Node    string `json:"node"`
		Expires int64  `json:"expires"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	a := tokenChecker{keys: d.PublicKey, nodeID: DefaultServeNodeID, now: time.Now}
	if err := a.check("alice", body.Token); err != nil {
		t.Fatalf("token from the endpoint refused: %v", err)
	}
	if body.Node != "http://node1.example:8080/" || body.Expires <= time.Now().Unix() {
		t.Fatalf("body %+v", body)
	}
}
