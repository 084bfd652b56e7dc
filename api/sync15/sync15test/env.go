// Package sync15test is the conformance suite of the Sync 1.5 storage
// API: table tests of the protocol's rules, run through sync15's handler
// on a real loopback server, with Hawk credentials made the way a
// directory makes them (api/hawkid), over any sync15.Store. api/sync15
// runs it over its reference in-memory store; node runs it over its
// Pebble-backed store.
//
// The tests never predict a write's timestamp from the clock: a store may
// stamp a write later than the clock (a node stamps every write above any
// time it gave the user, reads included). They take the timestamp from
// the answer and check the protocol's relations: every write's timestamp
// is at least the clock's and above every earlier one, and the times
// every later answer carries follow from it.
package sync15test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawk"
	"github.com/hce-sync/hce/api/hawkid"
	"github.com/hce-sync/hce/api/sync15"
	"github.com/hce-sync/hce/api/testkit"
)

// Factory returns a fresh, empty store whose time is clock and whose
// per-user quota is quotaBytes (0: none). The store is the test's: the
// factory registers its cleanup.
type Factory func(t *testing.T, clock func() time.Time, quotaBytes int64) sync15.Store

// Run runs every test of the suite as a subtest of t, each on its own
// store.
func Run(t *testing.T, f Factory) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"Authentication", testAuthentication},
		{"Info", testInfo},
		{"Quota", testQuota},
		{"Items", testItems},
		{"ItemPreconditions", testItemPreconditions},
		{"Post", testPost},
		{"RequestSize", testRequestSize},
		{"GetCollection", testGetCollection},
		{"Pagination", testPagination},
		{"GetCap", testGetCap},
		{"Deletes", testDeletes},
		{"Batches", testBatches},
		{"StampsIncrease", testStampsIncrease},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, f) })
	}
}

// Epoch is where the suite's clock starts.
var Epoch = time.Unix(1_800_000_000, 0)

// hawkAuth is the Authenticator a storage node builds from api/hawk and
// api/hawkid (the suite's own, so that it needs nothing but api).
type hawkAuth struct {
	v      *hawk.Verifier
	dirPub ed25519.PublicKey
	node   *ecdh.PrivateKey
	clock  func() time.Time
}

func (a *hawkAuth) Authenticate(_ context.Context, ar sync15.AuthRequest) (sync15.Identity, error) {
	var claims hawkid.Claims
	res, err := a.v.Verify(ar.HTTP, func(id string) ([]byte, error) {
		var grace time.Duration
		if ar.AllowExpired {
			grace = 5 * time.Minute
		}
		keys := func(kid string) (ed25519.PublicKey, bool) { return a.dirPub, kid == "dir1" }
		c, err := hawkid.Verify(id, keys, "node-a", a.clock(), grace)
		if err != nil {
			return nil, err
		}
		raw, err := hawkid.Open(a.node, &c)
		if err != nil {
			return nil, err
		}
		claims = c
		return hawkid.MACKey(raw), nil
	})
	if err != nil {
		return sync15.Identity{}, err
	}
	if strconv.FormatUint(claims.UID, 10) != ar.UID {
		return sync15.Identity{}, fmt.Errorf("%w: uid %d, path %s", api.ErrUnauthorized, claims.UID, ar.UID)
	}
	return sync15.Identity{User: claims.Sub, VerifyBody: res.VerifyPayload}, nil
}

// env is a storage API on a loopback server over one store.
type env struct {
	t     *testing.T
	clock *testkit.Clock
	store sync15.Store
	srv   *httptest.Server
	dir   ed25519.PrivateKey
	node  *ecdh.PrivateKey
	// last is the latest write timestamp seen (writes must exceed it).
	last api.Stamp
}

