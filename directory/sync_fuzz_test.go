package directory

import (
	"errors"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api/tokenserver"
)

// FuzzParseVerifyAnswer feeds the accounts server's verification answers
// (network input) to their parser: it must not panic, and whatever it
// accepts names a user and grants the Sync scope.
func FuzzParseVerifyAnswer(f *testing.F) {
	f.Add([]byte(`{"user":"u1","client_id":"c","scope":["profile","https://identity.mozilla.com/apps/oldsync"],"generation":5}`))
	f.Add([]byte(`{"user":"u1","scope":"https://identity.mozilla.com/apps/oldsync profile"}`))
	f.Add([]byte(`{"user":"u1","scope":["profile"]}`))
	f.Add([]byte(`{"user":"","scope":[]}`))
	f.Add([]byte(`{"user":"u","scope":"https://identity.mozilla.com/apps/oldsync","generation":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseVerifyAnswer(b, tokenserver.SyncScope)
		if err != nil {
			var te *tokenserver.Error
			if !errors.As(err, &te) || te.HTTPStatus != 401 {
				t.Fatalf("refusal %v is not a tokenserver 401", err)
			}
			return
		}
		if c.Subject == "" || c.Generation < 0 || !tokenserver.ScopeGrants(c.Scopes, tokenserver.SyncScope) {
			t.Fatalf("accepted %+v", c)
		}
	})
}

// FuzzJWTKid feeds arbitrary bearer tokens to the key-id peek that picks
// their verifier: it must not panic and only names a kid of a three-part
// token.
func FuzzJWTKid(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln")
	f.Add("a.b.c")
	f.Add("")
	f.Add("....")
	f.Fuzz(func(t *testing.T, tok string) {
		kid, ok := jwtKid(tok)
		if ok && strings.Count(tok, ".") != 2 {
			t.Fatalf("%q taken for a JWS (kid %q)", tok, kid)
		}
		if !ok && kid != "" {
			t.Fatalf("kid %q of a refused token", kid)
		}
	})
}
