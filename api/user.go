package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
)

// CaptchaVerifier checks a captcha answer: the "captcha-challenge" and
// "captcha-response" fields of a registration (or the query parameters of
// a reset request) and the client's IP address. Verify returns false for
// a wrong answer and an error when the check could not be made (the
// request is then answered 503). It must be safe for concurrent use.
// SiteVerifier implements it for the captcha services that share the
// "siteverify" protocol; any other service plugs in by implementing it.
type CaptchaVerifier interface {
	Verify(ctx context.Context, challenge, response, remoteAddr string) (bool, error)
}

// Registration says who may create accounts through the user API.
type Registration string

// The registration policies.
const (
	// RegistrationOpen lets anyone create an account (the default).
	RegistrationOpen Registration = "open"
	// RegistrationClosed refuses every account creation (403), except
	// with the admin secret (X-Weave-Secret).
	RegistrationClosed Registration = "closed"
	// RegistrationInvite creates an account only with a single-use invite
	// code, the "invite" field of the JSON body (403 without a valid
	// one), or with the admin secret. Accounts must implement
	// InviteAccounts.
	RegistrationInvite Registration = "invite"
)

// ParseRegistration parses "open", "closed" or "invite" ("" is open).
func ParseRegistration(s string) (Registration, error) {
	switch r := Registration(s); r {
	case "", RegistrationOpen:
		return RegistrationOpen, nil
	case RegistrationClosed, RegistrationInvite:
		return r, nil
	}
	return "", fmt.Errorf("%w: registration %q is not open, closed or invite", ErrBadConfig, s)
}

// Errors of the registration policy; each is answered 403.
var (
	// ErrRegistrationClosed: registration is closed on this server.
	ErrRegistrationClosed = errors.New("api: registration is closed")
	// ErrBadInvite: registration needs an invite code and the request
	// has none, or one that is unknown, used or expired.
	ErrBadInvite = errors.New("api: missing or invalid invite code")
)

// InviteAccounts is implemented by Accounts that admit registrations
// with invite codes (the directory): CreateUserWithInvite creates the
// account and uses up the invite in one step, so a code admits one
// account only. ErrBadInvite when the code is unknown, used or expired;
// otherwise as Accounts.CreateUser.
type InviteAccounts interface {
	CreateUserWithInvite(ctx context.Context, user, password, email, invite string) error
}

// UserConfig configures the user API handler.
type UserConfig struct {
	// Accounts is the account database. Required.
	Accounts Accounts
	// Logger receives backend failures; nil discards.
	Logger *slog.Logger
	// StrictUsernames makes account creation refuse an e-mail that does
	// not hash to the user name (400, code 15). DefaultUserConfig sets it;
	// the zero value leaves it off.
	StrictUsernames bool
	// Captcha, when set, turns captchas on for account creation and
	// password resets; nil turns them off.
	Captcha CaptchaVerifier
	// CaptchaPublicKey is the site key put into /misc/1.0/captcha_html.
	CaptchaPublicKey string
	// CaptchaHTML, when set, is the page /misc/1.0/captcha_html serves
	// (the widget of the captcha service Captcha checks); empty serves
	// the reCAPTCHA v1 markup with CaptchaPublicKey.
	CaptchaHTML string
	// AdminSecret, when non-empty, lets a request whose X-Weave-Secret
	// header equals it skip the captcha and the registration policy.
	AdminSecret string
	// Registration is who may create accounts; zero means
	// RegistrationOpen.
	Registration Registration
	// RetryAfter is the Retry-After of 503 answers whose error carries no
	// retry hint (RetryError), in seconds; zero means 10 (RetryBlip).
	RetryAfter int
	// ResetCodeTTL is how long the directory keeps a mailed reset key
	// valid; it is only quoted to people on the reset form. Zero means
	// DefaultResetCodeTTL.
	ResetCodeTTL time.Duration
	// MaxBodyBytes caps request bodies; zero means 64 KiB.
	MaxBodyBytes int64
	// MaxCreateBodyBytes caps the body of an account creation (PUT
	// /user/1.0/{user}), which is read before any authentication is
	// possible: an e-mail, a password and a captcha answer fit in a few
	// KB. Larger bodies get 413. Zero means DefaultMaxCreateBodyBytes.
	MaxCreateBodyBytes int64
	// Tokens, when set, serves GET /user/1.0/{user}/token (Basic auth)
	// with a directory-signed bearer token; nil answers 404.
	Tokens TokenIssuer
}

