package hawk

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config configures a Verifier.
type Config struct {
	// Skew is the accepted difference between a request's ts and the
	// server clock, either way. Zero means the default, 60 s (the
	// reference default); it must be whole seconds.
	Skew time.Duration
	// Clock returns the server time; nil means time.Now.
	Clock func() time.Time
	// ReplayCacheSize is the number of nonce fingerprints the replay cache
	// holds in all (8 bytes each), spread over 2*Skew+2 one-second
	// buckets. Zero means the default, 1<<20 (8 MiB), which with the
	// default skew accepts up to 6144 authenticated requests per second of
	// client timestamp; beyond that requests get ErrReplayCacheFull (503).
	// Raise it with Skew: the cache must hold every nonce of 2*Skew
	// seconds (a bucket never has fewer than 16 slots).
	ReplayCacheSize int
	// Host and Port, when set, are the host and port every request is
	// taken to address (a server behind a proxy that rewrites Host).
	Host string
	Port int
	// TrustForwarded makes the verifier take the host from
	// X-Forwarded-Host, the port from X-Forwarded-Port and the default
	// port from X-Forwarded-Proto when present. Only set it behind a proxy
	// that sets (or strips) these headers: otherwise a client chooses them.
	TrustForwarded bool
	// RequirePayloadHash makes Result.VerifyPayload refuse requests whose
	// header has no hash attribute. Firefox does not send payload hashes
	// to storage nodes, so a Sync node leaves it false.
	RequirePayloadHash bool
}

// Defaults of Config.
const (
	DefaultSkew            = 60 * time.Second
	DefaultReplayCacheSize = 1 << 20
	// maxSkew bounds Skew so that the replay cache stays small.
	maxSkew = 24 * time.Hour
)

// ErrBadConfig is wrapped by Config.Validate.
var ErrBadConfig = errors.New("hawk: invalid configuration")

// DefaultConfig returns a Config with the defaults filled in.
func DefaultConfig() Config {
	return Config{Skew: DefaultSkew, ReplayCacheSize: DefaultReplayCacheSize}
}

// Validate reports out-of-range settings.
func (c Config) Validate() error {
	switch {
	case c.Skew < 0 || c.Skew > maxSkew || c.Skew%time.Second != 0:
		return fmt.Errorf("%w: Skew %v must be whole seconds in [0, %v]", ErrBadConfig, c.Skew, maxSkew)
	case c.ReplayCacheSize < 0:
		return fmt.Errorf("%w: ReplayCacheSize %d < 0", ErrBadConfig, c.ReplayCacheSize)
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("%w: Port %d", ErrBadConfig, c.Port)
	case c.Host != "" && !validHostName(c.Host):
		return fmt.Errorf("%w: Host %q", ErrBadConfig, c.Host)
	}
	return nil
}

// Verifier authenticates Hawk requests. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	skewMS int64
	clock  func() time.Time
	replay *replayCache
}

