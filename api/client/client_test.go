package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/client"
)

const (
	alice    = "alice"
	alicePW  = "alice's password"
	testColl = "bookmarks"
)

// newClient returns a client of alice (password alicePW) on the
// directory dir with short backoffs; mod adjusts the configuration.
func newClient(t *testing.T, dir string, mod func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Directory, cfg.User, cfg.Password = dir, alice, alicePW
	cfg.Backoff = 5 * time.Millisecond
	cfg.FailoverWait = 5 * time.Second
	cfg.HTTP = &http.Client{Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// aliceFed starts a federation of nodes storage nodes with alice on node
// 0 and returns it, its directory URL and a client of alice (mod adjusts
// the client's configuration).
func aliceFed(t *testing.T, nodes int, mod func(*client.Config)) (*fed, string, *client.Client) {
	t.Helper()
	f, dir := newFed(t, nodes)
	f.addUser(alice, alicePW, 0)
	return f, dir, newClient(t, dir, mod)
}

func strp(s string) *string { return &s }

// put writes one record and fails the test on an error.
func put(t *testing.T, ctx context.Context, c *client.Client, id string) {
	t.Helper()
	if _, err := c.Put(ctx, testColl, client.Record{ID: id, Payload: strp("p-" + id)}, 0); err != nil {
		t.Fatalf("Put %s: %v", id, err)
	}
}

// TestErrorMapping checks how answers of the real handlers become errors:
// an *Error with the HTTP status and, for a bare-number body, the Weave
// code; none of them makes the client retry or ask the directory again.
func TestErrorMapping(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name     string
		storeErr error // what the node's store fails with
		get      bool  // Get instead of Put
		status   int
		code     int
		text     string // in Error()
	}{
		{"over quota", api.ErrOverQuota, false, 400, int(api.CodeOverQuota), "weave: HTTP 400, error code 14"},
		{"precondition", api.ErrPreconditionFailed, false, 412, 0, "weave: HTTP 412"},
		{"not found", nil, true, 404, 0, "weave: HTTP 404"},
		{"unavailable", api.ErrUnavailable, false, 503, 0, "application error: crash id"},
		{"backend failure", errors.New("disk on fire"), true, 503, 0, "weave: HTTP 503: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _, c := aliceFed(t, 1, nil)
			f.nodes[0].store.failWith(tc.storeErr)
			var err error
			if tc.get {
				_, _, err = c.Get(ctx, testColl, "missing")
			} else {
				_, err = c.Put(ctx, testColl, client.Record{ID: "a", Payload: strp("x")}, 0)
			}
			wrapped := fmt.Errorf("sync: %w", err)
			if client.StatusOf(wrapped) != tc.status || client.CodeOf(wrapped) != tc.code {
				t.Fatalf("err %v: status %d code %d, want %d %d", err, client.StatusOf(wrapped), client.CodeOf(wrapped), tc.status, tc.code)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Error() = %q, want it to contain %q", err, tc.text)
			}
			if client.Unreachable(err) {
				t.Errorf("an HTTP answer counts as unreachable: %v", err)
			}
			if n := f.nodes[0].requests.Load(); n != 1 {
				t.Errorf("%d requests to the node, want 1 (no retry)", n)
			}
			if n := f.weaveAsks.Load(); n != 1 {
				t.Errorf("%d node/weave look-ups, want 1", n)
			}
		})
	}

	// The user API maps the same way.
	_, dir := newFed(t, 1)
	c := newClient(t, dir, func(c *client.Config) { c.User, c.Email = "", "someone@example.com" })
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx); client.StatusOf(err) != 400 || client.CodeOf(err) != int(api.CodeCannotOverwrite) {
		t.Fatalf("second Register: %v, want 400 code 4", err)
	}
	if err := c.RequestPasswordReset(ctx); client.CodeOf(err) != int(api.CodeNoEmail) {
		t.Fatalf("reset without a mail address: %v, want code 12", err)
	}
}

