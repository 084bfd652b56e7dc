package sync15

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
	"github.com/hce-sync/hce/api/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

// hawkAuth is the Authenticator a storage node builds from api/hawk and
// api/hawkid: the Hawk id is verified offline (directory signature, node
// audience, expiry), the key is opened with the node's X25519 key, and
// the uid of the id must be the one of the path.
type hawkAuth struct {
	v      *hawk.Verifier
	dirPub ed25519.PublicKey
	node   *ecdh.PrivateKey
	aud    string
	clock  func() time.Time
}

func (a *hawkAuth) Authenticate(_ context.Context, ar AuthRequest) (Identity, error) {
	var claims hawkid.Claims
	res, err := a.v.Verify(ar.HTTP, func(id string) ([]byte, error) {
		var grace time.Duration
		if ar.AllowExpired {
			grace = 5 * time.Minute
		}
		keys := func(kid string) (ed25519.PublicKey, bool) { return a.dirPub, kid == "dir1" }
		c, err := hawkid.Verify(id, keys, a.aud, a.clock(), grace)
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
		return Identity{}, err
	}
	if strconv.FormatUint(claims.UID, 10) != ar.UID {
		return Identity{}, fmt.Errorf("%w: uid %d, path %s", api.ErrUnauthorized, claims.UID, ar.UID)
	}
	return Identity{User: claims.Sub, VerifyBody: res.VerifyPayload}, nil
}

// env is a storage API on a real loopback server, a store, a clock and the
// directory and node keys to issue credentials with.
type env struct {
	t      *testing.T
	clock  *testkit.Clock
	store  *memStore
	srv    *httptest.Server
	dir    ed25519.PrivateKey
	node   *ecdh.PrivateKey
	config Config
}

var epoch = time.Unix(1_800_000_000, 0)

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{t: t, clock: testkit.NewClock(epoch)}
	e.store = newMemStore(e.clock.Now)
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
	cfg := DefaultConfig()
	cfg.Store = e.store
	cfg.Auth = &hawkAuth{v: v, dirPub: e.dir.Public().(ed25519.PublicKey), node: e.node, aud: "node-a", clock: e.clock.Now}
	cfg.Clock = e.clock.Now
	cfg.Logger = testkit.Logger(t, 0)
	if mod != nil {
		mod(&cfg)
	}
	e.config = cfg
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// client is a Sync client holding Hawk credentials for one uid.
type client struct {
	e        *env
	uid      uint64
	id, key  string
	hashBody bool
	// skew is added to the clock when the client signs.
	skew time.Duration
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

// resp is a read answer.
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
		ct = "application/json"
		req.Header.Set("Content-Type", ct)
	}
	if req.Header.Get("Authorization") == "" {
		u, _ := url.Parse(c.e.srv.URL)
		port, _ := strconv.Atoi(u.Port())
		opts := hawk.SignOptions{}
		if c.hashBody {
			opts.PayloadHash = hawk.PayloadHash(ct, []byte(body))
		}
		auth, err := hawk.Sign(hawk.Credentials{ID: c.id, Key: []byte(c.key)}, method, req.URL.RequestURI(), u.Hostname(), port, opts, c.e.clock.Now().Add(c.skew).Unix())
		if err != nil {
			c.e.t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
	} else if req.Header.Get("Authorization") == "none" {
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
func (e *env) stamp() api.Stamp { return stampOf(e.clock.Now()) }

// bsoList builds a JSON array of records id0..id(n-1) with payload p.
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