func newEnv(t *testing.T, f Factory, quota int64, mod func(*sync15.Config)) *env {
	t.Helper()
	e := &env{t: t, clock: testkit.NewClock(Epoch)}
	e.store = f(t, e.clock.Now, quota)
	_, e.dir, _ = ed25519.GenerateKey(rand.Reader)
	var err error
	if e.node, err = hawkid.GenerateNodeKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	hcfg := hawk.DefaultConfig()
	hcfg.Clock = e.clock.Now
	v, err := hawk.NewVerifier(hcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sync15.DefaultConfig()
	cfg.Store = e.store
	cfg.Auth = &hawkAuth{v: v, dirPub: e.dir.Public().(ed25519.PublicKey), node: e.node, clock: e.clock.Now}
	cfg.Clock = e.clock.Now
	cfg.Logger = testkit.Logger(t, 0)
	cfg.QuotaBytes = quota
	if mod != nil {
		mod(&cfg)
	}
	h, err := sync15.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// client holds Hawk credentials for one uid.
type client struct {
	e       *env
	uid     uint64
	id, key string
}

// newClient issues credentials (uid, user) valid for ttl from now.
func (e *env) newClient(uid uint64, user string, ttl time.Duration) *client {
	e.t.Helper()
	now := e.clock.Now()
	id, key, err := hawkid.Issue(e.dir, e.node.PublicKey(), hawkid.Claims{Kid: "dir1", UID: uid, Sub: user, Aud: "node-a",
		Iat: now.Unix(), Exp: now.Add(ttl).Unix()}, rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	return &client{e: e, uid: uid, id: id, key: key}
}

// resp is an answer.
type resp struct {
	status int
	header http.Header
	body   string
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
}

// lastMod returns the answer's X-Last-Modified.
func (r resp) lastMod(t *testing.T) api.Stamp {
	t.Helper()
	ts, err := api.ParseStamp(r.header.Get("X-Last-Modified"))
	if err != nil {
		t.Fatalf("X-Last-Modified %q: %v", r.header.Get("X-Last-Modified"), err)
	}
	return ts
}

// do sends a request to path (relative to /1.5/<uid>, or absolute when it
// starts with "//") with optional body and headers ("K: v" strings).
func (c *client) do(method, path, body string, headers ...string) resp {
	c.e.t.Helper()
	p := "/1.5/" + strconv.FormatUint(c.uid, 10) + path
	if strings.HasPrefix(path, "//") {
		p = path[1:]
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.e.srv.URL+p, rd)
	if err != nil {
		c.e.t.Fatal(err)
	}
	ct := ""
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
		if strings.EqualFold(k, "Content-Type") {
			ct = v
		}
	}
	if body != "" && ct == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	switch req.Header.Get("Authorization") {
	case "":
		u, _ := url.Parse(c.e.srv.URL)
		port, _ := strconv.Atoi(u.Port())
		auth, err := hawk.Sign(hawk.Credentials{ID: c.id, Key: []byte(c.key)}, method, req.URL.RequestURI(), u.Hostname(), port, hawk.SignOptions{}, c.e.clock.Now().Unix())
		if err != nil {
			c.e.t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
	case "none":
		req.Header.Del("Authorization")
	}
	res, err := c.e.srv.Client().Do(req)
	if err != nil {
		c.e.t.Fatalf("%s %s: %v", method, p, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.e.t.Fatalf("%s %s: reading body: %v", method, p, err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: string(b)}
}

// write sends a write that must succeed with 200 and returns its
// timestamp (X-Last-Modified), checking that it is at least the clock's
// and above every earlier write's, and that X-Weave-Timestamp agrees.
func (c *client) write(method, path, body string, headers ...string) (api.Stamp, resp) {
	c.e.t.Helper()
	r := c.do(method, path, body, headers...)
	if r.status != 200 {
		c.e.t.Fatalf("%s %s: %d %q", method, path, r.status, r.body)
	}
	ts := r.lastMod(c.e.t)
	if ts < c.e.stamp() || ts <= c.e.last {
		c.e.t.Fatalf("%s %s stamped %s: clock %s, last write %s", method, path, ts, c.e.stamp(), c.e.last)
	}
	if r.header.Get("X-Weave-Timestamp") != ts.String() {
		c.e.t.Fatalf("%s %s: X-Weave-Timestamp %q, X-Last-Modified %s", method, path, r.header.Get("X-Weave-Timestamp"), ts)
	}
	c.e.last = ts
	return ts, r
}

// expect checks an answer's status and, when want is not "*", its body.
func expect(t *testing.T, r resp, status int, want string) {
	t.Helper()
	if r.status != status || want != "*" && r.body != want {
		t.Fatalf("answer %d %q, want %d %q", r.status, r.body, status, want)
	}
}

// tick moves the clock by one second.
func (e *env) tick() { e.clock.Add(time.Second) }

// stamp returns the clock as a Stamp.
func (e *env) stamp() api.Stamp { return api.Stamp(e.clock.Now().UnixMilli() / 10) }

// bsoList builds a JSON array of records <prefix>0..<prefix>(n-1) with
// payload p.
func bsoList(n int, prefix, payload string) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"%s%d","payload":%q}`, prefix, i, payload)
	}
	b.WriteByte(']')
	return b.String()
}

func escapeID(id string) string {
	r := strings.NewReplacer(" ", "%20", "/", "%2F", "?", "%3F", "#", "%23")
	return r.Replace(id)
}
