package tokenserver

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
)

func TestDecide(t *testing.T) {
	const cs1, cs2, cs3 = "aaaa", "bbbb", "cccc"
	user := func(g, k int64, cs string, old ...string) *UserState {
		return &UserState{UID: 7, Generation: g, KeysChangedAt: k, ClientState: cs, OldClientStates: old}
	}
	for _, tc := range []struct {
		name   string
		stored *UserState
		req    Claims
		want   Outcome
		err    error
	}{
		{"first use", nil, Claims{10, 5, cs1}, Outcome{Create, 10, 5, cs1}, nil},
		{"first use without generation", nil, Claims{0, 5, cs1}, Outcome{Create, 0, 5, cs1}, nil},
		{"same values", user(10, 5, cs1), Claims{10, 5, cs1}, Outcome{Keep, 10, 5, cs1}, nil},
		{"no generation reported", user(10, 5, cs1), Claims{0, 5, cs1}, Outcome{Keep, 10, 5, cs1}, nil},
		{"newer generation, same keys", user(10, 5, cs1), Claims{20, 5, cs1}, Outcome{Update, 20, 5, cs1}, nil},
		{"first keys_changed_at on an old record", user(10, 0, cs1), Claims{10, 8, cs1}, Outcome{Update, 10, 8, cs1}, nil},
		{"keys changed: new uid", user(10, 5, cs1), Claims{20, 20, cs2}, Outcome{Replace, 20, 20, cs2}, nil},
		{"keys changed, no generation in token", user(10, 5, cs1), Claims{0, 20, cs2}, Outcome{Replace, 20, 20, cs2}, nil},
		{"keys changed, no generation, kca below generation", user(30, 5, cs1), Claims{0, 20, cs2}, Outcome{Replace, 30, 20, cs2}, nil},
		{"newer kca without generation bumps generation", user(10, 5, cs1), Claims{0, 12, cs1}, Outcome{Update, 12, 12, cs1}, nil},
		{"older generation", user(20, 5, cs1), Claims{10, 5, cs1}, Outcome{}, ErrInvalidGeneration},
		{"older keys_changed_at", user(20, 15, cs1), Claims{20, 10, cs1}, Outcome{}, ErrInvalidKeysChangedAt},
		{"keys_changed_at no longer sent", user(20, 15, cs1), Claims{20, 0, cs1}, Outcome{}, ErrInvalidKeysChangedAt},
		{"kca newer than generation", user(10, 5, cs1), Claims{15, 20, cs1}, Outcome{}, ErrInvalidKeysChangedAt},
		{"empty client state", user(10, 5, cs1), Claims{20, 20, ""}, Outcome{}, ErrInvalidClientState},
		{"stale client state", user(10, 5, cs2, cs1), Claims{20, 20, cs1}, Outcome{}, ErrInvalidClientState},
		{"new client state without generation change", user(10, 5, cs1), Claims{10, 8, cs2}, Outcome{}, ErrInvalidClientState},
		{"new client state without kca change", user(10, 5, cs1), Claims{20, 5, cs2}, Outcome{}, ErrInvalidClientState},
		{"new client state, no kca on record", user(10, 0, cs1), Claims{20, 0, cs2}, Outcome{Replace, 20, 0, cs2}, nil},
		{"first client state on a record without one", user(10, 0, ""), Claims{20, 0, cs3}, Outcome{Replace, 20, 0, cs3}, nil},
		{"negative generation", user(10, 5, cs1), Claims{-1, 5, cs1}, Outcome{}, ErrInvalidGeneration},
		{"negative kca", nil, Claims{10, -1, cs1}, Outcome{}, ErrInvalidKeysChangedAt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decide(tc.stored, tc.req)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Decide = %+v, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Decide = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if Create.String() != "create" || Replace.String() != "replace" || Action(0).String() != "invalid" {
		t.Fatal("Action.String")
	}
}

func TestKeyID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want KeyID
		ok   bool
	}{
		{"0000000001234-u82x7hDPj46ftsbCpvxOjA", KeyID{1234, "bbcdb1ee10cf8f8e9fb6c6c2a6fc4e8c"}, true},
		{"1234-qqo", KeyID{1234, "aaaa"}, true},
		{"0-AA", KeyID{0, "00"}, true},
		{"1234-", KeyID{}, false},
		{"-qqo", KeyID{}, false},
		{"abc-qqo", KeyID{}, false},
		{"+12-qqo", KeyID{}, false},
		{"12-qqo=", KeyID{}, false},
		{"12-qq+o", KeyID{}, false},
		{"12-qqp", KeyID{}, false}, // non-canonical trailing bits
		{"99999999999999999999-qqo", KeyID{}, false},
		{"12-" + strings.Repeat("A", 24), KeyID{}, false}, // 18 bytes
		{"12", KeyID{}, false},
	} {
		got, err := ParseKeyID(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParseKeyID(%q) = %+v, %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("ParseKeyID(%q) error %v", tc.in, err)
		}
	}
	s, err := FormatKeyID(KeyID{1234, "bbcdb1ee10cf8f8e9fb6c6c2a6fc4e8c"})
	if err != nil || s != "0000000001234-u82x7hDPj46ftsbCpvxOjA" {
		t.Fatalf("FormatKeyID = %q, %v", s, err)
	}
	if _, err := FormatKeyID(KeyID{1, "zz"}); err == nil {
		t.Fatal("FormatKeyID of bad hex")
	}
	o := Outcome{Generation: 99, ClientState: "aaaa"}
	if s, _ := o.FxAKeyID(); s != "0000000000099-qqo" {
		t.Fatalf("FxAKeyID falls back to generation: %q", s)
	}
}

