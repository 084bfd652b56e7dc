package couch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
)

// handler serves the CouchDB endpoint.
type handler struct {
	cfg   Config
	store Store
	auth  api.Authenticator
	log   *slog.Logger
}

// NewHandler returns the CouchDB endpoint described in the package doc. It
// is safe for concurrent use. Long-lived _changes requests end when the
// client goes away, when their timeout passes or when the store closes.
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &handler{cfg: cfg, store: cfg.Store, auth: cfg.Auth, log: cfg.Logger}, nil
}

// httpError is an answer in CouchDB's error shape.
type httpError struct {
	status        int
	code, reason  string
	cause         error         // logged for 5xx
	authChallenge bool          // add WWW-Authenticate
	retryAfter    time.Duration // Retry-After of a 429
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.reason) }

func errorf(status int, code, format string, a ...any) *httpError {
	return &httpError{status: status, code: code, reason: fmt.Sprintf(format, a...)}
}

var (
	errNotFound         = errorf(http.StatusNotFound, "not_found", "missing")
	errMethodNotAllowed = errorf(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed here")
)

// ServeHTTP routes a request. Paths are read in their escaped form, so a
// document id may contain an encoded '/'.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	rest, ok := strings.CutPrefix(p, h.cfg.Prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		h.fail(w, r, errNotFound)
		return
	}
	rest = strings.TrimPrefix(rest, "/")
	if rest == "" {
		h.root(w, r)
		return
	}
	dbEsc, sub, _ := strings.Cut(rest, "/")
	db, err := url.PathUnescape(dbEsc)
	if err != nil || db == "" {
		h.fail(w, r, errorf(http.StatusBadRequest, "illegal_database_name", "bad database name %q", dbEsc))
		return
	}
	if strings.HasPrefix(db, "_") {
		// Server-wide endpoints (_all_dbs, _session, _up, ...) are not served.
		h.fail(w, r, errNotFound)
		return
	}
	if err := h.authenticate(r, db); err != nil {
		h.fail(w, r, err)
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
	}
	sub, err = url.PathUnescape(sub)
	if err != nil {
		h.fail(w, r, errorf(http.StatusBadRequest, "bad_request", "bad document path"))
		return
	}
	switch {
	case sub == "":
		h.database(w, r, db)
	case strings.HasPrefix(sub, "_local/"):
		h.local(w, r, db, strings.TrimPrefix(sub, "_local/"))
	case sub == "_changes":
		h.changes(w, r, db)
	case sub == "_revs_diff":
		h.post(w, r, db, h.revsDiff)
	case sub == "_bulk_get":
		h.post(w, r, db, h.bulkGet)
	case sub == "_bulk_docs":
		h.post(w, r, db, h.bulkDocs)
	case sub == "_ensure_full_commit":
		h.post(w, r, db, h.ensureFullCommit)
	case strings.HasPrefix(sub, "_"):
		h.fail(w, r, errNotFound)
	default:
		h.document(w, r, db, sub)
	}
}

// root answers GET / (no authentication: it only names the server).
func (h *handler) root(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.fail(w, r, errMethodNotAllowed)
		return
	}
	h.json(w, http.StatusOK, map[string]any{
		"couchdb": "Welcome",
		"uuid":    h.store.UUID(),
		"version": "3.3.0",
		"vendor":  map[string]string{"name": "hce"},
	})
}

// authenticate checks the request's credentials for the database user the
// way the Weave storage API does. Basic credentials of another (valid)
// user get 403: they are good, but not for this database.
func (h *handler) authenticate(r *http.Request, db string) error {
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return h.unauthorized("authentication required")
	}
	c, err := api.ParseAuthorization(hdr)
	if err != nil {
		return h.unauthorized(err.Error())
	}
	if c.Scheme == "basic" && c.User != db {
		if err := h.auth.Authenticate(r.Context(), c.User, c); err == nil {
			return errorf(http.StatusForbidden, "forbidden", "a user may only access their own database")
		} else if !isAuthErr(err) {
			return h.authFailure(c.User, err)
		}
		return h.unauthorized("name or password is incorrect")
	}
	if err := h.auth.Authenticate(r.Context(), db, c); err != nil {
		if isAuthErr(err) {
			return h.unauthorized("name or password is incorrect")
		}
		return h.authFailure(db, err)
	}
	return nil
}

func isAuthErr(err error) bool {
	return errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrUserNotFound)
}

func (h *handler) unauthorized(reason string) *httpError {
	e := errorf(http.StatusUnauthorized, "unauthorized", "%s", reason)
	e.authChallenge = true
	return e
}

func (h *handler) authFailure(user string, err error) *httpError {
	if te, ok := api.ThrottleHint(err); ok {
		// Too many failed logins: the client waits (not a 401, which
		// would discard a password that may be right).
		e := errorf(http.StatusTooManyRequests, "too_many_requests", "too many failed logins; retry later")
		e.retryAfter = te.After
		return e
	}
	e := errorf(http.StatusServiceUnavailable, "service_unavailable", "cannot check credentials now")
	e.cause = fmt.Errorf("authenticate %q: %w", user, err)
	return e
}

