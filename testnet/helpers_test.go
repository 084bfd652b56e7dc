package testnet

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
)

// The helpers below drive a real Standalone over real HTTP, the way Sync
// clients and the third-party functional suites do.

// cheapHash lowers the directory's argon2 cost so that registrations and
// Basic auth checks in tests are fast.
func cheapHash(c *directory.Config) {
	c.Accounts.PasswordHash = directory.HashParams{Time: 1, MemoryKiB: 64, Threads: 1}
}

// tuneDirectory makes the directory fast for tests: cheap password hashes
// and short raft timeouts (a single voter elects itself sooner).
func tuneDirectory(c *directory.Config) {
	cheapHash(c)
	c.Raft.HeartbeatTimeout = 100 * time.Millisecond
	c.Raft.ElectionTimeout = 100 * time.Millisecond
	c.Raft.LeaderLeaseTimeout = 100 * time.Millisecond
}

// server is one running Standalone plus the HTTP client used against it.
type server struct {
	s      *Standalone
	cfg    StandaloneConfig
	client *http.Client
	base   string // URL without the trailing "/"
	stopFn func()
}

// startServer starts a Standalone on a free loopback port with its data in
// a fresh temp folder, waits for its heartbeat and shuts it down when the
// test ends. mods adjust the configuration before start.
func startServer(t *testing.T, mods ...func(*StandaloneConfig)) *server {
	t.Helper()
	cfg := StandaloneConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Directory: tuneDirectory}
	for _, m := range mods {
		m(&cfg)
	}
	return startServerConfig(t, cfg)
}

func startServerConfig(t *testing.T, cfg StandaloneConfig) *server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := StartStandalone(ctx, cfg)
	if err != nil {
		t.Fatalf("StartStandalone: %v", err)
	}
	srv := &server{
		s:      s,
		cfg:    cfg,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}},
		base:   strings.TrimSuffix(s.URL(), "/"),
	}
	stopped := false
	srv.stopFn = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		srv.client.CloseIdleConnections()
	}
	t.Cleanup(srv.stop)
	srv.waitHealthy(t)
	return srv
}

// stop shuts the server down (idempotent).
func (s *server) stop() { s.stopFn() }

// waitHealthy polls the heartbeat until it answers 200.
func (s *server) waitHealthy(t *testing.T) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, func() string {
		if r := s.do(t, "GET", "/__heartbeat__", nil); r.Status != http.StatusOK {
			return fmt.Sprintf("server not healthy: %v", r)
		}
		return ""
	})
}

// reply is one HTTP answer.
type reply struct {
	Status     int
	StatusLine string
	Header     http.Header
	Body       []byte
	req        string
}

func (r reply) String() string {
	b := r.Body
	if len(b) > 300 {
		b = append(b[:300:300], "..."...)
	}
	return fmt.Sprintf("%s -> %s %q (headers %v)", r.req, r.StatusLine, b, r.Header)
}

// body returns the response body as a string.
func (r reply) body() string { return string(r.Body) }

// do sends one request. path is absolute ("/1.1/u/storage/c"). body is nil
// (no body), a string or []byte (sent as is) or anything else (sent as
// JSON). hdr holds header name/value pairs.
func (s *server) do(t testing.TB, method, path string, body any, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		t.Fatalf("NewRequest %s %s: %v", method, path, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if len(hdr)%2 != 0 {
		t.Fatalf("odd header list %q", hdr)
	}
	for i := 0; i < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return reply{Status: resp.StatusCode, StatusLine: resp.Status, Header: resp.Header, Body: data, req: method + " " + path}
}

// accountName is the Weave account name of an e-mail address:
// lowercase(base32(sha1(lowercase(email)))) (weave-api.md 4.1).
func accountName(email string) string {
	sum := sha1.Sum([]byte(strings.ToLower(email)))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))
}

var emailSeq atomic.Int64

// uniqueEmail returns a fresh e-mail address for the running test.
func uniqueEmail(t testing.TB) string {
	n := emailSeq.Add(1)
	tag := regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-")
	if len(tag) > 30 {
		tag = tag[:30]
	}
	return fmt.Sprintf("%s-%d-%d@example.com", strings.ToLower(tag), n, time.Now().UnixNano()%1e6)
}

// account is one registered user and the storage API version it talks.
type account struct {
	s        *server
	Name     string
	Email    string
	Password string
	Ver      string // "1.1" unless set
}

// newAccount registers a fresh account through the user API.
func (s *server) newAccount(t testing.TB) *account {
	t.Helper()
	email := uniqueEmail(t)
	a := &account{s: s, Name: accountName(email), Email: email, Password: "correct horse battery", Ver: "1.1"}
	r := s.do(t, "PUT", "/user/1.0/"+a.Name, map[string]string{"email": a.Email, "password": a.Password})
	if r.Status != 200 || r.body() != a.Name {
		t.Fatalf("register %s: %v", a.Name, r)
	}
	return a
}

// with returns a copy of a talking another protocol version.
func (a *account) with(ver string) *account {
	c := *a
	c.Ver = ver
	return &c
}

// path returns the storage path of rel ("storage/c/id") for the account.
func (a *account) path(rel string) string {
	return "/" + a.Ver + "/" + a.Name + "/" + rel
}

// do sends an authenticated storage API request; rel is relative to
// /{ver}/{user}/.
func (a *account) do(t testing.TB, method, rel string, body any, hdr ...string) reply {
	t.Helper()
	return a.s.do(t, method, a.path(rel), body, append([]string{"Authorization", testkit.BasicAuth(a.Name, a.Password)}, hdr...)...)
}

