package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func testKey(t testing.TB, seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

func TestTokenRoundTrip(t *testing.T) {
	pub, priv := testKey(t, 1)
	now := time.Unix(1_800_000_000, 0)
	c := TokenClaims{Kid: "k1", Sub: "alice", Aud: "node1", Iat: now.Unix(), Exp: now.Add(30 * time.Minute).Unix()}
	tok, err := SignToken(priv, c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "v1.") || strings.Count(tok, ".") != 2 {
		t.Fatalf("token shape %q", tok)
	}
	got, signed, sig, err := ParseToken(tok)
	if err != nil || got != c || !ed25519.Verify(pub, signed, sig) {
		t.Fatalf("ParseToken = %+v, %v", got, err)
	}
	keys := func(kid string) (ed25519.PublicKey, bool) { return pub, kid == "k1" }
	if got, err := VerifyToken(tok, keys, "node1", now); err != nil || got != c {
		t.Fatalf("VerifyToken = %+v, %v", got, err)
	}
}

func TestVerifyTokenRefusals(t *testing.T) {
	pub, priv := testKey(t, 1)
	_, other := testKey(t, 2)
	now := time.Unix(1_800_000_000, 0)
	good := TokenClaims{Kid: "k1", Sub: "alice", Aud: "node1", Iat: now.Unix(), Exp: now.Add(30 * time.Minute).Unix()}
	sign := func(k ed25519.PrivateKey, mod func(*TokenClaims)) string {
		c := good
		if mod != nil {
			mod(&c)
		}
		tok, err := SignToken(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	keys := func(kid string) (ed25519.PublicKey, bool) { return pub, kid == "k1" }
	okTok := sign(priv, nil)
	claimsPart := strings.Split(okTok, ".")[1]
	sigPart := strings.Split(okTok, ".")[2]
	// A token whose claims were changed after signing.
	tampered := func() string {
		c := good
		c.Sub = "mallory"
		b, _ := json.Marshal(c)
		return "v1." + tokenB64.EncodeToString(b) + "." + sigPart
	}()
	tests := []struct {
		name string
		tok  string
		aud  string
		now  time.Time
		want error
	}{
		{"ok", okTok, "node1", now, nil},
		{"ok near expiry", okTok, "node1", now.Add(30*time.Minute - time.Second), nil},
		{"ok small skew", sign(priv, func(c *TokenClaims) { c.Iat += 30; c.Exp += 30 }), "node1", now, nil},
		{"forged signature", sign(other, nil), "node1", now, ErrTokenSignature},
		{"tampered claims", tampered, "node1", now, ErrTokenSignature},
		{"expired", okTok, "node1", now.Add(30 * time.Minute), ErrTokenExpired},
		{"future iat", sign(priv, func(c *TokenClaims) { c.Iat += 3600; c.Exp += 3600 }), "node1", now, ErrTokenNotYetValid},
		{"other node", okTok, "node2", now, ErrTokenAudience},
		{"unknown kid", sign(priv, func(c *TokenClaims) { c.Kid = "k2" }), "node1", now, ErrTokenUnknownKey},
		{"empty", "", "node1", now, ErrTokenMalformed},
		{"v2", "v2." + claimsPart + "." + sigPart, "node1", now, ErrTokenMalformed},
		{"two parts", "v1." + claimsPart, "node1", now, ErrTokenMalformed},
		{"four parts", okTok + ".x", "node1", now, ErrTokenMalformed},
		{"padded sig", okTok + "==", "node1", now, ErrTokenMalformed},
		{"short sig", "v1." + claimsPart + ".AAAA", "node1", now, ErrTokenMalformed},
		{"too long", "v1." + strings.Repeat("A", MaxTokenLen) + "." + sigPart, "node1", now, ErrTokenMalformed},
		{"unknown field", "v1." + tokenB64.EncodeToString([]byte(`{"kid":"k1","sub":"a","aud":"node1","iat":1,"exp":2,"x":1}`)) + "." + sigPart, "node1", now, ErrTokenMalformed},
		{"trailing json", "v1." + tokenB64.EncodeToString([]byte(`{"kid":"k1","sub":"a","aud":"node1","iat":1,"exp":2}{}`)) + "." + sigPart, "node1", now, ErrTokenMalformed},
		{"not json", "v1." + tokenB64.EncodeToString([]byte(`nope`)) + "." + sigPart, "node1", now, ErrTokenMalformed},
		{"missing sub", "v1." + tokenB64.EncodeToString([]byte(`{"kid":"k1","aud":"node1","iat":1,"exp":2}`)) + "." + sigPart, "node1", now, ErrTokenMalformed},
		{"lifetime too long", "v1." + tokenB64.EncodeToString([]byte(`{"kid":"k1","sub":"a","aud":"node1","iat":1,"exp":3602}`)) + "." + sigPart, "node1", now, ErrTokenLifetime},
		{"exp before iat", "v1." + tokenB64.EncodeToString([]byte(`{"kid":"k1","sub":"a","aud":"node1","iat":5,"exp":5}`)) + "." + sigPart, "node1", now, ErrTokenLifetime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyToken(tt.tok, keys, tt.aud, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want %v (and ErrUnauthorized)", err, tt.want)
			}
		})
	}
}

func TestSignTokenRefusesBadClaims(t *testing.T) {
	_, priv := testKey(t, 1)
	for _, c := range []TokenClaims{
		{Sub: "a", Aud: "n", Iat: 1, Exp: 2},
		{Kid: "k", Sub: "a", Aud: "n", Iat: 1, Exp: 1 + 3601},
		{Kid: "k", Sub: "a", Aud: "n", Iat: 2, Exp: 2},
	} {
		if _, err := SignToken(priv, c); err == nil {
			t.Errorf("SignToken(%+v) succeeded", c)
		}
	}
	if _, err := SignToken(priv[:10], TokenClaims{Kid: "k", Sub: "a", Aud: "n", Iat: 1, Exp: 2}); err == nil {
		t.Error("SignToken with a short key succeeded")
	}
}

// FuzzParseToken checks that ParseToken never panics, that whatever it
// accepts has valid claims and re-encodes to the same signed bytes, and
// that a token VerifyToken accepts parses.
func FuzzParseToken(f *testing.F) {
	_, priv := testKey(f, 1)
	tok, _ := SignToken(priv, TokenClaims{Kid: "k1", Sub: "alice", Aud: "node1", Iat: 100, Exp: 200})
	f.Add(tok)
	f.Add("v1..")
	f.Add("v1.e30.AAAA")
	f.Add(tok + "\n")
	f.Add(strings.Replace(tok, ".", ".\r\n", 1))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, signed, sig, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			return
		}
		if c.validate() != nil || len(sig) != ed25519.SignatureSize {
			t.Fatalf("accepted invalid claims %+v", c)
		}
		if !strings.HasPrefix(s, string(signed)+".") {
			t.Fatalf("signed part %q is not a prefix of %q", signed, s)
		}
		// One spelling per token: re-encoding the parts gives it back.
		if again := string(signed) + "." + tokenB64.EncodeToString(sig); again != s {
			t.Fatalf("accepted %q, which re-encodes as %q", s, again)
		}
	})
}