func TestParseRequest(t *testing.T) {
	const kid = "0000000001234-u82x7hDPj46ftsbCpvxOjA"
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		url  string
		want Request
		err  error
	}{
		{"good", map[string]string{"Authorization": "Bearer tok", "X-KeyID": kid}, "/1.0/sync/1.5", Request{"tok", KeyID{1234, "bbcdb1ee10cf8f8e9fb6c6c2a6fc4e8c"}, 0}, nil},
		{"lower-case scheme and duration", map[string]string{"Authorization": "bearer tok", "X-KeyID": kid}, "/1.0/sync/1.5?duration=60", Request{"tok", KeyID{1234, "bbcdb1ee10cf8f8e9fb6c6c2a6fc4e8c"}, 60}, nil},
		{"duration too long is ignored", map[string]string{"Authorization": "Bearer tok", "X-KeyID": kid}, "/?duration=7200", Request{"tok", KeyID{1234, "bbcdb1ee10cf8f8e9fb6c6c2a6fc4e8c"}, 0}, nil},
		{"bad duration is ignored", map[string]string{"Authorization": "Bearer tok", "X-KeyID": kid}, "/?duration=x", Request{"tok", KeyID{1234, "bbcdb1ee10cf8f8e9fb6c6c2a6fc4e8c"}, 0}, nil},
		{"matching X-Client-State", map[string]string{"Authorization": "Bearer tok", "X-KeyID": kid, "X-Client-State": "bbcdb1ee10cf8f8e9fb6c6c2a6fc4e8c"}, "/", Request{"tok", KeyID{1234, "bbcdb1ee10cf8f8e9fb6c6c2a6fc4e8c"}, 0}, nil},
		{"no Authorization", map[string]string{"X-KeyID": kid}, "/", Request{}, ErrUnauthorized},
		{"Hawk scheme", map[string]string{"Authorization": "Hawk id=x", "X-KeyID": kid}, "/", Request{}, ErrUnauthorized},
		{"empty bearer", map[string]string{"Authorization": "Bearer  ", "X-KeyID": kid}, "/", Request{}, ErrInvalidCredentials},
		{"no X-KeyID", map[string]string{"Authorization": "Bearer tok"}, "/", Request{}, ErrInvalidKeyID},
		{"bad X-KeyID", map[string]string{"Authorization": "Bearer tok", "X-KeyID": "nope"}, "/", Request{}, ErrInvalidCredentials},
		{"malformed X-Client-State", map[string]string{"Authorization": "Bearer tok", "X-KeyID": kid, "X-Client-State": "not hex!"}, "/", Request{}, ErrMalformedClientState},
		{"mismatched X-Client-State", map[string]string{"Authorization": "Bearer tok", "X-KeyID": kid, "X-Client-State": "aaaa"}, "/", Request{}, ErrInvalidClientState},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.url, nil)
			for k, v := range tc.hdr {
				r.Header.Set(k, v)
			}
			got, err := ParseRequest(r, DefaultDuration)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseRequest = %+v, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseRequest = %+v, %v", got, err)
			}
		})
	}
}

