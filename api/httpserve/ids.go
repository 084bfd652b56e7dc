package httpserve

import (
	"hash/maphash"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// RequestIDHeader carries a request's id, on every response and, when a
// client or proxy sets a valid one, on the request.
const RequestIDHeader = "X-Request-Id"

// maxRequestID bounds an incoming request id's length.
const maxRequestID = 64

// validRequestID accepts 1 to 64 characters of [A-Za-z0-9._:-], so an
// incoming id is safe to echo and to log.
func validRequestID(s string) bool {
	if s == "" || len(s) > maxRequestID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// requestID keeps a valid incoming id or makes a new one: 16 hex digits.
func requestID(in string) string {
	if validRequestID(in) {
		return in
	}
	var b [16]byte
	return string(strconv.AppendUint(b[:0], rand.Uint64()|1<<63, 16)[:16])
}

// RequestID returns the id the platform gave r's response (it sets the
// X-Request-Id response header before the handler runs), or "".
func RequestID(w http.ResponseWriter) string { return w.Header().Get(RequestIDHeader) }

// AuthorizationKey is Config.ClientKey's default: the Authorization
// header, or for the Hawk scheme (whose header changes with every
// request) its id. Requests without credentials have no key.
func AuthorizationKey(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 5 && strings.EqualFold(h[:5], "hawk ") {
		if i := strings.Index(h, `id="`); i >= 0 {
			rest := h[i+4:]
			if j := strings.IndexByte(rest, '"'); j >= 0 {
				return "hawk:" + rest[:j]
			}
		}
	}
	return h
}

// keySeed hashes client keys, so the in-flight table holds no credential.
var keySeed = maphash.MakeSeed()

func hashKey(k string) uint64 { return maphash.String(keySeed, k) }

// isLoopback reports whether a RemoteAddr is a loopback address.
func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// addrKey is the client an address counts as for the per-address cap:
// the IPv4 address, or the /64 of an IPv6 address (one subscriber's
// prefix).
func addrKey(a net.Addr) string {
	var ip net.IP
	switch v := a.(type) {
	case *net.TCPAddr:
		ip = v.IP
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
		if ip == nil {
			return host
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Version describes the running binary, as /__version__ and `hce
// version` show it.
type Version struct {
	// Source is the repository the binary was built from.
	Source string `json:"source"`
	// Version is the module version ("(devel)" for a local build).
	Version string `json:"version"`
	// Commit is the VCS revision, BuildTime its commit time (RFC 3339);
	// empty when the build recorded none (go build -buildvcs=false).
	Commit    string `json:"commit"`
	BuildTime string `json:"build_time"`
	// Modified says the work tree had uncommitted changes.
	Modified bool `json:"modified"`
	// Go is the toolchain version.
	Go string `json:"go"`
}

// ReadVersion reads the running binary's build information
// (runtime/debug.ReadBuildInfo).
func ReadVersion() Version {
	v := Version{Version: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Go = bi.GoVersion
	if bi.Main.Path != "" {
		v.Source = "https://" + bi.Main.Path
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
				v.BuildTime = t.UTC().Format(time.RFC3339)
			}
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}
