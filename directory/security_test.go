package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// userAPIServer serves a directory's user API and HTTP handler, as a
// voter does, on a real loopback server.
func userAPIServer(t *testing.T, tune func(*Config)) (*Directory, string) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.AdminToken = testAdminToken
	if tune != nil {
		tune(&cfg)
	}
	d := openDir(t, cfg)
	users, err := api.NewUserHandler(d.UserAPIConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.NewHandler(d.HTTPHandler(), users))
	t.Cleanup(srv.Close)
	return d, srv.URL
}

// call makes one HTTP request and returns the status, the Retry-After
// header and the body.
func call(t *testing.T, method, url, body string, hdr ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// TestResetMailLimits: 11 reset requests in a row for one account send
// 3 mails (the default per-account limit) and answer the rest 429 with
// a Retry-After; one address asking for many accounts is stopped at its
// own limit; and the voter's global limit stops everyone.
func TestResetMailLimits(t *testing.T) {
	mailer := &captureMailer{}
	d, url := userAPIServer(t, func(c *Config) {
		c.Accounts.Mailer = mailer
		c.Accounts.Resets = ResetLimits{PerAddr: 6, Global: 8}
	})
	ctx := context.Background()
	for i := range 6 {
		if err := d.CreateUser(ctx, fmt.Sprintf("user%d", i), "long password", fmt.Sprintf("u%d@example.org", i)); err != nil {
			t.Fatal(err)
		}
	}
	var codes []int
	for range 11 {
		code, retry, _ := call(t, "GET", url+"/user/1.0/user0/password_reset", "")
		codes = append(codes, code)
		if code == 429 && retry == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if want := "[200 200 200 429 429 429 429 429 429 429 429]"; fmt.Sprint(codes) != want {
		t.Fatalf("11 reset requests: %v, want %s", codes, want)
	}
	if n := len(mailer.mails); n != 3 {
		t.Fatalf("%d mails sent, want 3", n)
	}
	// The same address (the per-account refusals did not count against
	// it): three more accounts are mailed, then its limit of 6 stops it.
	for i, want := range []int{200, 200, 200, 429} {
		if code, _, _ := call(t, "GET", fmt.Sprintf("%s/user/1.0/user%d/password_reset", url, i+1), ""); code != want {
			t.Fatalf("account %d from the same address: %d, want %d", i+1, code, want)
		}
	}
	// Another address (the limiter sees it through the context): the
	// voter's global limit of 8 leaves two more.
	for i, want := range []error{nil, nil, api.ErrTooManyRequests} {
		err := d.RequestPasswordReset(api.WithClientAddr(ctx, "192.0.2.9"), fmt.Sprintf("user%d", 4+i%2))
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Fatalf("global %d: %v, want %v", i, err, want)
		}
	}
}

// TestResetLimitAcrossVoters: the per-account limit is the state
// machine's, so requests spread over the voters of a cluster together
// send no more mails than one voter would.
func TestResetLimitAcrossVoters(t *testing.T) {
	mailer := &captureMailer{}
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.Accounts.Mailer = mailer })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := c.leader()
	if err := l.d.CreateUser(ctx, "alice", "long password", "alice@example.org"); err != nil {
		t.Fatal(err)
	}
	sent, refused := 0, 0
	for i := range 9 {
		v := c.voters[i%3]
		testkit.WaitFor(t, 10*time.Second, "the account on every voter", func() bool { ok, _ := v.d.UserExists(ctx, "alice"); return ok })
		err := v.d.RequestPasswordReset(ctx, "alice")
		switch {
		case err == nil:
			sent++
		case errors.Is(err, api.ErrTooManyRequests):
			refused++
		default:
			t.Fatalf("reset through %s: %v", v.id, err)
		}
	}
	mailer.mu.Lock()
	mails := len(mailer.mails)
	mailer.mu.Unlock()
	if sent != 3 || refused != 6 || mails != 3 {
		t.Fatalf("sent %d refused %d mails %d, want 3, 6, 3", sent, refused, mails)
	}
}