func TestWireFormats(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	w := httptest.NewRecorder()
	WriteResponse(w, Response{ID: "h1.x.y", Key: "k", UID: 42, APIEndpoint: "https://n.example/1.5/42", Duration: 3600,
		HashedFxAUID: "c0e0d0d186810ad2f8446a471166b220", NodeType: "hce"}, now)
	want := `{"id":"h1.x.y","key":"k","uid":42,"api_endpoint":"https://n.example/1.5/42","duration":3600,"hashed_fxa_uid":"c0e0d0d186810ad2f8446a471166b220","hashalg":"sha256","node_type":"hce"}`
	if w.Code != 200 || w.Body.String() != want || w.Header().Get("Content-Type") != "application/json" ||
		w.Header().Get("X-Timestamp") != "1800000000" || w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("response %d %v %s", w.Code, w.Header(), w.Body)
	}
	for _, tc := range []struct {
		err    error
		status int
		body   string
	}{
		{ErrInvalidCredentials, 401, `{"status":"invalid-credentials","errors":[{"location":"body","name":"","description":"Unauthorized"}]}`},
		{ErrInvalidGeneration, 401, `{"status":"invalid-generation","errors":[{"location":"body","name":"","description":"Unauthorized"}]}`},
		{ErrInvalidKeysChangedAt, 401, `{"status":"invalid-keysChangedAt","errors":[{"location":"body","name":"","description":"Unauthorized"}]}`},
		{ErrInvalidClientState.With("Unacceptable client-state value stale value"), 401, `{"status":"invalid-client-state","errors":[{"location":"header","name":"X-Client-State","description":"Unacceptable client-state value stale value"}]}`},
		{ErrInvalidKeyID.With("Missing X-KeyID header"), 401, `{"status":"invalid-key-id","errors":[{"location":"header","name":"X-KeyID","description":"Missing X-KeyID header"}]}`},
		{ErrNewUsersDisabled, 403, `{"status":"new-users-disabled","errors":[{"location":"body","name":"","description":"New users are not allowed"}]}`},
		{ErrUnsupportedVersion, 404, `{"status":"error","errors":[{"location":"url","name":"version","description":"Unsupported application version"}]}`},
		{ErrMalformedClientState, 400, `{"status":"error","errors":[{"location":"header","name":"X-Client-State","description":"Invalid client state value"}]}`},
		{errors.New("no leader"), 503, `{"status":"error","errors":[{"location":"body","name":"","description":"Resource is not available"}]}`},
	} {
		w := httptest.NewRecorder()
		WriteError(w, tc.err, now)
		if w.Code != tc.status || w.Body.String() != tc.body || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("WriteError(%v) = %d %s", tc.err, w.Code, w.Body)
		}
	}
	if HashFxAUID([]byte("metrics-secret"), "6d940dd41e636cc156074109b8092f96") != "c0e0d0d186810ad2f8446a471166b220" {
		t.Fatal("HashFxAUID")
	}
}

var (
	keysOnce sync.Once
	keyA     *rsa.PrivateKey
	keyB     *rsa.PrivateKey
)

// testKeys returns two RSA keys shared by the package's tests.
func testKeys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if keyA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if keyB, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return keyA, keyB
}

const testIssuer = "https://accounts.local.test"