// DefaultMaxCreateBodyBytes is UserConfig.MaxCreateBodyBytes's default.
const DefaultMaxCreateBodyBytes = 4 << 10

// DefaultResetCodeTTL is the reset key lifetime quoted when
// UserConfig.ResetCodeTTL is zero (the directory's default, as Mozilla's).
const DefaultResetCodeTTL = 6 * time.Hour

// DefaultUserConfig returns a UserConfig with strict user names and the
// default limits (Accounts still to be set).
func DefaultUserConfig() UserConfig {
	return UserConfig{StrictUsernames: true, RetryAfter: DefaultRetryAfter, MaxBodyBytes: 64 << 10,
		MaxCreateBodyBytes: DefaultMaxCreateBodyBytes}
}

// Validate reports a missing Accounts or a negative limit.
func (c UserConfig) Validate() error {
	switch {
	case c.Accounts == nil:
		return fmt.Errorf("%w: Accounts is nil", ErrBadConfig)
	case c.RetryAfter < 0:
		return fmt.Errorf("%w: RetryAfter %d < 0", ErrBadConfig, c.RetryAfter)
	case c.MaxBodyBytes < 0 || c.MaxCreateBodyBytes < 0:
		return fmt.Errorf("%w: negative body limit", ErrBadConfig)
	}
	reg, err := ParseRegistration(string(c.Registration))
	if err != nil {
		return err
	}
	if _, ok := c.Accounts.(InviteAccounts); reg == RegistrationInvite && !ok {
		return fmt.Errorf("%w: invite registration needs Accounts that take invite codes (InviteAccounts)", ErrBadConfig)
	}
	return nil
}

type userAPI struct {
	cfg    UserConfig
	rs     responder
	router *mux.Router
}

// NewUserHandler returns the user API 1.0 (weave-api.md 4) under
// /user/1.0/ and /user/1/, /misc/1.0/captcha_html and the
// /weave-password-reset form. The handler is safe for concurrent use.
func NewUserHandler(cfg UserConfig) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	if cfg.MaxCreateBodyBytes == 0 {
		cfg.MaxCreateBodyBytes = DefaultMaxCreateBodyBytes
	}
	cfg.Registration, _ = ParseRegistration(string(cfg.Registration))
	u := &userAPI{cfg: cfg, rs: newResponder(cfg.Logger, cfg.RetryAfter)}
	r := mux.NewRouter().SkipClean(true)
	base := `/user/{ver:1\.0|1}/` + userPattern
	r.HandleFunc(base, u.exists).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc(base, u.create).Methods(http.MethodPut)
	r.HandleFunc(base, u.deleteUser).Methods(http.MethodDelete)
	r.HandleFunc(base+"/node/weave", u.node).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc(base+"/password_reset", u.requestReset).Methods(http.MethodGet)
	r.HandleFunc(base+"/password_reset", u.clearReset).Methods(http.MethodDelete)
	r.HandleFunc(base+"/email", u.changeEmail).Methods(http.MethodPost)
	r.HandleFunc(base+"/password", u.changePassword).Methods(http.MethodPost)
	r.HandleFunc(base+"/token", u.token).Methods(http.MethodGet)
	r.HandleFunc(`/misc/{ver:1\.0|1}/captcha_html`, u.captchaHTML).Methods(http.MethodGet, http.MethodPost)
	r.HandleFunc("/weave-password-reset", u.resetForm).Methods(http.MethodGet, http.MethodPost)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u.rs.writeError(w, req, errRouteNotFound)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u.rs.writeError(w, req, errMethodNotAllowed)
	})
	u.router = r
	return u, nil
}