// TestRegistrationPolicyVoter drives invite-only and closed registration
// through a voter's user API and admin API: an invite admits one
// account, an unknown or used one is refused (403), invites are listed
// without their codes, and the admin secret bypasses the policy.
func TestRegistrationPolicyVoter(t *testing.T) {
	d, url := userAPIServer(t, func(c *Config) {
		c.Accounts.Registration = api.RegistrationInvite
		c.Accounts.AdminSecret = "s3cret-admin"
	})
	reg := func(email, invite string, hdr ...string) int {
		body := fmt.Sprintf(`{"password":"long password","email":%q`, email)
		if invite != "" {
			body += fmt.Sprintf(`,"invite":%q`, invite)
		}
		code, _, _ := call(t, "PUT", url+"/user/1.0/"+api.AccountName(email), body+"}", hdr...)
		return code
	}
	if code := reg("a@example.org", ""); code != 403 {
		t.Fatalf("no invite: %d", code)
	}
	var inv InviteView
	req, _ := http.NewRequest("POST", url+"/admin/v1/invites?ttl=48h", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&inv); err != nil || resp.StatusCode != 200 || len(inv.Code) != 32 {
		t.Fatalf("create invite: %d %+v %v", resp.StatusCode, inv, err)
	}
	resp.Body.Close()
	if exp := time.Unix(inv.Expires, 0); exp.Before(time.Now().Add(47*time.Hour)) || exp.After(time.Now().Add(49*time.Hour)) {
		t.Fatalf("invite expires %v, want in 48 h", exp)
	}
	var list struct{ Invites []InviteView }
	if code := adminDo(t, "GET", url+"/admin/v1/invites", testAdminToken, &list); code != 200 || len(list.Invites) != 1 ||
		list.Invites[0].Code != "" || list.Invites[0].Hash != state.InviteHash(inv.Code) {
		t.Fatalf("list invites: %d %+v", code, list)
	}
	if code := reg("a@example.org", "00000000000000000000000000000000"); code != 403 {
		t.Fatalf("unknown invite: %d", code)
	}
	if code := reg("a@example.org", " "+strings.ToUpper(inv.Code)+" "); code != 200 {
		t.Fatalf("invite as copied from a mail: %d", code)
	}
	if code := reg("b@example.org", inv.Code); code != 403 {
		t.Fatalf("used invite: %d", code)
	}
	if code := reg("b@example.org", "", "X-Weave-Secret", "s3cret-admin"); code != 200 {
		t.Fatalf("admin secret: %d", code)
	}
	if code := adminDo(t, "POST", url+"/admin/v1/invites", "", nil); code != 401 {
		t.Fatalf("invite without the admin token: %d", code)
	}
	if len(d.Invites()) != 0 {
		t.Fatalf("invites left: %+v", d.Invites())
	}

	_, closed := userAPIServer(t, func(c *Config) { c.Accounts.Registration = api.RegistrationClosed })
	if code, _, _ := call(t, "PUT", closed+"/user/1.0/"+api.AccountName("c@example.org"),
		`{"password":"long password","email":"c@example.org"}`); code != 403 {
		t.Fatalf("closed registration: %d", code)
	}
}

// TestSettingsAdmin reads and changes the cluster settings over the
// admin API: the fields given replace theirs, the others stay.
func TestSettingsAdmin(t *testing.T) {
	_, url := openServed(t, nil)
	var s Settings
	if code := adminDo(t, "GET", url+"/admin/v1/settings", testAdminToken, &s); code != 200 || s.Replicas != DefaultReplicas {
		t.Fatalf("get: %d %+v", code, s)
	}
	put := func(body string) int {
		code, _, _ := call(t, "PUT", url+"/admin/v1/settings", body, "Authorization", "Bearer "+testAdminToken)
		return code
	}
	if code := put(`{"max_node_capacity":500,"max_operator_capacity":2000}`); code != 200 {
		t.Fatalf("put: %d", code)
	}
	if code := adminDo(t, "GET", url+"/admin/v1/settings", testAdminToken, &s); code != 200 ||
		s.MaxNodeCapacity != 500 || s.MaxOperatorCapacity != 2000 || s.Replicas != DefaultReplicas {
		t.Fatalf("after put: %+v", s)
	}
	for _, bad := range []string{`{"max_node_capacity":-1}`, `{"nope":1}`, `{`} {
		if code := put(bad); code != 400 {
			t.Fatalf("put %s: %d", bad, code)
		}
	}
}