// TestRetryAfterNotRetried: a node answering 503 with Retry-After (its
// store failing) is reported as is: the client neither retries nor asks
// the directory for another node, and stays on the node.
func TestRetryAfterNotRetried(t *testing.T) {
	ctx := t.Context()
	f, _, c := aliceFed(t, 2, nil)
	put(t, ctx, c, "a")
	f.nodes[0].store.failWith(api.ErrUnavailable)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.nodes[0].url()+"1.1/"+alice+"/info/collections", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(alice, alicePW)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the node answers %s with Retry-After %q; the test needs 503 with one", resp.Status, resp.Header.Get("Retry-After"))
	}
	before := f.nodes[0].requests.Load()

	_, _, err = c.InfoCollections(ctx)
	var we *client.Error
	if !errors.As(err, &we) || we.Status != 503 || we.Code != 0 {
		t.Fatalf("InfoCollections on a failing node: %v, want *Error 503", err)
	}
	if n := f.nodes[0].requests.Load() - before; n != 1 {
		t.Fatalf("%d requests after a 503, want 1", n)
	}
	if n := f.weaveAsks.Load(); n != 1 {
		t.Fatalf("%d node/weave look-ups, want 1 (none after the 503)", n)
	}
	if c.Node() != f.nodes[0].url() || f.nodes[1].requests.Load() != 0 {
		t.Fatalf("client moved to %s after a 503", c.Node())
	}
	f.nodes[0].store.failWith(nil)
	put(t, ctx, c, "b")
}

// TestReassignmentAfter401: the directory moved the user to another node;
// the old node answers 401, the client asks node/weave once, retries the
// call once on the new node and stays there.
func TestReassignmentAfter401(t *testing.T) {
	ctx := t.Context()
	f, _, c := aliceFed(t, 2, nil)
	put(t, ctx, c, "a")
	if c.Node() != f.nodes[0].url() || f.weaveAsks.Load() != 1 {
		t.Fatalf("client on %q after %d look-ups", c.Node(), f.weaveAsks.Load())
	}
	f.move(alice, 1)
	put(t, ctx, c, "b")
	if c.Node() != f.nodes[1].url() {
		t.Fatalf("client on %q, want node 1", c.Node())
	}
	if a, b, w := f.nodes[0].requests.Load(), f.nodes[1].requests.Load(), f.weaveAsks.Load(); a != 2 || b != 1 || w != 2 {
		t.Fatalf("requests: node 0 %d, node 1 %d, node/weave %d; want 2, 1, 2", a, b, w)
	}
	// Later calls go straight to the new node.
	if _, _, err := c.Get(ctx, testColl, "b"); err != nil {
		t.Fatal(err)
	}
	if f.weaveAsks.Load() != 2 || f.nodes[0].requests.Load() != 2 {
		t.Fatal("a later call asked the directory or the old node again")
	}
}

// TestUnauthorizedOnTheSameNode: a 401 from the node node/weave still
// names (a wrong password) is reported after one look-up, not retried.
func TestUnauthorizedOnTheSameNode(t *testing.T) {
	ctx := t.Context()
	f, _, c := aliceFed(t, 1, func(c *client.Config) { c.Password = "wrong" })
	_, _, err := c.InfoCollections(ctx)
	if client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("wrong password: %v, want 401", err)
	}
	if r, w := f.nodes[0].requests.Load(), f.weaveAsks.Load(); r != 1 || w != 2 {
		t.Fatalf("%d requests and %d node/weave look-ups, want 1 and 2", r, w)
	}
}

