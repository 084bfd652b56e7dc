package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

type fakeAccount struct {
	password, email, node, resetCode string
}

// fakeAccounts is an in-memory Accounts for routing and status tests.
type fakeAccounts struct {
	mu       sync.Mutex
	users    map[string]*fakeAccount
	down     bool
	lastCall string
}

func newFakeAccounts() *fakeAccounts { return &fakeAccounts{users: map[string]*fakeAccount{}} }

func (a *fakeAccounts) get(user string) (*fakeAccount, error) {
	if a.down {
		return nil, errors.New("backend down")
	}
	u, ok := a.users[user]
	if !ok {
		return nil, ErrUserNotFound
	}
	return u, nil
}

func (a *fakeAccounts) UserExists(_ context.Context, user string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down {
		return false, errors.New("backend down")
	}
	_, ok := a.users[user]
	return ok, nil
}

func (a *fakeAccounts) CreateUser(_ context.Context, user, password, email string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.users[user]; ok {
		return ErrUserExists
	}
	a.users[user] = &fakeAccount{password: password, email: email, node: "http://node1.example/"}
	a.lastCall = "create"
	return nil
}

func (a *fakeAccounts) DeleteUser(_ context.Context, user string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.users, user)
	a.lastCall = "delete"
	return nil
}

func (a *fakeAccounts) CheckPassword(_ context.Context, user, password string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.get(user)
	if err != nil {
		return err
	}
	if u.password != password {
		return ErrUnauthorized
	}
	return nil
}

func (a *fakeAccounts) StorageNode(_ context.Context, user string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.get(user)
	if err != nil {
		return "", err
	}
	return u.node, nil
}

func (a *fakeAccounts) SetEmail(_ context.Context, user, email string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.get(user)
	if err == nil {
		u.email = email
	}
	return err
}

func (a *fakeAccounts) SetPassword(_ context.Context, user, password string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.get(user)
	if err == nil {
		u.password = password
	}
	return err
}

func (a *fakeAccounts) RequestPasswordReset(_ context.Context, user string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.get(user)
	if err != nil {
		return err
	}
	if u.email == "" {
		return ErrNoEmail
	}
	u.resetCode = "CODE"
	return nil
}

func (a *fakeAccounts) ClearPasswordReset(_ context.Context, user string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.get(user)
	if err == nil {
		u.resetCode = ""
	}
	return err
}

func (a *fakeAccounts) ResetPassword(_ context.Context, user, code, password string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.get(user)
	if err != nil {
		return err
	}
	if u.resetCode == "" || u.resetCode != code {
		return ErrBadResetCode
	}
	u.password, u.resetCode = password, ""
	return nil
}

type fakeCaptcha struct{}

func (fakeCaptcha) Verify(_ context.Context, challenge, response, remote string) (bool, error) {
	return challenge == "c" && response == "ok", nil
}

func newUserFixture(t *testing.T, mutate func(*UserConfig)) (*fakeAccounts, http.Handler) {
	t.Helper()
	acc := newFakeAccounts()
	cfg := DefaultUserConfig()
	cfg.Accounts = acc
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := NewUserHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return acc, h
}

func doReq(h http.Handler, method, path, body string, hdr ...string) resp {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return resp{rec.Code, rec.Result().Header, string(b)}
}

func TestUserCreate(t *testing.T) {
	email := "alice@example.com"
	name := AccountName(email)
	acc, h := newUserFixture(t, nil)
	acc.users["taken"] = &fakeAccount{password: "whatever1"}
	p := "/user/1.0/" + name
	tests := []struct {
		name, path, body string
		code             int
		resBody          string
	}{
		{"taken", "/user/1.0/taken", `{"password":"longenough","email":"x@y.z"}`, 400, "4"},
		{"not json", p, `{"password":`, 400, "6"},
		{"json not object", p, `"x"`, 400, "6"},
		{"bad email", p, `{"password":"longenough","email":"bademailhere"}`, 400, "12"},
		{"email mismatch", p, `{"password":"longenough","email":"bob@example.com"}`, 400, "15"},
		{"no email strict", p, `{"password":"longenough"}`, 400, "15"},
		{"no password", p, `{"email":"` + email + `"}`, 400, "7"},
		{"empty password", p, `{"email":"` + email + `","password":""}`, 400, "7"},
		{"weak password", p, `{"email":"` + email + `","password":"x"}`, 400, "9"},
		{"created", p, `{"email":"` + email + `","password":"ééééééééé"}`, 200, name},
		{"again", p + "/", `{"email":"` + email + `","password":"ééééééééé"}`, 400, "4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := doReq(h, "PUT", tt.path, tt.body)
			if r.code != tt.code || r.body != tt.resBody {
				t.Fatalf("%d %q, want %d %q", r.code, r.body, tt.code, tt.resBody)
			}
		})
	}
	// Non-ASCII password works for Basic afterwards.
	r := doReq(h, "POST", p+"/email", "new@example.com", "Authorization", basic(name, "ééééééééé"))
	if r.code != 200 || r.body != "new@example.com" {
		t.Fatalf("email change: %d %q", r.code, r.body)
	}
	// Basic with the e-mail address as user name.
	r = doReq(h, "POST", p+"/email", "new2@example.com", "Authorization", basic(email, "ééééééééé"))
	if r.code != 200 {
		t.Fatalf("email login: %d %q", r.code, r.body)
	}

	// Non-strict names.
	_, h2 := newUserFixture(t, func(c *UserConfig) { c.StrictUsernames = false })
	if r := doReq(h2, "PUT", "/user/1/bob", `{"password":"bobspassword"}`); r.code != 200 || r.body != "bob" {
		t.Fatalf("non-strict create: %d %q", r.code, r.body)
	}
	if r := doReq(h2, "PUT", "/user/1/tarek2", `{"password":"tarek2"}`); r.code != 400 || r.body != "9" {
		t.Fatalf("weak = name: %d %q", r.code, r.body)
	}
}

