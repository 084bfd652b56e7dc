package tokenserver

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// SyncScope is the OAuth scope a token must grant for Sync.
const SyncScope = "https://identity.mozilla.com/apps/oldsync"

// Bounds of key sets.
const (
	// MaxJWKSBytes bounds a JWKS document ParseJWKS accepts.
	MaxJWKSBytes = 64 << 10
	// MaxJWKSKeys bounds the number of keys in a JWKS.
	MaxJWKSKeys = 16
	// MinRSABits and MaxRSABits bound the RSA moduli a JWKS may use.
	MinRSABits = 2048
	MaxRSABits = 8192
)

// JWK is a JSON Web Key (RFC 7517) of the kind FxA publishes: an RSA
// signing key. FxACreatedAt is FxA's extension field.
type JWK struct {
	Kty          string `json:"kty"`
	Kid          string `json:"kid,omitempty"`
	Use          string `json:"use,omitempty"`
	Alg          string `json:"alg,omitempty"`
	N            string `json:"n"`
	E            string `json:"e"`
	FxACreatedAt int64  `json:"fxa-createdAt,omitempty"`
}

// JWKS is a JSON Web Key Set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// ErrBadJWKS is returned for a key set that cannot be used.
var ErrBadJWKS = errors.New("tokenserver: invalid JWKS")

