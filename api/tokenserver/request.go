package tokenserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Bounds of the request headers.
const (
	// MaxTokenLen bounds the Bearer token (an FxA access token is a JWT of
	// about a kilobyte).
	MaxTokenLen = 8192
	// maxKeyIDLen bounds X-KeyID: 19 digits, '-', 22 base64 characters.
	maxKeyIDLen = 64
	// MaxClientStateBytes is the largest client state (the first 16 bytes
	// of SHA-256 of the sync key, hex-encoded as 32 characters).
	MaxClientStateBytes = 16
)

// KeyID is a parsed X-KeyID header, "<keys_changed_at>-<client state>":
// the millisecond timestamp of the account's last key change and the
// client state (key fingerprint), base64url without padding on the wire
// and hex in ClientState.
type KeyID struct {
	KeysChangedAt int64
	ClientState   string
}

var b64url = base64.RawURLEncoding.Strict()

// ParseKeyID parses an X-KeyID value. keys_changed_at must be decimal
// digits (leading zeros allowed, as FormatKeyID writes them) and the
// client state 1 to MaxClientStateBytes bytes of strict unpadded
// base64url. Failures give ErrInvalidCredentials, as Mozilla's servers
// answer.
func ParseKeyID(s string) (KeyID, error) {
	if len(s) > maxKeyIDLen {
		return KeyID{}, ErrInvalidCredentials.With("X-KeyID header too long")
	}
	kca, cs, ok := strings.Cut(s, "-")
	if !ok || kca == "" || len(kca) > 19 || strings.TrimLeft(kca, "0123456789") != "" {
		return KeyID{}, ErrInvalidCredentials.With("X-KeyID header has invalid format")
	}
	n, err := strconv.ParseInt(kca, 10, 64)
	if err != nil {
		return KeyID{}, ErrInvalidCredentials.With("Non-integral keys_changed_at in X-KeyID")
	}
	raw, err := b64url.DecodeString(cs)
	if err != nil || len(raw) == 0 || len(raw) > MaxClientStateBytes {
		return KeyID{}, ErrInvalidCredentials.With("Invalid client state in X-KeyID")
	}
	return KeyID{KeysChangedAt: n, ClientState: hex.EncodeToString(raw)}, nil
}

// FormatKeyID writes a key id as FxA does: keys_changed_at zero-padded to
// 13 digits, '-', the client state in unpadded base64url. ClientState must
// be hex.
func FormatKeyID(k KeyID) (string, error) {
	raw, err := hex.DecodeString(k.ClientState)
	if err != nil || k.KeysChangedAt < 0 {
		return "", fmt.Errorf("tokenserver: FormatKeyID: bad key id %+v", k)
	}
	return fmt.Sprintf("%013d-%s", k.KeysChangedAt, b64url.EncodeToString(raw)), nil
}

// Request is what a token request carries besides its path.
type Request struct {
	// Token is the Bearer token (an FxA OAuth access token).
	Token string
	// KeyID is the parsed X-KeyID header.
	KeyID KeyID
	// Duration is the ?duration= the client asked for in seconds, or 0.
	Duration int64
}

// ParseRequest reads the Authorization, X-KeyID and X-Client-State headers
// and the duration query parameter of a token request:
//
//   - no Authorization header, or one without a token: ErrUnauthorized;
//     a scheme other than Bearer: ErrUnauthorized ("Unsupported");
//   - no X-KeyID: ErrInvalidKeyID; a malformed one: ErrInvalidCredentials;
//   - X-Client-State, optional, must match ^[a-zA-Z0-9._-]{1,32}$
//     (ErrMalformedClientState, 400) and equal the hex client state of
//     X-KeyID (ErrInvalidClientState);
//   - duration is ignored unless it is a positive integer no greater than
//     maxDuration, as Mozilla's servers do.
func ParseRequest(r *http.Request, maxDuration int64) (Request, error) {
	var req Request
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return req, ErrUnauthorized.With("Unauthorized")
	}
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok {
		return req, ErrUnauthorized.With("Unauthorized")
	}
	if !strings.EqualFold(scheme, "bearer") {
		return req, ErrUnauthorized.With("Unsupported")
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > MaxTokenLen {
		return req, ErrInvalidCredentials.With("Unauthorized")
	}
	req.Token = token
	kid := r.Header.Get("X-KeyID")
	if kid == "" {
		return req, ErrInvalidKeyID.With("Missing X-KeyID header")
	}
	var err error
	if req.KeyID, err = ParseKeyID(kid); err != nil {
		return req, err
	}
	if vs := r.Header.Values("X-Client-State"); len(vs) > 0 {
		cs := vs[0]
		if !validClientStateHeader(cs) {
			return req, ErrMalformedClientState
		}
		if cs != req.KeyID.ClientState {
			return req, ErrInvalidClientState.With("Client state mismatch in X-Client-State header")
		}
	}
	if d := r.URL.Query().Get("duration"); d != "" {
		if n, err := strconv.ParseInt(d, 10, 64); err == nil && n > 0 && n <= maxDuration {
			req.Duration = n
		}
	}
	return req, nil
}

func validClientStateHeader(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// HashFxAUID returns the hashed_fxa_uid of an account: the first 32 hex
// digits of HMAC-SHA256 of the FxA uid under the deployment's metrics
// secret.
func HashFxAUID(secret []byte, fxaUID string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(fxaUID))
	return hex.EncodeToString(m.Sum(nil))[:32]
}
