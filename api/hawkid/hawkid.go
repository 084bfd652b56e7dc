package hawkid

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/hce-sync/hce/api"
)

// Limits and tolerances of the format.
const (
	// Version is the prefix of every id this build issues.
	Version = "h1"
	// MaxIDLen bounds the length of an id Parse accepts.
	MaxIDLen = 2048
	// MaxLifetime is the longest exp - iat an id may have.
	MaxLifetime = time.Hour
	// ClockSkew is how far in the future an id's iat may lie.
	ClockSkew = time.Minute
	// KeySize is the size of the raw Hawk key.
	KeySize = 32
	// MaxUID is the largest Sync uid (the storage API's path allows 1 to
	// 10 digits).
	MaxUID = 9_999_999_999
	// maxName bounds kid, nk, sub and aud.
	maxName = 256
	// sealedSize is the size of a sealed key: the X25519 encapsulated key,
	// the encrypted key and the AEAD tag.
	sealedSize = 32 + KeySize + 16
)

// Errors. All wrap api.ErrUnauthorized, so a storage API answers 401.
var (
	// ErrMalformed: not an id of a format this build knows, or claims out
	// of their bounds.
	ErrMalformed = fmt.Errorf("%w: malformed Hawk id", api.ErrUnauthorized)
	// ErrUnknownKey: the signing key id is not (or no longer) published.
	ErrUnknownKey = fmt.Errorf("%w: Hawk id signed by an unknown key", api.ErrUnauthorized)
	// ErrSignature: the signature does not verify.
	ErrSignature = fmt.Errorf("%w: bad Hawk id signature", api.ErrUnauthorized)
	// ErrAudience: the id is for another node.
	ErrAudience = fmt.Errorf("%w: Hawk id for another node", api.ErrUnauthorized)
	// ErrExpired: exp has passed (beyond the grace the caller allowed).
	ErrExpired = fmt.Errorf("%w: Hawk id expired", api.ErrUnauthorized)
	// ErrNotYetValid: iat lies further in the future than ClockSkew.
	ErrNotYetValid = fmt.Errorf("%w: Hawk id issued in the future", api.ErrUnauthorized)
	// ErrNodeKey: the node does not have the private key the Hawk key was
	// sealed to, or the sealed key does not open with it.
	ErrNodeKey = fmt.Errorf("%w: Hawk key not sealed to this node's key", api.ErrUnauthorized)
)

// Claims are the signed contents of an id.
type Claims struct {
	// Kid names the directory key that signed the id.
	Kid string `json:"kid"`
	// UID is the numeric Sync uid the storage URL carries.
	UID uint64 `json:"uid"`
	// Sub is the HCE account name the credentials act as.
	Sub string `json:"sub"`
	// Aud is the id of the storage node the credentials are valid on.
	Aud string `json:"aud"`
	// NodeKey names the node's X25519 key the Hawk key is sealed to
	// (NodeKeyID of its public key).
	NodeKey string `json:"nk"`
	// Iat and Exp are the issue and expiry times in Unix seconds.
	Iat int64 `json:"iat"`
	Exp int64 `json:"exp"`
	// Key is the sealed Hawk key, base64url without padding.
	Key string `json:"key"`
}

