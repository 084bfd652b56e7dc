package directory

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawkid"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/api/tokenserver"
)

// fxaKey is a 2048-bit RSA key generated once: key generation is slow.
var (
	fxaKeysOnce sync.Once
	fxaKeys     [2]*rsa.PrivateKey
)

func testRSAKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	fxaKeysOnce.Do(func() {
		for j := range fxaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			fxaKeys[j] = k
		}
	})
	return fxaKeys[i]
}

// fakeFxA is an accounts server: an issuer of access tokens (the local
// issuer's code, with its own key) whose JWKS the directory trusts.
func fakeFxA(t testing.TB, key int, clock func() time.Time) *tokenserver.Issuer {
	t.Helper()
	iss, err := tokenserver.NewIssuer(tokenserver.IssuerConfig{Issuer: "https://accounts.example", Key: testRSAKey(t, key), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// syncNode is a storage node with a Sync 1.5 key.
type syncNode struct {
	*testNode
	priv *ecdh.PrivateKey
}

func newSyncNode(t testing.TB, op string) *syncNode {
	t.Helper()
	priv, err := hawkid.GenerateNodeKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := &syncNode{testNode: newTestNode(t, op, 100), priv: priv}
	n.reg.HawkKey = base64.StdEncoding.EncodeToString(priv.PublicKey().Bytes())
	return n
}

// tokenReq is one request to the tokenserver.
type tokenReq struct {
	token, keyID, clientState, query string
}

type tokenAnswer struct {
	status int
	body   string
	resp   tokenserver.Response
	err    struct {
		Status string `json:"status"`
		Errors []struct {
			Location, Name, Description string
		} `json:"errors"`
	}
}

func getToken(t testing.TB, url string, r tokenReq) tokenAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+tokenserver.Path+r.query, nil)
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.keyID != "" {
		req.Header.Set("X-KeyID", r.keyID)
	}
	if r.clientState != "" {
		req.Header.Set("X-Client-State", r.clientState)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	a := tokenAnswer{status: res.StatusCode, body: string(b)}
	if res.StatusCode == 200 {
		if err := json.Unmarshal(b, &a.resp); err != nil {
			t.Fatalf("answer %s: %v", b, err)
		}
	} else if err := json.Unmarshal(b, &a.err); err != nil {
		t.Fatalf("error answer %d %s: %v", res.StatusCode, b, err)
	}
	return a
}

func keyID(t testing.TB, kca int64, cs string) string {
	t.Helper()
	k, err := tokenserver.FormatKeyID(tokenserver.KeyID{KeysChangedAt: kca, ClientState: cs})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t testing.TB, iss *tokenserver.Issuer, tr tokenserver.TokenRequest) string {
	t.Helper()
	tok, err := iss.Issue(tr)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTokenServer runs the tokenserver's rules through a voter's HTTP
// handler with an accounts server whose key set the voter trusts: valid,
// expired, wrong scope, audience and signature, X-KeyID and
// X-Client-State errors, generation and key changes.
func TestTokenServer(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	fxa := fakeFxA(t, 0, clock.Now)
	other := fakeFxA(t, 1, clock.Now) // same issuer name, another key
	set := fxa.JWKS()
	d, url := openServed(t, func(c *Config) {
		c.Clock = clock.Now
		c.Nodes.AutoApprove = true
		c.Sync.JWKS = &set
		c.Sync.Verifier.Issuer = "https://accounts.example"
		c.Sync.MetricsSecret = "metrics"
	})
	nodes := []*syncNode{newSyncNode(t, "a"), newSyncNode(t, "b")}
	byID := map[string]*syncNode{}
	for _, n := range nodes {
		if code := n.register(t, url); code != 200 {
			t.Fatalf("register: %d", code)
		}
		byID[n.reg.ID] = n
	}
	cs1 := hex.EncodeToString([]byte("0123456789abcdef"))
	cs2 := hex.EncodeToString([]byte("fedcba9876543210"))
	good := func(gen int64) string {
		return issue(t, fxa, tokenserver.TokenRequest{Subject: "fxauid1", Generation: gen})
	}

	first := getToken(t, url, tokenReq{token: good(1000), keyID: keyID(t, 1000, cs1)})
	if first.status != 200 {
		t.Fatalf("valid token: %d %s", first.status, first.body)
	}
	r := first.resp
	if r.UID != 1 || r.Duration != 3600 || r.HashAlg != "sha256" || r.NodeType != "hce" ||
		r.HashedFxAUID != tokenserver.HashFxAUID([]byte("metrics"), "fxauid1") {
		t.Fatalf("answer %+v", r)
	}
	// The credentials are for the primary of the new account, sealed to
	// its key, and verify against the directory's published keys.
	prim, _, _ := d.Assignment("sync-1")
	n := byID[prim]
	if n == nil || r.APIEndpoint != strings.TrimSuffix(n.reg.BaseURL, "/")+"/1.5/1" {
		t.Fatalf("endpoint %q, primary %q", r.APIEndpoint, prim)
	}
	c, err := hawkid.Verify(r.ID, d.PublicKey, prim, clock.Now(), 0)
	if err != nil || c.Sub != "sync-1" || c.UID != 1 {
		t.Fatalf("hawk id: %+v %v", c, err)
	}
	raw, err := hawkid.Open(n.priv, &c)
	if err != nil || hawkid.KeyString(raw) != r.Key {
		t.Fatalf("sealed key: %v", err)
	}
	if c.Exp-c.Iat != 3600 {
		t.Fatalf("lifetime %d", c.Exp-c.Iat)
	}

	expired := issue(t, fxa, tokenserver.TokenRequest{Subject: "fxauid1", Generation: 1000, TTL: time.Minute})
	wrongScope := issue(t, fxa, tokenserver.TokenRequest{Subject: "fxauid1", Generation: 1000, Scopes: []string{"profile"}})
	forged := issue(t, other, tokenserver.TokenRequest{Subject: "fxauid1", Generation: 1000})
	for _, tc := range []struct {
		name   string
		req    tokenReq
		status int
		want   string
		uid    uint64
	}{
		{"same again", tokenReq{token: good(1000), keyID: keyID(t, 1000, cs1)}, 200, "", 1},
		{"shorter duration", tokenReq{token: good(1000), keyID: keyID(t, 1000, cs1), query: "?duration=60"}, 200, "", 1},
		{"no authorization", tokenReq{keyID: keyID(t, 1000, cs1)}, 401, "error", 0},
		{"not bearer", tokenReq{token: "", keyID: "x"}, 401, "error", 0},
		{"wrong scope", tokenReq{token: wrongScope, keyID: keyID(t, 1000, cs1)}, 401, "invalid-credentials", 0},
		{"wrong signature", tokenReq{token: forged, keyID: keyID(t, 1000, cs1)}, 401, "invalid-credentials", 0},
		{"garbage token", tokenReq{token: "a.b.c", keyID: keyID(t, 1000, cs1)}, 401, "invalid-credentials", 0},
		{"no X-KeyID", tokenReq{token: good(1000)}, 401, "invalid-key-id", 0},
		{"bad X-KeyID", tokenReq{token: good(1000), keyID: "12-!!"}, 401, "invalid-credentials", 0},
		{"X-Client-State mismatch", tokenReq{token: good(1000), keyID: keyID(t, 1000, cs1), clientState: cs2}, 401, "invalid-client-state", 0},
		{"X-Client-State malformed", tokenReq{token: good(1000), keyID: keyID(t, 1000, cs1), clientState: "no way!"}, 400, "error", 0},
		{"X-Client-State agreeing", tokenReq{token: good(1000), keyID: keyID(t, 1000, cs1), clientState: cs1}, 200, "", 1},
		{"newer generation", tokenReq{token: good(2000), keyID: keyID(t, 1000, cs1)}, 200, "", 1},
		{"older generation", tokenReq{token: good(1500), keyID: keyID(t, 1000, cs1)}, 401, "invalid-generation", 0},
		{"new keys, same keys_changed_at", tokenReq{token: good(3000), keyID: keyID(t, 1000, cs2)}, 401, "invalid-client-state", 0},
		{"key rotation", tokenReq{token: good(3000), keyID: keyID(t, 3000, cs2)}, 200, "", 2},
		{"older keys_changed_at", tokenReq{token: good(3000), keyID: keyID(t, 2000, cs2)}, 401, "invalid-keysChangedAt", 0},
		{"back to old keys", tokenReq{token: good(4000), keyID: keyID(t, 4000, cs1)}, 401, "invalid-client-state", 0},
	} {
		a := getToken(t, url, tc.req)
		if a.status != tc.status || tc.status != 200 && a.err.Status != tc.want || tc.uid != 0 && a.resp.UID != tc.uid {
			t.Fatalf("%s: %d %s, want %d %q uid %d", tc.name, a.status, a.body, tc.status, tc.want, tc.uid)
		}
		if tc.name == "shorter duration" && a.resp.Duration != 60 {
			t.Fatalf("duration %d", a.resp.Duration)
		}
	}
	// The rotation deleted the old account (its data was encrypted with
	// the old keys).
	if ok, _ := d.UserExists(context.Background(), "sync-1"); ok {
		t.Fatal("sync-1 survived the key rotation")
	}
	// An expired token is refused once its time (and the leeway) passed.
	clock.Add(3 * time.Minute)
	if a := getToken(t, url, tokenReq{token: expired, keyID: keyID(t, 3000, cs2)}); a.status != 401 || a.err.Status != "invalid-credentials" {
		t.Fatalf("expired: %d %s", a.status, a.body)
	}
	// Sync accounts have no password.
	if err := d.CheckPassword(context.Background(), "sync-2", ""); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("password of a sync account: %v", err)
	}
}

// TestTokenServerAudience checks a configured audience.
func TestTokenServerAudience(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	fxa := fakeFxA(t, 0, clock.Now)
	set := fxa.JWKS()
	_, url := openServed(t, func(c *Config) {
		c.Clock = clock.Now
		c.Sync.JWKS = &set
		c.Sync.Verifier.Audiences = []string{"https://sync.example"}
		c.Sync.ServeNodeKey = make([]byte, 32)
		c.Sync.ServeNodeKey[0] = 9
	})
	a := getToken(t, url, tokenReq{token: issue(t, fxa, tokenserver.TokenRequest{Subject: "u"}), keyID: keyID(t, 1, "aa")})
	if a.status != 401 || a.err.Status != "invalid-credentials" {
		t.Fatalf("token without the audience: %d %s", a.status, a.body)
	}
}

// TestTokenServerServeMode issues credentials for the node in the same
// process when no storage node is registered.
func TestTokenServerServeMode(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	fxa := fakeFxA(t, 0, clock.Now)
	set := fxa.JWKS()
	node, _ := hawkid.GenerateNodeKey(rand.Reader)
	d, url := openServed(t, func(c *Config) {
		c.Clock = clock.Now
		c.Sync.JWKS = &set
		c.Sync.ServeNodeKey = node.PublicKey().Bytes()
	})
	a := getToken(t, url, tokenReq{token: issue(t, fxa, tokenserver.TokenRequest{Subject: "u"}), keyID: keyID(t, 1, "aa")})
	if a.status != 200 || a.resp.APIEndpoint != "http://node1.example:8080/1.5/1" {
		t.Fatalf("serve mode: %d %s", a.status, a.body)
	}
	c, err := hawkid.Verify(a.resp.ID, d.PublicKey, DefaultServeNodeID, clock.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hawkid.Open(node, &c); err != nil {
		t.Fatal(err)
	}
	// Without a way to verify tokens the route is off.
	_, off := openServed(t, nil)
	if a := getToken(t, off, tokenReq{token: "x", keyID: "1-qg"}); a.status != 404 {
		t.Fatalf("tokenserver off: %d %s", a.status, a.body)
	}
}

// TestTokenServerNodeWithoutKey answers 503 for a primary that published
// no Sync 1.5 key.
func TestTokenServerNodeWithoutKey(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	fxa := fakeFxA(t, 0, clock.Now)
	set := fxa.JWKS()
	d, url := openServed(t, func(c *Config) {
		c.Clock = clock.Now
		c.Nodes.AutoApprove = true
		c.Sync.JWKS = &set
	})
	registerNodes(t, d, url, []string{"a"}, 10)
	a := getToken(t, url, tokenReq{token: issue(t, fxa, tokenserver.TokenRequest{Subject: "u"}), keyID: keyID(t, 1, "aa")})
	if a.status != 503 || a.err.Status != "error" {
		t.Fatalf("node without a key: %d %s", a.status, a.body)
	}
}

// TestTokenServerJWKSRefresh reads the key set from a URL and reads it
// again when a token names a key it lacks (the accounts server rotated).
func TestTokenServerJWKSRefresh(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	a1, a2 := fakeFxA(t, 0, clock.Now), fakeFxA(t, 1, clock.Now)
	var current atomic.Pointer[tokenserver.JWKS]
	s1 := a1.JWKS()
	current.Store(&s1)
	var fetches atomic.Int32
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		_ = json.NewEncoder(w).Encode(current.Load())
	}))
	defer jwks.Close()
	node, _ := hawkid.GenerateNodeKey(rand.Reader)
	_, url := openServed(t, func(c *Config) {
		c.Clock = clock.Now
		c.Sync.JWKSURL = jwks.URL
		c.Sync.ServeNodeKey = node.PublicKey().Bytes()
	})
	if fetches.Load() != 1 {
		t.Fatalf("%d fetches at start", fetches.Load())
	}
	kid := keyID(t, 1, "aa")
	if a := getToken(t, url, tokenReq{token: issue(t, a1, tokenserver.TokenRequest{Subject: "u"}), keyID: kid}); a.status != 200 {
		t.Fatalf("first key: %d %s", a.status, a.body)
	}
	s2 := a2.JWKS()
	current.Store(&s2)
	// Within a minute of the last read, an unknown key is refused
	// without asking again.
	tok2 := issue(t, a2, tokenserver.TokenRequest{Subject: "u"})
	if a := getToken(t, url, tokenReq{token: tok2, keyID: kid}); a.status != 401 || fetches.Load() != 1 {
		t.Fatalf("unknown key too soon: %d, %d fetches", a.status, fetches.Load())
	}
	clock.Add(2 * time.Minute)
	if a := getToken(t, url, tokenReq{token: tok2, keyID: kid}); a.status != 200 || fetches.Load() != 2 {
		t.Fatalf("rotated key: %d %s, %d fetches", a.status, a.body, fetches.Load())
	}
}

