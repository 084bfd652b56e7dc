package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
)

// End-to-end tests of the user API (weave-api.md section 4) and of
// storage authentication (section 3.1).

// captureMailer records every mail the directory sends.
type captureMailer struct {
	mu    sync.Mutex
	mails []capturedMail
}

type capturedMail struct{ to, subject, body string }

func (m *captureMailer) Send(ctx context.Context, to, subject, body string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mails = append(m.mails, capturedMail{to, subject, body})
	return nil
}

// withMailer makes a Standalone's directory (tuned for tests) send its
// mails to m.
func withMailer(m *captureMailer) func(*StandaloneConfig) {
	return func(c *StandaloneConfig) {
		c.Directory = func(d *directory.Config) {
			tuneDirectory(d)
			d.Accounts.Mailer = m
		}
	}
}

// count returns the number of mails sent so far.
func (m *captureMailer) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mails)
}

var hexCodeRE = regexp.MustCompile(`\b[0-9a-fA-F]{16,}\b`)

// lastCode returns the recipient and the reset code of the last mail.
func (m *captureMailer) lastCode(t testing.TB, user string) (to, code string) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.mails) == 0 {
		t.Fatal("no mail was sent")
	}
	last := m.mails[len(m.mails)-1]
	for _, c := range hexCodeRE.FindAllString(last.body, -1) {
		if c != user {
			return last.to, c
		}
	}
	t.Fatalf("no reset code in mail %q", last.body)
	return "", ""
}

// fakeCaptcha accepts the response "good".
type fakeCaptcha struct{}

func (fakeCaptcha) Verify(ctx context.Context, challenge, response, remoteAddr string) (bool, error) {
	return response == "good", nil
}

// createBody is the JSON body of PUT /user/1.0/{u}.
func createBody(email, password string) map[string]string {
	m := map[string]string{}
	if email != "" {
		m["email"] = email
	}
	if password != "" {
		m["password"] = password
	}
	return m
}