// ServeHTTP strips trailing slashes, stamps the response with the server
// time (X-Weave-Timestamp, as the reference server does on every response),
// puts the client's address into the request context (ClientAddr: the
// accounts limit failed logins per client) and routes.
func (u *userAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()["X-Weave-Timestamp"] = []string{Stamp(time.Now().UnixMilli() / 10).String()}
	r = withClientAddr(r)
	if p := r.URL.Path; len(p) > 1 && p[len(p)-1] == '/' {
		r = withPath(r, strings.TrimRight(p, "/"))
	}
	u.router.ServeHTTP(w, r)
}

func writeText(w http.ResponseWriter, s string) {
	writeBody(w, "text/plain; charset=utf-8", []byte(s))
}

// checkBasic verifies the Basic credentials of r for the user in its path.
func (u *userAPI) checkBasic(r *http.Request, user string) error {
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return errNoCredentials
	}
	c, err := ParseAuthorization(hdr)
	if err != nil {
		return err
	}
	if c.Scheme != "basic" || c.User != user {
		return ErrUnauthorized
	}
	if err := u.cfg.Accounts.CheckPassword(r.Context(), user, c.Password); err != nil {
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrUserNotFound) {
			return ErrUnauthorized
		}
		return err
	}
	return nil
}

// admin reports whether r carries the admin secret (X-Weave-Secret).
func (u *userAPI) admin(r *http.Request) bool {
	s := r.Header.Get("X-Weave-Secret")
	return u.cfg.AdminSecret != "" && subtle.ConstantTimeCompare([]byte(s), []byte(u.cfg.AdminSecret)) == 1
}

// captchaOK checks the captcha when captchas are on and the admin secret
// was not given.
func (u *userAPI) captchaOK(r *http.Request, challenge, response string) error {
	if u.cfg.Captcha == nil || u.admin(r) {
		return nil
	}
	ok, err := u.cfg.Captcha.Verify(r.Context(), challenge, response, RemoteIP(r))
	if err != nil {
		return fmt.Errorf("captcha: %w", err)
	}
	if !ok {
		return weaveErr(CodeBadCaptcha)
	}
	return nil
}

func (u *userAPI) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readLimited(w, r, u.cfg.MaxBodyBytes)
}

// readLimited reads r's body, at most limit bytes (errBodyTooLarge
// beyond, without reading further when the declared length says so).
func readLimited(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errBodyTooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errBodyTooLarge
		}
		return nil, errBadRequest
	}
	return b, nil
}

func (u *userAPI) exists(w http.ResponseWriter, r *http.Request) {
	ok, err := u.cfg.Accounts.UserExists(r.Context(), mux.Vars(r)["user"])
	if err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	if ok {
		writeText(w, "1")
	} else {
		writeText(w, "0")
	}
}

