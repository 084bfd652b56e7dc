package hawk

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// The credentials of the Hawk specification's examples (README and the
// reference library's tests).
var (
	specKey  = []byte("werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn")
	specKey2 = []byte("xrunpaw3489ruxnpa98w4rxnwerxhqb98rpaxn39848")
)

// TestSpecVectors checks the request MACs, payload hashes and headers of
// the Hawk README and the reference library's tests.
func TestSpecVectors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		key    []byte
		req    Request
		normal string // expected normalized string, when the spec gives it
		mac    string
	}{
		{
			name:   "README GET",
			key:    specKey,
			req:    Request{Method: "GET", Resource: "/resource/1?b=1&a=2", Host: "example.com", Port: 8000, TS: "1353832234", Nonce: "j4h3g2", Ext: "some-app-ext-data"},
			normal: "hawk.1.header\n1353832234\nj4h3g2\nGET\n/resource/1?b=1&a=2\nexample.com\n8000\n\nsome-app-ext-data\n",
			mac:    "6R4rV5iE+NPoym+WwjeHzjAGXUtLNIxmo1vpMofpLAE=",
		},
		{
			name:   "README POST with payload",
			key:    specKey,
			req:    Request{Method: "POST", Resource: "/resource/1?b=1&a=2", Host: "example.com", Port: 8000, TS: "1353832234", Nonce: "j4h3g2", Hash: "Yi9LfIIFRtBEPt74PVmbTF/xVAwPn7ub15ePICfgnuY=", Ext: "some-app-ext-data"},
			normal: "hawk.1.header\n1353832234\nj4h3g2\nPOST\n/resource/1?b=1&a=2\nexample.com\n8000\nYi9LfIIFRtBEPt74PVmbTF/xVAwPn7ub15ePICfgnuY=\nsome-app-ext-data\n",
			mac:    "aSe1DERmZuRl3pI36/9BdZmnErTw3sNzOOAUlfeKjVw=",
		},
		{
			name: "server test sha256",
			key:  specKey,
			req:  Request{Method: "GET", Resource: "/resource/1?b=1&a=2", Host: "example.com", Port: 8000, TS: "1353832234", Nonce: "j4h3g2", Ext: "some-app-data"},
			mac:  "m8r1rHbXN6NgO+KIIhjO7sFRyd78RNGVUwehe8Cp2dU=",
		},
		{
			name: "server test POST with hash",
			key:  specKey,
			req:  Request{Method: "POST", Resource: "/resource/4?filter=a", Host: "example.com", Port: 8080, TS: "1357926341", Nonce: "1AwuJD", Hash: "qAiXIVv+yjDATneWxZP2YCTa9aHRgQdnH9b3Wc+o3dg=", Ext: "some-app-data"},
			mac:  "UeYcj5UoTVaAWXNvJfLVia7kU3VabxCqrccXP8sUGC4=",
		},
		{
			name: "replay steve",
			key:  specKey,
			req:  Request{Method: "GET", Resource: "/resource/4?filter=a", Host: "example.com", Port: 8080, TS: "1353788437", Nonce: "k3j4h2", Ext: "hello"},
			mac:  "bXx7a7p1h9QYQNZ8x7QhvDQym8ACgab4m3lVSFn4DBw=",
		},
		{
			name: "replay bob",
			key:  specKey2,
			req:  Request{Method: "GET", Resource: "/resource/4?filter=a", Host: "example.com", Port: 8080, TS: "1353788437", Nonce: "k3j4h2", Ext: "hello"},
			mac:  "LXfmTnRzrLd9TD7yfH+4se46Bx6AHyhpM94hLCiNia4=",
		},
		{
			name:   "crypto test no ext",
			req:    Request{Method: "GET", Resource: "/resource/something", Host: "example.com", Port: 8080, TS: "1357747017", Nonce: "k3k4j5"},
			normal: "hawk.1.header\n1357747017\nk3k4j5\nGET\n/resource/something\nexample.com\n8080\n\n\n",
		},
		{
			name:   "crypto test payload and ext",
			req:    Request{Method: "GET", Resource: "/resource/something", Host: "example.com", Port: 8080, TS: "1357747017", Nonce: "k3k4j5", Hash: "U4MKKSmiVxk37JCCrAVIjV/OhB3y+NdwoCr6RShbVkE=", Ext: "this is some app data"},
			normal: "hawk.1.header\n1357747017\nk3k4j5\nGET\n/resource/something\nexample.com\n8080\nU4MKKSmiVxk37JCCrAVIjV/OhB3y+NdwoCr6RShbVkE=\nthis is some app data\n",
		},
		{
			name:   "app and dlg, escaped ext, case folding",
			req:    Request{Method: "get", Resource: "/x", Host: "Example.COM", Port: 443, TS: "1", Nonce: "n", Ext: "a\\b\nc", App: "app1", Dlg: "dlg1"},
			normal: "hawk.1.header\n1\nn\nGET\n/x\nexample.com\n443\n\na\\\\b\\nc\napp1\ndlg1\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.normal != "" {
				if got := NormalizedString("header", &tc.req); got != tc.normal {
					t.Errorf("normalized %q, want %q", got, tc.normal)
				}
			}
			if tc.mac != "" {
				if got := MAC(tc.key, "header", &tc.req); got != tc.mac {
					t.Errorf("MAC %s, want %s", got, tc.mac)
				}
			}
		})
	}
	if got := PayloadHash("text/plain", []byte("Thank you for flying Hawk")); got != "Yi9LfIIFRtBEPt74PVmbTF/xVAwPn7ub15ePICfgnuY=" {
		t.Errorf("payload hash %s", got)
	}
	if got := PayloadHash(" Text/Plain ; charset=utf-8", []byte("Thank you for flying Hawk")); got != "Yi9LfIIFRtBEPt74PVmbTF/xVAwPn7ub15ePICfgnuY=" {
		t.Errorf("payload hash with parameters %s", got)
	}
}