// TestTokens: with UseTokens the client fetches a token (Basic on the
// directory), sends it as Bearer to the node the token names, reuses it
// until TokenSlack before its expiry, and on a 401 fetches a new one and
// retries once; a token of the old node after a move leads to the new one.
func TestTokens(t *testing.T) {
	ctx := t.Context()
	f, dir, c := aliceFed(t, 2, func(c *client.Config) { c.UseTokens = true })
	put(t, ctx, c, "a")
	put(t, ctx, c, "b")
	if got := f.tokenAsks.Load(); got != 1 {
		t.Fatalf("%d token requests for two calls, want 1", got)
	}
	if s := f.nodes[0].last.Load(); s != "bearer" || f.weaveAsks.Load() != 0 {
		t.Fatalf("node saw %v credentials; %d node/weave look-ups", s, f.weaveAsks.Load())
	}

	// A token the node no longer accepts: one new token, one retry.
	f.revokeTokens()
	before := f.nodes[0].requests.Load()
	put(t, ctx, c, "c")
	if got, n := f.tokenAsks.Load(), f.nodes[0].requests.Load()-before; got != 2 || n != 2 {
		t.Fatalf("after revocation: %d token requests, %d node requests; want 2, 2", got, n)
	}

	// The user moves: the old node refuses the token, the new token names
	// the new node.
	f.move(alice, 1)
	put(t, ctx, c, "d")
	if c.Node() != f.nodes[1].url() || f.tokenAsks.Load() != 3 || f.nodes[1].last.Load() != "bearer" {
		t.Fatalf("after the move: on %s with %d token requests", c.Node(), f.tokenAsks.Load())
	}

	// Tokens closer to expiry than TokenSlack are renewed before use.
	f.setTokenTTL(10 * time.Second) // under the default 30 s slack
	c2 := newClient(t, dir, func(c *client.Config) { c.UseTokens = true })
	asks := f.tokenAsks.Load()
	put(t, ctx, c2, "e")
	put(t, ctx, c2, "f")
	if got := f.tokenAsks.Load() - asks; got != 2 {
		t.Fatalf("%d token requests for two calls with short-lived tokens, want 2", got)
	}

	// A fixed token and node, no directory: sent as Bearer; a 401 is final.
	g, err := c.Token(ctx)
	if err != nil || g.Node != f.nodes[1].url() || time.Until(g.Expires) <= 0 {
		t.Fatalf("Token: %+v %v", g, err)
	}
	fixed, err := client.New(client.Config{User: alice, Token: g.Token})
	if err != nil {
		t.Fatal(err)
	}
	fixed.SetNode(g.Node)
	if _, _, err := fixed.Get(ctx, testColl, "d"); err != nil {
		t.Fatalf("Get with a fixed token: %v", err)
	}
	f.revokeTokens()
	if _, _, err := fixed.Get(ctx, testColl, "d"); client.StatusOf(err) != 401 {
		t.Fatalf("revoked fixed token: %v, want 401", err)
	}
	if _, err := newClient(t, dir, func(c *client.Config) { c.Password = "wrong" }).Token(ctx); client.StatusOf(err) != 401 {
		t.Fatalf("Token with a wrong password: %v, want 401", err)
	}
}

// TestDeadNode: the user's node is gone (connections refused, no HTTP
// answer). The client keeps asking node/weave, with backoff, until the
// directory names another node, and retries there once; with tokens it
// asks for new tokens instead.
func TestDeadNode(t *testing.T) {
	for _, tokens := range []bool{false, true} {
		name := map[bool]string{false: "basic", true: "tokens"}[tokens]
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			f, _, c := aliceFed(t, 2, func(c *client.Config) { c.UseTokens = tokens })
			put(t, ctx, c, "a")
			f.nodes[0].srv.Close()
			f.moveAfterLookups(3, 1)
			before := f.lookups()
			put(t, ctx, c, "b")
			if c.Node() != f.nodes[1].url() || f.nodes[1].requests.Load() != 1 {
				t.Fatalf("client on %s, node 1 had %d requests", c.Node(), f.nodes[1].requests.Load())
			}
			if n := f.lookups() - before; n < 3 {
				t.Fatalf("%d directory look-ups before the move was seen, want at least 3", n)
			}
			if f.holder(alice) != 1 {
				t.Fatal("the directory did not move the user")
			}
		})
	}
}

// TestDeadNodeBoundedWait: the directory never moves the user off a dead
// node. The client asks again with doubling pauses until FailoverWait
// would pass, then reports the node unreachable; with FailoverWait
// negative it asks once, and a context that ends first ends the wait.
func TestDeadNodeBoundedWait(t *testing.T) {
	ctx := t.Context()
	f, dir := newFed(t, 1)
	f.addUser(alice, alicePW, 0)
	f.nodes[0].srv.Close()

	// Pauses of 10, 20, 40 and 80 ms fit into 300 ms, 160 more do not:
	// at most five look-ups after the first.
	c := newClient(t, dir, func(c *client.Config) { c.Backoff, c.FailoverWait = 10*time.Millisecond, 300*time.Millisecond })
	begin := time.Now()
	_, _, err := c.Get(ctx, testColl, "a")
	took := time.Since(begin)
	if !client.Unreachable(err) || client.StatusOf(err) != 0 {
		t.Fatalf("Get on a dead node: %v, want unreachable", err)
	}
	if n := f.weaveAsks.Load(); n < 2 || n > 6 {
		t.Fatalf("%d node/weave look-ups, want 2 to 6", n)
	}
	if took < 100*time.Millisecond || took > 5*time.Second {
		t.Fatalf("gave up after %v with FailoverWait 300 ms", took)
	}

	asks := f.weaveAsks.Load()
	off := newClient(t, dir, func(c *client.Config) { c.FailoverWait = -1 })
	if _, _, err := off.Get(ctx, testColl, "a"); !client.Unreachable(err) {
		t.Fatalf("Get with FailoverWait off: %v", err)
	}
	if n := f.weaveAsks.Load() - asks; n != 2 {
		t.Fatalf("%d node/weave look-ups with FailoverWait off, want 2 (resolve, one retry)", n)
	}

	long := newClient(t, dir, func(c *client.Config) { c.FailoverWait = time.Minute })
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	begin = time.Now()
	if _, _, err := long.Get(sctx, testColl, "a"); err == nil {
		t.Fatal("Get on a dead node succeeded")
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("a 200 ms context ended the wait only after %v", took)
	}

	// A cancelled call is not "unreachable".
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, _, err := long.Get(cctx, testColl, "a"); client.Unreachable(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context: %v", err)
	}
}