// TestUserAPI covers weave-api.md 4.1-4.3 with captchas off.
func TestUserAPI(t *testing.T) {
	t.Parallel()
	mailer := &captureMailer{}
	s := startServer(t, withMailer(mailer))

	t.Run("account_name", func(t *testing.T) {
		// 4.1: lowercase(base32(sha1(lowercase(email)))), 32 characters.
		for _, e := range []string{"john@example.com", "Foo.Bar@Example.COM"} {
			eq(t, "AccountName("+e+")", api.AccountName(e), accountName(e))
			if len(accountName(e)) != 32 {
				t.Fatalf("account name %q is not 32 chars", accountName(e))
			}
		}
	})

	t.Run("create_error_order", func(t *testing.T) {
		// 4.3 checks in order: 4, 6, 12, 15, 7, 9, then 200 = name.
		taken := s.newAccount(t)
		email := uniqueEmail(t)
		name := accountName(email)
		path := "/user/1.0/" + name
		wantCode(t, s.do(t, "PUT", "/user/1.0/"+taken.Name, "{not json"), 400, 4)
		wantCode(t, s.do(t, "PUT", "/user/1.0/"+taken.Name, createBody(taken.Email, "another good password")), 400, 4)
		wantCode(t, s.do(t, "PUT", path, "{not json"), 400, 6)
		wantCode(t, s.do(t, "PUT", path, createBody("bademailhere", "")), 400, 12)
		wantCode(t, s.do(t, "PUT", path, createBody("bademailhere", "a good password")), 400, 12)
		wantCode(t, s.do(t, "PUT", path, createBody(uniqueEmail(t), "")), 400, 15)
		wantCode(t, s.do(t, "PUT", path, createBody(uniqueEmail(t), "a good password")), 400, 15)
		wantCode(t, s.do(t, "PUT", path, createBody(email, "")), 400, 7)
		wantCode(t, s.do(t, "PUT", path, map[string]string{"email": email, "password": ""}), 400, 7)
		wantCode(t, s.do(t, "PUT", path, createBody(email, "x")), 400, 9)
		wantCode(t, s.do(t, "PUT", path, createBody(email, "1234567")), 400, 9)
		wantCode(t, s.do(t, "PUT", path, createBody(email, "  "+strings.ToUpper(name)+" ")), 400, 9)
		// Nothing was created by the refused attempts.
		eq(t, "exists before", s.do(t, "GET", path, nil).body(), "0")
		r := s.do(t, "PUT", path, createBody(email, "12345678"))
		want(t, r, 200)
		eq(t, "create body", r.body(), name)
		eq(t, "exists after", s.do(t, "GET", path, nil).body(), "1")
	})

	t.Run("exists", func(t *testing.T) {
		// 4.2 row 1: "1" if taken, "0" if free; /user/1.0/, /user/1/, trailing slash.
		a := s.newAccount(t)
		free := accountName(uniqueEmail(t))
		for _, p := range []string{"/user/1.0/", "/user/1/"} {
			for _, slash := range []string{"", "/"} {
				r := s.do(t, "GET", p+a.Name+slash, nil)
				want(t, r, 200)
				eq(t, "taken", r.body(), "1")
				r = s.do(t, "GET", p+free+slash, nil)
				want(t, r, 200)
				eq(t, "free", r.body(), "0")
			}
		}
	})

	t.Run("create_via_user_1_slash", func(t *testing.T) {
		// 4: the old suite calls /user/1/{user}/ with a trailing slash.
		email := uniqueEmail(t)
		name := accountName(email)
		r := s.do(t, "PUT", "/user/1/"+name+"/", createBody(email, "a good password"))
		want(t, r, 200)
		eq(t, "body", r.body(), name)
	})

	t.Run("mixed_case_email", func(t *testing.T) {
		// 4.1: the address is lowercased before hashing; 3.1: the e-mail
		// works as the Basic user name in any case.
		email := "Mixed.Case-" + strings.ToUpper(uniqueEmail(t))
		name := accountName(email)
		r := s.do(t, "PUT", "/user/1.0/"+name, createBody(email, "a good password"))
		want(t, r, 200)
		eq(t, "body", r.body(), name)
		for _, u := range []string{email, strings.ToLower(email), name} {
			want(t, s.do(t, "GET", "/1.1/"+name+"/info/collections", nil, "Authorization", testkit.BasicAuth(u, "a good password")), 200)
		}
	})

	t.Run("non_ascii_password", func(t *testing.T) {
		// 4.3: "é"x9 works for create and Basic auth [Rtest test_non_ascii_password].
		email := uniqueEmail(t)
		name := accountName(email)
		pw := strings.Repeat("é", 9)
		r := s.do(t, "PUT", "/user/1.0/"+name, createBody(email, pw))
		want(t, r, 200)
		a := &account{s: s, Name: name, Email: email, Password: pw, Ver: "1.1"}
		want(t, a.do(t, "GET", "info/collections", nil), 200)
		a.put(t, "c", "x", map[string]any{"payload": "p"})
		bad := &account{s: s, Name: name, Password: strings.Repeat("e", 9), Ver: "1.1"}
		want(t, bad.do(t, "GET", "info/collections", nil), 401)
	})

	t.Run("node_weave", func(t *testing.T) {
		// 4.2 row 4: plain unquoted string ending in "/"; 404 (empty body) for unknown users.
		a := s.newAccount(t)
		for _, p := range []string{"/user/1.0/", "/user/1/"} {
			for _, slash := range []string{"", "/"} {
				r := s.do(t, "GET", p+a.Name+"/node/weave"+slash, nil)
				want(t, r, 200)
				eq(t, "node", r.body(), s.s.URL())
				if !strings.HasSuffix(r.body(), "/") || strings.HasPrefix(r.body(), `"`) {
					t.Fatalf("node/weave %q: want a plain string ending in /", r.body())
				}
			}
		}
		// The node it names serves the user's storage under {node}1.1/{u}/.
		r := s.do(t, "GET", "/1.1/"+a.Name+"/info/collections", nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
		want(t, r, 200)
		r = s.do(t, "GET", "/user/1.0/"+accountName(uniqueEmail(t))+"/node/weave", nil)
		want(t, r, 404)
		eq(t, "404 body", r.body(), "")
	})

	t.Run("delete_user", func(t *testing.T) {
		// 4.2 row 3: Basic, same user; body "1"; 401 otherwise.
		a := s.newAccount(t)
		other := s.newAccount(t)
		a.put(t, "c", "x", map[string]any{"payload": "p"})
		p := "/user/1.0/" + a.Name
		r := s.do(t, "DELETE", p, nil)
		want(t, r, 401)
		want(t, s.do(t, "DELETE", p, nil, "Authorization", testkit.BasicAuth(a.Name, "wrong password")), 401)
		want(t, s.do(t, "DELETE", p, nil, "Authorization", testkit.BasicAuth(other.Name, other.Password)), 401)
		eq(t, "still exists", s.do(t, "GET", p, nil).body(), "1")
		r = s.do(t, "DELETE", p, nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
		want(t, r, 200)
		eq(t, "delete body", r.body(), "1")
		eq(t, "exists after delete", s.do(t, "GET", p, nil).body(), "0")
		want(t, s.do(t, "GET", p+"/node/weave", nil), 404)
		want(t, a.do(t, "GET", "info/collections", nil), 401)
		want(t, other.do(t, "GET", "info/collections", nil), 200)
	})

	t.Run("change_email", func(t *testing.T) {
		// 4.2 row 7: body is the raw address; text = new e-mail; 400 12; 401.
		a := s.newAccount(t)
		p := "/user/1.0/" + a.Name + "/email"
		want(t, s.do(t, "POST", p, "new@example.com"), 401)
		want(t, s.do(t, "POST", p, "new@example.com", "Authorization", testkit.BasicAuth(a.Name, "wrong password")), 401)
		wantCode(t, s.do(t, "POST", p, "bademailhere", "Authorization", testkit.BasicAuth(a.Name, a.Password)), 400, 12)
		newEmail := "changed-" + a.Email
		r := s.do(t, "POST", p, newEmail, "Authorization", testkit.BasicAuth(a.Name, a.Password))
		want(t, r, 200)
		eq(t, "email body", r.body(), newEmail)
		// Reset mails now go to the new address.
		want(t, s.do(t, "GET", "/user/1.0/"+a.Name+"/password_reset", nil), 200)
		to, _ := mailer.lastCode(t, a.Name)
		eq(t, "mail recipient", to, newEmail)
	})

	t.Run("change_password", func(t *testing.T) {
		// 4.2 row 8 (Basic): text "success"; 400 weak; 401.
		a := s.newAccount(t)
		p := "/user/1.0/" + a.Name + "/password"
		want(t, s.do(t, "POST", p, "a brand new password"), 401)
		want(t, s.do(t, "POST", p, "a brand new password", "Authorization", testkit.BasicAuth(a.Name, "wrong password")), 401)
		r := s.do(t, "POST", p, "short", "Authorization", testkit.BasicAuth(a.Name, a.Password))
		want(t, r, 400)
		want(t, a.do(t, "GET", "info/collections", nil), 200)
		newPw := "a brand new pässword"
		r = s.do(t, "POST", p, newPw, "Authorization", testkit.BasicAuth(a.Name, a.Password))
		want(t, r, 200)
		eq(t, "body", r.body(), "success")
		want(t, a.do(t, "GET", "info/collections", nil), 401)
		a.Password = newPw
		want(t, a.do(t, "GET", "info/collections", nil), 200)
	})

	t.Run("password_reset", func(t *testing.T) {
		// 4.2 rows 5, 6, 8 (reset-code path).
		a := s.newAccount(t)
		base := "/user/1.0/" + a.Name
		wantCode(t, s.do(t, "GET", "/user/1.0/"+accountName(uniqueEmail(t))+"/password_reset", nil), 400, 3)

		// No e-mail on file -> 12 (account made directly in the directory).
		noMail := accountName(uniqueEmail(t))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.s.Directory().CreateUser(ctx, noMail, "a good password", ""); err != nil {
			t.Fatalf("CreateUser without e-mail: %v", err)
		}
		wantCode(t, s.do(t, "GET", "/user/1.0/"+noMail+"/password_reset", nil), 400, 12)

		n := mailer.count()
		r := s.do(t, "GET", base+"/password_reset", nil)
		want(t, r, 200)
		eq(t, "body", r.body(), "success")
		if mailer.count() != n+1 {
			t.Fatalf("no reset mail sent")
		}
		to, code := mailer.lastCode(t, a.Name)
		eq(t, "mail to", to, a.Email)

		// Row 6: DELETE password_reset (Basic) clears the pending code.
		want(t, s.do(t, "DELETE", base+"/password_reset", nil), 401)
		r = s.do(t, "DELETE", base+"/password_reset", nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
		want(t, r, 200)
		eq(t, "clear body", r.body(), "success")
		wantCode(t, s.do(t, "POST", base+"/password", "a reset password", "X-Weave-Password-Reset", code), 400, 10)

		// Fresh code: bad code -> 10; unknown user -> 404; weak -> 400; good -> success.
		want(t, s.do(t, "GET", base+"/password_reset", nil), 200)
		_, code = mailer.lastCode(t, a.Name)
		wantCode(t, s.do(t, "POST", base+"/password", "a reset password", "X-Weave-Password-Reset", "0123456789abcdef0123456789abcdef"), 400, 10)
		want(t, s.do(t, "POST", "/user/1.0/"+accountName(uniqueEmail(t))+"/password", "a reset password", "X-Weave-Password-Reset", code), 404)
		want(t, s.do(t, "POST", base+"/password", "short", "X-Weave-Password-Reset", code), 400)
		r = s.do(t, "POST", base+"/password", "a reset password", "X-Weave-Password-Reset", code)
		want(t, r, 200)
		eq(t, "reset body", r.body(), "success")
		want(t, a.do(t, "GET", "info/collections", nil), 401)
		a.Password = "a reset password"
		want(t, a.do(t, "GET", "info/collections", nil), 200)
		// A code works once.
		wantCode(t, s.do(t, "POST", base+"/password", "yet another password", "X-Weave-Password-Reset", code), 400, 10)
	})

	t.Run("reset_form", func(t *testing.T) {
		// 4.2 last row: /weave-password-reset HTML flow; 400 malformed form.
		a := s.newAccount(t)
		r := s.do(t, "GET", "/weave-password-reset?username="+a.Name+"&key=abc", nil)
		want(t, r, 200)
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
			t.Errorf("reset form Content-Type %q", r.Header.Get("Content-Type"))
		}
		form := func(v url.Values) reply {
			return s.do(t, "POST", "/weave-password-reset", v.Encode(), "Content-Type", "application/x-www-form-urlencoded")
		}
		want(t, form(url.Values{}), 400)
		want(t, s.do(t, "GET", "/user/1.0/"+a.Name+"/password_reset", nil), 200)
		_, code := mailer.lastCode(t, a.Name)
		// Problems in a filled-in form are named on a 200 page and change
		// nothing (as the reference server's form flow does).
		if r := form(url.Values{"username": {a.Name}, "key": {"ffff"}, "password": {"form password 1"}, "confirm": {"form password 1"}}); r.Status != 200 || !strings.Contains(r.body(), "Key does not match") {
			t.Errorf("bad key: %v", r)
		}
		if r := form(url.Values{"username": {a.Name}, "key": {code}, "password": {"form password 1"}, "confirm": {"mismatch password"}}); r.Status != 200 || !strings.Contains(r.body(), "do not match") {
			t.Errorf("mismatch: %v", r)
		}
		want(t, form(url.Values{"username": {a.Name}, "key": {code}, "password": {"form password 1"}, "confirm": {"form password 1"}}), 200)
		a.Password = "form password 1"
		want(t, a.do(t, "GET", "info/collections", nil), 200)
	})

	t.Run("timestamp_header", func(t *testing.T) {
		// 3.2: X-Weave-Timestamp on every successful response [Cbase
		// __call__], the user API included.
		a := s.newAccount(t)
		for _, p := range []string{"/user/1.0/" + a.Name, "/user/1.0/" + a.Name + "/node/weave"} {
			r := s.do(t, "GET", p, nil)
			want(t, r, 200)
			if h := r.Header.Get("X-Weave-Timestamp"); !stampRE.MatchString(h) {
				t.Errorf("GET %s: X-Weave-Timestamp %q", p, h)
			}
		}
	})

	t.Run("captcha_html_disabled", func(t *testing.T) {
		// 4.2 row 9: 404 when captchas are disabled [Rtest test_recaptcha].
		want(t, s.do(t, "GET", "/misc/1.0/captcha_html", nil), 404)
	})
}

// TestUserAPINoNode covers 4.2 row 4: the JSON null when no node can be
// assigned.
func TestUserAPINoNode(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *StandaloneConfig) {
		c.Directory = func(d *directory.Config) {
			tuneDirectory(d)
			d.Accounts.NodeURL = ""
		}
	})
	email := uniqueEmail(t)
	name := accountName(email)
	want(t, s.do(t, "PUT", "/user/1.0/"+name, createBody(email, "a good password")), 200)
	r := s.do(t, "GET", "/user/1.0/"+name+"/node/weave", nil)
	want(t, r, 200)
	eq(t, "node/weave without a node", strings.TrimSpace(r.body()), "null")
}

