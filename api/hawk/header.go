package hawk

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hce-sync/hce/api"
)

// Limits of the header parser.
const (
	// MaxHeaderLen bounds the Authorization header ParseHeader accepts, as
	// the reference implementation does (4096 bytes).
	MaxHeaderLen = 4096
	// maxTSDigits bounds the ts attribute (seconds since the epoch).
	maxTSDigits = 12
)

// Errors of the parser and the verifier. All wrap api.ErrUnauthorized
// except ErrReplayCacheFull.
var (
	// ErrNoCredentials: the request has no Authorization header, or one of
	// another scheme. A server answers 401 with "WWW-Authenticate: Hawk".
	ErrNoCredentials = fmt.Errorf("%w: no Hawk credentials", api.ErrUnauthorized)
	// ErrMalformed: the header is not a well-formed Hawk header, or lacks
	// one of id, ts, nonce and mac.
	ErrMalformed = fmt.Errorf("%w: malformed Hawk header", api.ErrUnauthorized)
	// ErrUnknownID: the credentials lookup refused the id.
	ErrUnknownID = fmt.Errorf("%w: unknown Hawk id", api.ErrUnauthorized)
	// ErrBadMAC: the request MAC does not verify.
	ErrBadMAC = fmt.Errorf("%w: bad Hawk MAC", api.ErrUnauthorized)
	// ErrBadHost: the host or port of the request cannot be determined.
	ErrBadHost = fmt.Errorf("%w: invalid Host header", api.ErrUnauthorized)
	// ErrReplay: the nonce was already used with this id and timestamp.
	ErrReplay = fmt.Errorf("%w: Hawk nonce replayed", api.ErrUnauthorized)
	// ErrMissingHash: payload validation is required and the header has no
	// hash attribute.
	ErrMissingHash = fmt.Errorf("%w: missing required Hawk payload hash", api.ErrUnauthorized)
	// ErrBadHash: the payload does not hash to the header's hash.
	ErrBadHash = fmt.Errorf("%w: bad Hawk payload hash", api.ErrUnauthorized)
	// ErrReplayCacheFull: the replay cache has no room for this second's
	// nonce; the request is refused (fail closed) with 503.
	ErrReplayCacheFull = fmt.Errorf("%w: Hawk replay cache full", api.ErrUnavailable)
)

// StaleError is returned for a request whose MAC verified but whose
// timestamp lies outside the skew window. It wraps api.ErrUnauthorized and
// carries the WWW-Authenticate value a 401 answer must send so that the
// client can correct its clock offset.
type StaleError struct {
	// Now is the server time (Unix seconds) the answer reports.
	Now int64
	// TSM is the MAC of Now under the client's key.
	TSM string
}

// Error describes the failure.
func (e *StaleError) Error() string { return "hawk: stale timestamp" }

// Unwrap makes the error match api.ErrUnauthorized.
func (e *StaleError) Unwrap() error { return api.ErrUnauthorized }

// WWWAuthenticate returns the header value of the 401 answer:
// Hawk ts="<now>", tsm="<mac>", error="Stale timestamp".
func (e *StaleError) WWWAuthenticate() string {
	return `Hawk ts="` + strconv.FormatInt(e.Now, 10) + `", tsm="` + e.TSM + `", error="Stale timestamp"`
}

// Header holds the attributes of a Hawk Authorization header. Absent
// attributes are empty strings. TS is the ts attribute's value; TSText is
// its exact text (it enters the normalized string as sent).
type Header struct {
	ID, TSText, Nonce, Hash, Ext, MAC, App, Dlg string
	TS                                          int64
}