// validate checks the claims' shape, not times against a clock.
func (c *Claims) validate() error {
	for _, f := range []struct{ name, v string }{{"kid", c.Kid}, {"sub", c.Sub}, {"aud", c.Aud}, {"nk", c.NodeKey}} {
		if f.v == "" || len(f.v) > maxName || !printable(f.v) {
			return fmt.Errorf("%w: %s %q", ErrMalformed, f.name, f.v)
		}
	}
	switch {
	case c.UID == 0 || c.UID > MaxUID:
		return fmt.Errorf("%w: uid %d", ErrMalformed, c.UID)
	case c.Iat <= 0 || c.Exp <= c.Iat || c.Exp-c.Iat > int64(MaxLifetime/time.Second):
		return fmt.Errorf("%w: lifetime [%d, %d]", ErrMalformed, c.Iat, c.Exp)
	}
	if k, err := b64.DecodeString(c.Key); err != nil || len(k) != sealedSize {
		return fmt.Errorf("%w: sealed key", ErrMalformed)
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

var b64 = base64.RawURLEncoding.Strict()

const prefix = Version + "."

// suite is the HPKE cipher suite keys are sealed with.
var (
	hpkeKDF  = hpke.HKDFSHA256()
	hpkeAEAD = hpke.ChaCha20Poly1305()
)

// info binds a sealed key to the claims it travels with.
func (c *Claims) info() []byte {
	return []byte("hce hawk key v1\x00" + c.Kid + "\x00" + c.Aud + "\x00" + c.NodeKey + "\x00" + c.Sub + "\x00" +
		strconv.FormatUint(c.UID, 10) + "\x00" + strconv.FormatInt(c.Iat, 10) + "\x00" + strconv.FormatInt(c.Exp, 10))
}

// NodeKeyID returns the name of a node's X25519 public key: the base64url
// text of the first 12 bytes of its SHA-256.
func NodeKeyID(pub *ecdh.PublicKey) string {
	sum := sha256.Sum256(pub.Bytes())
	return b64.EncodeToString(sum[:12])
}

// GenerateNodeKey returns a fresh X25519 key for a node.
func GenerateNodeKey(rand io.Reader) (*ecdh.PrivateKey, error) {
	return ecdh.X25519().GenerateKey(rand)
}

// Seal seals the raw Hawk key to the node's public key, bound to c (all of
// c's fields but Key must be set, NodeKey to NodeKeyID(pub)), and returns
// the value of the key claim.
func Seal(pub *ecdh.PublicKey, c *Claims, raw []byte) (string, error) {
	if len(raw) != KeySize {
		return "", fmt.Errorf("hawkid: Seal: key of %d bytes, want %d", len(raw), KeySize)
	}
	if pub.Curve() != ecdh.X25519() || c.NodeKey != NodeKeyID(pub) {
		return "", errors.New("hawkid: Seal: NodeKey does not name this X25519 key")
	}
	pk, err := hpke.NewDHKEMPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("hawkid: Seal: %w", err)
	}
	sealed, err := hpke.Seal(pk, hpkeKDF, hpkeAEAD, c.info(), raw)
	if err != nil {
		return "", fmt.Errorf("hawkid: Seal: %w", err)
	}
	return b64.EncodeToString(sealed), nil
}

// Open recovers the raw Hawk key of verified claims with the node's
// private key. It fails with ErrNodeKey when c.NodeKey does not name priv's
// public key or the sealed key does not open.
func Open(priv *ecdh.PrivateKey, c *Claims) ([]byte, error) {
	if priv.Curve() != ecdh.X25519() || c.NodeKey != NodeKeyID(priv.PublicKey()) {
		return nil, ErrNodeKey
	}
	sealed, err := b64.DecodeString(c.Key)
	if err != nil || len(sealed) != sealedSize {
		return nil, fmt.Errorf("%w: sealed key", ErrMalformed)
	}
	sk, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("hawkid: Open: %w", err)
	}
	raw, err := hpke.Open(sk, hpkeKDF, hpkeAEAD, c.info(), sealed)
	if err != nil || len(raw) != KeySize {
		return nil, ErrNodeKey
	}
	return raw, nil
}

// KeyString returns the Hawk key as the tokenserver hands it to the client
// (the "key" field): the base64url text of the raw key. Both sides MAC with
// the bytes of this string (MACKey).
func KeyString(raw []byte) string { return b64.EncodeToString(raw) }

// MACKey returns the bytes a Hawk MAC is keyed with for a raw key.
func MACKey(raw []byte) []byte { return []byte(KeyString(raw)) }

// Sign returns the id for complete claims (Key already sealed).
func Sign(priv ed25519.PrivateKey, c Claims) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", errors.New("hawkid: Sign: bad private key size")
	}
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("hawkid: Sign: %w", err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("hawkid: Sign: %w", err)
	}
	signed := prefix + b64.EncodeToString(body)
	id := signed + "." + b64.EncodeToString(ed25519.Sign(priv, []byte(signed)))
	if len(id) > MaxIDLen {
		return "", fmt.Errorf("hawkid: Sign: id of %d bytes exceeds %d", len(id), MaxIDLen)
	}
	return id, nil
}