// put writes one record and returns its timestamp string.
func (a *account) put(t testing.TB, coll, id string, wbo any) string {
	t.Helper()
	r := a.do(t, "PUT", "storage/"+coll+"/"+id, wbo)
	want(t, r, 200)
	return wantStamp(t, r.body())
}

// post writes a batch and checks that every record succeeded.
func (a *account) post(t testing.TB, coll string, wbos any) batchReply {
	t.Helper()
	r := a.do(t, "POST", "storage/"+coll, wbos)
	want(t, r, 200)
	b := decodeBatch(t, r)
	if len(b.Failed) != 0 {
		t.Fatalf("POST %s: failures %v", coll, b.Failed)
	}
	return b
}

// ids GETs rel (a collection path with query) and returns the id list.
func (a *account) ids(t testing.TB, rel string) []string {
	t.Helper()
	r := a.do(t, "GET", rel, nil)
	want(t, r, 200)
	return decodeIDs(t, r)
}

var stampRE = regexp.MustCompile(`^[0-9]+\.[0-9]{2}$`)

// wantStamp checks that s is a timestamp with exactly two decimals and
// returns it.
func wantStamp(t testing.TB, s string) string {
	t.Helper()
	if !stampRE.MatchString(s) {
		t.Fatalf("timestamp %q does not have the form 1234.56", s)
	}
	return s
}

// stampCS parses a 2-decimal timestamp string into centiseconds.
func stampCS(t testing.TB, s string) int64 {
	t.Helper()
	wantStamp(t, s)
	v, err := strconv.ParseInt(strings.Replace(s, ".", "", 1), 10, 64)
	if err != nil {
		t.Fatalf("timestamp %q: %v", s, err)
	}
	return v
}

// csStamp formats centiseconds as a wire timestamp.
func csStamp(v int64) string { return fmt.Sprintf("%d.%02d", v/100, v%100) }

// want checks the status code (and that the status line uses the standard
// reason phrase).
func want(t testing.TB, r reply, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("want status %d: %v", status, r)
	}
	if wantLine := fmt.Sprintf("%d %s", status, http.StatusText(status)); r.StatusLine != wantLine {
		t.Errorf("status line %q, want %q", r.StatusLine, wantLine)
	}
}

// wantCode checks a 400 whose body is the bare Weave error code.
func wantCode(t testing.TB, r reply, status, code int) {
	t.Helper()
	want(t, r, status)
	if got := strings.TrimSpace(r.body()); got != strconv.Itoa(code) {
		t.Fatalf("want body %d: %v", code, r)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error code body Content-Type %q, want application/json: %v", ct, r)
	}
}

// wantJSONType checks the Content-Type is application/json.
func wantJSONType(t testing.TB, r reply) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json: %v", ct, r)
	}
}

// wantTimestampHeader checks X-Weave-Timestamp is present and well formed
// and returns it.
func wantTimestampHeader(t testing.TB, r reply) string {
	t.Helper()
	h := r.Header.Get("X-Weave-Timestamp")
	if h == "" {
		t.Fatalf("no X-Weave-Timestamp: %v", r)
	}
	return wantStamp(t, h)
}

func decodeIDs(t testing.TB, r reply) []string {
	t.Helper()
	var ids []string
	if err := json.Unmarshal(r.Body, &ids); err != nil {
		t.Fatalf("decoding id list: %v: %v", err, r)
	}
	if ids == nil {
		ids = []string{}
	}
	return ids
}

// rawWBO is a WBO as returned, field by field, numbers untouched.
type rawWBO map[string]json.RawMessage

func (w rawWBO) str(t testing.TB, k string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(w[k], &s); err != nil {
		t.Fatalf("field %s=%s is not a string: %v", k, w[k], err)
	}
	return s
}

func (w rawWBO) keys() []string {
	var ks []string
	for k := range w {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func decodeWBO(t testing.TB, r reply) rawWBO {
	t.Helper()
	var w rawWBO
	if err := json.Unmarshal(r.Body, &w); err != nil {
		t.Fatalf("decoding WBO: %v: %v", err, r)
	}
	return w
}

func decodeWBOs(t testing.TB, r reply) []rawWBO {
	t.Helper()
	var ws []rawWBO
	if err := json.Unmarshal(r.Body, &ws); err != nil {
		t.Fatalf("decoding WBO list: %v: %v", err, r)
	}
	return ws
}

// batchReply is a POST answer.
type batchReply struct {
	Modified json.RawMessage     `json:"modified"`
	Success  []string            `json:"success"`
	Failed   map[string][]string `json:"failed"`
}

func decodeBatch(t testing.TB, r reply) batchReply {
	t.Helper()
	var b batchReply
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("decoding batch reply: %v: %v", err, r)
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(r.Body, &raw)
	for _, k := range []string{"modified", "success", "failed"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("batch reply lacks %q: %v", k, r)
		}
	}
	wantStamp(t, string(b.Modified))
	if b.Success == nil {
		b.Success = []string{}
	}
	return b
}

// decodeObject decodes a JSON object keeping numbers as their literal text.
func decodeObject(t testing.TB, r reply) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("decoding object: %v: %v", err, r)
	}
	return m
}

func eq(t testing.TB, what string, got, wantV any) {
	t.Helper()
	if !reflect.DeepEqual(got, wantV) {
		t.Fatalf("%s: got %#v, want %#v", what, got, wantV)
	}
}

// versions are the storage API path prefixes served identically.
var versions = []string{"1.0", "1", "1.1"}

// strangerHost starts a libp2p host with a fresh identity in dir that no
// directory lists; it is closed when the test ends.
func strangerHost(t *testing.T, ctx context.Context, dir string) host.Host {
	t.Helper()
	key, _, err := p2p.LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	hc := p2p.DefaultConfig()
	hc.Key = key
	h, err := p2p.NewHost(ctx, hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
