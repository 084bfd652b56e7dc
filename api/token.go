package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Directory-signed bearer tokens.
//
// Wire format (compact, versioned):
//
//	v1.<base64url(JSON claims)>.<base64url(Ed25519 signature)>
//
// base64url is unpadded (RFC 4648 section 5). The signature covers the
// ASCII bytes "v1." followed by the claims part exactly as sent, so the
// claims are verified byte for byte and never re-encoded. The claims are a
// JSON object with exactly the fields of TokenClaims; unknown fields,
// trailing data and non-canonical base64 are refused. A
// later format gets a new prefix ("v2."), which this build refuses.

// Token limits and tolerances.
const (
	// TokenVersion is the prefix of every token this build signs.
	TokenVersion = "v1"
	// MaxTokenLen bounds the length of a token accepted by ParseToken.
	MaxTokenLen = 2048
	// MaxTokenLifetime is the longest exp - iat a valid token may have.
	MaxTokenLifetime = time.Hour
	// TokenClockSkew is how far in the future a token's iat may lie
	// (clocks of the directory and the node differ a little).
	TokenClockSkew = time.Minute
)

// Token errors. Each wraps ErrUnauthorized, so the storage API answers 401.
var (
	// ErrTokenMalformed: not a token of a format this build knows.
	ErrTokenMalformed = fmt.Errorf("%w: malformed token", ErrUnauthorized)
	// ErrTokenUnknownKey: the key id is not (or no longer) published.
	ErrTokenUnknownKey = fmt.Errorf("%w: token signed by an unknown key", ErrUnauthorized)
	// ErrTokenSignature: the signature does not verify.
	ErrTokenSignature = fmt.Errorf("%w: bad token signature", ErrUnauthorized)
	// ErrTokenAudience: the token is for another node.
	ErrTokenAudience = fmt.Errorf("%w: token for another audience", ErrUnauthorized)
	// ErrTokenExpired: exp has passed.
	ErrTokenExpired = fmt.Errorf("%w: token expired", ErrUnauthorized)
	// ErrTokenNotYetValid: iat lies further in the future than TokenClockSkew.
	ErrTokenNotYetValid = fmt.Errorf("%w: token issued in the future", ErrUnauthorized)
	// ErrTokenLifetime: exp - iat exceeds MaxTokenLifetime, or exp <= iat.
	ErrTokenLifetime = fmt.Errorf("%w: token lifetime out of bounds", ErrUnauthorized)
	// ErrTokenRevoked: the account's credentials changed (password set or
	// reset, account deleted or created again) at or after the token's
	// iat.
	ErrTokenRevoked = fmt.Errorf("%w: token revoked", ErrUnauthorized)
)

// CredentialState is what the directory says about a user's credentials,
// for revocation: whether the account exists, when its credentials last
// changed and a generation that changes with each change. A node checks
// every token against it (Revokes) and drops a cached Basic answer whose
// generation is not the current one.
type CredentialState struct {
	// Exists is false for an account that does not exist (deleted, or
	// never created): every credential of the name is refused.
	Exists bool
	// ChangedAt is when the credentials last changed (creation, password
	// set or reset), Unix seconds of the directory's clock. A token
	// issued at or before it is revoked; the directory issues tokens
	// with iat > ChangedAt.
	ChangedAt int64
	// Gen identifies the credentials: it changes with every change
	// (the directory uses the raft index of the change). 0 means unknown.
	Gen uint64
}

// Revokes reports whether s revokes a token with claims c: the account
// does not exist, or its credentials changed at or after c.Iat.
func (s CredentialState) Revokes(c TokenClaims) bool {
	return !s.Exists || c.Iat <= s.ChangedAt
}

// TokenClaims are the signed contents of a token.
type TokenClaims struct {
	// Kid names the directory key that signed the token.
	Kid string `json:"kid"`
	// Sub is the account name the token authenticates.
	Sub string `json:"sub"`
	// Aud is the id of the storage node the token is valid on.
	Aud string `json:"aud"`
	// Iat and Exp are the issue and expiry times in Unix seconds.
	Iat int64 `json:"iat"`
	Exp int64 `json:"exp"`
}

// validate checks the claims' shape (not times against a clock).
func (c TokenClaims) validate() error {
	switch {
	case c.Kid == "" || c.Sub == "" || c.Aud == "":
		return fmt.Errorf("%w: empty kid, sub or aud", ErrTokenMalformed)
	case c.Iat <= 0 || c.Exp <= 0:
		return fmt.Errorf("%w: iat or exp not positive", ErrTokenMalformed)
	case c.Exp <= c.Iat || c.Exp-c.Iat > int64(MaxTokenLifetime/time.Second):
		return ErrTokenLifetime
	}
	return nil
}

var tokenB64 = base64.RawURLEncoding.Strict()