// TestSignVectors checks that the client half produces the README's
// headers byte for byte.
func TestSignVectors(t *testing.T) {
	c := Credentials{ID: "dh37fgj492je", Key: specKey}
	got, err := Sign(c, "GET", "/resource/1?b=1&a=2", "example.com", 8000, SignOptions{TS: 1353832234, Nonce: "j4h3g2", Ext: "some-app-ext-data"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := `Hawk id="dh37fgj492je", ts="1353832234", nonce="j4h3g2", ext="some-app-ext-data", mac="6R4rV5iE+NPoym+WwjeHzjAGXUtLNIxmo1vpMofpLAE="`
	if got != want {
		t.Errorf("GET header\n got %s\nwant %s", got, want)
	}
	hash := PayloadHash("text/plain", []byte("Thank you for flying Hawk"))
	got, err = Sign(c, "POST", "/resource/1?b=1&a=2", "example.com", 8000, SignOptions{TS: 1353832234, Nonce: "j4h3g2", Ext: "some-app-ext-data", PayloadHash: hash}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want = `Hawk id="dh37fgj492je", ts="1353832234", nonce="j4h3g2", hash="Yi9LfIIFRtBEPt74PVmbTF/xVAwPn7ub15ePICfgnuY=", ext="some-app-ext-data", mac="aSe1DERmZuRl3pI36/9BdZmnErTw3sNzOOAUlfeKjVw="`
	if got != want {
		t.Errorf("POST header\n got %s\nwant %s", got, want)
	}
	for _, bad := range []struct {
		c Credentials
		o SignOptions
	}{
		{Credentials{ID: "", Key: specKey}, SignOptions{}},
		{Credentials{ID: "a\"b", Key: specKey}, SignOptions{}},
		{Credentials{ID: "a", Key: nil}, SignOptions{}},
		{c, SignOptions{Ext: "bad\\"}},
		{c, SignOptions{Dlg: "d"}},
	} {
		if _, err := Sign(bad.c, "GET", "/", "h", 80, bad.o, 1); !errors.Is(err, ErrBadSignInput) {
			t.Errorf("Sign(%+v, %+v) = %v", bad.c, bad.o, err)
		}
	}
}

// TestServerAuthorizationVectors checks response MACs from the reference
// library's tests.
func TestServerAuthorizationVectors(t *testing.T) {
	res := &Result{key: specKey, Request: Request{Method: "POST", Host: "example.com", Port: 8080, Resource: "/resource/4?filter=a",
		TS: "1398546787", Nonce: "xUwusx", Hash: "nJjkVtBE5Y/Bk38Aiokwn0jiJxt/0S2WRSUwWLCf5xk=", Ext: "some-app-data"}}
	for _, tc := range []struct {
		payload, ext, want string
	}{
		{"some reply", "response-specific", `Hawk mac="n14wVJK4cOxAytPUMc5bPezQzuJGl5n7MYXhFQgEKsE=", hash="f9cDF/TDm7TkYRLnGwRMfeDzT6LixQVLvrIKhh0vgmM=", ext="response-specific"`},
		{"", "response-specific", `Hawk mac="i8/kUBDx0QF+PpCtW860kkV/fa9dbwEoe/FpGUXowf0=", hash="q/t+NNAkQZNlq/aAD6PlexImwQTxwgT2MahfTa9XRLA=", ext="response-specific"`},
		{"", "", `Hawk mac="q+fdjQv3kF56JGKLYeLzAS9dYGcvDqAXRG7MTVHAFKE=", hash="q/t+NNAkQZNlq/aAD6PlexImwQTxwgT2MahfTa9XRLA="`},
	} {
		got, err := res.ServerAuthorization("text/plain", []byte(tc.payload), tc.ext)
		if err != nil || got != tc.want {
			t.Errorf("ServerAuthorization(%q, %q) =\n %s, %v\nwant %s", tc.payload, tc.ext, got, err, tc.want)
		}
	}
}

func TestParseHeader(t *testing.T) {
	const mac = `mac="/qwS4UjfVWMcUyW6EEgUH4jlr7T/wuKe3dKijvTvSos="`
	for _, tc := range []struct {
		name string
		in   string
		want error
		id   string
	}{
		{"spec example", `Hawk id="dh37fgj492je", ts="1353832234", nonce="j4h3g2", ext="some-app-ext-data", mac="6R4rV5iE+NPoym+WwjeHzjAGXUtLNIxmo1vpMofpLAE="`, nil, "dh37fgj492je"},
		{"all attributes", `Hawk id="a", ts="1", nonce="n", hash="h", ext="e x", ` + mac + `, app="p", dlg="d"`, nil, "a"},
		{"scheme case and tabs", "hAwK\tid=\"123\",ts=\"1353788437\" ,\tnonce=\"k3j4h2\", " + mac, nil, "123"},
		{"trailing comma", `Hawk id="1", ts="1", nonce="n", ` + mac + `, `, nil, "1"},
		{"all value characters", `Hawk id="a b!#$%&'()*+,-./:;<=>?@[]^_` + "`" + `{|}~Z9", ts="1", nonce="n", ` + mac, nil, "a b!#$%&'()*+,-./:;<=>?@[]^_`{|}~Z9"},
		{"empty header", ``, ErrNoCredentials, ""},
		{"basic scheme", `Basic asdasdasdasd`, ErrNoCredentials, ""},
		{"no scheme", `!@#`, ErrMalformed, ""},
		{"scheme only", `Hawk`, ErrMalformed, ""},
		{"scheme and space", `Hawk `, ErrMalformed, ""},
		{"missing id", `Hawk ts="1353788437", nonce="k3j4h2", ` + mac + `, ext="hello"`, ErrMalformed, ""},
		{"missing ts", `Hawk id="123", nonce="k3j4h2", ` + mac + `, ext="hello"`, ErrMalformed, ""},
		{"missing nonce", `Hawk id="123", ts="1353788437", ` + mac + `, ext="hello"`, ErrMalformed, ""},
		{"missing mac", `Hawk id="123", ts="1353788437", nonce="k3j4h2", ext="hello"`, ErrMalformed, ""},
		{"unknown attribute", `Hawk id="123", ts="1353788437", nonce="k3j4h2", x="3", ` + mac, ErrMalformed, ""},
		{"backslash", `Hawk id="123\", ts="1353788437", nonce="k3j4h2", ` + mac, ErrMalformed, ""},
		{"tab in value", "Hawk id=\"\t\", ts=\"1353788437\", nonce=\"k3j4h2\", " + mac, ErrMalformed, ""},
		{"empty value", `Hawk id="", ts="1353788437", nonce="k3j4h2", ` + mac, ErrMalformed, ""},
		{"duplicate", `Hawk id="123", id="456", ts="1353788437", nonce="k3j4h2", ` + mac, ErrMalformed, ""},
		{"unquoted", `Hawk id=123, ts="1", nonce="n", ` + mac, ErrMalformed, ""},
		{"unterminated", `Hawk id="123, ts="1", nonce="n", mac="m`, ErrMalformed, ""},
		{"no comma", `Hawk id="1" ts="1", nonce="n", ` + mac, ErrMalformed, ""},
		{"double comma", `Hawk id="1",, ts="1", nonce="n", ` + mac, ErrMalformed, ""},
		{"non-digit ts", `Hawk id="1", ts="12a", nonce="n", ` + mac, ErrMalformed, ""},
		{"negative ts", `Hawk id="1", ts="-5", nonce="n", ` + mac, ErrMalformed, ""},
		{"long ts", `Hawk id="1", ts="1234567890123", nonce="n", ` + mac, ErrMalformed, ""},
		{"non-ASCII", "Hawk id=\"\u00e9\", ts=\"1\", nonce=\"n\", " + mac, ErrMalformed, ""},
		{"too long", `Hawk id="` + strings.Repeat("a", MaxHeaderLen) + `", ts="1", nonce="n", ` + mac, ErrMalformed, ""},
		{"leading space", ` Hawk id="1", ts="1", nonce="n", ` + mac, ErrMalformed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hd, err := ParseHeader(tc.in)
			if tc.want == nil {
				if err != nil || hd.ID != tc.id {
					t.Fatalf("ParseHeader = %+v, %v", hd, err)
				}
				again, err := ParseHeader(hd.String())
				if err != nil || again != hd {
					t.Fatalf("round trip %+v, %v", again, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, api.ErrUnauthorized) {
				t.Fatalf("ParseHeader = %+v, %v; want %v", hd, err, tc.want)
			}
		})
	}
}

func TestParseHost(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port int
		ok   bool
	}{
		{"example.com", "example.com", 0, true},
		{"example.com:8080", "example.com", 8080, true},
		{" example.com:8080 ", "example.com", 8080, true},
		{"[::1]:8000", "[::1]", 8000, true},
		{"[::1]", "[::1]", 0, true},
		{"127.0.0.1:1", "127.0.0.1", 1, true},
		{":8080", "", 0, false},
		{"example.com:something", "", 0, false},
		{"example.com:", "", 0, false},
		{"example.com:0", "", 0, false},
		{"example.com:65536", "", 0, false},
		{"example.com:123456", "", 0, false},
		{"a:1:2", "", 0, false},
		{"[::1", "", 0, false},
		{"[::1]x", "", 0, false},
		{"ex ample.com", "", 0, false},
		{"user@example.com", "", 0, false},
		{"", "", 0, false},
	} {
		h, p, ok := ParseHost(tc.in)
		if h != tc.host || p != tc.port || ok != tc.ok {
			t.Errorf("ParseHost(%q) = %q, %d, %v", tc.in, h, p, ok)
		}
	}
}

// specRequest builds the server test's sha256 request (GET
// /resource/4?filter=a on example.com:8080, id 123, ts 1353788437).
func specRequest(auth string) *http.Request {
	r := httptest.NewRequest("GET", "http://example.com:8080/resource/4?filter=a", nil)
	r.Header.Set("Authorization", auth)
	return r
}

const (
	specTS     = 1353788437
	steveAuth  = `Hawk id="123", ts="1353788437", nonce="k3j4h2", mac="bXx7a7p1h9QYQNZ8x7QhvDQym8ACgab4m3lVSFn4DBw=", ext="hello"`
	bobAuth    = `Hawk id="456", ts="1353788437", nonce="k3j4h2", mac="LXfmTnRzrLd9TD7yfH+4se46Bx6AHyhpM94hLCiNia4=", ext="hello"`
	staleAuth  = `Hawk id="123456", ts="1362337299", nonce="UzmxSs", ext="some-app-data", mac="wnNUxchvvryMH2RxckTdZ/gY3ijzvccx4keVvELC61w="`
	staleStamp = 1362337299
)

func specKeys(id string) ([]byte, error) {
	switch id {
	case "123", "123456", "dh37fgj492je":
		return specKey, nil
	case "456":
		return specKey2, nil
	case "down":
		return nil, errors.New("backend down")
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownID, id)
}

func newTestVerifier(t *testing.T, clock *testkit.Clock, mod func(*Config)) *Verifier {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Clock = clock.Now
	if mod != nil {
		mod(&cfg)
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyVectorsAndReplay(t *testing.T) {
	clock := testkit.NewClock(time.Unix(specTS, 0))
	v := newTestVerifier(t, clock, nil)
	res, err := v.Verify(specRequest(steveAuth), specKeys)
	if err != nil || res.Header.ID != "123" || res.Request.Host != "example.com" || res.Request.Port != 8080 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	if _, err := v.Verify(specRequest(steveAuth), specKeys); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	// The same nonce and timestamp under another id is no replay.
	if _, err := v.Verify(specRequest(bobAuth), specKeys); err != nil {
		t.Fatalf("other id, same nonce: %v", err)
	}
}

func TestVerifyStaleTimestamp(t *testing.T) {
	clock := testkit.NewClock(time.Unix(staleStamp+61, 0))
	v := newTestVerifier(t, clock, nil)
	r := specRequest(staleAuth)
	_, err := v.Verify(r, specKeys)
	var se *StaleError
	if !errors.As(err, &se) || !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("Verify = %v, want StaleError", err)
	}
	if se.Now != staleStamp+61 || se.TSM != TimestampMAC(specKey, staleStamp+61) {
		t.Fatalf("stale error %+v", se)
	}
	want := fmt.Sprintf(`Hawk ts="%d", tsm="%s", error="Stale timestamp"`, se.Now, se.TSM)
	if se.WWWAuthenticate() != want {
		t.Fatalf("WWW-Authenticate %q", se.WWWAuthenticate())
	}
	// Exactly at the edge of the window is accepted, both ways; a stale
	// request leaves no nonce behind.
	clock.Set(time.Unix(staleStamp+60, 0))
	if _, err := v.Verify(specRequest(staleAuth), specKeys); err != nil {
		t.Fatalf("at +60s: %v", err)
	}
	clock.Set(time.Unix(staleStamp-60, 0))
	v2 := newTestVerifier(t, clock, nil)
	if _, err := v2.Verify(specRequest(staleAuth), specKeys); err != nil {
		t.Fatalf("at -60s: %v", err)
	}
	clock.Set(time.Unix(staleStamp-60, 0).Add(-time.Millisecond))
	v3 := newTestVerifier(t, clock, nil)
	if _, err := v3.Verify(specRequest(staleAuth), specKeys); !errors.As(err, &se) {
		t.Fatalf("at -60.001s: %v", err)
	}
	// A wider configured skew accepts it.
	clock.Set(time.Unix(staleStamp+3600, 0))
	v4 := newTestVerifier(t, clock, func(c *Config) { c.Skew = 2 * time.Hour })
	if _, err := v4.Verify(specRequest(staleAuth), specKeys); err != nil {
		t.Fatalf("skew 2h: %v", err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	clock := testkit.NewClock(time.Unix(specTS, 0))
	for _, tc := range []struct {
		name   string
		mod    func(*http.Request)
		cfg    func(*Config)
		want   error
		status string // "unauth" or "unavail"
	}{
		{"no header", func(r *http.Request) { r.Header.Del("Authorization") }, nil, ErrNoCredentials, "unauth"},
		{"bad mac", func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(steveAuth, "bXx7", "bXx8", 1))
		}, nil, ErrBadMAC, "unauth"},
		{"other path", func(r *http.Request) { r.RequestURI = "/resource/4?filter=b" }, nil, ErrBadMAC, "unauth"},
		{"other method", func(r *http.Request) { r.Method = "POST" }, nil, ErrBadMAC, "unauth"},
		{"other host", func(r *http.Request) { r.Host = "example.org:8080" }, nil, ErrBadMAC, "unauth"},
		{"other port", func(r *http.Request) { r.Host = "example.com:8081" }, nil, ErrBadMAC, "unauth"},
		{"default port is 80", func(r *http.Request) { r.Host = "example.com" }, nil, ErrBadMAC, "unauth"},
		{"bad host", func(r *http.Request) { r.Host = "example.com:something" }, nil, ErrBadHost, "unauth"},
		{"missing host", func(r *http.Request) { r.Host = ":8080" }, nil, ErrBadHost, "unauth"},
		{"unknown id", func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(steveAuth, `id="123"`, `id="999"`, 1))
		}, nil, ErrUnknownID, "unauth"},
		{"lookup failure", func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(steveAuth, `id="123"`, `id="down"`, 1))
		}, nil, nil, "other"},
		{"forwarded host ignored by default", func(r *http.Request) {
			r.Host = "internal:9000"
			r.Header.Set("X-Forwarded-Host", "example.com:8080")
		}, nil, ErrBadMAC, "unauth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, clock, tc.cfg)
			r := specRequest(steveAuth)
			tc.mod(r)
			_, err := v.Verify(r, specKeys)
			switch tc.status {
			case "unauth":
				if !errors.Is(err, tc.want) || !errors.Is(err, api.ErrUnauthorized) {
					t.Fatalf("Verify = %v, want %v", err, tc.want)
				}
			case "other":
				if err == nil || errors.Is(err, api.ErrUnauthorized) {
					t.Fatalf("Verify = %v, want a backend error", err)
				}
			}
		})
	}
}