type fakeIssuer struct{ acc *fakeAccounts }

func (f fakeIssuer) IssueToken(ctx context.Context, user, password, nodeID string) (string, string, time.Time, error) {
	if err := f.acc.CheckPassword(ctx, user, password); err != nil {
		return "", "", time.Time{}, err
	}
	return "tok-" + user, "http://node1.example/", time.Unix(1234, 0), nil
}

func TestUserTokenEndpoint(t *testing.T) {
	_, plain := newUserFixture(t, nil)
	if r := doReq(plain, "GET", "/user/1.0/alice/token", "", "Authorization", basic("alice", "alicepass")); r.code != 404 {
		t.Fatalf("without issuer: %d, want 404", r.code)
	}
	acc := newFakeAccounts()
	acc.users["alice"] = &fakeAccount{password: "alicepass"}
	_, h := newUserFixture(t, func(c *UserConfig) { c.Accounts = acc; c.Tokens = fakeIssuer{acc} })
	tests := []struct {
		name string
		hdr  []string
		code int
	}{
		{"no auth", nil, 401},
		{"wrong password", []string{"Authorization", basic("alice", "nope")}, 401},
		{"other user", []string{"Authorization", basic("bob", "alicepass")}, 401},
		{"bearer", []string{"Authorization", "Bearer x"}, 401},
		{"ok", []string{"Authorization", basic("alice", "alicepass")}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := doReq(h, "GET", "/user/1.0/alice/token", "", tt.hdr...)
			if r.code != tt.code {
				t.Fatalf("code %d, want %d (%s)", r.code, tt.code, r.body)
			}
			if tt.code != 200 {
				return
			}
			var got tokenResponse
			if err := json.Unmarshal([]byte(r.body), &got); err != nil {
				t.Fatal(err)
			}
			if got != (tokenResponse{Token: "tok-alice", Node: "http://node1.example/", Expires: 1234}) {
				t.Fatalf("body %+v", got)
			}
			if r.hdr.Get("Cache-Control") != "no-store" {
				t.Fatal("token response is cacheable")
			}
		})
	}
}

// TestCredentialStateRevokes is the revocation rule nodes apply to every
// token: refused when the account does not exist or its credentials
// changed at or after the token's iat.
func TestCredentialStateRevokes(t *testing.T) {
	tok := TokenClaims{Iat: 1000, Exp: 2000}
	for _, tc := range []struct {
		s    CredentialState
		want bool
	}{
		{CredentialState{Exists: false}, true},
		{CredentialState{Exists: true, ChangedAt: 0}, false},
		{CredentialState{Exists: true, ChangedAt: 999}, false},
		{CredentialState{Exists: true, ChangedAt: 1000}, true}, // same second: the change may come after
		{CredentialState{Exists: true, ChangedAt: 1500}, true},
	} {
		if got := tc.s.Revokes(tok); got != tc.want {
			t.Errorf("%+v revokes iat 1000: %v, want %v", tc.s, got, tc.want)
		}
	}
}