// storeError maps a store failure to an answer.
func storeError(err error) *httpError {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, node.ErrDocNotFound):
		return errNotFound
	case errors.Is(err, node.ErrBadName):
		return errorf(http.StatusBadRequest, "illegal_database_name", "invalid database name")
	case errors.Is(err, node.ErrClosed):
		e := errorf(http.StatusServiceUnavailable, "service_unavailable", "the store is closed")
		e.cause = err
		return e
	case errors.Is(err, node.ErrNotServing):
		// A write committed here after this node stopped being a current
		// member of the user's set: not acknowledged; the client asks the
		// directory for the user's node.
		e := errorf(http.StatusUnauthorized, "unauthorized", "this node no longer serves the database; ask the directory for its node")
		e.cause = err
		return e
	case errors.Is(err, node.ErrNotAcknowledged):
		e := errorf(http.StatusServiceUnavailable, "service_unavailable", "the write is not acknowledged yet; retry it")
		e.cause = err
		return e
	case errors.Is(err, api.ErrUnavailable):
		e := errorf(http.StatusServiceUnavailable, "service_unavailable", "temporarily unavailable")
		e.cause = err
		return e
	}
	e := errorf(http.StatusInternalServerError, "internal_server_error", "store failure")
	e.cause = err
	return e
}

// fail writes err as a CouchDB error answer.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = storeError(err)
	}
	// A server failure is logged once, with the request id the client
	// sees (X-Request-Id) as its crash id; an unavailable dependency is a
	// warning; answers without a cause (501 for an edit the endpoint does
	// not serve) are the client's business, not the log's.
	if he.status >= 500 && he.cause != nil {
		level := slog.LevelError
		if he.status == http.StatusServiceUnavailable {
			level = slog.LevelWarn
		}
		h.log.Log(r.Context(), level, "couch request failed", "method", r.Method, "path", r.URL.Path, "status", he.status,
			"crash_id", w.Header().Get("X-Request-Id"), "err", he.cause)
	}
	if he.authChallenge {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+h.cfg.Realm+`"`)
	}
	if he.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int((h.cfg.RetryAfter+time.Second-1)/time.Second)))
	}
	if he.retryAfter > 0 {
		w.Header().Set("Retry-After", api.Seconds(he.retryAfter))
	}
	h.json(w, he.status, map[string]string{"error": he.code, "reason": he.reason})
}

// json writes v as the JSON answer.
func (h *handler) json(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.log.Error("couch: encoding answer", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal_server_error","reason":"encoding"}`)
	}
	h.raw(w, status, b)
}

func (h *handler) raw(w http.ResponseWriter, status int, b []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "must-revalidate")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte("\n"))
}

// readJSON reads a request body into v, checking its media type and size.
func readJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "bad_content_type", "Content-Type must be application/json")
		}
	}
	if r.Body == nil {
		return errorf(http.StatusBadRequest, "bad_request", "missing request body")
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, "too_large", "the request body exceeds %d bytes", mbe.Limit)
		}
		return errorf(http.StatusBadRequest, "bad_request", "reading the body: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return errorf(http.StatusBadRequest, "bad_request", "invalid JSON: %v", err)
	}
	return nil
}

// post runs fn for POST requests only.
func (h *handler) post(w http.ResponseWriter, r *http.Request, db string, fn func(http.ResponseWriter, *http.Request, string) error) {
	if r.Method != http.MethodPost {
		h.fail(w, r, errMethodNotAllowed)
		return
	}
	if err := fn(w, r, db); err != nil {
		h.fail(w, r, err)
	}
}

// database serves GET/HEAD/PUT {db}.
func (h *handler) database(w http.ResponseWriter, r *http.Request, db string) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		seq, err := h.store.UpdateSeq(r.Context(), db)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.json(w, http.StatusOK, map[string]any{
			"db_name":              db,
			"update_seq":           seq,
			"committed_update_seq": seq,
			"instance_start_time":  "0",
			"purge_seq":            0,
			"disk_format_version":  8,
		})
	case http.MethodPut:
		// Every user's database exists; CouchDB answers 412 to a PUT of an
		// existing database and PouchDB's setup accepts that.
		h.fail(w, r, errorf(http.StatusPreconditionFailed, "file_exists", "The database could not be created, the file already exists."))
	default:
		h.fail(w, r, errMethodNotAllowed)
	}
}

// ensureFullCommit is a no-op: every write is synced when it returns.
func (h *handler) ensureFullCommit(w http.ResponseWriter, r *http.Request, db string) error {
	h.json(w, http.StatusCreated, map[string]any{"ok": true, "instance_start_time": "0"})
	return nil
}

// streamWriter writes a 200 JSON answer element by element, so a request
// holds one element at a time whatever the answer's size. The status line
// and the opening bytes go out with the first element (or at the end): an
// error before any element is still answered as an error.
type streamWriter struct {
	w        http.ResponseWriter
	open     []byte
	n        int
	started  bool
	writeErr error
}

func newStreamWriter(w http.ResponseWriter, open []byte) *streamWriter {
	return &streamWriter{w: w, open: open}
}

func (s *streamWriter) write(b []byte) error {
	if s.writeErr == nil {
		_, s.writeErr = s.w.Write(b)
	}
	return s.writeErr
}

func (s *streamWriter) start() error {
	if s.started {
		return s.writeErr
	}
	s.started = true
	hd := s.w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "must-revalidate")
	s.w.WriteHeader(http.StatusOK)
	return s.write(s.open)
}

// element writes v, JSON-encoded, after a comma unless it is the first.
func (s *streamWriter) element(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.start(); err != nil {
		return err
	}
	if s.n > 0 {
		b = append([]byte{','}, b...)
	}
	s.n++
	return s.write(b)
}

// end writes the closing bytes and a newline. A failed write is not an
// error to answer: the client is gone.
func (s *streamWriter) end(close []byte) error {
	_ = s.start()
	_ = s.write(append(close, '\n'))
	return nil
}

// fail returns err for the caller to answer when nothing was written yet;
// after the status line it cuts the connection (logging a store failure,
// not a client that went away), so that the client cannot take a
// truncated answer for a whole one.
func (s *streamWriter) fail(h *handler, r *http.Request, err error) error {
	if !s.started {
		return err
	}
	if s.writeErr == nil {
		h.log.Error("couch: answer failed mid-stream", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	panic(http.ErrAbortHandler)
}