// NewVerifier returns a Verifier for cfg (zero fields take defaults).
func NewVerifier(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Skew == 0 {
		cfg.Skew = DefaultSkew
	}
	if cfg.ReplayCacheSize == 0 {
		cfg.ReplayCacheSize = DefaultReplayCacheSize
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	skew := int64(cfg.Skew / time.Second)
	return &Verifier{cfg: cfg, skewMS: skew * 1000, clock: clock, replay: newReplayCache(skew, cfg.ReplayCacheSize)}, nil
}

// ReplayCacheBytes returns the most memory the verifier's replay cache can
// take.
func (v *Verifier) ReplayCacheBytes() int { return v.replay.bytes() }

// Result is a verified request: its header and the MAC input, and what
// VerifyPayload needs to check the body later.
type Result struct {
	Header  Header
	Request Request
	key     []byte
	require bool
}

// KeyFunc returns the MAC key of a Hawk id. An error wrapping
// api.ErrUnauthorized means the id is not acceptable (401); any other
// error means the lookup could not be made (503).
type KeyFunc func(id string) ([]byte, error)

// Verify authenticates r: it parses the Authorization header, works out
// host and port (see Config), looks up the key of the header's id, checks
// the MAC, the timestamp (a *StaleError when outside the skew window) and
// the nonce. The body is not read; call VerifyPayload with it when the
// header carries a hash (or RequirePayloadHash is set).
func (v *Verifier) Verify(r *http.Request, key KeyFunc) (*Result, error) {
	now := v.clock()
	hd, err := ParseHeader(r.Header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	req := Request{Method: r.Method, TS: hd.TSText, Nonce: hd.Nonce, Hash: hd.Hash, Ext: hd.Ext, App: hd.App, Dlg: hd.Dlg}
	if req.Resource, err = resource(r); err != nil {
		return nil, err
	}
	if req.Host, req.Port, err = v.hostPort(r); err != nil {
		return nil, err
	}
	k, err := key(hd.ID)
	if err != nil {
		return nil, fmt.Errorf("hawk: credentials of id: %w", err)
	}
	if len(k) == 0 {
		return nil, ErrUnknownID
	}
	want := MAC(k, "header", &req)
	if !hmac.Equal([]byte(want), []byte(hd.MAC)) {
		return nil, ErrBadMAC
	}
	nowMS := now.UnixMilli()
	if d := hd.TS*1000 - nowMS; d > v.skewMS || d < -v.skewMS {
		secs := now.Unix()
		return nil, &StaleError{Now: secs, TSM: TimestampMAC(k, secs)}
	}
	if err := v.replay.add(hd.ID, hd.Nonce, hd.TS); err != nil {
		return nil, err
	}
	return &Result{Header: hd, Request: req, key: k, require: v.cfg.RequirePayloadHash}, nil
}

// VerifyPayload checks a request body against the header's hash
// attribute. Without a hash it succeeds unless the verifier requires one
// (ErrMissingHash); a mismatch gives ErrBadHash.
func (res *Result) VerifyPayload(contentType string, body []byte) error {
	if res.Header.Hash == "" {
		if res.require {
			return ErrMissingHash
		}
		return nil
	}
	if !hmac.Equal([]byte(PayloadHash(contentType, body)), []byte(res.Header.Hash)) {
		return ErrBadHash
	}
	return nil
}

// resource returns the request target as the client sent it.
func resource(r *http.Request) (string, error) {
	res := r.RequestURI
	if res == "" && r.URL != nil {
		res = r.URL.RequestURI()
	}
	if res == "" {
		return "", fmt.Errorf("%w: no request target", ErrMalformed)
	}
	if res[0] != '/' && res != "*" {
		// Absolute form: the MAC covers the path and query only.
		u, err := url.Parse(res)
		if err != nil {
			return "", fmt.Errorf("%w: request target", ErrMalformed)
		}
		res = u.RequestURI()
	}
	return res, nil
}

// hostPort works out the host and port the client addressed.
func (v *Verifier) hostPort(r *http.Request) (string, int, error) {
	hostHeader := r.Host
	if v.cfg.TrustForwarded {
		if fh := firstValue(r.Header.Get("X-Forwarded-Host")); fh != "" {
			hostHeader = fh
		}
	}
	var host string
	port := 0
	if v.cfg.Host != "" {
		host = v.cfg.Host
	}
	if host == "" || v.cfg.Port == 0 {
		name, p, ok := ParseHost(hostHeader)
		if !ok {
			return "", 0, ErrBadHost
		}
		if host == "" {
			host = name
		}
		port = p
	}
	if v.cfg.Port != 0 {
		port = v.cfg.Port
	}
	if port == 0 && v.cfg.TrustForwarded {
		if fp := firstValue(r.Header.Get("X-Forwarded-Port")); fp != "" {
			n, err := strconv.Atoi(fp)
			if err != nil || n <= 0 || n > 65535 || !allDigits(fp) {
				return "", 0, ErrBadHost
			}
			port = n
		}
	}
	if port == 0 {
		port = 80
		proto := ""
		if v.cfg.TrustForwarded {
			proto = strings.ToLower(firstValue(r.Header.Get("X-Forwarded-Proto")))
		}
		switch {
		case proto == "https":
			port = 443
		case proto == "" && r.TLS != nil:
			port = 443
		}
	}
	return host, port, nil
}

func firstValue(s string) string {
	v, _, _ := strings.Cut(s, ",")
	return strings.TrimSpace(v)
}

// ParseHost splits a Host header value into the host name and the port (0
// when absent), as the reference library does: a name without ':' or a
// bracketed IPv6 literal (kept with its brackets), then optionally ':' and
// decimal digits, surrounded by optional white space.
func ParseHost(h string) (string, int, bool) {
	h = strings.Trim(h, " \t")
	if h == "" || len(h) > MaxHeaderLen {
		return "", 0, false
	}
	var name, rest string
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", 0, false
		}
		name, rest = h[:end+1], h[end+1:]
	} else {
		name, rest, _ = strings.Cut(h, ":")
		if rest != "" || strings.HasSuffix(h, ":") {
			rest = ":" + rest
		}
	}
	if !validHostName(name) {
		return "", 0, false
	}
	if rest == "" {
		return name, 0, true
	}
	digits, ok := strings.CutPrefix(rest, ":")
	if !ok || !allDigits(digits) || len(digits) > 5 {
		return "", 0, false
	}
	p, _ := strconv.Atoi(digits)
	if p == 0 || p > 65535 {
		return "", 0, false
	}
	return name, p, true
}

// validHostName accepts printable ASCII without white space, '/' or '@',
// and without ':' outside brackets.
func validHostName(s string) bool {
	if s == "" {
		return false
	}
	bracketed := s[0] == '['
	if bracketed && (len(s) < 3 || s[len(s)-1] != ']') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c > '~' || c == '/' || c == '@' || c == '"' || c == '\\' {
			return false
		}
		if c == ':' && !bracketed {
			return false
		}
		if (c == '[' || c == ']') && !bracketed {
			return false
		}
	}
	return true
}
