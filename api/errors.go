package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Code is a Weave response code, sent as the bare JSON number body of an
// error response (weave-api.md 3.3).
type Code int

// The Weave response codes.
const (
	CodeIllegalMethod     Code = 1  // illegal method/protocol
	CodeBadCaptcha        Code = 2  // incorrect or missing captcha
	CodeBadUsername       Code = 3  // invalid or missing username
	CodeCannotOverwrite   Code = 4  // user exists; DELETE storage unconfirmed
	CodeUserMismatch      Code = 5  // user id does not match account in path
	CodeBadJSON           Code = 6  // JSON parse failure
	CodeMissingPassword   Code = 7  // missing password field
	CodeInvalidWBO        Code = 8  // invalid Weave Basic Object
	CodeWeakPassword      Code = 9  // password not strong enough
	CodeBadResetCode      Code = 10 // invalid or missing password reset code
	CodeUnsupported       Code = 11 // unsupported function
	CodeNoEmail           Code = 12 // no e-mail address on file, or malformed
	CodeInvalidCollection Code = 13 // invalid collection
	CodeOverQuota         Code = 14 // user over quota
	CodeEmailMismatch     Code = 15 // e-mail does not match the user name
	CodeUpgradeRequired   Code = 16 // client upgrade required
	CodeSizeLimitExceeded Code = 17 // size limit exceeded
)

// Retry hints: how long a client should wait before it retries after a
// 503, by cause. Every 503 carries one as Retry-After in whole seconds
// (weave-api.md 3.2); a Firefox client stops syncing for that long, so
// only planned maintenance says more than a few seconds.
const (
	// RetryBlip is the hint of a 503 whose error carries none: a
	// transient failure (a backend timeout, a lost connection, a
	// directory that did not answer).
	RetryBlip = 10 * time.Second
	// RetryElection is the hint of an answer that needs a raft leader
	// while none is known: elections take a few seconds.
	RetryElection = 5 * time.Second
	// RetryBusy is the hint of a request shed because the node, or the
	// user, is at its bound of requests in flight.
	RetryBusy = 10 * time.Second
	// RetryMaintenance is the hint of planned downtime an operator
	// announces; the only long one.
	RetryMaintenance = 30 * time.Minute
)

// defaultRetryAfterSecs is the Retry-After of a 503 whose error carries
// no hint, unless configured: RetryBlip.
const defaultRetryAfterSecs = int(RetryBlip / time.Second)

// RetryError is an error that says when the client should come back: it
// is answered with 503 and Retry-After: After (rounded up to whole
// seconds, at least 1) and, when Backoff is set (the server sheds load),
// X-Weave-Backoff with the same value. It matches ErrUnavailable and
// Err with errors.Is. Build it with Unavailable or Busy.
type RetryError struct {
	// Err is the cause; nil means ErrUnavailable alone.
	Err error
	// After is how long the client should wait.
	After time.Duration
	// Backoff also sends X-Weave-Backoff: the server is overloaded.
	Backoff bool
}

// Error names the cause and the hint.
func (e *RetryError) Error() string {
	cause := ErrUnavailable.Error()
	if e.Err != nil {
		cause = e.Err.Error()
	}
	return cause + " (retry after " + e.After.String() + ")"
}

// Unwrap returns the cause and ErrUnavailable.
func (e *RetryError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrUnavailable}
	}
	return []error{e.Err, ErrUnavailable}
}

// Unavailable returns err (nil: ErrUnavailable) as a 503 whose
// Retry-After is after: use the Retry* hints.
func Unavailable(err error, after time.Duration) error {
	return &RetryError{Err: err, After: after}
}

// Busy returns err (nil: ErrUnavailable) as a 503 for a shed request:
// Retry-After and X-Weave-Backoff of after (RetryBusy unless the cause
// says otherwise).
func Busy(err error, after time.Duration) error {
	return &RetryError{Err: err, After: after, Backoff: true}
}

// RetryHint returns the first RetryError in err's chain, if any.
func RetryHint(err error) (*RetryError, bool) {
	var re *RetryError
	if errors.As(err, &re) {
		return re, true
	}
	return nil, false
}