// ParseJWKS decodes a JWKS document (at most MaxJWKSBytes) and checks
// that it holds 1 to MaxJWKSKeys keys, each usable by NewVerifier.
// Unknown members of the document and of its keys are ignored, as JWKS
// consumers must (RFC 7517 section 4).
func ParseJWKS(doc []byte) (JWKS, error) {
	var set JWKS
	if len(doc) > MaxJWKSBytes {
		return set, fmt.Errorf("%w: %d bytes", ErrBadJWKS, len(doc))
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	if err := dec.Decode(&set); err != nil {
		return JWKS{}, fmt.Errorf("%w: %v", ErrBadJWKS, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return JWKS{}, fmt.Errorf("%w: data after the document", ErrBadJWKS)
	}
	if _, err := rsaKeys(set); err != nil {
		return JWKS{}, err
	}
	return set, nil
}

type verifyKey struct {
	kid string
	pub *rsa.PublicKey
}

// rsaKeys turns the set's keys into RSA public keys.
func rsaKeys(set JWKS) ([]verifyKey, error) {
	if len(set.Keys) == 0 || len(set.Keys) > MaxJWKSKeys {
		return nil, fmt.Errorf("%w: %d keys", ErrBadJWKS, len(set.Keys))
	}
	out := make([]verifyKey, 0, len(set.Keys))
	for i, k := range set.Keys {
		pub, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("%w: key %d: %v", ErrBadJWKS, i, err)
		}
		out = append(out, verifyKey{kid: k.Kid, pub: pub})
	}
	return out, nil
}

// publicKey checks an RSA signing key and returns it.
func (k JWK) publicKey() (*rsa.PublicKey, error) {
	switch {
	case k.Kty != "RSA":
		return nil, fmt.Errorf("kty %q, want RSA", k.Kty)
	case k.Use != "" && k.Use != "sig":
		return nil, fmt.Errorf("use %q", k.Use)
	case k.Alg != "" && k.Alg != "RS256":
		return nil, fmt.Errorf("alg %q", k.Alg)
	}
	nb, err := b64url.DecodeString(k.N)
	if err != nil || len(nb) == 0 || nb[0] == 0 {
		return nil, errors.New("bad modulus encoding")
	}
	eb, err := b64url.DecodeString(k.E)
	if err != nil || len(eb) == 0 || len(eb) > 4 || eb[0] == 0 {
		return nil, errors.New("bad exponent encoding")
	}
	n := new(big.Int).SetBytes(nb)
	if n.BitLen() < MinRSABits || n.BitLen() > MaxRSABits {
		return nil, fmt.Errorf("modulus of %d bits", n.BitLen())
	}
	e := new(big.Int).SetBytes(eb)
	if e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, fmt.Errorf("exponent %v", e)
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Issuer, when set, is the exact iss every token must carry (for
	// Mozilla's accounts, the accounts server's issuer URL).
	Issuer string
	// Audiences, when set, are the accepted aud values: a token's aud (a
	// string or a list) must contain one. FxA access tokens do not carry
	// a useful aud for Sync, so Mozilla's servers do not check it and the
	// default is not to.
	Audiences []string
	// Scope is the scope a token must grant. Empty means SyncScope.
	Scope string
	// Leeway is the tolerance on exp and nbf. Zero means the default,
	// 60 s; it must not exceed 5 minutes.
	Leeway time.Duration
	// Clock returns the time; nil means time.Now.
	Clock func() time.Time
	// AllowUntyped accepts tokens whose header has no typ. By default the
	// typ must be "at+jwt" (RFC 9068), which FxA access tokens carry and
	// which keeps ID tokens and other JWTs signed by the same keys out.
	AllowUntyped bool
}

// DefaultLeeway is the default tolerance on exp and nbf.
const DefaultLeeway = 60 * time.Second

// ErrBadConfig is wrapped by VerifierConfig.Validate.
var ErrBadConfig = errors.New("tokenserver: invalid configuration")

// DefaultVerifierConfig returns a VerifierConfig with the defaults filled
// in.
func DefaultVerifierConfig() VerifierConfig {
	return VerifierConfig{Scope: SyncScope, Leeway: DefaultLeeway}
}

// Validate reports out-of-range settings.
func (c VerifierConfig) Validate() error {
	if c.Leeway < 0 || c.Leeway > 5*time.Minute {
		return fmt.Errorf("%w: Leeway %v", ErrBadConfig, c.Leeway)
	}
	if c.Scope != "" && strings.ContainsAny(c.Scope, " ,") {
		return fmt.Errorf("%w: Scope %q", ErrBadConfig, c.Scope)
	}
	return nil
}

// Verifier verifies FxA OAuth access tokens offline against a JWKS. It is
// safe for concurrent use; build a new one when the key set changes.
type Verifier struct {
	cfg  VerifierConfig
	keys []verifyKey
}

// NewVerifier returns a Verifier of tokens signed by keys in set.
func NewVerifier(set JWKS, cfg VerifierConfig) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Scope == "" {
		cfg.Scope = SyncScope
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	keys, err := rsaKeys(set)
	if err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, keys: keys}, nil
}

// AccessClaims are the claims of a verified access token that the
// tokenserver uses.
type AccessClaims struct {
	// Subject is the FxA account's uid (sub).
	Subject string
	// Generation is fxa-generation, or 0 when absent.
	Generation int64
	// Scopes are the granted scopes.
	Scopes []string
	// ClientID is the OAuth client the token was issued to, if stated.
	ClientID string
	// Expires is exp.
	Expires time.Time
}

// jwtHeader and jwtClaims are the parts of a token the verifier reads.
type jwtHeader struct {
	Alg  string          `json:"alg"`
	Typ  *string         `json:"typ"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

type jwtClaims struct {
	Sub        *string         `json:"sub"`
	Iss        *string         `json:"iss"`
	Aud        json.RawMessage `json:"aud"`
	Exp        json.RawMessage `json:"exp"`
	Nbf        json.RawMessage `json:"nbf"`
	Scope      *string         `json:"scope"`
	ClientID   string          `json:"client_id"`
	Generation json.RawMessage `json:"fxa-generation"`
}

// Verify checks an access token and returns its claims. The token must be
// a compact JWS of three strict base64url parts (at most MaxTokenLen
// bytes) with alg RS256, typ at+jwt (unless AllowUntyped), no crit, and an
// RSA PKCS #1 v1.5 SHA-256 signature by a key of the set (the key named by
// kid when the set has it, else any). The claims must have a sub, an
// integer exp later than now - Leeway, no nbf later than now + Leeway, the
// configured iss and aud when those are set, and a scope granting the
// configured scope (FxA's scope rules: a URL scope grants its sub-paths).
// fxa-generation, when present, must be a non-negative integer
// (ErrInvalidGeneration). Every other failure gives ErrInvalidCredentials.
func (v *Verifier) Verify(token string) (AccessClaims, error) {
	fail := func(why string) (AccessClaims, error) {
		return AccessClaims{}, ErrInvalidCredentials.With("Unauthorized: " + why)
	}
	if len(token) > MaxTokenLen {
		return fail("token too long")
	}
	hp, rest, ok1 := strings.Cut(token, ".")
	pp, sp, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sp, ".") {
		return fail("not a JWS")
	}
	if strings.ContainsAny(token, "\r\n") {
		// The base64 decoder would skip them: one token, many spellings.
		return fail("bad base64url")
	}
	hb, err1 := b64url.DecodeString(hp)
	pb, err2 := b64url.DecodeString(pp)
	sig, err3 := b64url.DecodeString(sp)
	if err1 != nil || err2 != nil || err3 != nil {
		return fail("bad base64url")
	}
	var hd jwtHeader
	if err := strictJSON(hb, &hd); err != nil {
		return fail("header: " + err.Error())
	}
	if hd.Alg != "RS256" {
		return fail("alg " + hd.Alg)
	}
	if hd.Crit != nil {
		return fail("crit header")
	}
	if hd.Typ == nil {
		if !v.cfg.AllowUntyped {
			return fail("no typ")
		}
	} else {
		typ := strings.ToLower(*hd.Typ)
		if !strings.Contains(typ, "/") {
			typ = "application/" + typ
		}
		if typ != "application/at+jwt" {
			return fail("typ " + *hd.Typ)
		}
	}
	digest := sha256.Sum256([]byte(token[:len(hp)+1+len(pp)]))
	verified := false
	tried := false
	for _, k := range v.keys {
		if hd.Kid != "" && k.kid == hd.Kid {
			tried = true
			verified = rsa.VerifyPKCS1v15(k.pub, crypto.SHA256, digest[:], sig) == nil
			break
		}
	}
	if !tried {
		for _, k := range v.keys {
			if rsa.VerifyPKCS1v15(k.pub, crypto.SHA256, digest[:], sig) == nil {
				verified = true
				break
			}
		}
	}
	if !verified {
		return fail("signature")
	}
	var c jwtClaims
	if err := strictJSON(pb, &c); err != nil {
		return fail("claims: " + err.Error())
	}
	now := v.cfg.Clock()
	leeway := int64(v.cfg.Leeway / time.Second)
	exp, ok := intClaim(c.Exp)
	if !ok {
		return fail("exp missing or not an integer")
	}
	if exp+leeway <= now.Unix() {
		return fail("expired")
	}
	if c.Nbf != nil {
		nbf, ok := intClaim(c.Nbf)
		if !ok || nbf-leeway > now.Unix() {
			return fail("not yet valid")
		}
	}
	if c.Sub == nil || *c.Sub == "" || len(*c.Sub) > 256 || !printableNoSpace(*c.Sub) {
		return fail("sub")
	}
	if v.cfg.Issuer != "" && (c.Iss == nil || *c.Iss != v.cfg.Issuer) {
		return fail("iss")
	}
	if len(v.cfg.Audiences) > 0 && !audienceMatches(c.Aud, v.cfg.Audiences) {
		return fail("aud")
	}
	if c.Scope == nil {
		return fail("no scope")
	}
	scopes := splitScopes(*c.Scope)
	if !ScopeGrants(scopes, v.cfg.Scope) {
		return fail("scope does not grant " + v.cfg.Scope)
	}
	out := AccessClaims{Subject: *c.Sub, Scopes: scopes, ClientID: c.ClientID, Expires: time.Unix(exp, 0)}
	if c.Generation != nil {
		g, ok := intClaim(c.Generation)
		if !ok || g < 0 {
			return AccessClaims{}, ErrInvalidGeneration.With("Unauthorized")
		}
		out.Generation = g
	}
	return out, nil
}

// strictJSON decodes one JSON object with numbers kept as text and no
// trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the object")
	}
	return nil
}

// intClaim reads a JSON number literal that is an integer (no quotes,
// fraction or exponent) within int64.
func intClaim(raw json.RawMessage) (int64, bool) {
	s := string(raw)
	if s == "" || s == "null" || strings.ContainsAny(s, `".eE`) {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

func printableNoSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// audienceMatches reports whether aud (a JSON string or list of strings)
// contains one of want.
func audienceMatches(aud json.RawMessage, want []string) bool {
	if aud == nil {
		return false
	}
	var list []string
	var one string
	if err := json.Unmarshal(aud, &one); err == nil {
		list = []string{one}
	} else if err := json.Unmarshal(aud, &list); err != nil {
		return false
	}
	for _, a := range list {
		for _, w := range want {
			if a == w {
				return true
			}
		}
	}
	return false
}

// splitScopes splits a scope claim on white space (RFC 6749) and, for
// compatibility with Mozilla's Rust server, on commas.
func splitScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == ',' })
}