// TestUserAPICaptcha covers the captcha rules: 4.3 step 7 (code 2 and the
// X-Weave-Secret bypass), 4.2 rows 5 and 9.
func TestUserAPICaptcha(t *testing.T) {
	t.Parallel()
	mailer := &captureMailer{}
	s := startServer(t, withMailer(mailer), func(c *StandaloneConfig) {
		c.User = func(u *api.UserConfig) {
			u.Captcha = fakeCaptcha{}
			u.CaptchaPublicKey = "pubkey"
			u.AdminSecret = "s3cret"
		}
	})
	create := func(email string, body map[string]string, hdr ...string) reply {
		return s.do(t, "PUT", "/user/1.0/"+accountName(email), body, hdr...)
	}

	e1 := uniqueEmail(t)
	// Captcha is checked after the password strength (step 6 before 7).
	wantCode(t, create(e1, createBody(e1, "x")), 400, 9)
	wantCode(t, create(e1, createBody(e1, "a good password")), 400, 2)
	body := createBody(e1, "a good password")
	body["captcha-challenge"], body["captcha-response"] = "chal", "bad"
	wantCode(t, create(e1, body), 400, 2)
	wantCode(t, create(e1, createBody(e1, "a good password"), "X-Weave-Secret", "wrong"), 400, 2)
	eq(t, "not created", s.do(t, "GET", "/user/1.0/"+accountName(e1), nil).body(), "0")
	body["captcha-response"] = "good"
	r := create(e1, body)
	want(t, r, 200)
	eq(t, "body", r.body(), accountName(e1))

	e2 := uniqueEmail(t)
	r = create(e2, createBody(e2, "a good password"), "X-Weave-Secret", "s3cret")
	want(t, r, 200)
	eq(t, "secret bypass body", r.body(), accountName(e2))

	// password_reset with captchas on: 400 2 without, success with.
	p := "/user/1.0/" + accountName(e1) + "/password_reset"
	wantCode(t, s.do(t, "GET", p, nil), 400, 2)
	wantCode(t, s.do(t, "GET", p+"?captcha-challenge=c&captcha-response=bad", nil), 400, 2)
	r = s.do(t, "GET", p+"?captcha-challenge=c&captcha-response=good", nil)
	want(t, r, 200)
	eq(t, "reset body", r.body(), "success")

	// 4.2 row 6: DELETE password_reset checks the captcha too.
	a := &account{s: s, Name: accountName(e1), Password: "a good password", Ver: "1.1"}
	cred := []string{"Authorization", testkit.BasicAuth(a.Name, a.Password)}
	wantCode(t, s.do(t, "DELETE", p, nil, cred...), 400, 2)
	r = s.do(t, "DELETE", p+"?captcha-challenge=c&captcha-response=good", nil, cred...)
	want(t, r, 200)
	eq(t, "clear body", r.body(), "success")
	r = s.do(t, "DELETE", p, nil, append(cred, "X-Weave-Secret", "s3cret")...)
	want(t, r, 200)

	// captcha_html served when enabled.
	r = s.do(t, "GET", "/misc/1.0/captcha_html", nil)
	want(t, r, 200)
	if !strings.Contains(r.body(), "pubkey") || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Errorf("captcha_html: %v", r)
	}
}