// Seconds renders d as a whole number of seconds for Retry-After and
// X-Weave-Backoff: rounded up, at least 1.
func Seconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// ErrTooManyRequests is matched (errors.Is) by every *ThrottleError: a
// client exceeded a limit on failed logins or password-reset mails and
// must wait.
var ErrTooManyRequests = errors.New("api: too many requests")

// ThrottleError refuses a request because its client, or the account it
// names, exceeded a limit (failed logins, reset mails). It is answered
// with 429 and Retry-After: After (whole seconds, at least 1). It is
// neither ErrUnauthorized nor ErrUnavailable: a client told 401 would
// discard a password that may be right, and 503 would blame the server.
// Build it with TooManyRequests.
type ThrottleError struct {
	// Err is the cause (which limit); nil means ErrTooManyRequests alone.
	Err error
	// After is how long the client should wait.
	After time.Duration
}

// Error names the cause and the wait.
func (e *ThrottleError) Error() string {
	cause := ErrTooManyRequests.Error()
	if e.Err != nil {
		cause = e.Err.Error()
	}
	return cause + " (retry after " + e.After.String() + ")"
}

// Unwrap returns the cause and ErrTooManyRequests.
func (e *ThrottleError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrTooManyRequests}
	}
	return []error{e.Err, ErrTooManyRequests}
}

// TooManyRequests returns err (nil: ErrTooManyRequests) as a 429 whose
// Retry-After is after.
func TooManyRequests(err error, after time.Duration) error {
	return &ThrottleError{Err: err, After: after}
}

// ThrottleHint returns the first ThrottleError in err's chain, if any.
func ThrottleHint(err error) (*ThrottleError, bool) {
	var te *ThrottleError
	if errors.As(err, &te) {
		return te, true
	}
	return nil, false
}

// HTTPError is an error with a fixed HTTP answer: a status and, when Code
// is non-zero, a Weave code body.
type HTTPError struct {
	Status int
	Code   Code
}

// Error describes the status and code.
func (e *HTTPError) Error() string {
	s := "api: HTTP " + strconv.Itoa(e.Status)
	if e.Code != 0 {
		s += " code " + strconv.Itoa(int(e.Code))
	}
	return s
}

// weaveErr returns a 400 carrying a Weave code.
func weaveErr(c Code) error { return &HTTPError{Status: http.StatusBadRequest, Code: c} }

// Errors that only the handlers produce.
var (
	errMethodNotAllowed = &HTTPError{Status: http.StatusMethodNotAllowed}
	errRouteNotFound    = &HTTPError{Status: http.StatusNotFound}
	errBadRequest       = &HTTPError{Status: http.StatusBadRequest}
	errBodyTooLarge     = &HTTPError{Status: http.StatusRequestEntityTooLarge}
	// errNoCredentials is an ErrUnauthorized for a request without an
	// Authorization header: its 401 carries the Basic challenge.
	errNoCredentials = &noCredsError{}
)

type noCredsError struct{}

func (*noCredsError) Error() string { return "api: no credentials" }
func (*noCredsError) Unwrap() error { return ErrUnauthorized }

// responder turns errors into HTTP answers; it is the single place where
// that happens (see writeError).
type responder struct {
	log        *slog.Logger
	retryAfter string
}