// create is PUT /user/1.0/{u} with the checks of weave-api.md 4.3 in
// order, then the registration policy: closed registration is refused
// before the body is read, an invite is checked (and used up) with the
// account's creation.
func (u *userAPI) create(w http.ResponseWriter, r *http.Request) {
	user := mux.Vars(r)["user"]
	fail := func(err error) { u.rs.writeError(w, r, err) }
	taken, err := u.cfg.Accounts.UserExists(r.Context(), user)
	if err != nil {
		fail(err)
		return
	}
	if taken {
		fail(weaveErr(CodeCannotOverwrite))
		return
	}
	admin := u.admin(r)
	if u.cfg.Registration == RegistrationClosed && !admin {
		fail(ErrRegistrationClosed)
		return
	}
	raw, err := readLimited(w, r, u.cfg.MaxCreateBodyBytes)
	if err != nil {
		fail(err)
		return
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil || body == nil {
		fail(weaveErr(CodeBadJSON))
		return
	}
	email, hasEmail := "", false
	if v, ok := body["email"]; ok && v != nil {
		s, isStr := v.(string)
		if !isStr || (s != "" && !ValidEmail(s)) {
			fail(weaveErr(CodeNoEmail))
			return
		}
		email, hasEmail = s, s != ""
	}
	if u.cfg.StrictUsernames && (!hasEmail || AccountName(email) != user) {
		fail(weaveErr(CodeEmailMismatch))
		return
	}
	password, _ := body["password"].(string)
	if password == "" {
		fail(weaveErr(CodeMissingPassword))
		return
	}
	if !ValidPassword(user, password) {
		fail(weaveErr(CodeWeakPassword))
		return
	}
	challenge, _ := body["captcha-challenge"].(string)
	response, _ := body["captcha-response"].(string)
	if err := u.captchaOK(r, challenge, response); err != nil {
		fail(err)
		return
	}
	if u.cfg.Registration == RegistrationInvite && !admin {
		invite, _ := body["invite"].(string)
		if invite == "" {
			fail(ErrBadInvite)
			return
		}
		err = u.cfg.Accounts.(InviteAccounts).CreateUserWithInvite(r.Context(), user, password, email, invite)
	} else {
		err = u.cfg.Accounts.CreateUser(r.Context(), user, password, email)
	}
	if err != nil {
		fail(err)
		return
	}
	writeText(w, user)
}

func (u *userAPI) deleteUser(w http.ResponseWriter, r *http.Request) {
	user := mux.Vars(r)["user"]
	if err := u.checkBasic(r, user); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	if err := u.cfg.Accounts.DeleteUser(r.Context(), user); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	writeText(w, "1")
}

func (u *userAPI) node(w http.ResponseWriter, r *http.Request) {
	node, err := u.cfg.Accounts.StorageNode(r.Context(), mux.Vars(r)["user"])
	if err != nil {
		u.rs.writeError(w, r, err) // ErrUserNotFound: 404, empty body
		return
	}
	if node == "" {
		writeText(w, "null")
		return
	}
	if !strings.Contains(node, "://") {
		node = "http://" + node
	}
	if !strings.HasSuffix(node, "/") {
		node += "/"
	}
	writeText(w, node)
}

// token is GET /user/1.0/{u}/token: Basic credentials in, a bearer token
// for the user's node out, as {"token", "node", "expires"}.
func (u *userAPI) token(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Tokens == nil {
		u.rs.writeError(w, r, errRouteNotFound)
		return
	}
	user := mux.Vars(r)["user"]
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		u.rs.writeError(w, r, errNoCredentials)
		return
	}
	c, err := ParseAuthorization(hdr)
	if err != nil || c.Scheme != "basic" || c.User != user {
		u.rs.writeError(w, r, ErrUnauthorized)
		return
	}
	tok, node, exp, err := u.cfg.Tokens.IssueToken(r.Context(), user, c.Password, "")
	if err != nil {
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrUserNotFound) {
			err = ErrUnauthorized
		}
		u.rs.writeError(w, r, err)
		return
	}
	body, err := json.Marshal(tokenResponse{Token: tok, Node: node, Expires: exp.Unix()})
	if err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, "application/json", body)
}

func (u *userAPI) requestReset(w http.ResponseWriter, r *http.Request) {
	user := mux.Vars(r)["user"]
	ok, err := u.cfg.Accounts.UserExists(r.Context(), user)
	if err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	if !ok {
		u.rs.writeError(w, r, weaveErr(CodeBadUsername))
		return
	}
	q := r.URL.Query()
	if err := u.captchaOK(r, q.Get("captcha-challenge"), q.Get("captcha-response")); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	if err := u.cfg.Accounts.RequestPasswordReset(r.Context(), user); err != nil {
		if errors.Is(err, ErrUserNotFound) {
			err = weaveErr(CodeBadUsername)
		}
		u.rs.writeError(w, r, err)
		return
	}
	writeText(w, "success")
}

func (u *userAPI) clearReset(w http.ResponseWriter, r *http.Request) {
	user := mux.Vars(r)["user"]
	if err := u.checkBasic(r, user); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	if err := u.captchaOK(r, q.Get("captcha-challenge"), q.Get("captcha-response")); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	if err := u.cfg.Accounts.ClearPasswordReset(r.Context(), user); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	writeText(w, "success")
}