func newIssuer(t testing.TB, key *rsa.PrivateKey, clock func() time.Time) *Issuer {
	t.Helper()
	i, err := NewIssuer(IssuerConfig{Issuer: testIssuer, Key: key, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// rawToken signs arbitrary header and claims JSON with key.
func rawToken(t testing.TB, key *rsa.PrivateKey, header, claims string) string {
	t.Helper()
	signed := b64url.EncodeToString([]byte(header)) + "." + b64url.EncodeToString([]byte(claims))
	d := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64url.EncodeToString(sig)
}

func TestVerifyAccessTokens(t *testing.T) {
	a, b := testKeys(t)
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	iss := newIssuer(t, a, clock.Now)
	other := newIssuer(t, b, clock.Now)
	cfg := DefaultVerifierConfig()
	cfg.Issuer = testIssuer
	cfg.Clock = clock.Now
	v, err := NewVerifier(iss.JWKS(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	good, err := iss.Issue(TokenRequest{Subject: "6d940dd41e636cc156074109b8092f96", Generation: 1234})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(good)
	if err != nil || c.Subject != "6d940dd41e636cc156074109b8092f96" || c.Generation != 1234 || c.ClientID != DefaultClientID ||
		len(c.Scopes) != 1 || !c.Expires.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("Verify = %+v, %v", c, err)
	}
	kid := iss.KeyID()
	hdr := `{"alg":"RS256","kid":"` + kid + `","typ":"at+jwt"}`
	claims := func(extra string) string {
		return `{"iss":"` + testIssuer + `","sub":"u1","scope":"profile ` + SyncScope + `","exp":1800003600` + extra + `}`
	}
	wrongAud := DefaultVerifierConfig()
	wrongAud.Clock, wrongAud.Audiences = clock.Now, []string{"https://sync.example"}
	vAud, err := NewVerifier(iss.JWKS(), wrongAud)
	if err != nil {
		t.Fatal(err)
	}
	otherToken, _ := other.Issue(TokenRequest{Subject: "u1"})
	parts := strings.Split(good, ".")
	for _, tc := range []struct {
		name  string
		v     *Verifier
		token string
		at    time.Duration // clock offset
		err   error
	}{
		{"good raw", v, rawToken(t, a, hdr, claims("")), 0, nil},
		{"typ without application/ prefix case-insensitive", v, rawToken(t, a, `{"alg":"RS256","typ":"AT+JWT"}`, claims("")), 0, nil},
		{"typ with prefix", v, rawToken(t, a, `{"alg":"RS256","typ":"application/at+jwt"}`, claims("")), 0, nil},
		{"comma-separated scope", v, rawToken(t, a, hdr, strings.Replace(claims(""), "profile ", "profile,", 1)), 0, nil},
		{"parent URL scope", v, rawToken(t, a, hdr, strings.Replace(claims(""), SyncScope, "https://identity.mozilla.com/apps", 1)), 0, nil},
		{"within leeway after exp", v, good, time.Hour + 30*time.Second, nil},
		{"expired", v, good, time.Hour + time.Minute, ErrInvalidCredentials},
		{"no exp", v, rawToken(t, a, hdr, `{"iss":"`+testIssuer+`","sub":"u1","scope":"`+SyncScope+`"}`), 0, ErrInvalidCredentials},
		{"fractional exp", v, rawToken(t, a, hdr, strings.Replace(claims(""), "1800003600", "1800003600.5", 1)), 0, ErrInvalidCredentials},
		{"nbf in the future", v, rawToken(t, a, hdr, claims(`,"nbf":1800000600`)), 0, ErrInvalidCredentials},
		{"nbf within leeway", v, rawToken(t, a, hdr, claims(`,"nbf":1800000030`)), 0, nil},
		{"wrong signature", v, otherToken, 0, ErrInvalidCredentials},
		{"kid of our key, other signer", v, rawToken(t, b, hdr, claims("")), 0, ErrInvalidCredentials},
		{"tampered claims", v, parts[0] + "." + b64url.EncodeToString([]byte(claims(""))) + "." + parts[2], 0, ErrInvalidCredentials},
		{"wrong issuer", v, rawToken(t, a, hdr, strings.Replace(claims(""), testIssuer, "https://evil.test", 1)), 0, ErrInvalidCredentials},
		{"no issuer", v, rawToken(t, a, hdr, `{"sub":"u1","scope":"`+SyncScope+`","exp":1800003600}`), 0, ErrInvalidCredentials},
		{"wrong audience", vAud, rawToken(t, a, hdr, claims(`,"aud":"https://other.example"`)), 0, ErrInvalidCredentials},
		{"no audience", vAud, good, 0, ErrInvalidCredentials},
		{"audience in a list", vAud, rawToken(t, a, hdr, claims(`,"aud":["x","https://sync.example"]`)), 0, nil},
		{"wrong scope", v, rawToken(t, a, hdr, strings.Replace(claims(""), SyncScope, "https://identity.mozilla.com/apps/notes", 1)), 0, ErrInvalidCredentials},
		{"scope prefix without slash", v, rawToken(t, a, hdr, strings.Replace(claims(""), SyncScope, "https://identity.mozilla.com/apps/old", 1)), 0, ErrInvalidCredentials},
		{"short scope only", v, rawToken(t, a, hdr, strings.Replace(claims(""), SyncScope, "profile:write", 1)), 0, ErrInvalidCredentials},
		{"no scope", v, rawToken(t, a, hdr, `{"iss":"`+testIssuer+`","sub":"u1","exp":1800003600}`), 0, ErrInvalidCredentials},
		{"no typ", v, rawToken(t, a, `{"alg":"RS256"}`, claims("")), 0, ErrInvalidCredentials},
		{"id token typ", v, rawToken(t, a, `{"alg":"RS256","typ":"JWT"}`, claims("")), 0, ErrInvalidCredentials},
		{"alg none", v, b64url.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + b64url.EncodeToString([]byte(claims(""))) + ".", 0, ErrInvalidCredentials},
		{"alg HS256", v, rawToken(t, a, `{"alg":"HS256","typ":"at+jwt"}`, claims("")), 0, ErrInvalidCredentials},
		{"crit header", v, rawToken(t, a, `{"alg":"RS256","typ":"at+jwt","crit":["x"]}`, claims("")), 0, ErrInvalidCredentials},
		{"empty sub", v, rawToken(t, a, hdr, strings.Replace(claims(""), `"u1"`, `""`, 1)), 0, ErrInvalidCredentials},
		{"sub with space", v, rawToken(t, a, hdr, strings.Replace(claims(""), `"u1"`, `"u 1"`, 1)), 0, ErrInvalidCredentials},
		{"negative generation", v, rawToken(t, a, hdr, claims(`,"fxa-generation":-1`)), 0, ErrInvalidGeneration},
		{"string generation", v, rawToken(t, a, hdr, claims(`,"fxa-generation":"5"`)), 0, ErrInvalidGeneration},
		{"string exp", v, rawToken(t, a, hdr, strings.Replace(claims(""), "1800003600", `"1800003600"`, 1)), 0, ErrInvalidCredentials},
		{"trailing data in claims", v, rawToken(t, a, hdr, claims("")+"x"), 0, ErrInvalidCredentials},
		{"padded signature", v, good + "=", 0, ErrInvalidCredentials},
		{"line feed in the signature", v, good[:len(good)-4] + "\n" + good[len(good)-4:], 0, ErrInvalidCredentials},
		{"CR LF in the claims", v, parts[0] + "." + parts[1][:8] + "\r\n" + parts[1][8:] + "." + parts[2], 0, ErrInvalidCredentials},
		{"two parts", v, parts[0] + "." + parts[1], 0, ErrInvalidCredentials},
		{"four parts", v, good + ".x", 0, ErrInvalidCredentials},
		{"too long", v, good + strings.Repeat("A", MaxTokenLen), 0, ErrInvalidCredentials},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Set(time.Unix(1_800_000_000, 0).Add(tc.at))
			_, err := tc.v.Verify(tc.token)
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("Verify = %v, want %v", err, tc.err)
			}
		})
	}
	// A key set with both keys verifies tokens of either (key rotation).
	both := JWKS{Keys: append(iss.JWKS().Keys, other.JWKS().Keys...)}
	clock.Set(time.Unix(1_800_000_000, 0))
	vb, err := NewVerifier(both, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vb.Verify(good); err != nil {
		t.Fatal(err)
	}
	if _, err := vb.Verify(rawToken(t, b, `{"alg":"RS256","typ":"at+jwt","kid":"unknown"}`, claims(""))); err != nil {
		t.Fatalf("unknown kid, any key: %v", err)
	}
}

func TestJWKS(t *testing.T) {
	a, _ := testKeys(t)
	iss := newIssuer(t, a, nil)
	doc, _ := json.Marshal(iss.JWKS())
	set, err := ParseJWKS(doc)
	if err != nil || len(set.Keys) != 1 || set.Keys[0].Kid != iss.KeyID() {
		t.Fatalf("ParseJWKS = %+v, %v", set, err)
	}
	// The kid is the RFC 7638 thumbprint: stable for the key.
	if newIssuer(t, a, nil).KeyID() != iss.KeyID() {
		t.Fatal("thumbprint not stable")
	}
	// FxA's published form, with its extension member, parses.
	fxa := `{"keys":[{"kty":"RSA","alg":"RS256","kid":"20190730-15e473fd","fxa-createdAt":1564502400,"use":"sig","n":"` +
		set.Keys[0].N + `","e":"AQAB"}]}`
	if _, err := ParseJWKS([]byte(fxa)); err != nil {
		t.Fatalf("FxA form: %v", err)
	}
	k := set.Keys[0]
	for name, doc := range map[string]string{
		"empty":         `{"keys":[]}`,
		"not JSON":      `{`,
		"trailing":      string(doc) + "x",
		"EC key":        `{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b"}]}`,
		"enc key":       `{"keys":[{"kty":"RSA","use":"enc","n":"` + k.N + `","e":"AQAB"}]}`,
		"PS256":         `{"keys":[{"kty":"RSA","alg":"PS256","n":"` + k.N + `","e":"AQAB"}]}`,
		"small modulus": `{"keys":[{"kty":"RSA","n":"` + k.N[:170] + `","e":"AQAB"}]}`,
		"even exponent": `{"keys":[{"kty":"RSA","n":"` + k.N + `","e":"Ag"}]}`,
		"padded n":      `{"keys":[{"kty":"RSA","n":"` + k.N + `=","e":"AQAB"}]}`,
		"too many keys": `{"keys":[` + strings.Repeat(string(mustJSON(k))+",", MaxJWKSKeys) + string(mustJSON(k)) + `]}`,
	} {
		if _, err := ParseJWKS([]byte(doc)); !errors.Is(err, ErrBadJWKS) {
			t.Errorf("%s: ParseJWKS = %v", name, err)
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestScopeGrants(t *testing.T) {
	for _, tc := range []struct {
		granted  string
		required string
		want     bool
	}{
		{SyncScope, SyncScope, true},
		{"https://identity.mozilla.com/apps", SyncScope, true},
		{"https://identity.mozilla.com/apps/old", SyncScope, false},
		{"https://identity.mozilla.com/apps/oldsync/sub", SyncScope, false},
		{"https://identity.mozilla.com/apps/oldsync#read", SyncScope, false},
		{"https://identity.mozilla.com/apps/oldsync#read", SyncScope + "#read", true},
		{"https://identity.mozilla.com/apps/oldsync", SyncScope + "#read", true},
		{"profile", SyncScope, false},
		{"profile", "profile:email", true},
		{"profile:email", "profile", false},
		{"profile:write", "profile:email", true},
		{"profile", "profile:write", false},
		{"profile:write", "profile:write", true},
	} {
		if got := ScopeGrants(splitScopes(tc.granted), tc.required); got != tc.want {
			t.Errorf("ScopeGrants(%q, %q) = %v", tc.granted, tc.required, got)
		}
	}
}

func TestIssuerConfigAndKeys(t *testing.T) {
	a, _ := testKeys(t)
	pemKey, err := MarshalKey(a)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseKey(pemKey)
	if err != nil || !back.Equal(a) {
		t.Fatalf("ParseKey: %v", err)
	}
	if _, err := ParseKey(append(pemKey, pemKey...)); err == nil {
		t.Fatal("two PEM blocks accepted")
	}
	if _, err := ParseKey([]byte("nope")); err == nil {
		t.Fatal("garbage accepted")
	}
	for _, c := range []IssuerConfig{{}, {Issuer: "a b"}, {Issuer: "x", TTL: 48 * time.Hour}, {Issuer: "x", TTL: -1}} {
		if _, err := NewIssuer(c); !errors.Is(err, ErrBadConfig) {
			t.Errorf("NewIssuer(%+v) = %v", c, err)
		}
	}
	iss := newIssuer(t, a, nil)
	for _, r := range []TokenRequest{{}, {Subject: "a b"}, {Subject: "u", Generation: -1}, {Subject: "u", Scopes: []string{"a b"}}, {Subject: "u", TTL: 25 * time.Hour}} {
		if _, err := iss.Issue(r); !errors.Is(err, ErrBadTokenRequest) {
			t.Errorf("Issue(%+v) = %v", r, err)
		}
	}
	if err := (VerifierConfig{Leeway: time.Hour}).Validate(); !errors.Is(err, ErrBadConfig) {
		t.Fatal("leeway of an hour accepted")
	}
	if _, err := NewVerifier(JWKS{}, DefaultVerifierConfig()); !errors.Is(err, ErrBadJWKS) {
		t.Fatal("empty key set accepted")
	}
}

// TestRequestFlow runs a token request through the pieces in the order
// the directory will: parse, verify, decide.
func TestRequestFlow(t *testing.T) {
	a, _ := testKeys(t)
	clock := testkit.NewClock(time.Unix(1_800_000_000, 0))
	iss := newIssuer(t, a, clock.Now)
	cfg := DefaultVerifierConfig()
	cfg.Clock, cfg.Issuer = clock.Now, testIssuer
	v, err := NewVerifier(iss.JWKS(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := iss.Issue(TokenRequest{Subject: "fxa1", Generation: 1000})
	r := httptest.NewRequest("GET", Path, nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("X-KeyID", "0000000001000-qqo")
	req, err := ParseRequest(r, DefaultDuration)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(req.Token)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decide(nil, Claims{Generation: c.Generation, KeysChangedAt: req.KeyID.KeysChangedAt, ClientState: req.KeyID.ClientState})
	if err != nil || out.Action != Create || out.ClientState != "aaaa" {
		t.Fatalf("Decide = %+v, %v", out, err)
	}
	// The client rotates its keys: a new uid.
	tok2, _ := iss.Issue(TokenRequest{Subject: "fxa1", Generation: 2000})
	c2, _ := v.Verify(tok2)
	stored := &UserState{UID: 1, Generation: out.Generation, KeysChangedAt: out.KeysChangedAt, ClientState: out.ClientState}
	out2, err := Decide(stored, Claims{Generation: c2.Generation, KeysChangedAt: 2000, ClientState: "bbbb"})
	if err != nil || out2.Action != Replace {
		t.Fatalf("rotation: %+v, %v", out2, err)
	}
	// The old token (older generation) is refused with the tokenserver's
	// error body.
	stored2 := &UserState{UID: 2, Generation: out2.Generation, KeysChangedAt: out2.KeysChangedAt, ClientState: "bbbb", OldClientStates: []string{"aaaa"}}
	_, err = Decide(stored2, Claims{Generation: c.Generation, KeysChangedAt: 1000, ClientState: "aaaa"})
	w := httptest.NewRecorder()
	WriteError(w, err, clock.Now())
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `"status":"invalid-`) {
		t.Fatalf("old generation answered %d %s", w.Code, w.Body)
	}
}

func FuzzParseKeyID(f *testing.F) {
	for _, s := range []string{"0000000001234-u82x7hDPj46ftsbCpvxOjA", "1-AA", "-", "1-", "-a", "1--a", "99999999999999999999-a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKeyID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidCredentials) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if k.KeysChangedAt < 0 || len(k.ClientState) == 0 || len(k.ClientState) > 2*MaxClientStateBytes {
			t.Fatalf("accepted %+v", k)
		}
		again, err := FormatKeyID(k)
		if err != nil {
			t.Fatal(err)
		}
		if k2, err := ParseKeyID(again); err != nil || k2 != k {
			t.Fatalf("round trip %q -> %q: %+v, %v", s, again, k2, err)
		}
	})
}

func FuzzVerifyAccessToken(f *testing.F) {
	a, _ := testKeys(f)
	now := time.Unix(1_800_000_000, 0)
	iss := newIssuer(f, a, func() time.Time { return now })
	cfg := DefaultVerifierConfig()
	cfg.Clock = func() time.Time { return now }
	v, err := NewVerifier(iss.JWKS(), cfg)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := iss.Issue(TokenRequest{Subject: "u1", Generation: 5})
	f.Add(good)
	f.Add("a.b.c")
	f.Add("..")
	f.Add(strings.Join(strings.Split(good, ".")[:2], ".") + ".")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := v.Verify(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidCredentials) && !errors.Is(err, ErrInvalidGeneration) {
				t.Fatalf("error %v", err)
			}
			return
		}
		// Only tokens signed by the issuer's key verify: the fuzzer cannot
		// forge one, so anything accepted is the seed's claims.
		if c.Subject != "u1" || c.Generation != 5 {
			t.Fatalf("accepted %q as %+v", s, c)
		}
	})
}