// TestTokenServerRemoteVerify verifies tokens with the accounts server's
// verification endpoint.
func TestTokenServerRemoteVerify(t *testing.T) {
	verify := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Token string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		switch body.Token {
		case "good":
			_, _ = io.WriteString(w, `{"user":"remote1","client_id":"c","scope":["profile","https://identity.mozilla.com/apps/oldsync"],"generation":5}`)
		case "profile-only":
			_, _ = io.WriteString(w, `{"user":"remote1","scope":["profile"]}`)
		case "down":
			w.WriteHeader(http.StatusBadGateway)
		default:
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"code":400,"errno":108}`)
		}
	}))
	defer verify.Close()
	node, _ := hawkid.GenerateNodeKey(rand.Reader)
	_, url := openServed(t, func(c *Config) {
		c.Sync.VerifyURL = verify.URL
		c.Sync.ServeNodeKey = node.PublicKey().Bytes()
	})
	kid := keyID(t, 1, "aa")
	for _, tc := range []struct {
		token  string
		status int
	}{{"good", 200}, {"bad", 401}, {"profile-only", 401}, {"down", 503}} {
		if a := getToken(t, url, tokenReq{token: tc.token, keyID: kid}); a.status != tc.status {
			t.Fatalf("%s: %d %s", tc.token, a.status, a.body)
		}
	}
}

// TestLocalIssuer gets access tokens for the directory's own accounts
// and trades them for Hawk credentials; a password change is a
// generation change.
func TestLocalIssuer(t *testing.T) {
	clock := testkit.NewClock(time.Now())
	iss, err := tokenserver.NewIssuer(tokenserver.IssuerConfig{Issuer: "http://local.example", Key: testRSAKey(t, 0), Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	node, _ := hawkid.GenerateNodeKey(rand.Reader)
	d, url := openServed(t, func(c *Config) {
		c.Clock = clock.Now
		c.Sync.Local = iss
		c.Sync.ServeNodeKey = node.PublicKey().Bytes()
	})
	ctx := context.Background()
	if err := d.CreateUser(ctx, "alice", "password1", ""); err != nil {
		t.Fatal(err)
	}
	local := func(user, pass string) (int, LocalTokenResponse) {
		req, _ := http.NewRequest(http.MethodPost, url+PathFxALocalToken, nil)
		req.SetBasicAuth(user, pass)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var lt LocalTokenResponse
		_ = json.NewDecoder(res.Body).Decode(&lt)
		return res.StatusCode, lt
	}
	if code, _ := local("alice", "wrong"); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	code, lt := local("alice", "password1")
	if code != 200 || lt.FxAUID != "local.alice" {
		t.Fatalf("local token: %d %+v", code, lt)
	}
	kid := keyID(t, 1, "aa")
	a := getToken(t, url, tokenReq{token: lt.AccessToken, keyID: kid})
	if a.status != 200 || a.resp.UID != 1 {
		t.Fatalf("local token at the tokenserver: %d %s", a.status, a.body)
	}
	c1, _ := hawkid.Verify(a.resp.ID, d.PublicKey, DefaultServeNodeID, clock.Now(), 0)
	// A password change raises the generation: the next login moves the
	// Sync account's credential time past the credentials issued before.
	clock.Add(2 * time.Second)
	if err := d.SetPassword(ctx, "alice", "password2"); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Second)
	_, lt2 := local("alice", "password2")
	a2 := getToken(t, url, tokenReq{token: lt2.AccessToken, keyID: kid})
	if a2.status != 200 || a2.resp.UID != 1 {
		t.Fatalf("after the password change: %d %s", a2.status, a2.body)
	}
	st, _ := d.Credentials(ctx, "sync-1")
	if !st.Revokes(api.TokenClaims{Iat: c1.Iat}) {
		t.Fatalf("credentials of iat %d not revoked by %+v", c1.Iat, st)
	}
	// The old access token (older generation) is refused now.
	if a := getToken(t, url, tokenReq{token: lt.AccessToken, keyID: kid}); a.status != 401 || a.err.Status != "invalid-generation" {
		t.Fatalf("old generation: %d %s", a.status, a.body)
	}
	// The key set is public.
	res, err := http.Get(url + PathFxALocalJWKS)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if _, err := tokenserver.ParseJWKS(b); err != nil {
		t.Fatalf("jwks: %v", err)
	}
}

// TestRegistrationHawkKey records a node's Sync key from its signed
// registration and refuses a malformed one.
func TestRegistrationHawkKey(t *testing.T) {
	d, url := openServed(t, func(c *Config) { c.Nodes.AutoApprove = true })
	n := newSyncNode(t, "a")
	if code := n.register(t, url); code != 200 {
		t.Fatal(code)
	}
	info, _ := d.state.Node(n.reg.ID)
	if string(info.HawkKey) != string(n.priv.PublicKey().Bytes()) {
		t.Fatalf("hawk key %x", info.HawkKey)
	}
	bad := newSyncNode(t, "a")
	bad.reg.HawkKey = base64.StdEncoding.EncodeToString([]byte("short"))
	if code := bad.register(t, url); code != 400 {
		t.Fatalf("bad key: %d", code)
	}
	// A node without a key registers as before.
	plain := newTestNode(t, "b", 10)
	if code := plain.register(t, url); code != 200 {
		t.Fatalf("plain: %d", code)
	}
	if info, _ := d.state.Node(plain.reg.ID); info.HawkKey != nil {
		t.Fatal("key out of nowhere")
	}
}