// failingAccounts is an account database whose reads fail, to check the
// 503 answers (3.2 Retry-After, 3.3).
type failingAccounts struct{ api.Accounts }

var errBackendDown = errors.New("backend down (test)")

func (failingAccounts) UserExists(ctx context.Context, user string) (bool, error) {
	return false, errBackendDown
}

func (failingAccounts) StorageNode(ctx context.Context, user string) (string, error) {
	return "", errBackendDown
}

// TestUserAPIBackendFailure covers 4.2 rows 1 and 4 "503 backend" and the
// Retry-After rule of 3.2.
func TestUserAPIBackendFailure(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *StandaloneConfig) {
		c.User = func(u *api.UserConfig) { u.Accounts = failingAccounts{u.Accounts} }
	})
	name := accountName(uniqueEmail(t))
	for _, p := range []string{"/user/1.0/" + name, "/user/1.0/" + name + "/node/weave"} {
		r := s.do(t, "GET", p, nil)
		want(t, r, 503)
		// 3.3: a 503 body is a JSON string.
		var msg string
		if err := json.Unmarshal(r.Body, &msg); err != nil {
			t.Errorf("503 body is not a JSON string: %v", r)
		}
		ra := r.Header.Get("Retry-After")
		if n, err := strconv.Atoi(ra); err != nil || n <= 0 {
			t.Errorf("503 without a Retry-After in seconds (%q): %v", ra, r)
		}
	}
	want(t, s.do(t, "GET", "/__heartbeat__", nil), 200)
}