// Issue makes Hawk credentials: it draws a random key from rand, seals it
// to the node's public key, signs the id and returns the id and the key
// string for the client. c's Key and NodeKey are filled in here.
func Issue(signer ed25519.PrivateKey, nodePub *ecdh.PublicKey, c Claims, rand io.Reader) (id, key string, err error) {
	raw := make([]byte, KeySize)
	if _, err := io.ReadFull(rand, raw); err != nil {
		return "", "", fmt.Errorf("hawkid: Issue: %w", err)
	}
	c.NodeKey = NodeKeyID(nodePub)
	if c.Key, err = Seal(nodePub, &c, raw); err != nil {
		return "", "", err
	}
	if id, err = Sign(signer, c); err != nil {
		return "", "", err
	}
	return id, KeyString(raw), nil
}

// Parse splits and decodes an id without verifying it: it returns the
// claims, the bytes the signature covers and the signature. The claims
// part must be exactly the JSON Sign writes for those claims (no unknown,
// duplicated or reordered fields, no white space, no other escapes), and
// every claim within its bounds; anything else gives an error wrapping
// ErrMalformed.
func Parse(id string) (Claims, []byte, []byte, error) {
	var c Claims
	if len(id) > MaxIDLen {
		return c, nil, nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(id))
	}
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok {
		return c, nil, nil, fmt.Errorf("%w: unknown version", ErrMalformed)
	}
	claimsPart, sigPart, ok := strings.Cut(rest, ".")
	if !ok || claimsPart == "" || strings.Contains(sigPart, ".") {
		return c, nil, nil, fmt.Errorf("%w: want 3 parts", ErrMalformed)
	}
	// The base64 decoder skips CR and LF even in strict mode (and
	// refuses every other byte outside the alphabet): one id would have
	// many spellings, some not valid in a Hawk header.
	if strings.ContainsAny(rest, "\r\n") {
		return c, nil, nil, fmt.Errorf("%w: not base64url", ErrMalformed)
	}
	sig, err := b64.DecodeString(sigPart)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return c, nil, nil, fmt.Errorf("%w: signature encoding", ErrMalformed)
	}
	body, err := b64.DecodeString(claimsPart)
	if err != nil {
		return c, nil, nil, fmt.Errorf("%w: claims encoding", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Claims{}, nil, nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	canon, err := json.Marshal(c)
	if err != nil || !bytes.Equal(canon, body) {
		return Claims{}, nil, nil, fmt.Errorf("%w: claims not in canonical form", ErrMalformed)
	}
	if err := c.validate(); err != nil {
		return Claims{}, nil, nil, err
	}
	return c, []byte(id[:len(prefix)+len(claimsPart)]), sig, nil
}

// KeyFunc returns the directory's Ed25519 public key of a key id, and
// whether it is (still) published.
type KeyFunc func(kid string) (ed25519.PublicKey, bool)

// Verify parses id and checks it: the signing key must be published, the
// signature must verify, aud must be this node's id, iat <= now +
// ClockSkew and exp > now - grace. grace is zero except where the storage
// API tolerates recently expired credentials (GET info/collections). It
// returns the claims or one of the errors above (all wrapping
// api.ErrUnauthorized). The caller still opens the key (Open) and checks
// that the uid is the one in the request's path.
func Verify(id string, keys KeyFunc, aud string, now time.Time, grace time.Duration) (Claims, error) {
	c, signed, sig, err := Parse(id)
	if err != nil {
		return Claims{}, err
	}
	pub, ok := keys(c.Kid)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return Claims{}, fmt.Errorf("%w: kid %q", ErrUnknownKey, c.Kid)
	}
	if !ed25519.Verify(pub, signed, sig) {
		return Claims{}, ErrSignature
	}
	if c.Aud != aud {
		return Claims{}, fmt.Errorf("%w: %q, this is %q", ErrAudience, c.Aud, aud)
	}
	if c.Iat > now.Add(ClockSkew).Unix() {
		return Claims{}, ErrNotYetValid
	}
	if c.Exp <= now.Add(-grace).Unix() {
		return Claims{}, ErrExpired
	}
	return c, nil
}
