package hawkid

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawk"
)

var now = time.Unix(1_800_000_000, 0)

func dirKey(seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

func nodeKey(t testing.TB, seed byte) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func baseClaims() Claims {
	return Claims{Kid: "d1", UID: 42, Sub: "alice", Aud: "node-a", Iat: now.Unix(), Exp: now.Add(time.Hour).Unix()}
}

func TestIssueVerifyOpen(t *testing.T) {
	pub, priv := dirKey(1)
	node := nodeKey(t, 7)
	id, key, err := Issue(priv, node.PublicKey(), baseClaims(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "h1.") || strings.Count(id, ".") != 2 || len(id) > MaxIDLen || !hawk.ValidValue(id) {
		t.Fatalf("id shape %q", id)
	}
	t.Logf("id is %d bytes", len(id))
	keys := func(kid string) (ed25519.PublicKey, bool) { return pub, kid == "d1" }
	c, err := Verify(id, keys, "node-a", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := baseClaims()
	want.NodeKey, want.Key = NodeKeyID(node.PublicKey()), c.Key
	if c != want {
		t.Fatalf("claims %+v, want %+v", c, want)
	}
	raw, err := Open(node, &c)
	if err != nil {
		t.Fatal(err)
	}
	if KeyString(raw) != key || string(MACKey(raw)) != key || len(key) != 43 {
		t.Fatalf("opened key %q, issued %q", KeyString(raw), key)
	}
	// The credentials work as Hawk credentials end to end.
	auth, err := hawk.Sign(hawk.Credentials{ID: id, Key: []byte(key)}, "GET", "/1.5/42/info/collections", "node-a.example", 443, hawk.SignOptions{}, now.Unix())
	if err != nil {
		t.Fatal(err)
	}
	hd, err := hawk.ParseHeader(auth)
	if err != nil || hd.ID != id {
		t.Fatalf("header %v", err)
	}
	// Another node's key does not open it, nor does the right key under
	// tampered claims.
	if _, err := Open(nodeKey(t, 8), &c); !errors.Is(err, ErrNodeKey) {
		t.Fatalf("other node: %v", err)
	}
	for _, mod := range []func(*Claims){
		func(c *Claims) { c.Sub = "mallory" },
		func(c *Claims) { c.UID = 43 },
		func(c *Claims) { c.Exp++ },
		func(c *Claims) { c.Aud = "node-b" },
	} {
		c2 := c
		mod(&c2)
		if _, err := Open(node, &c2); !errors.Is(err, ErrNodeKey) || !errors.Is(err, api.ErrUnauthorized) {
			t.Fatalf("tampered claims %+v: %v", c2, err)
		}
	}
}

func TestVerifyRefusals(t *testing.T) {
	pub, priv := dirKey(1)
	_, other := dirKey(2)
	node := nodeKey(t, 7)
	keys := func(kid string) (ed25519.PublicKey, bool) { return pub, kid == "d1" }
	issue := func(k ed25519.PrivateKey, mod func(*Claims)) string {
		c := baseClaims()
		if mod != nil {
			mod(&c)
		}
		id, _, err := Issue(k, node.PublicKey(), c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	good := issue(priv, nil)
	parts := strings.Split(good, ".")
	for _, tc := range []struct {
		name  string
		id    string
		aud   string
		at    time.Time
		grace time.Duration
		want  error
	}{
		{"good", good, "node-a", now, 0, nil},
		{"just before expiry", good, "node-a", now.Add(time.Hour - time.Second), 0, nil},
		{"expired", good, "node-a", now.Add(time.Hour), 0, ErrExpired},
		{"expired within grace", good, "node-a", now.Add(time.Hour + time.Minute), 5 * time.Minute, nil},
		{"expired beyond grace", good, "node-a", now.Add(time.Hour + 5*time.Minute), 5 * time.Minute, ErrExpired},
		{"issued in the future", good, "node-a", now.Add(-2 * time.Minute), 0, ErrNotYetValid},
		{"future within skew", good, "node-a", now.Add(-time.Minute), 0, nil},
		{"other node", good, "node-b", now, 0, ErrAudience},
		{"unknown kid", issue(priv, func(c *Claims) { c.Kid = "d9" }), "node-a", now, 0, ErrUnknownKey},
		{"wrong signer", issue(other, nil), "node-a", now, 0, ErrSignature},
		{"swapped claims", parts[0] + "." + strings.Split(issue(priv, func(c *Claims) { c.Sub = "bob" }), ".")[1] + "." + parts[2], "node-a", now, 0, ErrSignature},
		{"v1 prefix", "v1." + parts[1] + "." + parts[2], "node-a", now, 0, ErrMalformed},
		{"padded signature", good + "=", "node-a", now, 0, ErrMalformed},
		{"extra part", good + ".x", "node-a", now, 0, ErrMalformed},
		{"too long", good + strings.Repeat("A", MaxIDLen), "node-a", now, 0, ErrMalformed},
		{"empty", "", "node-a", now, 0, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.id, keys, tc.aud, tc.at, tc.grace)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, api.ErrUnauthorized) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

// signRaw signs an arbitrary claims body, as a compromised or buggy
// directory could; Parse must still refuse bodies out of shape.
func signRaw(priv ed25519.PrivateKey, body string) string {
	signed := prefix + b64.EncodeToString([]byte(body))
	return signed + "." + b64.EncodeToString(ed25519.Sign(priv, []byte(signed)))
}

func TestParseStrictness(t *testing.T) {
	_, priv := dirKey(1)
	node := nodeKey(t, 7)
	c := baseClaims()
	c.NodeKey = NodeKeyID(node.PublicKey())
	var err error
	if c.Key, err = Seal(node.PublicKey(), &c, make([]byte, KeySize)); err != nil {
		t.Fatal(err)
	}
	canon, _ := json.Marshal(c)
	if _, _, _, err := Parse(signRaw(priv, string(canon))); err != nil {
		t.Fatalf("canonical: %v", err)
	}
	mk := func(mod func(*Claims)) string {
		c2 := c
		mod(&c2)
		b, _ := json.Marshal(c2)
		return string(b)
	}
	for name, body := range map[string]string{
		"unknown field":    strings.Replace(string(canon), `{"kid"`, `{"x":1,"kid"`, 1),
		"upper-case name":  strings.Replace(string(canon), `"kid"`, `"KID"`, 1),
		"duplicate field":  strings.Replace(string(canon), `{"kid":"d1"`, `{"kid":"d1","kid":"d1"`, 1),
		"white space":      strings.Replace(string(canon), `,"uid"`, `, "uid"`, 1),
		"trailing data":    string(canon) + " ",
		"escaped char":     strings.Replace(string(canon), `"alice"`, `"\u0061lice"`, 1),
		"string uid":       strings.Replace(string(canon), `"uid":42`, `"uid":"42"`, 1),
		"uid zero":         mk(func(c *Claims) { c.UID = 0 }),
		"uid too big":      mk(func(c *Claims) { c.UID = MaxUID + 1 }),
		"empty sub":        mk(func(c *Claims) { c.Sub = "" }),
		"space in sub":     mk(func(c *Claims) { c.Sub = "a b" }),
		"long aud":         mk(func(c *Claims) { c.Aud = strings.Repeat("n", maxName+1) }),
		"no node key":      mk(func(c *Claims) { c.NodeKey = "" }),
		"lifetime 1h+1s":   mk(func(c *Claims) { c.Exp = c.Iat + 3601 }),
		"exp before iat":   mk(func(c *Claims) { c.Exp = c.Iat }),
		"short sealed key": mk(func(c *Claims) { c.Key = c.Key[:len(c.Key)-4] }),
		"padded key":       mk(func(c *Claims) { c.Key += "=" }),
		"not an object":    `[]`,
		"null":             `null`,
	} {
		if _, _, _, err := Parse(signRaw(priv, body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse = %v", name, err)
		}
	}
}

func TestSealRefusals(t *testing.T) {
	node := nodeKey(t, 7)
	c := baseClaims()
	c.NodeKey = NodeKeyID(node.PublicKey())
	if _, err := Seal(node.PublicKey(), &c, make([]byte, 16)); err == nil {
		t.Fatal("short key sealed")
	}
	c.NodeKey = "other"
	if _, err := Seal(node.PublicKey(), &c, make([]byte, KeySize)); err == nil {
		t.Fatal("sealed under a NodeKey naming another key")
	}
	p256, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p256, &c); !errors.Is(err, ErrNodeKey) {
		t.Fatalf("P-256 key: %v", err)
	}
	_, priv := dirKey(1)
	if _, err := Sign(priv[:10], baseClaims()); err == nil {
		t.Fatal("signed with a short key")
	}
	if _, err := Sign(priv, baseClaims()); err == nil {
		t.Fatal("signed claims without a sealed key")
	}
	if _, _, err := Issue(priv, node.PublicKey(), baseClaims(), bytes.NewReader(nil)); err == nil {
		t.Fatal("issued without randomness")
	}
}

func FuzzParseHawkID(f *testing.F) {
	_, priv := dirKey(1)
	node, err := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	id, _, err := Issue(priv, node.PublicKey(), baseClaims(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(id, ".")
	for _, s := range []string{id, "h1..", "h1.e30." + parts[2], "v1." + parts[1] + "." + parts[2], parts[0] + "." + parts[1], id + "=", "h1.%%%.%%%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, signed, sig, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(s) > MaxIDLen || !strings.HasPrefix(string(signed), prefix) || len(sig) != ed25519.SignatureSize {
			t.Fatalf("accepted %q", s)
		}
		if c.validate() != nil {
			t.Fatalf("accepted invalid claims %+v", c)
		}
		// Whatever parses is a valid Hawk attribute value and re-signs to
		// the same claims part.
		if !hawk.ValidValue(s) {
			t.Fatalf("id %q not a Hawk attribute value", s)
		}
		again, err := Sign(priv, c)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Split(again, ".")[1] != strings.Split(s, ".")[1] {
			t.Fatalf("claims part not canonical: %q", s)
		}
	})
}