func TestVerifyHostAndPortSources(t *testing.T) {
	clock := testkit.NewClock(time.Unix(specTS, 0))
	for _, tc := range []struct {
		name string
		mod  func(*http.Request)
		cfg  func(*Config)
	}{
		{"configured host", func(r *http.Request) { r.Host = "example1.com:8080" }, func(c *Config) { c.Host = "example.com" }},
		{"configured host and port", func(r *http.Request) { r.Host = "example1.com:80" }, func(c *Config) { c.Host, c.Port = "example.com", 8080 }},
		{"trusted X-Forwarded-Host", func(r *http.Request) {
			r.Host = "internal:9000"
			r.Header.Set("X-Forwarded-Host", "example.com:8080, proxy2")
		}, func(c *Config) { c.TrustForwarded = true }},
		{"trusted X-Forwarded-Port", func(r *http.Request) {
			r.Host = "internal"
			r.Header.Set("X-Forwarded-Host", "example.com")
			r.Header.Set("X-Forwarded-Port", "8080")
		}, func(c *Config) { c.TrustForwarded = true }},
		{"upper-case host", func(r *http.Request) { r.Host = "EXAMPLE.com:8080" }, nil},
		{"absolute request target", func(r *http.Request) { r.RequestURI = "http://example.com:8080/resource/4?filter=a" }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, clock, tc.cfg)
			r := specRequest(steveAuth)
			tc.mod(r)
			if _, err := v.Verify(r, specKeys); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
	// The default port follows TLS, or a trusted X-Forwarded-Proto.
	sign := func(port int) string {
		h, err := Sign(Credentials{ID: "123", Key: specKey}, "GET", "/p", "example.com", port, SignOptions{}, specTS)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	v := newTestVerifier(t, clock, nil)
	r := httptest.NewRequest("GET", "https://example.com/p", nil)
	r.TLS = &tls.ConnectionState{}
	r.Header.Set("Authorization", sign(443))
	if _, err := v.Verify(r, specKeys); err != nil {
		t.Fatalf("TLS default port: %v", err)
	}
	vf := newTestVerifier(t, clock, func(c *Config) { c.TrustForwarded = true })
	r = httptest.NewRequest("GET", "http://example.com/p", nil)
	r.Header.Set("X-Forwarded-Proto", "https")
	r.Header.Set("Authorization", sign(443))
	if _, err := vf.Verify(r, specKeys); err != nil {
		t.Fatalf("X-Forwarded-Proto: %v", err)
	}
	r = httptest.NewRequest("GET", "http://example.com/p", nil)
	r.Header.Set("X-Forwarded-Proto", "https")
	r.Header.Set("Authorization", sign(443))
	if _, err := newTestVerifier(t, clock, nil).Verify(r, specKeys); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("untrusted X-Forwarded-Proto: %v", err)
	}
}

func TestVerifyPayload(t *testing.T) {
	clock := testkit.NewClock(time.Unix(1357926341, 0))
	body := []byte(`[{"id":"a","payload":"x"}]`)
	hash := PayloadHash("application/json", body)
	auth, err := Sign(Credentials{ID: "123456", Key: specKey}, "POST", "/resource/4?filter=a", "example.com", 8080, SignOptions{PayloadHash: hash}, 1357926341)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		auth    string
		require bool
		ct      string
		body    []byte
		want    error
	}{
		{"matching hash", auth, false, "application/json; charset=utf-8", body, nil},
		{"other body", auth, false, "application/json", []byte("[]"), ErrBadHash},
		{"other content type", auth, false, "text/plain", body, ErrBadHash},
		{"no hash, not required", "", false, "application/json", body, nil},
		{"no hash, required", "", true, "application/json", body, ErrMissingHash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.auth
			if a == "" {
				a, _ = Sign(Credentials{ID: "123456", Key: specKey}, "POST", "/resource/4?filter=a", "example.com", 8080, SignOptions{}, 1357926341)
			}
			v := newTestVerifier(t, clock, func(c *Config) { c.RequirePayloadHash = tc.require })
			r := httptest.NewRequest("POST", "http://example.com:8080/resource/4?filter=a", nil)
			r.Header.Set("Authorization", a)
			res, err := v.Verify(r, specKeys)
			if err != nil {
				t.Fatal(err)
			}
			if err := res.VerifyPayload(tc.ct, tc.body); !errors.Is(err, tc.want) {
				t.Fatalf("VerifyPayload = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Skew: -time.Second},
		{Skew: 1500 * time.Millisecond},
		{Skew: 48 * time.Hour},
		{ReplayCacheSize: -1},
		{Port: 70000},
		{Host: "a b"},
	} {
		if err := c.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
		if _, err := NewVerifier(c); err == nil {
			t.Errorf("NewVerifier(%+v) succeeded", c)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
}

func TestReplayCacheBounds(t *testing.T) {
	c := newReplayCache(60, DefaultReplayCacheSize)
	if len(c.buckets) != 122 || c.slots != 8192 || c.bytes() > DefaultReplayCacheSize*8 {
		t.Fatalf("layout: %d buckets of %d slots, %d bytes", len(c.buckets), c.slots, c.bytes())
	}
	small := newReplayCache(1, 64) // 4 buckets of 16 slots, 12 usable
	for i := 0; i < 12; i++ {
		if err := small.add("id", fmt.Sprint(i), 100); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if err := small.add("id", "12", 100); !errors.Is(err, ErrReplayCacheFull) || !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("full bucket: %v", err)
	}
	if err := small.add("id", "3", 100); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay in full bucket: %v", err)
	}
	// Other seconds use other buckets.
	if err := small.add("id", "12", 101); err != nil {
		t.Fatalf("next second: %v", err)
	}
	// A second that maps onto a used bucket empties it once the old one has
	// left the window (n = 4 seconds later).
	if err := small.add("id", "3", 104); err != nil {
		t.Fatalf("recycled bucket: %v", err)
	}
	if err := small.add("id", "3", 104); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay after recycle: %v", err)
	}
	// The clock going back past the window fails closed.
	if err := small.add("id", "x", 100); !errors.Is(err, ErrReplayCacheFull) {
		t.Fatalf("older second in a recycled bucket: %v", err)
	}
	if err := small.add("id", "x", -1); !errors.Is(err, ErrReplayCacheFull) {
		t.Fatalf("negative ts: %v", err)
	}
}

func TestReplayCacheConcurrent(t *testing.T) {
	c := newReplayCache(60, 1<<14)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				// Every goroutine tries the same 50 nonces: each is accepted once.
				if c.add("id", fmt.Sprint(i), 1000) == nil {
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if accepted != 50 {
		t.Fatalf("accepted %d, want 50", accepted)
	}
}
