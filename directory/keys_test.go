package directory

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
)

func seedKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

func publishOf(priv ed25519.PrivateKey, owner string) PublishKey {
	pub := priv.Public().(ed25519.PublicKey)
	return PublishKey{Kid: KeyID(pub), PublicKey: pub, Owner: owner, Created: 100}
}

func TestKeyCommandCodec(t *testing.T) {
	for _, c := range []Command{publishOf(seedKey(1), "dir1"), RetireKey{Kid: "abc"}} {
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("decode %v: %v", c.Type(), err)
		}
		ge, _ := EncodeCommand(got)
		if !bytes.Equal(ge, enc) {
			t.Fatalf("round trip of %v changed it", c.Type())
		}
	}
	if CmdPublishKey.String() != "PublishKey" || CmdRetireKey.String() != "RetireKey" {
		t.Fatal("command names")
	}
	if _, err := DecodeCommand(append([]byte{byte(CmdRetireKey), commandV1}, `{"kid":"a","x":1}`...)); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := DecodeCommand([]byte{byte(CmdPublishKey), 2, '{', '}'}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("unknown version: %v", err)
	}
	if KeyID(seedKey(1).Public().(ed25519.PublicKey)) == KeyID(seedKey(2).Public().(ed25519.PublicKey)) ||
		len(KeyID(seedKey(1).Public().(ed25519.PublicKey))) != 16 {
		t.Fatal("KeyID")
	}
}

func TestFSMKeys(t *testing.T) {
	f := newFSM(testLogger(t), nil)
	good := publishOf(seedKey(1), "dir1")
	badKid := good
	badKid.Kid = "0000000000000000"
	short := good
	short.PublicKey = good.PublicKey[:10]
	noOwner := good
	noOwner.Owner = ""
	tests := []struct {
		name string
		cmd  Command
		want error
	}{
		{"publish", good, nil},
		{"again", good, nil},
		{"bad kid", badKid, ErrBadKey},
		{"short key", short, ErrBadKey},
		{"no owner", noOwner, ErrBadKey},
		{"publish 2", publishOf(seedKey(2), "dir2"), nil},
		{"retire 2", RetireKey{Kid: publishOf(seedKey(2), "").Kid}, nil},
		{"retire unknown", RetireKey{Kid: "nope"}, nil},
	}
	for i, tt := range tests {
		enc, err := EncodeCommand(tt.cmd)
		if err != nil {
			t.Fatal(err)
		}
		res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: enc})
		err, _ = res.(error)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Fatalf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if ks := f.signingKeys(); len(ks) != 1 || ks[0].Kid != good.Kid {
		t.Fatalf("keys %+v", ks)
	}

	// Snapshot and restore keep the keys.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	g := newFSM(testLogger(t), nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatalf("restore: %v\n%s", err, buf.String())
	}
	if k, ok := g.signingKeyInfo(good.Kid); !ok || !bytes.Equal(k.PublicKey, good.PublicKey) || k.Owner != "dir1" {
		t.Fatalf("restored key %+v %v", k, ok)
	}

	// A snapshot without keys (version 1) restores, with no keys.
	old := `{"format":"hce-directory","version":1,"accounts":1}` + "\n" +
		`{"name":"alice","hash":"h","created":1}` + "\n"
	if err := g.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatalf("restore v1: %v", err)
	}
	if len(g.signingKeys()) != 0 {
		t.Fatal("v1 restore kept keys")
	}
	// Version 1 cannot carry keys; a bad key in a snapshot is refused.
	for _, bad := range []string{
		`{"format":"hce-directory","version":1,"accounts":0,"keys":1}` + "\n",
		`{"format":"hce-directory","version":2,"accounts":0,"keys":1}` + "\n" + `{"kid":"x","pk":"AAAA","owner":"d","created":1}` + "\n",
	} {
		if err := g.Restore(io.NopCloser(strings.NewReader(bad))); err == nil {
			t.Fatalf("restored %q", bad)
		}
	}
}

// testClock is an adjustable clock shared by a Directory and an
// Authenticator.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
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
	bad.TokenTTL = 2 * time.Hour
	if err := bad.Validate(); err == nil {
		t.Fatal("TokenTTL of 2 h accepted")
	}
}

// TestTokenEndToEnd issues tokens from a real Directory and checks them
// with a node.Authenticator using the Directory as its KeySource.
func TestTokenEndToEnd(t *testing.T) {
	ctx := context.Background()
	clk := &testClock{now: time.Unix(1_800_000_000, 0)}
	cfg := testConfig(t, t.TempDir())
	cfg.Clock = clk.Now
	cfg.TokenTTL = 20 * time.Minute
	d := openDir(t, cfg)
	for _, u := range []string{"alice", "bob"} {
		if err := d.CreateUser(ctx, u, u+"-password", ""); err != nil {
			t.Fatal(err)
		}
	}
	auth := func(nodeID string) *node.Authenticator {
		a, err := node.NewAuthenticator(node.AuthConfig{DisableBasic: true, Keys: d, NodeID: nodeID, Clock: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	local, other := auth(DefaultServeNodeID), auth("node-2")
	check := func(a *node.Authenticator, user, tok string) error {
		return a.Authenticate(ctx, user, api.Credentials{Scheme: "bearer", Token: tok})
	}

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
	if nodeURL != "http://node1.example:8080/" || !exp.Equal(clk.Now().Add(20*time.Minute)) {
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
	u.Kid = KeyID(seedKey(7).Public().(ed25519.PublicKey))
	unknown, _ := api.SignToken(seedKey(7), u)

	refusals := []struct {
		name string
		a    *node.Authenticator
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
	clk.Add(20 * time.Minute)
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
	if err := d.retireExpiredKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.PublicKey(oldKid); !ok {
		t.Fatal("old key retired before its tokens expired")
	}
	// After TokenTTL + skew the old key is retired; its (still unexpired
	// by a lenient node clock) tokens are refused.
	clk.Add(cfg.TokenTTL + api.TokenClockSkew)
	if err := d.retireExpiredKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.PublicKey(oldKid); ok {
		t.Fatal("old key still published")
	}
	lenient, err := node.NewAuthenticator(node.AuthConfig{DisableBasic: true, Keys: d, NodeID: DefaultServeNodeID,
		Clock: func() time.Time { return clk.Now().Add(-cfg.TokenTTL - api.TokenClockSkew) }})
	if err != nil {
		t.Fatal(err)
	}
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
	a, err := node.NewAuthenticator(node.AuthConfig{DisableBasic: true, Keys: d, NodeID: DefaultServeNodeID})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Authenticate(ctx, "alice", api.Credentials{Scheme: "bearer", Token: body.Token}); err != nil {
		t.Fatalf("token from the endpoint refused: %v", err)
	}
	if body.Node != "http://node1.example:8080/" || body.Expires <= time.Now().Unix() {
		t.Fatalf("body %+v", body)
	}
}