func (u *userAPI) changeEmail(w http.ResponseWriter, r *http.Request) {
	user := mux.Vars(r)["user"]
	if err := u.checkBasic(r, user); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	raw, err := u.readBody(w, r)
	if err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	email := strings.TrimSpace(string(raw))
	if !ValidEmail(email) {
		u.rs.writeError(w, r, weaveErr(CodeNoEmail))
		return
	}
	if err := u.cfg.Accounts.SetEmail(r.Context(), user, email); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	writeText(w, email)
}

func (u *userAPI) changePassword(w http.ResponseWriter, r *http.Request) {
	user := mux.Vars(r)["user"]
	codes := r.Header.Values("X-Weave-Password-Reset")
	if len(codes) == 0 {
		if err := u.checkBasic(r, user); err != nil {
			u.rs.writeError(w, r, err)
			return
		}
	}
	raw, err := u.readBody(w, r)
	if err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	password := string(raw)
	if !utf8.ValidString(password) || !ValidPassword(user, password) {
		u.rs.writeError(w, r, errBadRequest)
		return
	}
	if len(codes) > 0 {
		code := strings.TrimSpace(codes[0])
		if code == "" {
			u.rs.writeError(w, r, weaveErr(CodeBadResetCode))
			return
		}
		if err := u.cfg.Accounts.ResetPassword(r.Context(), user, code, password); err != nil {
			u.rs.writeError(w, r, err) // ErrUserNotFound 404, ErrBadResetCode 400 10
			return
		}
		writeText(w, "success")
		return
	}
	if err := u.cfg.Accounts.SetPassword(r.Context(), user, password); err != nil {
		u.rs.writeError(w, r, err)
		return
	}
	writeText(w, "success")
}

func (u *userAPI) captchaHTML(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Captcha == nil {
		u.rs.writeError(w, r, errRouteNotFound)
		return
	}
	if u.cfg.CaptchaHTML != "" {
		writeBody(w, "text/html; charset=utf-8", []byte(u.cfg.CaptchaHTML))
		return
	}
	k := url.QueryEscape(u.cfg.CaptchaPublicKey)
	body := `<script type="text/javascript" src="https://www.google.com/recaptcha/api/challenge?k=` + k + `"></script>
<noscript>
<iframe src="https://www.google.com/recaptcha/api/noscript?k=` + k + `" height="300" width="500" frameborder="0"></iframe><br>
<textarea name="recaptcha_challenge_field" rows="3" cols="40"></textarea>
<input type="hidden" name="recaptcha_response_field" value="manual_challenge">
</noscript>
`
	writeBody(w, "text/html; charset=utf-8", []byte(body))
}

// resetForm serves the HTML flow behind the link of a password reset mail:
// GET shows the form (username and key prefilled from the query), POST
// sets the password.
func (u *userAPI) resetForm(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		q := r.URL.Query()
		writeResetPage(w, http.StatusOK, q.Get("username"), q.Get("key"), "")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, u.cfg.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		writeResetPage(w, http.StatusBadRequest, "", "", "The form could not be read.")
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("username"))
	key := strings.TrimSpace(r.PostForm.Get("key"))
	pw, confirm := r.PostForm.Get("password"), r.PostForm.Get("confirm")
	user := name
	if strings.Contains(user, "@") {
		user = AccountName(user)
	}
	// The messages and statuses follow the reference server's form flow:
	// an empty form is malformed (400); a form with a problem in what was
	// filled in gets the form back with the problem named (200).
	switch {
	case name == "" && key == "" && pw == "" && confirm == "":
		writeResetPage(w, http.StatusBadRequest, "", "", "Username not provided.")
		return
	case name == "":
		writeResetPage(w, http.StatusOK, "", key, "Username not provided.")
		return
	case key == "" && onlyUsername(r.PostForm):
		// Step one: only a user name; mail a reset key.
		err := u.cfg.Accounts.RequestPasswordReset(r.Context(), user)
		switch {
		case err == nil:
			writeResetMessage(w, "An e-mail with a reset key has been sent to the address on file. "+
				"Use it within the next "+resetValidity(u.cfg.ResetCodeTTL)+".")
		case errors.Is(err, ErrUserNotFound):
			writeResetPage(w, http.StatusOK, name, "", "We were unable to locate your account.")
		case errors.Is(err, ErrNoEmail):
			writeResetPage(w, http.StatusOK, name, "", "There is no e-mail address on file for this account.")
		case errors.Is(err, ErrTooManyRequests):
			if te, ok := ThrottleHint(err); ok {
				w.Header().Set("Retry-After", Seconds(te.After))
			}
			writeResetPage(w, http.StatusTooManyRequests, name, "", "Too many reset mails were asked for; please try again later.")
		default:
			u.rs.writeError(w, r, err)
		}
		return
	case key == "":
		// Anything besides the user name but no key is a malformed step two.
		writeResetPage(w, http.StatusBadRequest, name, "", "Key not provided.")
		return
	case pw == "":
		writeResetPage(w, http.StatusOK, name, key, "Password not provided.")
		return
	case pw != confirm:
		writeResetPage(w, http.StatusOK, name, key, "The passwords do not match.")
		return
	case !ValidPassword(user, pw):
		writeResetPage(w, http.StatusOK, name, key,
			fmt.Sprintf("The password must be %d to %d bytes long and differ from the user name.", MinPasswordBytes, MaxPasswordBytes))
		return
	}
	err := u.cfg.Accounts.ResetPassword(r.Context(), user, key, pw)
	switch {
	case err == nil:
		writeResetMessage(w, "Password successfully changed.")
	case errors.Is(err, ErrUserNotFound):
		writeResetPage(w, http.StatusOK, name, "", "We were unable to locate your account.")
	case errors.Is(err, ErrBadResetCode):
		writeResetPage(w, http.StatusOK, name, "", "Key does not match with username.")
	default:
		u.rs.writeError(w, r, err)
	}
}