const tokenPrefix = TokenVersion + "."

// SignToken returns the token for c signed with priv. The claims must be
// complete (kid, sub, aud non-empty) and 0 < exp - iat <= MaxTokenLifetime.
func SignToken(priv ed25519.PrivateKey, c TokenClaims) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", errors.New("api: SignToken: bad private key size")
	}
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("api: SignToken: %w", err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("api: SignToken: %w", err)
	}
	signed := tokenPrefix + tokenB64.EncodeToString(body)
	sig := ed25519.Sign(priv, []byte(signed))
	tok := signed + "." + tokenB64.EncodeToString(sig)
	if len(tok) > MaxTokenLen {
		return "", fmt.Errorf("api: SignToken: token of %d bytes exceeds %d", len(tok), MaxTokenLen)
	}
	return tok, nil
}

// ParseToken splits and decodes tok without verifying it: it returns the
// claims, the bytes the signature covers ("v1." + claims part) and the
// signature. Any deviation from the format gives an error wrapping
// ErrTokenMalformed (and so ErrUnauthorized).
func ParseToken(tok string) (TokenClaims, []byte, []byte, error) {
	var c TokenClaims
	if len(tok) > MaxTokenLen {
		return c, nil, nil, fmt.Errorf("%w: %d bytes", ErrTokenMalformed, len(tok))
	}
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return c, nil, nil, fmt.Errorf("%w: unknown version", ErrTokenMalformed)
	}
	claimsPart, sigPart, ok := strings.Cut(rest, ".")
	if !ok || claimsPart == "" || strings.Contains(sigPart, ".") {
		return c, nil, nil, fmt.Errorf("%w: want 3 parts", ErrTokenMalformed)
	}
	// The base64 decoder skips CR and LF even in strict mode: a token
	// would have many spellings (the signature part is not signed).
	if strings.ContainsAny(rest, "\r\n") {
		return c, nil, nil, fmt.Errorf("%w: not base64url", ErrTokenMalformed)
	}
	sig, err := tokenB64.DecodeString(sigPart)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return c, nil, nil, fmt.Errorf("%w: bad signature encoding", ErrTokenMalformed)
	}
	body, err := tokenB64.DecodeString(claimsPart)
	if err != nil {
		return c, nil, nil, fmt.Errorf("%w: bad claims encoding", ErrTokenMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return TokenClaims{}, nil, nil, fmt.Errorf("%w: claims: %v", ErrTokenMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return TokenClaims{}, nil, nil, fmt.Errorf("%w: data after claims", ErrTokenMalformed)
	}
	if err := c.validate(); err != nil {
		return TokenClaims{}, nil, nil, err
	}
	return c, []byte(tok[:len(tokenPrefix)+len(claimsPart)]), sig, nil
}

// VerifyToken parses tok and checks it: the key id must be known to key,
// the signature must verify with that key, aud must equal the token's
// audience, iat <= now + TokenClockSkew, exp > now, and
// exp - iat <= MaxTokenLifetime. It returns the claims, or one of the
// ErrToken* errors (all wrapping ErrUnauthorized). The caller still checks
// that Sub is the user the request is for.
func VerifyToken(tok string, key func(kid string) (ed25519.PublicKey, bool), aud string, now time.Time) (TokenClaims, error) {
	c, signed, sig, err := ParseToken(tok)
	if err != nil {
		return TokenClaims{}, err
	}
	pub, ok := key(c.Kid)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return TokenClaims{}, fmt.Errorf("%w: kid %q", ErrTokenUnknownKey, c.Kid)
	}
	if !ed25519.Verify(pub, signed, sig) {
		return TokenClaims{}, ErrTokenSignature
	}
	if c.Aud != aud {
		return TokenClaims{}, fmt.Errorf("%w: %q, this is %q", ErrTokenAudience, c.Aud, aud)
	}
	t := now.Unix()
	if c.Iat > now.Add(TokenClockSkew).Unix() {
		return TokenClaims{}, ErrTokenNotYetValid
	}
	if c.Exp <= t {
		return TokenClaims{}, ErrTokenExpired
	}
	return c, nil
}

// TokenIssuer issues tokens for the user API's token endpoint; the
// directory implements it.
type TokenIssuer interface {
	// IssueToken checks user's password and returns a signed token for
	// the node nodeID ("" = the user's primary node), that node's base
	// URL and the token's expiry. A wrong password or unknown user gives
	// ErrUnauthorized (or ErrUserNotFound); other errors mean 503.
	IssueToken(ctx context.Context, user, password, nodeID string) (token, nodeURL string, exp time.Time, err error)
}

// tokenResponse is the JSON body of GET /user/1.0/{user}/token.
type tokenResponse struct {
	Token   string `json:"token"`
	Node    string `json:"node"`
	Expires int64  `json:"expires"`
}
