package directory

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// ErrBadHash means a stored password hash could not be parsed; the
// account's credential is corrupt.
var ErrBadHash = errors.New("directory: malformed password hash")

// Bounds a stored hash must respect before it is recomputed, so a corrupt
// record cannot make a check allocate without limit.
const (
	maxHashMemoryKiB = 1 << 20 // 1 GiB
	maxHashTime      = 64
)

var b64 = base64.RawStdEncoding

// hasher computes and verifies argon2id password hashes, at most
// cap(slots) at a time (each holds MemoryKiB of memory while running).
// Work outside the priority lane also takes one of cap(general) tokens,
// so priority work (checks of accounts known at their client's address,
// see guard) always finds cap(slots)-cap(general) slots it alone uses.
type hasher struct {
	params  HashParams
	slots   chan struct{}
	general chan struct{}
}

// reservedSlots is how many of n hash slots only the priority lane uses:
// a quarter, at least one, none when there is a single slot.
func reservedSlots(n int) int {
	if n <= 1 {
		return 0
	}
	return max(1, n/4)
}

func newHasher(p HashParams, concurrency int) *hasher {
	return &hasher{params: p, slots: make(chan struct{}, concurrency),
		general: make(chan struct{}, concurrency-reservedSlots(concurrency))}
}

// acquire takes a slot (and, outside the priority lane, a general
// token first); release gives them back.
func (h *hasher) acquire(ctx context.Context, priority bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !priority {
		select {
		case h.general <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		if !priority {
			<-h.general
		}
		return ctx.Err()
	}
}

func (h *hasher) release(priority bool) {
	<-h.slots
	if !priority {
		<-h.general
	}
}

// hash returns the encoded argon2id hash of password with a fresh random
// salt: "$argon2id$v=19$m=<KiB>,t=<time>,p=<threads>$<salt>$<key>" with
// unpadded standard base64.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, h.params.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("directory: salt: %w", err)
	}
	if err := h.acquire(ctx, false); err != nil {
		return "", err
	}
	defer h.release(false)
	p := h.params
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// verify reports whether password matches the encoded hash, comparing in
// constant time, in the priority lane or not. It fails with ErrBadHash if
// encoded does not parse.
func (h *hasher) verify(ctx context.Context, encoded, password string, priority bool) (bool, error) {
	p, salt, key, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	if err := h.acquire(ctx, priority); err != nil {
		return false, err
	}
	defer h.release(priority)
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// parseHash splits an encoded argon2id hash into its parameters, salt and
// key.
func parseHash(s string) (HashParams, []byte, []byte, error) {
	var p HashParams
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, ErrBadHash
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, fmt.Errorf("%w: version %q", ErrBadHash, parts[2])
	}
	var m, t, threads uint64
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, nil, nil, ErrBadHash
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, fmt.Errorf("%w: %s", ErrBadHash, kv)
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			threads = n
		default:
			return p, nil, nil, fmt.Errorf("%w: parameter %q", ErrBadHash, k)
		}
	}
	if t == 0 || t > maxHashTime || threads == 0 || threads > 255 || m < 8*threads || m > maxHashMemoryKiB {
		return p, nil, nil, fmt.Errorf("%w: parameters out of range", ErrBadHash)
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return p, nil, nil, fmt.Errorf("%w: salt", ErrBadHash)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, fmt.Errorf("%w: key", ErrBadHash)
	}
	p = HashParams{Time: uint32(t), MemoryKiB: uint32(m), Threads: uint8(threads),
		SaltLen: uint32(len(salt)), KeyLen: uint32(len(key))}
	return p, salt, key, nil
}

// newResetCode returns a random reset code (32 lowercase hex characters,
// 128 bits) and the hex SHA-256 stored in its place.
func newResetCode() (code, codeHash string, err error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("directory: reset code: %w", err)
	}
	code = hex.EncodeToString(b[:])
	return code, hashResetCode(code), nil
}

// hashResetCode returns the hex SHA-256 of a reset code. A plain hash is
// enough: the codes carry 128 random bits, so they cannot be guessed from
// their hash. Codes are case-insensitive and surrounding space is ignored,
// since people copy them from mails.
func hashResetCode(code string) string {
	sum := sha256.Sum256([]byte(normalizeCode(code)))
	return hex.EncodeToString(sum[:])
}

// normalizeCode lower-cases a reset or invite code and trims the space
// around it, as people copy them from mails.
func normalizeCode(code string) string {
	return strings.ToLower(strings.TrimSpace(code))
}