// onlyUsername reports whether the form carries a user name and nothing
// else (fields present but empty do not count), which asks for a reset mail.
func onlyUsername(form url.Values) bool {
	for k, vs := range form {
		if k == "username" {
			continue
		}
		for _, v := range vs {
			if v != "" {
				return false
			}
		}
	}
	return true
}

// resetValidity renders a reset code lifetime for the form ("6 hours").
func resetValidity(d time.Duration) string {
	switch {
	case d <= 0:
		d = DefaultResetCodeTTL
	case d%time.Hour != 0:
		return fmt.Sprintf("%d minutes", int(d/time.Minute))
	}
	if d == time.Hour {
		return "hour"
	}
	return fmt.Sprintf("%d hours", int(d/time.Hour))
}

func writeResetMessage(w http.ResponseWriter, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, resetHead+"<p>"+html.EscapeString(msg)+"</p>\n</body></html>\n")
}

const resetHead = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Reset your Sync password</title></head>
<body>
<h1>Reset your Sync password</h1>
`

func writeResetPage(w http.ResponseWriter, status int, user, key, msg string) {
	var b strings.Builder
	b.WriteString(resetHead)
	if msg != "" {
		b.WriteString(`<p class="error">` + html.EscapeString(msg) + "</p>\n")
	}
	b.WriteString(`<form method="post" action="/weave-password-reset">
<p><label>User name <input type="text" name="username" value="` + html.EscapeString(user) + `"></label></p>
<p><label>Reset key <input type="text" name="key" value="` + html.EscapeString(key) + `"></label></p>
<p><label>New password <input type="password" name="password"></label></p>
<p><label>Confirm password <input type="password" name="confirm"></label></p>
<p><input type="submit" value="Change password"></p>
</form>
</body></html>
`)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, b.String())
}

// NewHandler serves the user API and the storage API on one port, as
// `hce serve` does: paths under /user/ and /misc/ and /weave-password-reset
// go to user, everything else to storage.
func NewHandler(storage, user http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasPrefix(p, "//") { // see storageHandler.ServeHTTP
			p = "/" + strings.TrimLeft(p, "/")
			r = withPath(r, p)
		}
		if strings.HasPrefix(p, "/user/") || strings.HasPrefix(p, "/misc/") ||
			p == "/weave-password-reset" || p == "/weave-password-reset/" {
			user.ServeHTTP(w, r)
			return
		}
		storage.ServeHTTP(w, r)
	})
}