func newResponder(log *slog.Logger, retryAfter int) responder {
	if retryAfter <= 0 {
		retryAfter = defaultRetryAfterSecs
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return responder{log: log, retryAfter: strconv.Itoa(retryAfter)}
}

var codeBodies = func() (t [CodeSizeLimitExceeded + 1][]byte) {
	for i := range t {
		t[i] = []byte(strconv.Itoa(i))
	}
	return t
}()

// writeError answers err:
//   - *HTTPError: its status, with the bare Weave code as body when set;
//   - ErrBadQuery, a malformed header: 400, empty body;
//   - ErrMalformedJSON: 400 6; a WBOError: 400 8;
//   - ErrNotFound, ErrUserNotFound: 404; ErrPreconditionFailed: 412;
//   - ErrOverQuota: 400 14; ErrUserExists: 400 4; ErrNoEmail: 400 12;
//     ErrBadResetCode: 400 10;
//   - a *ThrottleError (ErrTooManyRequests): 429 with Retry-After, empty
//     body;
//   - ErrRegistrationClosed, ErrBadInvite: 403, empty body;
//   - ErrUnauthorized: 401, with WWW-Authenticate: Basic realm="Sync"
//     when the request had no credentials;
//   - anything else (ErrUnavailable, backend failures): 503 with
//     Retry-After and a JSON string body naming a crash id that is logged
//     with the error. Retry-After is the error's hint (RetryError) or
//     the configured default (RetryBlip); a RetryError with Backoff adds
//     X-Weave-Backoff. The crash id is the request id the HTTP platform
//     put in the X-Request-Id response header, when there is one, so the
//     error line, the access log line and the client's answer share it.
//     Expected unavailability (ErrUnavailable, a hint, a backend call
//     that timed out) is logged as a warning, a request whose client went
//     away at debug level, anything else as an error.
func (rs responder) writeError(w http.ResponseWriter, r *http.Request, err error) {
	h := w.Header()
	var he *HTTPError
	var we WBOError
	var te *ThrottleError
	switch {
	case errors.As(err, &he):
		rs.send(w, he.Status, he.Code)
	case errors.As(err, &te):
		h.Set("Retry-After", Seconds(te.After))
		rs.send(w, http.StatusTooManyRequests, 0)
	case errors.Is(err, ErrRegistrationClosed), errors.Is(err, ErrBadInvite):
		rs.send(w, http.StatusForbidden, 0)
	case errors.Is(err, ErrBadQuery):
		rs.send(w, http.StatusBadRequest, 0)
	case errors.Is(err, ErrMalformedJSON):
		rs.send(w, http.StatusBadRequest, CodeBadJSON)
	case errors.As(err, &we):
		rs.send(w, http.StatusBadRequest, CodeInvalidWBO)
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUserNotFound):
		rs.send(w, http.StatusNotFound, 0)
	case errors.Is(err, ErrPreconditionFailed):
		rs.send(w, http.StatusPreconditionFailed, 0)
	case errors.Is(err, ErrOverQuota):
		rs.send(w, http.StatusBadRequest, CodeOverQuota)
	case errors.Is(err, ErrUserExists):
		rs.send(w, http.StatusBadRequest, CodeCannotOverwrite)
	case errors.Is(err, ErrNoEmail):
		rs.send(w, http.StatusBadRequest, CodeNoEmail)
	case errors.Is(err, ErrBadResetCode):
		rs.send(w, http.StatusBadRequest, CodeBadResetCode)
	case errors.Is(err, ErrUnauthorized):
		if r.Header.Get("Authorization") == "" {
			h.Set("WWW-Authenticate", `Basic realm="Sync"`)
		}
		rs.send(w, http.StatusUnauthorized, 0)
	default:
		crash := h.Get("X-Request-Id")
		if crash == "" {
			var id [8]byte
			_, _ = rand.Read(id[:])
			crash = hex.EncodeToString(id[:])
		}
		level := slog.LevelError
		switch {
		case r.Context().Err() != nil:
			// The client went away (or its request timed out): nobody
			// reads this answer, and it says nothing about the server.
			level = slog.LevelDebug
		case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
			// Expected unavailability: a backend that is slow or away.
			level = slog.LevelWarn
		}
		rs.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "crash_id", crash, "err", err)
		retry := rs.retryAfter
		if re, ok := RetryHint(err); ok {
			retry = Seconds(re.After)
			if re.Backoff {
				h.Set("X-Weave-Backoff", retry)
			}
		}
		h.Set("Retry-After", retry)
		h.Set("Content-Type", "application/json")
		body := AppendJSONString(nil, "application error: crash id "+crash)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(body)
	}
}

// send writes status with an optional Weave code body. Error responses
// carry no X-Weave-Timestamp (1.1 sends it on successful responses only).
func (rs responder) send(w http.ResponseWriter, status int, c Code) {
	h := w.Header()
	h.Del("X-Weave-Timestamp")
	if c == 0 {
		h.Set("Content-Length", "0")
		w.WriteHeader(status)
		return
	}
	var body []byte
	if c > 0 && int(c) < len(codeBodies) {
		body = codeBodies[c]
	} else {
		body = strconv.AppendInt(nil, int64(c), 10)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