// failingMailer refuses every mail.
type failingMailer struct{}

func (failingMailer) Send(ctx context.Context, to, subject, body string) error {
	return errors.New("smtp down (test)")
}

// TestUserAPIMailFailure covers 4.2 row 5: "503 mail/backend".
func TestUserAPIMailFailure(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *StandaloneConfig) {
		c.Directory = func(d *directory.Config) {
			tuneDirectory(d)
			d.Accounts.Mailer = failingMailer{}
		}
	})
	a := s.newAccount(t)
	r := s.do(t, "GET", "/user/1.0/"+a.Name+"/password_reset", nil)
	want(t, r, 503)
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After: %v", r)
	}
	want(t, s.do(t, "GET", "/__heartbeat__", nil), 200)
}

// TestAuth covers weave-api.md 3.1 for the storage API.
func TestAuth(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)
	b := s.newAccount(t)
	a.put(t, "secret", "x", map[string]any{"payload": "a's"})
	bStamp := b.put(t, "secret", "y", map[string]any{"payload": "b's"})
	path := a.path("info/collections")

	t.Run("no_header", func(t *testing.T) {
		// 3.1: no Authorization -> 401 + WWW-Authenticate: Basic realm="Sync".
		for _, ver := range versions {
			r := s.do(t, "GET", "/"+ver+"/"+a.Name+"/storage/secret/x", nil)
			want(t, r, 401)
			eq(t, "WWW-Authenticate", r.Header.Get("WWW-Authenticate"), `Basic realm="Sync"`)
		}
		want(t, s.do(t, "PUT", a.path("storage/secret/z"), map[string]any{"payload": "p"}), 401)
		want(t, a.do(t, "GET", "storage/secret/z", nil), 404)
	})

	t.Run("bad_credentials", func(t *testing.T) {
		// 3.1: non-Basic or undecodable -> 401; unknown user / wrong password -> 401.
		for _, h := range []string{
			"Bearer not-a-token",
			"Digest username=\"" + a.Name + "\"",
			"Basic !!!notbase64!!!",
			"Basic " + "bm9jb2xvbg==", // "nocolon"
			"Basic",
			testkit.BasicAuth(a.Name, "wrong password"),
			testkit.BasicAuth(a.Name, ""),
			testkit.BasicAuth(a.Name, a.Password+"x"),
			testkit.BasicAuth(a.Name, strings.ToUpper(a.Password)),
		} {
			r := s.do(t, "GET", path, nil, "Authorization", h)
			if r.Status != 401 {
				t.Errorf("Authorization %q: want 401: %v", h, r)
			}
		}
		unknown := accountName(uniqueEmail(t))
		want(t, s.do(t, "GET", "/1.1/"+unknown+"/info/collections", nil, "Authorization", testkit.BasicAuth(unknown, "whatever pass")), 401)
	})

	t.Run("user_path_mismatch", func(t *testing.T) {
		// 3.1: auth user != path user -> 401 (1.1).
		for _, ver := range versions {
			r := s.do(t, "GET", "/"+ver+"/"+b.Name+"/storage/secret/y", nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
			if r.Status != 401 && !(ver == "1.0" && r.Status == 400 && strings.TrimSpace(r.body()) == "5") {
				t.Errorf("%s: A reading B's record: want 401: %v", ver, r)
			}
		}
	})

	t.Run("email_as_user", func(t *testing.T) {
		// 3.1: a user name with @ is an e-mail, hashed to the account name.
		want(t, s.do(t, "GET", path, nil, "Authorization", testkit.BasicAuth(a.Email, a.Password)), 200)
		want(t, s.do(t, "GET", path, nil, "Authorization", testkit.BasicAuth(strings.ToUpper(a.Email), a.Password)), 200)
		want(t, s.do(t, "GET", path, nil, "Authorization", testkit.BasicAuth(b.Email, b.Password)), 401)
		want(t, s.do(t, "GET", path, nil, "Authorization", testkit.BasicAuth(a.Email, "wrong password")), 401)
	})

	t.Run("colon_in_password", func(t *testing.T) {
		// 3.1: the password may contain ":" (split at the first one).
		email := uniqueEmail(t)
		c := &account{s: s, Name: accountName(email), Email: email, Password: "pass:word:with:colons", Ver: "1.1"}
		want(t, s.do(t, "PUT", "/user/1.0/"+c.Name, createBody(email, c.Password)), 200)
		want(t, c.do(t, "GET", "info/collections", nil), 200)
		want(t, s.do(t, "GET", c.path("info/collections"), nil, "Authorization", testkit.BasicAuth(c.Name, "pass")), 401)
	})

	t.Run("isolation", func(t *testing.T) {
		// One user can never read or change another's data.
		cred := []string{"Authorization", testkit.BasicAuth(a.Name, a.Password)}
		for _, c := range []struct {
			method, rel string
			body        any
		}{
			{"GET", "info/collections", nil},
			{"GET", "info/collection_counts", nil},
			{"GET", "info/quota", nil},
			{"GET", "storage/secret", nil},
			{"GET", "storage/secret/y", nil},
			{"PUT", "storage/secret/y", map[string]any{"payload": "overwritten"}},
			{"PUT", "storage/secret/new", map[string]any{"payload": "planted"}},
			{"POST", "storage/secret", []map[string]any{{"id": "y", "payload": "overwritten"}}},
			{"DELETE", "storage/secret/y", nil},
			{"DELETE", "storage/secret", nil},
		} {
			r := s.do(t, c.method, b.path(c.rel), c.body, cred...)
			if r.Status != 401 {
				t.Errorf("A: %s B's %s: want 401: %v", c.method, c.rel, r)
			}
			if strings.Contains(r.body(), "b's") {
				t.Errorf("B's data leaked to A: %v", r)
			}
		}
		r := s.do(t, "DELETE", b.path("storage"), nil, append(cred, "X-Confirm-Delete", "1")...)
		want(t, r, 401)
		want(t, s.do(t, "DELETE", "/user/1.0/"+b.Name, nil, cred...), 401)
		want(t, s.do(t, "POST", "/user/1.0/"+b.Name+"/password", "hijacked password", cred...), 401)
		want(t, s.do(t, "POST", "/user/1.0/"+b.Name+"/email", "evil@example.com", cred...), 401)
		// B's data is intact, and A's namespace does not see it.
		g := b.do(t, "GET", "storage/secret/y", nil)
		want(t, g, 200)
		w := decodeWBO(t, g)
		eq(t, "B payload", w.str(t, "payload"), "b's")
		eq(t, "B modified", string(w["modified"]), bStamp)
		eq(t, "B ids", b.ids(t, "storage/secret"), []string{"y"})
		eq(t, "A ids", a.ids(t, "storage/secret"), []string{"x"})
		want(t, a.do(t, "GET", "storage/secret/y", nil), 404)
		want(t, b.do(t, "GET", "info/collections", nil), 200)
	})
}