func TestUserCaptcha(t *testing.T) {
	_, h := newUserFixture(t, func(c *UserConfig) {
		c.StrictUsernames = false
		c.Captcha, c.CaptchaPublicKey, c.AdminSecret = fakeCaptcha{}, "pubkey", "s3cret"
	})
	if r := doReq(h, "PUT", "/user/1.0/bob", `{"password":"bobspassword"}`); r.code != 400 || r.body != "2" {
		t.Fatalf("no captcha: %d %q", r.code, r.body)
	}
	if r := doReq(h, "PUT", "/user/1.0/bob", `{"password":"bobspassword","captcha-challenge":"c","captcha-response":"ok"}`); r.code != 200 {
		t.Fatalf("captcha ok: %d %q", r.code, r.body)
	}
	if r := doReq(h, "PUT", "/user/1.0/carl", `{"password":"carlspassword"}`, "X-Weave-Secret", "s3cret"); r.code != 200 {
		t.Fatalf("admin secret: %d %q", r.code, r.body)
	}
	for _, m := range []string{"GET", "POST"} {
		r := doReq(h, m, "/misc/1.0/captcha_html", "")
		if r.code != 200 || !strings.Contains(r.body, "k=pubkey") || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/html") {
			t.Fatalf("captcha_html %s: %d %q", m, r.code, r.body)
		}
	}
	_, off := newUserFixture(t, nil)
	if r := doReq(off, "GET", "/misc/1.0/captcha_html", ""); r.code != 404 {
		t.Fatalf("captcha off: %d", r.code)
	}
}

func TestUserEndpoints(t *testing.T) {
	acc, h := newUserFixture(t, nil)
	acc.users["alice"] = &fakeAccount{password: "alicepass", email: "a@b.c", node: "http://node1.example/"}
	acc.users["nomail"] = &fakeAccount{password: "nomailpass"}
	acc.users["nonode"] = &fakeAccount{password: "nonodepass"}
	auth := basic("alice", "alicepass")
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		code                     int
		resBody                  string
	}{
		{"exists", "GET", "/user/1.0/alice", "", nil, 200, "1"},
		{"exists slash", "GET", "/user/1/alice/", "", nil, 200, "1"},
		{"free", "GET", "/user/1.0/nobody", "", nil, 200, "0"},
		{"bad version", "GET", "/user/1.1/alice", "", nil, 404, ""},
		{"bad name", "GET", "/user/1.0/a!b", "", nil, 404, ""},
		{"method", "POST", "/user/1.0/alice", "", nil, 405, ""},
		{"node", "GET", "/user/1.0/alice/node/weave", "", nil, 200, "http://node1.example/"},
		{"node null", "GET", "/user/1.0/nonode/node/weave", "", nil, 200, "null"},
		{"node unknown", "GET", "/user/1.0/nobody/node/weave", "", nil, 404, ""},
		{"reset unknown", "GET", "/user/1.0/nobody/password_reset", "", nil, 400, "3"},
		{"reset no mail", "GET", "/user/1.0/nomail/password_reset", "", nil, 400, "12"},
		{"reset", "GET", "/user/1.0/alice/password_reset", "", nil, 200, "success"},
		{"clear reset no auth", "DELETE", "/user/1.0/alice/password_reset", "", nil, 401, ""},
		{"clear reset", "DELETE", "/user/1.0/alice/password_reset", "", []string{"Authorization", auth}, 200, "success"},
		{"email bad", "POST", "/user/1.0/alice/email", "bademailhere", []string{"Authorization", auth}, 400, "12"},
		{"email wrong user", "POST", "/user/1.0/alice/email", "x@y.z", []string{"Authorization", basic("nomail", "nomailpass")}, 401, ""},
		{"email wrong pw", "POST", "/user/1.0/alice/email", "x@y.z", []string{"Authorization", basic("alice", "nope")}, 401, ""},
		{"email", "POST", "/user/1.0/alice/email", "x@y.z", []string{"Authorization", auth}, 200, "x@y.z"},
		{"password weak", "POST", "/user/1.0/alice/password", "short", []string{"Authorization", auth}, 400, ""},
		{"password no auth", "POST", "/user/1.0/alice/password", "longpassword", nil, 401, ""},
		{"password", "POST", "/user/1.0/alice/password", "newalicepass", []string{"Authorization", auth}, 200, "success"},
		{"password reset bad code", "POST", "/user/1.0/alice/password", "resetpassword", []string{"X-Weave-Password-Reset", "WRONG"}, 400, "10"},
		{"password reset unknown user", "POST", "/user/1.0/nobody/password", "resetpassword", []string{"X-Weave-Password-Reset", "CODE"}, 404, ""},
		{"delete no auth", "DELETE", "/user/1.0/alice", "", nil, 401, ""},
		{"delete", "DELETE", "/user/1.0/alice", "", []string{"Authorization", basic("alice", "newalicepass")}, 200, "1"},
		{"gone", "GET", "/user/1.0/alice", "", nil, 200, "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := doReq(h, tt.method, tt.path, tt.body, tt.hdr...)
			if r.code != tt.code || r.body != tt.resBody {
				t.Fatalf("%d %q, want %d %q", r.code, r.body, tt.code, tt.resBody)
			}
			if tt.code == 401 && len(tt.hdr) == 0 && r.hdr.Get("WWW-Authenticate") != `Basic realm="Sync"` {
				t.Fatalf("no challenge: %v", r.hdr)
			}
		})
	}
	// Reset-code flow over the header.
	acc.users["nomail"].resetCode = "CODE"
	if r := doReq(h, "POST", "/user/1.0/nomail/password", "brandnewpass", "X-Weave-Password-Reset", "CODE"); r.code != 200 || acc.users["nomail"].password != "brandnewpass" {
		t.Fatalf("reset via header: %d %q", r.code, r.body)
	}
	acc.down = true
	if r := doReq(h, "GET", "/user/1.0/x", ""); r.code != 503 || r.hdr.Get("Retry-After") != "10" {
		t.Fatalf("backend down: %d %v", r.code, r.hdr)
	}
}