// p2pNode is a storage node identity with a libp2p host, registered on d
// with a declared capacity and URL.
func p2pNode(t *testing.T, ctx context.Context, d *Directory, operator, url string, capacity int) (string, *dirCaller) {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	edKey, err := p2p.Ed25519Key(key)
	if err != nil {
		t.Fatal(err)
	}
	h := newTestP2PHost(t, key)
	body, sig, err := SignRegistration(edKey, Registration{BaseURL: url, Operator: operator, Capacity: capacity}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	info, err := d.RegisterNode(ctx, body, sig)
	if err != nil {
		t.Fatal(err)
	}
	return info.ID, newDirCaller(t, h, d.P2PHost())
}

// TestRogueNode is issue #11's rogue node: a node registering itself with
// a capacity of 1,000,000 and a dead URL. Without auto-approval (the
// default) it stays pending: no user is placed on it and it may not use
// the directory at all. With auto-approval (testnets) its capacity is
// capped by the cluster setting, so it becomes primary of its share of
// new users only, and it may ask about the users it holds, never about
// the others: checkpw and assignment answer forbidden.
func TestRogueNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p2pListen := func(c *Config) {
		c.Nodes.P2PListen = []string{"/ip4/127.0.0.1/tcp/0"}
		c.Nodes.Placement = placement.Policy{ReleaseStep: 1 << 20, NewNodeWindow: 1}
	}
	d := openDir(t, func() Config { c := testConfig(t, t.TempDir()); p2pListen(&c); return c }())
	var honest []string
	for i := range 2 {
		id, _ := p2pNode(t, ctx, d, fmt.Sprintf("op%d", i), fmt.Sprintf("http://honest%d.example/", i), 100)
		if err := d.ApproveNode(ctx, id); err != nil {
			t.Fatal(err)
		}
		honest = append(honest, id)
	}
	rogue, rc := p2pNode(t, ctx, d, "rogue", "http://127.0.0.1:1/", 1000000)
	if s := nodeState(t, d, rogue); s != "pending" {
		t.Fatalf("self-registered node is %s", s)
	}
	for i := range 6 {
		if err := d.CreateUser(ctx, fmt.Sprintf("u%d", i), "long password", ""); err != nil {
			t.Fatal(err)
		}
		if p, _, _ := d.Assignment(fmt.Sprintf("u%d", i)); p == rogue || p == "" {
			t.Fatalf("u%d placed on %q", i, p)
		}
	}
	if _, err := rc.checkPassword(ctx, "u0", "long password"); !p2p.IsCode(err, dirproto.CodeUnknownNode) {
		t.Fatalf("pending node checkpw: %v", err)
	}

	// Auto-approval on, capacities capped at the honest nodes' 100.
	if err := d.SetSettings(ctx, Settings{Replicas: 1, AutoApprove: true, MaxNodeCapacity: 100}); err != nil {
		t.Fatal(err)
	}
	rogue2, rc2 := p2pNode(t, ctx, d, "rogue2", "http://127.0.0.1:1/", 1000000)
	primaries := map[string]int{}
	for i := range 60 {
		u := fmt.Sprintf("v%02d", i)
		if err := d.CreateUser(ctx, u, "long password", ""); err != nil {
			t.Fatal(err)
		}
		p, _, _ := d.Assignment(u)
		primaries[p]++
	}
	if primaries[rogue2] >= 30 {
		t.Fatalf("the rogue node became primary of %d of 60 new users: %v", primaries[rogue2], primaries)
	}
	var mine, other string
	for i := range 60 {
		u := fmt.Sprintf("v%02d", i)
		if p, _, _ := d.Assignment(u); p == rogue2 {
			mine = u
		} else {
			other = u
		}
	}
	if mine == "" || other == "" {
		t.Fatalf("rogue holds %v", primaries)
	}
	if ok, err := rc2.checkPassword(ctx, mine, "long password"); err != nil || !ok {
		t.Fatalf("checkpw of its own user: %v %v", ok, err)
	}
	if _, err := rc2.checkPassword(ctx, other, "long password"); !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("checkpw of another node's user: %v", err)
	}
	if _, err := rc2.assignment(ctx, other); !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("assignment of another node's user: %v", err)
	}
	if _, err := rc2.assignment(ctx, mine); err != nil {
		t.Fatalf("assignment of its own user: %v", err)
	}
	for _, n := range d.Nodes() {
		if n.ID == rogue2 && n.EffectiveCapacity != 100 {
			t.Fatalf("rogue's effective capacity %d", n.EffectiveCapacity)
		}
	}
}

