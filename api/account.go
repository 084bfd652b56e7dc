package api

import (
	"crypto/sha1"
	"encoding/base32"
	"strings"
	"unicode/utf8"
)

// AccountName returns the Weave account name of an e-mail address
// (weave-api.md 4.1): the address lowercased, its domain IDNA-encoded
// (each non-ASCII label as "xn--" + Punycode, RFC 3492), SHA-1, base32,
// lowercased: 32 characters of [a-z2-7]. The local part is lowercased in
// ASCII only; domain labels are lowercased in Unicode before Punycode (a
// simplification of IDNA's nameprep).
func AccountName(email string) string {
	local, domain := email, ""
	if i := strings.LastIndexByte(email, '@'); i >= 0 {
		local, domain = email[:i], email[i+1:]
	}
	b := make([]byte, 0, len(email)+16)
	b = appendASCIILower(b, local)
	if strings.Contains(email, "@") {
		b = append(b, '@')
		b = appendIDNA(b, domain)
	}
	sum := sha1.Sum(b)
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))
}

func appendASCIILower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// appendIDNA appends the ASCII form of a domain name.
func appendIDNA(b []byte, domain string) []byte {
	for i, label := range strings.Split(domain, ".") {
		if i > 0 {
			b = append(b, '.')
		}
		if isASCII(label) {
			b = appendASCIILower(b, label)
			continue
		}
		enc, ok := punycodeEncode(strings.ToLower(label))
		if !ok {
			b = append(b, label...)
			continue
		}
		b = append(b, "xn--"...)
		b = append(b, enc...)
	}
	return b
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Punycode parameters (RFC 3492 section 5).
const (
	pcBase        = 36
	pcTMin        = 1
	pcTMax        = 26
	pcSkew        = 38
	pcDamp        = 700
	pcInitialBias = 72
	pcInitialN    = 128
)

func pcAdapt(delta, numPoints int, first bool) int {
	if first {
		delta /= pcDamp
	} else {
		delta /= 2
	}
	delta += delta / numPoints
	k := 0
	for delta > ((pcBase-pcTMin)*pcTMax)/2 {
		delta /= pcBase - pcTMin
		k += pcBase
	}
	return k + (pcBase-pcTMin+1)*delta/(delta+pcSkew)
}

func pcDigit(d int) byte {
	if d < 26 {
		return byte('a' + d)
	}
	return byte('0' + d - 26)
}

// punycodeEncode encodes a label with RFC 3492's algorithm (without the
// "xn--" prefix). It fails on invalid UTF-8 or arithmetic overflow.
func punycodeEncode(label string) (string, bool) {
	if !utf8.ValidString(label) {
		return "", false
	}
	runes := []rune(label)
	out := make([]byte, 0, len(label)+8)
	for _, r := range runes {
		if r < utf8.RuneSelf {
			out = append(out, byte(r))
		}
	}
	b := len(out)
	h := b
	if b > 0 {
		out = append(out, '-')
	}
	n, delta, bias := pcInitialN, 0, pcInitialBias
	const maxInt = 1<<31 - 1
	for h < len(runes) {
		m := maxInt
		for _, r := range runes {
			if int(r) >= n && int(r) < m {
				m = int(r)
			}
		}
		if (m - n) > (maxInt-delta)/(h+1) {
			return "", false
		}
		delta += (m - n) * (h + 1)
		n = m
		for _, r := range runes {
			if int(r) < n {
				delta++
				if delta > maxInt {
					return "", false
				}
			}
			if int(r) == n {
				q := delta
				for k := pcBase; ; k += pcBase {
					t := k - bias
					if t < pcTMin {
						t = pcTMin
					} else if t > pcTMax {
						t = pcTMax
					}
					if q < t {
						break
					}
					out = append(out, pcDigit(t+(q-t)%(pcBase-t)))
					q = (q - t) / (pcBase - t)
				}
				out = append(out, pcDigit(q))
				bias = pcAdapt(delta, h+1, h == b)
				delta = 0
				h++
			}
		}
		delta++
		n++
	}
	return string(out), true
}

// MinPasswordBytes and MaxPasswordBytes bound a new password's length in
// bytes of UTF-8. The maximum keeps every password sendable: a Basic
// header carries it base64-encoded (a third longer) within the servers'
// header limits with room to spare, and it caps the work one check costs
// before hashing. Passwords set before the maximum existed keep working.
const (
	MinPasswordBytes = 8
	MaxPasswordBytes = 256
)

// ValidPassword reports whether password is acceptable for user as a new
// password (weave-api.md 4.3): MinPasswordBytes to MaxPasswordBytes
// bytes of UTF-8 and not the user name, ignoring case and surrounding
// spaces.
func ValidPassword(user, password string) bool {
	if len(password) < MinPasswordBytes || len(password) > MaxPasswordBytes {
		return false
	}
	return strings.ToLower(strings.TrimSpace(user)) != strings.ToLower(strings.TrimSpace(password))
}

// ValidEmail reports whether s looks like an e-mail address: one '@' with
// a non-empty local part before it, a dotted domain after it, no spaces or
// control characters, at most 254 bytes.
func ValidEmail(s string) bool {
	if len(s) > 254 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || strings.Contains(domain, "@") {
		return false
	}
	dot := strings.LastIndexByte(domain, '.')
	return dot > 0 && dot < len(domain)-1 && !strings.Contains(domain, "..")
}
