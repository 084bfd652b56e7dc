package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// inviteAccounts is fakeAccounts that takes single-use invite codes.
type inviteAccounts struct {
	*fakeAccounts
	invites map[string]bool
}

func (a *inviteAccounts) CreateUserWithInvite(ctx context.Context, user, password, email, invite string) error {
	a.mu.Lock()
	ok := a.invites[invite]
	delete(a.invites, invite)
	a.mu.Unlock()
	if !ok {
		return ErrBadInvite
	}
	return a.CreateUser(ctx, user, password, email)
}

// TestRegistrationPolicy checks closed and invite-only registration: 403
// without the admin secret (closed before the body is read), a valid
// invite admits one account, and the admin secret bypasses both.
func TestRegistrationPolicy(t *testing.T) {
	body := func(pw, invite string) string {
		if invite == "" {
			return fmt.Sprintf(`{"password":%q}`, pw)
		}
		return fmt.Sprintf(`{"password":%q,"invite":%q}`, pw, invite)
	}
	_, closed := newUserFixture(t, func(c *UserConfig) {
		c.StrictUsernames, c.Registration, c.AdminSecret = false, RegistrationClosed, "s3cret"
	})
	if r := doReq(closed, "PUT", "/user/1.0/bob", body("bobspassword", "")); r.code != 403 || r.body != "" {
		t.Fatalf("closed: %d %q", r.code, r.body)
	}
	// Refused before the body is read: a malformed body changes nothing.
	if r := doReq(closed, "PUT", "/user/1.0/bob", `{"password":`); r.code != 403 {
		t.Fatalf("closed, bad body: %d %q", r.code, r.body)
	}
	if r := doReq(closed, "PUT", "/user/1.0/bob", body("bobspassword", ""), "X-Weave-Secret", "s3cret"); r.code != 200 {
		t.Fatalf("closed with admin secret: %d %q", r.code, r.body)
	}

	acc := &inviteAccounts{fakeAccounts: newFakeAccounts(), invites: map[string]bool{"code1": true}}
	cfg := DefaultUserConfig()
	cfg.Accounts, cfg.StrictUsernames, cfg.Registration, cfg.AdminSecret = acc, false, RegistrationInvite, "s3cret"
	inv, err := NewUserHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, body string
		hdr        []string
		code       int
	}{
		{"carl", body("carlspassword", ""), nil, 403},
		{"carl", body("carlspassword", "wrong"), nil, 403},
		{"carl", body("carlspassword", "code1"), nil, 200},
		{"dora", body("dorapassword", "code1"), nil, 403}, // used up
		{"dora", body("dorapassword", ""), []string{"X-Weave-Secret", "s3cret"}, 200},
		{"erin", body("x", "code1"), nil, 400}, // weak password first
	} {
		if r := doReq(inv, "PUT", "/user/1.0/"+tc.user, tc.body, tc.hdr...); r.code != tc.code {
			t.Fatalf("invite %s %s: %d %q, want %d", tc.user, tc.body, r.code, r.body, tc.code)
		}
	}

	// Invite registration needs accounts that take invites.
	bad := DefaultUserConfig()
	bad.Accounts, bad.Registration = newFakeAccounts(), RegistrationInvite
	if _, err := NewUserHandler(bad); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("invite without InviteAccounts: %v", err)
	}
	if _, err := ParseRegistration("sometimes"); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("ParseRegistration: %v", err)
	}
}

// TestPasswordLength checks MaxPasswordBytes: a longer password is
// refused at creation (400 9) and at a change (400), one of exactly the
// maximum is accepted; an account whose password was set before the
// maximum existed still logs in.
func TestPasswordLength(t *testing.T) {
	acc, h := newUserFixture(t, func(c *UserConfig) { c.StrictUsernames = false })
	long, max := strings.Repeat("a", MaxPasswordBytes+1), strings.Repeat("b", MaxPasswordBytes)
	if r := doReq(h, "PUT", "/user/1.0/bob", `{"password":"`+long+`"}`); r.code != 400 || r.body != "9" {
		t.Fatalf("create with %d bytes: %d %q", len(long), r.code, r.body)
	}
	if r := doReq(h, "PUT", "/user/1.0/bob", `{"password":"`+max+`"}`); r.code != 200 {
		t.Fatalf("create with %d bytes: %d %q", len(max), r.code, r.body)
	}
	if r := doReq(h, "POST", "/user/1.0/bob/password", long, "Authorization", basic("bob", max)); r.code != 400 || r.body != "" {
		t.Fatalf("change to %d bytes: %d %q", len(long), r.code, r.body)
	}
	acc.users["old"] = &fakeAccount{password: long}
	if r := doReq(h, "POST", "/user/1.0/old/email", "old@example.com", "Authorization", basic("old", long)); r.code != 200 {
		t.Fatalf("login with an old long password: %d %q", r.code, r.body)
	}
}

// throttled fails every password check with a ThrottleError.
type throttled struct{ *fakeAccounts }