// TestCheckPasswordThrottleP2P: a node's password checks go through the
// login guard with the client address it passes (version 1.1): past the
// free failures the answer is a RetryAfterMS, not a verdict, so the node
// answers 429; version 1.0 (older nodes) answers a wrong password.
func TestCheckPasswordThrottleP2P(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(t, t.TempDir())
	cfg.Nodes.P2PListen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Nodes.AutoApprove = true
	// Waits of a minute, answers not cached: each check is a fresh one.
	cfg.Accounts.Limits = LoginLimits{AccountFailures: 3, AddrFailures: 2, BackoffBase: time.Minute, CacheTTL: time.Nanosecond}
	d := openDir(t, cfg)
	_, c := p2pNode(t, ctx, d, "op", "http://n.example/", 10)
	if err := d.CreateUser(ctx, "alice", "long password", ""); err != nil {
		t.Fatal(err)
	}
	check := func(proto, pw, addr string) dirproto.CheckPasswordResponse {
		t.Helper()
		var resp dirproto.CheckPasswordResponse
		if err := c.call(ctx, protoID(proto), dirproto.CheckPasswordRequest{User: "alice", Password: pw, Addr: addr}, &resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := range 3 {
		if r := check("11", fmt.Sprintf("wrong%d", i), "198.51.100.1"); r.OK || r.RetryAfterMS != 0 {
			t.Fatalf("failure %d: %+v", i, r)
		}
	}
	// The address is past its 2 free failures: it waits.
	if r := check("11", "long password", "198.51.100.1"); r.OK || r.RetryAfterMS <= 0 {
		t.Fatalf("right password during the address's wait: %+v", r)
	}
	// The account (3 free) is not: elsewhere alice logs in, and is known
	// there from now on.
	if r := check("11", "long password", "198.51.100.2"); !r.OK {
		t.Fatalf("another address: %+v", r)
	}
	// One more failure puts the account in a wait: version 1.0 (no
	// address, older nodes) answers it as a wrong password, version 1.1
	// with a wait, except where alice is known.
	if r := check("11", "wrong3", "198.51.100.3"); r.OK || r.RetryAfterMS != 0 {
		t.Fatalf("fourth failure: %+v", r)
	}
	if r := check("10", "long password", ""); r.OK || r.RetryAfterMS != 0 {
		t.Fatalf("v1.0 during the account's wait: %+v", r)
	}
	if r := check("11", "long password", "198.51.100.4"); r.OK || r.RetryAfterMS <= 0 {
		t.Fatalf("v1.1 from a new address during the account's wait: %+v", r)
	}
	if r := check("11", "long password", "198.51.100.2"); !r.OK {
		t.Fatalf("where alice is known: %+v", r)
	}
}

func protoID(v string) protocol.ID {
	if v == "10" {
		return dirproto.ProtoCheckPassword
	}
	return dirproto.ProtoCheckPassword11
}

// TestRevocationState: tokens issued before a password change, a reset
// or an account deletion (and the account's creation again) are revoked
// by the credential state every voter holds; tokens issued after are
// not, even within the same second.
func TestRevocationState(t *testing.T) {
	ctx := context.Background()
	mailer := &captureMailer{}
	clk := testkit.NewClock(time.Unix(1_800_000_000, 0))
	cfg := testConfig(t, t.TempDir())
	cfg.Clock, cfg.Accounts.Mailer = clk.Now, mailer
	d := openDir(t, cfg)
	if err := d.CreateUser(ctx, "alice", "password one", "a@example.org"); err != nil {
		t.Fatal(err)
	}
	token := func(pw string) api.TokenClaims {
		t.Helper()
		tok, _, _, err := d.IssueToken(ctx, "alice", pw, "")
		if err != nil {
			t.Fatal(err)
		}
		c, _, _, err := api.ParseToken(tok)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	revoked := func(c api.TokenClaims) bool {
		s, err := d.Credentials(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		return s.Revokes(c)
	}
	t1 := token("password one")
	if revoked(t1) {
		t.Fatal("fresh token revoked")
	}
	clk.Add(10 * time.Second)
	if err := d.SetPassword(ctx, "alice", "password two"); err != nil {
		t.Fatal(err)
	}
	t2 := token("password two") // same second as the change
	if !revoked(t1) || revoked(t2) {
		t.Fatalf("after a password change: old revoked %v, new revoked %v", revoked(t1), revoked(t2))
	}
	clk.Add(10 * time.Second)
	if err := d.RequestPasswordReset(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := d.ResetPassword(ctx, "alice", mailer.lastCode(t, "a@example.org"), "password three"); err != nil {
		t.Fatal(err)
	}
	t3 := token("password three")
	if !revoked(t2) || revoked(t3) {
		t.Fatal("a reset did not revoke the earlier token")
	}
	if err := d.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if !revoked(t3) {
		t.Fatal("token of a deleted account not revoked")
	}
	if err := d.CreateUser(ctx, "alice", "password four", ""); err != nil { // same second
		t.Fatal(err)
	}
	if !revoked(t3) || revoked(token("password four")) {
		t.Fatal("a token of the deleted account is valid for the new one")
	}
}