func TestPasswordResetForm(t *testing.T) {
	acc, h := newUserFixture(t, nil)
	acc.users["alice"] = &fakeAccount{password: "alicepass", resetCode: "KEY", email: "alice@example.com"}
	r := doReq(h, "GET", "/weave-password-reset?username=alice&key=KEY", "")
	if r.code != 200 || !strings.Contains(r.body, `name="password"`) || !strings.Contains(r.body, `value="KEY"`) {
		t.Fatalf("form: %d %q", r.code, r.body)
	}
	post := func(v url.Values) resp {
		return doReq(h, "POST", "/weave-password-reset", v.Encode(), "Content-Type", "application/x-www-form-urlencoded")
	}
	// The reference server's form flow: an empty form is malformed (400);
	// problems in what was filled in are named on a 200 page.
	for _, c := range []struct {
		name string
		form url.Values
		code int
		text string
	}{
		{"empty form", url.Values{}, 400, "Username not provided"},
		{"no user name", url.Values{"key": {"KEY"}}, 200, "Username not provided"},
		{"unknown user", url.Values{"username": {"nobody"}}, 200, "unable to locate your account"},
		{"user name only mails a key", url.Values{"username": {"alice"}}, 200, "next 6 hours"},
		{"no key", url.Values{"username": {"alice"}, "password": {"newpassword"}, "confirm": {"newpassword"}}, 400, "Key not provided"},
		{"user name and another field", url.Values{"username": {"alice"}, "boo": {"foo"}}, 400, "Key not provided"},
		{"no password", url.Values{"username": {"alice"}, "key": {"KEY"}}, 200, "Password not provided"},
		{"mismatch", url.Values{"username": {"alice"}, "key": {"KEY"}, "password": {"newpassword"}, "confirm": {"other"}}, 200, "do not match"},
		{"bad key", url.Values{"username": {"alice"}, "key": {"BAD"}, "password": {"newpassword"}, "confirm": {"newpassword"}}, 200, "Key does not match with username"},
	} {
		if r := post(c.form); r.code != c.code || !strings.Contains(r.body, c.text) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, r.code, r.body, c.code, c.text)
		}
	}
	acc.users["alice"].resetCode = "KEY" // the "user name only" case mailed a new one
	if r := post(url.Values{"username": {"alice"}, "key": {"KEY"}, "password": {"newpassword"}, "confirm": {"newpassword"}}); r.code != 200 || acc.users["alice"].password != "newpassword" || !strings.Contains(r.body, "Password successfully changed") {
		t.Fatalf("reset: %d %q", r.code, r.body)
	}
}

func TestNewHandlerSplitsPaths(t *testing.T) {
	mark := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, name) })
	}
	h := NewHandler(mark("storage"), mark("user"))
	for p, want := range map[string]string{
		"/user/1.0/x": "user", "/misc/1.0/captcha_html": "user", "/weave-password-reset": "user",
		"/1.1/x/info/collections": "storage", "/__heartbeat__": "storage", "/users": "storage",
	} {
		if r := doReq(h, "GET", p, ""); r.body != want {
			t.Errorf("%s -> %s, want %s", p, r.body, want)
		}
	}
}