func (throttled) CheckPassword(context.Context, string, string) error {
	return TooManyRequests(errors.New("too many failed logins"), 2500*time.Millisecond)
}

// TestThrottleAnswer checks that a ThrottleError is answered 429 with
// Retry-After in whole seconds, not 401 (which would make a client drop
// a password that may be right) nor 503.
func TestThrottleAnswer(t *testing.T) {
	acc := newFakeAccounts()
	acc.users["bob"] = &fakeAccount{password: "bobspassword"}
	cfg := DefaultUserConfig()
	cfg.Accounts, cfg.StrictUsernames = throttled{acc}, false
	h, err := NewUserHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := doReq(h, "POST", "/user/1.0/bob/email", "b@example.com", "Authorization", basic("bob", "bobspassword"))
	if r.code != http.StatusTooManyRequests || r.hdr.Get("Retry-After") != "3" {
		t.Fatalf("throttled: %d Retry-After %q", r.code, r.hdr.Get("Retry-After"))
	}
	err = TooManyRequests(nil, time.Second)
	if !errors.Is(err, ErrTooManyRequests) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("TooManyRequests(nil) matches the wrong sentinels: %v", err)
	}
}

// TestUserAPIClientAddr checks that the accounts see the client's
// address in the request context.
func TestUserAPIClientAddr(t *testing.T) {
	acc := &addrAccounts{fakeAccounts: newFakeAccounts()}
	acc.users["bob"] = &fakeAccount{password: "bobspassword"}
	cfg := DefaultUserConfig()
	cfg.Accounts, cfg.StrictUsernames = acc, false
	h, err := NewUserHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/user/1.0/bob/email", strings.NewReader("b@example.com"))
	req.RemoteAddr = "192.0.2.7:4567"
	req.Header.Set("Authorization", basic("bob", "bobspassword"))
	h.ServeHTTP(httptest.NewRecorder(), req)
	if acc.addr != "192.0.2.7" {
		t.Fatalf("client address seen by CheckPassword: %q", acc.addr)
	}
}

type addrAccounts struct {
	*fakeAccounts
	addr string
}

func (a *addrAccounts) CheckPassword(ctx context.Context, user, password string) error {
	a.addr = ClientAddr(ctx)
	return a.fakeAccounts.CheckPassword(ctx, user, password)
}

// TestSiteVerifier checks the siteverify protocol against a real HTTP
// server playing the captcha service: the secret, response and client
// address are posted as a form, "success" is the verdict, an unusable
// answer is an error.
func TestSiteVerifier(t *testing.T) {
	var got map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad", 400)
			return
		}
		got = map[string]string{"secret": r.PostForm.Get("secret"), "response": r.PostForm.Get("response"), "remoteip": r.PostForm.Get("remoteip")}
		switch r.PostForm.Get("response") {
		case "good":
			fmt.Fprint(w, `{"success":true,"hostname":"example.org"}`)
		case "broken":
			fmt.Fprint(w, `{"hostname":"example.org"}`)
		case "down":
			http.Error(w, "down", 502)
		default:
			fmt.Fprint(w, `{"success":false,"error-codes":["invalid-input-response"]}`)
		}
	}))
	defer srv.Close()
	v := &SiteVerifier{URL: srv.URL, Secret: "site-secret", Client: srv.Client()}
	ctx := context.Background()
	if ok, err := v.Verify(ctx, "", "good", "192.0.2.1"); !ok || err != nil {
		t.Fatalf("good: %v %v", ok, err)
	}
	if got["secret"] != "site-secret" || got["remoteip"] != "192.0.2.1" || got["response"] != "good" {
		t.Fatalf("form sent: %v", got)
	}
	if ok, err := v.Verify(ctx, "", "bad", ""); ok || err != nil {
		t.Fatalf("bad: %v %v", ok, err)
	}
	if ok, err := v.Verify(ctx, "", "", ""); ok || err != nil {
		t.Fatalf("empty: %v %v", ok, err)
	}
	for _, r := range []string{"broken", "down"} {
		if _, err := v.Verify(ctx, "", r, ""); err == nil {
			t.Fatalf("%s: no error", r)
		}
	}
	// Through the user API: a wrong answer is 400 2, the right one creates.
	_, h := newUserFixture(t, func(c *UserConfig) {
		c.StrictUsernames, c.Captcha, c.CaptchaHTML = false, v, "<div>widget</div>"
	})
	if r := doReq(h, "PUT", "/user/1.0/bob", `{"password":"bobspassword","captcha-response":"bad"}`); r.code != 400 || r.body != "2" {
		t.Fatalf("bad captcha: %d %q", r.code, r.body)
	}
	if r := doReq(h, "PUT", "/user/1.0/bob", `{"password":"bobspassword","captcha-response":"good"}`); r.code != 200 {
		t.Fatalf("good captcha: %d %q", r.code, r.body)
	}
	if r := doReq(h, "GET", "/misc/1.0/captcha_html", ""); r.code != 200 || r.body != "<div>widget</div>" {
		t.Fatalf("captcha_html: %d %q", r.code, r.body)
	}
}
