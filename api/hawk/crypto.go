package hawk

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"strconv"
	"strings"
)

// Request holds what a Hawk MAC covers (the reference library calls it
// the artifacts): the request line and host, and the header's ts, nonce,
// hash, ext, app and dlg attributes.
type Request struct {
	// Method is the HTTP method; it is upper-cased in the normalized string.
	Method string
	// Resource is the request target as sent: path and query
	// ("/resource/1?b=1&a=2").
	Resource string
	// Host is the host name as the client addressed it; it is lower-cased
	// in the normalized string.
	Host string
	// Port is the port the client addressed (80 or 443 when the URL had
	// none).
	Port int
	// TS is the ts attribute as sent (decimal seconds).
	TS string
	// Nonce, Hash, Ext, App and Dlg are the attributes of the same names.
	Nonce, Hash, Ext, App, Dlg string
}

// NormalizedString returns the string a MAC of the given type ("header" for
// requests, "response" for Server-Authorization) is computed over:
//
//	hawk.1.<type>\n<ts>\n<nonce>\n<METHOD>\n<resource>\n<host>\n<port>\n<hash>\n<ext>\n
//
// followed by "<app>\n<dlg>\n" when App is set. Backslashes and newlines in
// ext are escaped as \\ and \n.
func NormalizedString(typ string, r *Request) string {
	var b strings.Builder
	b.Grow(64 + len(r.Resource) + len(r.Host) + len(r.Hash) + len(r.Ext) + len(r.App) + len(r.Dlg))
	b.WriteString("hawk.1.")
	b.WriteString(typ)
	b.WriteByte('\n')
	b.WriteString(r.TS)
	b.WriteByte('\n')
	b.WriteString(r.Nonce)
	b.WriteByte('\n')
	b.WriteString(strings.ToUpper(r.Method))
	b.WriteByte('\n')
	b.WriteString(r.Resource)
	b.WriteByte('\n')
	b.WriteString(strings.ToLower(r.Host))
	b.WriteByte('\n')
	b.WriteString(strconv.Itoa(r.Port))
	b.WriteByte('\n')
	b.WriteString(r.Hash)
	b.WriteByte('\n')
	if r.Ext != "" {
		b.WriteString(escapeExt(r.Ext))
	}
	b.WriteByte('\n')
	if r.App != "" {
		b.WriteString(r.App)
		b.WriteByte('\n')
		b.WriteString(r.Dlg)
		b.WriteByte('\n')
	}
	return b.String()
}

func escapeExt(s string) string {
	if !strings.ContainsAny(s, "\\\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// MAC returns the base64 (standard, padded) HMAC-SHA256 of the normalized
// string of type typ under key.
func MAC(key []byte, typ string, r *Request) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(NormalizedString(typ, r)))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TimestampMAC returns the tsm of a stale-timestamp answer: the base64
// HMAC-SHA256 under key of "hawk.1.ts\n<ts>\n".
func TimestampMAC(key []byte, ts int64) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("hawk.1.ts\n" + strconv.FormatInt(ts, 10) + "\n"))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// PayloadHash returns the base64 SHA-256 payload hash of a body:
// the hash of "hawk.1.payload\n<content type>\n<payload>\n", where the
// content type is lower-cased and stripped of its parameters.
func PayloadHash(contentType string, payload []byte) string {
	h := NewPayloadHash(contentType)
	h.Write(payload)
	return FinishPayloadHash(h)
}

// NewPayloadHash starts a payload hash for a body streamed through the
// returned hash; FinishPayloadHash completes it.
func NewPayloadHash(contentType string) hash.Hash {
	h := sha256.New()
	h.Write([]byte("hawk.1.payload\n"))
	h.Write([]byte(MediaType(contentType)))
	h.Write([]byte{'\n'})
	return h
}

// FinishPayloadHash writes the closing newline and returns the base64 hash.
func FinishPayloadHash(h hash.Hash) string {
	h.Write([]byte{'\n'})
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// MediaType returns a Content-Type without parameters, trimmed and
// lower-cased, as the payload hash uses it.
func MediaType(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// Credentials are a Hawk key identifier and key. Key is the byte string
// the MAC is keyed with (for Sync, the bytes of the "key" string the
// tokenserver returned).
type Credentials struct {
	ID  string
	Key []byte
}

// SignOptions are the client's choices for one request.
type SignOptions struct {
	// TS is the timestamp in Unix seconds; zero means "use Now".
	TS int64
	// Nonce is the nonce; empty means a fresh random one.
	Nonce string
	// Ext, App and Dlg are optional attributes.
	Ext, App, Dlg string
	// PayloadHash, when set, is sent as the hash attribute (see
	// PayloadHash).
	PayloadHash string
}

// ErrBadSignInput is returned by Sign for credentials or options that
// cannot form a valid header.
var ErrBadSignInput = errors.New("hawk: invalid input to Sign")

// Sign returns the Authorization header value for a request to
// method, resource (path and query) on host:port, as a Hawk client would
// send it. now is used when opts.TS is zero.
func Sign(c Credentials, method, resource, host string, port int, opts SignOptions, now int64) (string, error) {
	if !ValidValue(c.ID) || len(c.Key) == 0 {
		return "", ErrBadSignInput
	}
	ts := opts.TS
	if ts == 0 {
		ts = now
	}
	nonce := opts.Nonce
	if nonce == "" {
		var b [9]byte
		_, _ = rand.Read(b[:])
		nonce = base64.RawURLEncoding.EncodeToString(b[:])
	}
	for _, v := range []string{nonce, opts.Ext, opts.App, opts.Dlg, opts.PayloadHash} {
		if v != "" && !ValidValue(v) {
			return "", ErrBadSignInput
		}
	}
	if opts.Dlg != "" && opts.App == "" {
		return "", ErrBadSignInput
	}
	hd := Header{ID: c.ID, TS: ts, TSText: strconv.FormatInt(ts, 10), Nonce: nonce, Hash: opts.PayloadHash,
		Ext: opts.Ext, App: opts.App, Dlg: opts.Dlg}
	r := Request{Method: method, Resource: resource, Host: host, Port: port, TS: hd.TSText, Nonce: nonce,
		Hash: opts.PayloadHash, Ext: opts.Ext, App: opts.App, Dlg: opts.Dlg}
	hd.MAC = MAC(c.Key, "header", &r)
	return hd.String(), nil
}

// ServerAuthorization returns a Server-Authorization header value that
// authenticates a response to the verified request res: the "response" MAC
// over the request's values with the response's payload hash and ext
// (both optional; an empty contentType and nil payload send no hash).
func (res *Result) ServerAuthorization(contentType string, payload []byte, ext string) (string, error) {
	if ext != "" && !ValidValue(ext) {
		return "", ErrBadSignInput
	}
	r := res.Request
	r.Hash, r.Ext = "", ext
	if payload != nil || contentType != "" {
		r.Hash = PayloadHash(contentType, payload)
	}
	s := `Hawk mac="` + MAC(res.key, "response", &r) + `"`
	if r.Hash != "" {
		s += `, hash="` + r.Hash + `"`
	}
	if ext != "" {
		s += `, ext="` + ext + `"`
	}
	return s, nil
}
