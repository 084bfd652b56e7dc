package tokenserver

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"
)

// IssuerConfig configures a local access-token issuer.
type IssuerConfig struct {
	// Issuer is the iss of the tokens, a URL naming the local accounts
	// service. Required.
	Issuer string
	// Key is the RSA signing key; nil makes NewIssuer generate a 2048-bit
	// key (which does not survive a restart: persist it with MarshalKey).
	Key *rsa.PrivateKey
	// ClientID is the client_id claim. Empty means "hce-local".
	ClientID string
	// TTL is the default token lifetime. Zero means the default, 1 hour;
	// at most 24 hours.
	TTL time.Duration
	// Clock returns the time; nil means time.Now.
	Clock func() time.Time
	// Rand is the randomness source; nil means crypto/rand.
	Rand io.Reader
}

// Defaults of IssuerConfig.
const (
	DefaultIssuerTTL = time.Hour
	maxIssuerTTL     = 24 * time.Hour
	// DefaultClientID is the client_id of locally issued tokens.
	DefaultClientID = "hce-local"
)

// Validate reports a missing issuer, a weak key or an out-of-range TTL.
func (c IssuerConfig) Validate() error {
	switch {
	case c.Issuer == "" || strings.ContainsAny(c.Issuer, " \t\n\""):
		return fmt.Errorf("%w: Issuer %q", ErrBadConfig, c.Issuer)
	case c.Key != nil && (c.Key.N.BitLen() < MinRSABits || c.Key.N.BitLen() > MaxRSABits):
		return fmt.Errorf("%w: RSA key of %d bits", ErrBadConfig, c.Key.N.BitLen())
	case c.TTL < 0 || c.TTL > maxIssuerTTL:
		return fmt.Errorf("%w: TTL %v", ErrBadConfig, c.TTL)
	}
	return nil
}

// Issuer signs FxA-style OAuth access tokens for local accounts and
// publishes the JWKS that verifies them. It is safe for concurrent use.
type Issuer struct {
	cfg IssuerConfig
	kid string
	jwk JWK
}

// NewIssuer returns an Issuer for cfg.
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultIssuerTTL
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.Key == nil {
		k, err := rsa.GenerateKey(cfg.Rand, MinRSABits)
		if err != nil {
			return nil, fmt.Errorf("tokenserver: NewIssuer: %w", err)
		}
		cfg.Key = k
	}
	n := b64url.EncodeToString(cfg.Key.N.Bytes())
	e := b64url.EncodeToString(big.NewInt(int64(cfg.Key.E)).Bytes())
	// RFC 7638 thumbprint: SHA-256 of the required members in
	// lexicographic order, without white space.
	sum := sha256.Sum256([]byte(`{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`))
	kid := b64url.EncodeToString(sum[:])
	return &Issuer{cfg: cfg, kid: kid, jwk: JWK{Kty: "RSA", Kid: kid, Use: "sig", Alg: "RS256", N: n, E: e}}, nil
}

// KeyID returns the kid of the issuer's key (its RFC 7638 thumbprint).
func (i *Issuer) KeyID() string { return i.kid }

// JWKS returns the key set that verifies the issuer's tokens.
func (i *Issuer) JWKS() JWKS { return JWKS{Keys: []JWK{i.jwk}} }

// Issuer returns the iss of the issuer's tokens.
func (i *Issuer) Issuer() string { return i.cfg.Issuer }

// TokenRequest describes a token to issue.
type TokenRequest struct {
	// Subject is the local account's stable id (the sub claim). Required.
	Subject string
	// Generation is fxa-generation; 0 leaves it out.
	Generation int64
	// Scopes are the granted scopes; nil means just SyncScope.
	Scopes []string
	// TTL is the lifetime; zero means the issuer's default.
	TTL time.Duration
}

// ErrBadTokenRequest is returned by Issue for a request it cannot sign.
var ErrBadTokenRequest = errors.New("tokenserver: invalid token request")

// Issue signs an access token: a JWS with header
// {"alg":"RS256","kid":<kid>,"typ":"at+jwt"} and claims iss, sub,
// client_id, scope (space-separated), iat, exp, jti and, when set,
// fxa-generation.
func (i *Issuer) Issue(t TokenRequest) (string, error) {
	if t.Subject == "" || len(t.Subject) > 256 || !printableNoSpace(t.Subject) {
		return "", fmt.Errorf("%w: subject %q", ErrBadTokenRequest, t.Subject)
	}
	if t.Generation < 0 || t.TTL < 0 || t.TTL > maxIssuerTTL {
		return "", fmt.Errorf("%w: generation %d, TTL %v", ErrBadTokenRequest, t.Generation, t.TTL)
	}
	scopes := t.Scopes
	if scopes == nil {
		scopes = []string{SyncScope}
	}
	for _, s := range scopes {
		if s == "" || strings.ContainsAny(s, " \t\n,") {
			return "", fmt.Errorf("%w: scope %q", ErrBadTokenRequest, s)
		}
	}
	ttl := t.TTL
	if ttl == 0 {
		ttl = i.cfg.TTL
	}
	now := i.cfg.Clock()
	var jti [16]byte
	if _, err := io.ReadFull(i.cfg.Rand, jti[:]); err != nil {
		return "", fmt.Errorf("tokenserver: Issue: %w", err)
	}
	hd, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{"RS256", i.kid, "at+jwt"})
	claims, err := json.Marshal(struct {
		Iss        string `json:"iss"`
		Sub        string `json:"sub"`
		ClientID   string `json:"client_id"`
		Scope      string `json:"scope"`
		Iat        int64  `json:"iat"`
		Exp        int64  `json:"exp"`
		Jti        string `json:"jti"`
		Generation int64  `json:"fxa-generation,omitempty"`
	}{i.cfg.Issuer, t.Subject, i.cfg.ClientID, strings.Join(scopes, " "), now.Unix(), now.Add(ttl).Unix(),
		b64url.EncodeToString(jti[:]), t.Generation})
	if err != nil {
		return "", fmt.Errorf("tokenserver: Issue: %w", err)
	}
	signed := b64url.EncodeToString(hd) + "." + b64url.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(nil, i.cfg.Key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("tokenserver: Issue: %w", err)
	}
	return signed + "." + b64url.EncodeToString(sig), nil
}

// MarshalKey encodes an RSA private key as a PKCS #8 PEM block, for an
// issuer whose key must survive restarts.
func MarshalKey(k *rsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("tokenserver: MarshalKey: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey decodes MarshalKey's output (a single PKCS #8 "PRIVATE KEY"
// block holding an RSA key of MinRSABits to MaxRSABits bits).
func ParseKey(b []byte) (*rsa.PrivateKey, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("tokenserver: ParseKey: want one PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tokenserver: ParseKey: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok || rk.N.BitLen() < MinRSABits || rk.N.BitLen() > MaxRSABits {
		return nil, errors.New("tokenserver: ParseKey: not an RSA key of an accepted size")
	}
	return rk, nil
}