// TestNodeWeave checks the look-up's answers: a node URL (remembered), an
// unknown user (404), no node assigned ("null": ErrNoNode) and an answer
// that is not a URL.
func TestNodeWeave(t *testing.T) {
	ctx := t.Context()
	f, dir := newFed(t, 1)
	c := newClient(t, dir, nil)
	if _, err := c.NodeWeave(ctx); client.StatusOf(err) != 404 {
		t.Fatalf("NodeWeave of an unknown user: %v, want 404", err)
	}
	if ok, err := c.Exists(ctx); err != nil || ok {
		t.Fatalf("Exists of an unknown user: %v %v", ok, err)
	}
	f.addUser(alice, alicePW, -1)
	if _, err := c.NodeWeave(ctx); !errors.Is(err, client.ErrNoNode) {
		t.Fatalf("NodeWeave without a node: %v, want ErrNoNode", err)
	}
	if _, _, err := c.InfoCollections(ctx); !errors.Is(err, client.ErrNoNode) {
		t.Fatalf("a storage call without a node: %v, want ErrNoNode", err)
	}
	f.move(alice, 0)
	if n, err := c.NodeWeave(ctx); err != nil || n != f.nodes[0].url() || c.Node() != n {
		t.Fatalf("NodeWeave: %q %v (Node %q)", n, err, c.Node())
	}
	if ok, err := c.Exists(ctx); err != nil || !ok {
		t.Fatalf("Exists: %v %v", ok, err)
	}
	f.setWeaveAnswer("ftp://elsewhere/")
	if _, err := c.NodeWeave(ctx); err == nil || !strings.Contains(err.Error(), "not a URL") {
		t.Fatalf("NodeWeave answering ftp://: %v", err)
	}
}

// TestWithoutDirectory: a client pinned to a node without a directory
// cannot look anything up, and calls that need the password say so.
func TestWithoutDirectory(t *testing.T) {
	ctx := t.Context()
	f, _ := newFed(t, 1)
	f.addUser(alice, alicePW, 0)
	c, err := client.New(client.Config{User: alice, Password: alicePW})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.InfoCollections(ctx); !errors.Is(err, client.ErrNoNode) {
		t.Fatalf("storage call without node or directory: %v, want ErrNoNode", err)
	}
	if _, err := c.NodeWeave(ctx); err == nil {
		t.Fatal("NodeWeave without a directory succeeded")
	}
	c.SetNode(strings.TrimSuffix(f.nodes[0].url(), "/"))
	if c.Node() != f.nodes[0].url() {
		t.Fatalf("SetNode: Node() = %q", c.Node())
	}
	if _, err := c.Put(ctx, testColl, client.Record{ID: "a", Payload: strp("x")}, 0); err != nil {
		t.Fatalf("Put on a pinned node: %v", err)
	}
	_, dir := newFed(t, 0)
	nopw := newClient(t, dir, func(c *client.Config) { c.Password = "" })
	if _, err := nopw.Token(ctx); !errors.Is(err, client.ErrNoPassword) {
		t.Fatalf("Token without a password: %v, want ErrNoPassword", err)
	}
}

// TestConfig checks Validate's refusals.
func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  client.Config
	}{
		{"no user", client.Config{Directory: "http://x/"}},
		{"bad user", client.Config{User: "a/b"}},
		{"tokens without password", client.Config{User: "u", Directory: "http://x/", UseTokens: true}},
		{"tokens and a static token", client.Config{User: "u", Directory: "http://x/", Password: "p", Token: "t", UseTokens: true}},
		{"tokens without directory", client.Config{User: "u", Password: "p", UseTokens: true}},
		{"bad directory", client.Config{User: "u", Directory: "ftp://x/"}},
	} {
		if _, err := client.New(tc.cfg); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, tc.cfg)
		}
	}
}