// ScopeGrants reports whether any of the granted scopes grants required,
// by FxA's rules: a URL scope grants itself and the URLs below it (and,
// when it has a #fragment, only the same fragment); a short scope
// ("profile", "profile:email", with an optional trailing ":write") grants
// the short scopes it is a prefix of, never a URL scope.
func ScopeGrants(granted []string, required string) bool {
	for _, g := range granted {
		if scopeMatches(g, required) {
			return true
		}
	}
	return false
}

func scopeMatches(provided, required string) bool {
	if strings.HasPrefix(provided, "https:") {
		if !strings.HasPrefix(required, "https:") {
			return false
		}
		pURL, pHash := cutLast(provided, '#')
		rURL, rHash := cutLast(required, '#')
		if rURL != pURL && !strings.HasPrefix(rURL, pURL+"/") {
			return false
		}
		return pHash == "" || rHash == pHash
	}
	if strings.HasPrefix(required, "https:") {
		return false
	}
	p := strings.Split(provided, ":")
	r := strings.Split(required, ":")
	if r[len(r)-1] == "write" {
		if p[len(p)-1] != "write" {
			return false
		}
		r, p = r[:len(r)-1], p[:len(p)-1]
	} else if p[len(p)-1] == "write" {
		p = p[:len(p)-1]
	}
	if len(p) > len(r) {
		return false
	}
	for i := range p {
		if p[i] != r[i] {
			return false
		}
	}
	return true
}

// cutLast splits s at its last sep.
func cutLast(s string, sep byte) (before, after string) {
	if i := strings.LastIndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}