// ParseHeader parses an Authorization header value of the Hawk scheme:
//
//	Hawk id="..", ts="..", nonce="..", hash="..", ext="..", mac="..", app="..", dlg=".."
//
// The scheme name is case-insensitive and followed by white space; the
// attributes are name="value" pairs separated by commas (a trailing comma
// is tolerated, as the reference parser does). Names other than the eight
// above, duplicated names, empty values, values with characters outside
// printable ASCII or with '"' or '\', and headers longer than MaxHeaderLen
// are refused. id, ts, nonce and mac are required; ts must be 1 to 12
// decimal digits. A header of another scheme (or none) gives
// ErrNoCredentials, any other failure ErrMalformed.
func ParseHeader(h string) (Header, error) {
	var hd Header
	if h == "" {
		return hd, ErrNoCredentials
	}
	if len(h) > MaxHeaderLen {
		return hd, fmt.Errorf("%w: header of %d bytes", ErrMalformed, len(h))
	}
	i := 0
	for i < len(h) && isWord(h[i]) {
		i++
	}
	if i == 0 {
		return hd, fmt.Errorf("%w: no scheme", ErrMalformed)
	}
	if !strings.EqualFold(h[:i], "hawk") {
		return hd, ErrNoCredentials
	}
	if i == len(h) || !isSpace(h[i]) {
		return hd, fmt.Errorf("%w: no attributes", ErrMalformed)
	}
	for i < len(h) && isSpace(h[i]) {
		i++
	}
	var seen uint8
	for i < len(h) {
		start := i
		for i < len(h) && isWord(h[i]) {
			i++
		}
		name := h[start:i]
		if name == "" || i+1 >= len(h) || h[i] != '=' || h[i+1] != '"' {
			return Header{}, fmt.Errorf("%w: bad attribute syntax at %d", ErrMalformed, start)
		}
		i += 2
		vstart := i
		for i < len(h) && h[i] != '"' {
			if !valueChar(h[i]) {
				return Header{}, fmt.Errorf("%w: bad character in attribute %q", ErrMalformed, name)
			}
			i++
		}
		if i >= len(h) {
			return Header{}, fmt.Errorf("%w: unterminated attribute %q", ErrMalformed, name)
		}
		value := h[vstart:i]
		i++ // closing quote
		if value == "" {
			return Header{}, fmt.Errorf("%w: empty attribute %q", ErrMalformed, name)
		}
		bit, dst := hd.field(name)
		if dst == nil {
			return Header{}, fmt.Errorf("%w: unknown attribute %q", ErrMalformed, name)
		}
		if seen&bit != 0 {
			return Header{}, fmt.Errorf("%w: duplicate attribute %q", ErrMalformed, name)
		}
		seen |= bit
		*dst = value
		for i < len(h) && isSpace(h[i]) {
			i++
		}
		if i < len(h) {
			if h[i] != ',' {
				return Header{}, fmt.Errorf("%w: expected ',' at %d", ErrMalformed, i)
			}
			i++
			for i < len(h) && isSpace(h[i]) {
				i++
			}
		}
	}
	if hd.ID == "" || hd.TSText == "" || hd.Nonce == "" || hd.MAC == "" {
		return Header{}, fmt.Errorf("%w: missing attributes", ErrMalformed)
	}
	if len(hd.TSText) > maxTSDigits || !allDigits(hd.TSText) {
		return Header{}, fmt.Errorf("%w: bad ts %q", ErrMalformed, hd.TSText)
	}
	hd.TS, _ = strconv.ParseInt(hd.TSText, 10, 64)
	return hd, nil
}

// field maps an attribute name to its bit in the duplicate set and its
// destination.
func (hd *Header) field(name string) (uint8, *string) {
	switch name {
	case "id":
		return 1 << 0, &hd.ID
	case "ts":
		return 1 << 1, &hd.TSText
	case "nonce":
		return 1 << 2, &hd.Nonce
	case "hash":
		return 1 << 3, &hd.Hash
	case "ext":
		return 1 << 4, &hd.Ext
	case "mac":
		return 1 << 5, &hd.MAC
	case "app":
		return 1 << 6, &hd.App
	case "dlg":
		return 1 << 7, &hd.Dlg
	}
	return 0, nil
}

// String formats hd as an Authorization header value, attributes in the
// reference client's order (id, ts, nonce, hash, ext, mac, app, dlg),
// empty ones left out. Values are not escaped: they must already be valid
// attribute values (ParseHeader's rules).
func (hd Header) String() string {
	var b strings.Builder
	b.WriteString("Hawk ")
	first := true
	add := func(name, v string) {
		if v == "" {
			return
		}
		if !first {
			b.WriteString(", ")
		}
		first = false
		b.WriteString(name)
		b.WriteString(`="`)
		b.WriteString(v)
		b.WriteByte('"')
	}
	ts := hd.TSText
	if ts == "" {
		ts = strconv.FormatInt(hd.TS, 10)
	}
	add("id", hd.ID)
	add("ts", ts)
	add("nonce", hd.Nonce)
	add("hash", hd.Hash)
	add("ext", hd.Ext)
	add("mac", hd.MAC)
	add("app", hd.App)
	add("dlg", hd.Dlg)
	return b.String()
}

// ValidValue reports whether s can be sent as a Hawk attribute value:
// non-empty printable ASCII without '"' and '\'.
func ValidValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !valueChar(s[i]) {
			return false
		}
	}
	return true
}

func isWord(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// valueChar is the reference parser's attribute alphabet: space, word
// characters and !#$%&'()*+,-./:;<=>?@[]^`{|}~ (printable ASCII but '"'
// and '\').
func valueChar(c byte) bool {
	return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\'
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
