package api

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/gorilla/mux"
)

// StorageConfig configures the storage API handler.
type StorageConfig struct {
	// Store serves the records. Required.
	Store Store
	// Auth checks credentials. Required.
	Auth Authenticator
	// Logger receives backend failures; nil discards.
	Logger *slog.Logger
	// MaxBodyBytes caps a request body; larger bodies get 413. Zero means
	// the default, 20 MiB.
	MaxBodyBytes int64
	// MaxPayloadBytes caps one WBO's payload (larger: 400 with code 8, or
	// the record fails in a POST). Zero means the protocol's limit,
	// MaxPayloadBytes (256 KiB), which is also the most it may be: the
	// decoders and replication enforce that limit everywhere.
	MaxPayloadBytes int
	// MaxPostRecords and MaxPostBytes bound what one POST stores: records
	// past the first MaxPostRecords get "retry wbo", records that would
	// bring the payload bytes to MaxPostBytes or more get "retry bytes".
	// Zero means BatchMaxCount (100) and BatchMaxBytes (1 MiB).
	MaxPostRecords int
	MaxPostBytes   int
	// RetryAfter is the Retry-After of 503 answers whose error carries no
	// retry hint (RetryError), in seconds. Zero means the default, 10
	// (RetryBlip).
	RetryAfter int
	// Backoff, when set, is asked on every request for the X-Weave-Backoff
	// value in seconds; 0 sends no header. It must be safe for concurrent
	// use and cheap.
	Backoff func() int
}

// Defaults of StorageConfig.
const (
	DefaultMaxBodyBytes = 20 << 20
	DefaultRetryAfter   = defaultRetryAfterSecs
)

// DefaultStorageConfig returns a StorageConfig with the defaults filled in
// (Store and Auth still to be set).
func DefaultStorageConfig() StorageConfig {
	return StorageConfig{MaxBodyBytes: DefaultMaxBodyBytes, RetryAfter: DefaultRetryAfter}
}

// ErrBadConfig is wrapped by the Validate methods of this package.
var ErrBadConfig = errors.New("api: invalid configuration")

// Validate reports a missing Store or Authenticator or a negative limit.
func (c StorageConfig) Validate() error {
	switch {
	case c.Store == nil:
		return fmt.Errorf("%w: Store is nil", ErrBadConfig)
	case c.Auth == nil:
		return fmt.Errorf("%w: Auth is nil", ErrBadConfig)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("%w: MaxBodyBytes %d < 0", ErrBadConfig, c.MaxBodyBytes)
	case c.MaxPayloadBytes < 0 || c.MaxPayloadBytes > MaxPayloadBytes:
		return fmt.Errorf("%w: MaxPayloadBytes %d outside 0..%d", ErrBadConfig, c.MaxPayloadBytes, MaxPayloadBytes)
	case c.MaxPostRecords < 0 || c.MaxPostBytes < 0:
		return fmt.Errorf("%w: MaxPostRecords %d or MaxPostBytes %d < 0", ErrBadConfig, c.MaxPostRecords, c.MaxPostBytes)
	case c.RetryAfter < 0:
		return fmt.Errorf("%w: RetryAfter %d < 0", ErrBadConfig, c.RetryAfter)
	}
	return nil
}

type storageHandler struct {
	store   Store
	auth    Authenticator
	maxBody int64
	backoff func() int
	rs      responder
	router  *mux.Router
	// direct holds each storage route's handlers by method: ServeHTTP
	// calls them, or answers 405 for a method the path does not take,
	// without the router (which answers the heartbeat and 404), so a
	// storage request is neither matched against routes in turn nor
	// copied to carry mux's variables and route in its context.
	direct [numRoutes][]methodHandler

	// maxPayload, maxPostRecords and maxPostBytes are the configured
	// limits (StorageConfig), defaults filled in.
	maxPayload, maxPostRecords, maxPostBytes int
}

// userPattern is the mux template of a user name in a path (the user
// API's routes; the storage API's are parsed by parseStoragePath).
const userPattern = `{user:[a-zA-Z0-9._-]+}`

// NewStorageHandler returns the Weave 1.1 storage API (weave-api.md 2, 3)
// under /1.0/, /1/ and /1.1/, plus GET|HEAD /__heartbeat__. The handler is
// safe for concurrent use.
func NewStorageHandler(cfg StorageConfig) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	h := &storageHandler{
		store:          cfg.Store,
		auth:           cfg.Auth,
		maxBody:        cfg.MaxBodyBytes,
		maxPayload:     cmp.Or(cfg.MaxPayloadBytes, MaxPayloadBytes),
		maxPostRecords: cmp.Or(cfg.MaxPostRecords, BatchMaxCount),
		maxPostBytes:   cmp.Or(cfg.MaxPostBytes, BatchMaxBytes),
		backoff:        cfg.Backoff,
		rs:             newResponder(cfg.Logger, cfg.RetryAfter),
	}
	r := mux.NewRouter().SkipClean(true)
	get := []string{http.MethodGet, http.MethodHead}
	route := func(rt storageRoute, fn userHandler, methods ...string) {
		for _, m := range methods {
			h.direct[rt] = append(h.direct[rt], methodHandler{m, fn})
		}
	}
	route(routeInfoCollections, h.infoCollections, get...)
	route(routeCollection, h.getCollection, get...)
	route(routeCollection, h.postCollection, http.MethodPost, http.MethodPut)
	route(routeItem, h.getItem, get...)
	route(routeItem, h.putItem, http.MethodPut)
	route(routeItem, h.deleteItem, http.MethodDelete)
	route(routeCollection, h.deleteCollection, http.MethodDelete)
	route(routeStorage, h.deleteStorage, http.MethodDelete)
	route(routeInfoCounts, h.infoCounts, get...)
	route(routeInfoUsage, h.infoUsage, get...)
	route(routeInfoQuota, h.infoQuota, get...)
	r.HandleFunc("/__heartbeat__", h.heartbeat).Methods(get...)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.rs.writeError(w, req, errRouteNotFound)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.rs.writeError(w, req, errMethodNotAllowed)
	})
	h.router = r
	return h, nil
}

// ServeHTTP strips trailing slashes (weave-api.md 2) and routes.
func (h *storageHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.backoff != nil {
		if s := h.backoff(); s > 0 {
			w.Header().Set("X-Weave-Backoff", strconv.Itoa(s))
		}
	}
	p := r.URL.Path
	if strings.HasPrefix(p, "//") {
		// Old clients join the node URL (which ends in "/") and "/1.0/..."
		// into "//1.0/..."; the 1.0 server accepted that.
		p = "/" + strings.TrimLeft(p, "/")
		r = withPath(r, p)
	}
	if len(p) > 1 && p[len(p)-1] == '/' {
		// A write to ".../storage/" names an empty collection: 404.
		if strings.HasSuffix(p, "/storage/") && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
			h.rs.writeError(w, r, errRouteNotFound)
			return
		}
		r = withPath(r, strings.TrimRight(p, "/"))
	}
	if sp := parseStoragePath(r.URL.Path); sp.route != routeNone {
		for _, mh := range h.direct[sp.route] {
			if mh.method == r.Method {
				h.serveAuthed(w, r, mh.fn, sp)
				return
			}
		}
		h.rs.writeError(w, r, errMethodNotAllowed)
		return
	}
	h.router.ServeHTTP(w, r)
}

// withPath returns a shallow copy of r with another URL path.
func withPath(r *http.Request, p string) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path = p
	u.RawPath = ""
	r2.URL = &u
	if p == "" {
		u.Path = "/"
	}
	return r2
}

type userHandler func(w http.ResponseWriter, r *http.Request, user string, vars storagePath)

type methodHandler struct {
	method string
	fn     userHandler
}

// serveAuthed authenticates the user of path vars (weave-api.md 3.1),
// then calls fn.
func (h *storageHandler) serveAuthed(w http.ResponseWriter, r *http.Request, fn userHandler, vars storagePath) {
	if err := h.authenticate(r, vars.user); err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	fn(w, r, vars.user, vars)
}

func (h *storageHandler) authenticate(r *http.Request, pathUser string) error {
	hdr := r.Header.Get("Authorization")
	if hdr == "" {
		return errNoCredentials
	}
	c, err := ParseAuthorization(hdr)
	if err != nil {
		return err
	}
	if c.Scheme == "basic" && c.User != pathUser {
		return fmt.Errorf("%w: user does not match path", ErrUnauthorized)
	}
	if err := h.auth.Authenticate(r.Context(), pathUser, c); err != nil {
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrUserNotFound) {
			return ErrUnauthorized
		}
		return fmt.Errorf("authenticate %q: %w", pathUser, err)
	}
	return nil
}

// ParseAuthorization parses an Authorization header: Basic credentials
// (base64 of user:password, split at the first colon, both UTF-8; a user
// name with '@' is turned into its account name with AccountName) or a
// Bearer token. Anything else gives an error wrapping ErrUnauthorized.
func ParseAuthorization(header string) (Credentials, error) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok {
		return Credentials{}, fmt.Errorf("%w: malformed Authorization header", ErrUnauthorized)
	}
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			if raw, err = base64.RawStdEncoding.DecodeString(rest); err != nil {
				return Credentials{}, fmt.Errorf("%w: bad base64 credentials", ErrUnauthorized)
			}
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok || user == "" || !utf8.ValidString(user) || !utf8.ValidString(pass) {
			return Credentials{}, fmt.Errorf("%w: malformed Basic credentials", ErrUnauthorized)
		}
		if strings.Contains(user, "@") {
			user = AccountName(user)
		}
		return Credentials{Scheme: "basic", User: user, Password: pass}, nil
	case strings.EqualFold(scheme, "bearer"):
		if rest == "" {
			return Credentials{}, fmt.Errorf("%w: empty bearer token", ErrUnauthorized)
		}
		return Credentials{Scheme: "bearer", Token: rest}, nil
	}
	return Credentials{}, fmt.Errorf("%w: unsupported scheme", ErrUnauthorized)
}

func setStamp(h http.Header, ts Stamp) {
	h["X-Weave-Timestamp"] = []string{ts.String()}
}

func setRecords(h http.Header, n int) {
	h["X-Weave-Records"] = []string{strconv.Itoa(n)}
}

// appendKB appends bytes/1024 as a JSON float ("0.4912109375", "2.0").
func appendKB(b []byte, bytes int64) []byte {
	at := len(b)
	b = strconv.AppendFloat(b, float64(bytes)/1024, 'f', -1, 64)
	if !slices.Contains(b[at:], '.') {
		b = append(b, '.', '0')
	}
	return b
}

func (h *storageHandler) heartbeat(w http.ResponseWriter, r *http.Request) {
	if err := h.store.Healthy(r.Context()); err != nil {
		h.rs.writeError(w, r, fmt.Errorf("heartbeat: %w", err))
		return
	}
	writeBody(w, "text/plain; charset=utf-8", []byte("OK"))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// writeObject writes a JSON object of m with sorted keys, values encoded by enc.
func writeObject[V any](w http.ResponseWriter, m map[string]V, now Stamp, records bool, enc func([]byte, V) []byte) {
	bp := getBuf()
	b := append((*bp)[:0], '{')
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, k)
		b = append(b, ':')
		b = enc(b, m[k])
	}
	b = append(b, '}')
	hd := w.Header()
	setStamp(hd, now)
	if records {
		setRecords(hd, len(m))
	}
	writeBody(w, "application/json", b)
	*bp = b
	putBuf(bp)
}

func (h *storageHandler) infoCollections(w http.ResponseWriter, r *http.Request, user string, _ storagePath) {
	m, now, err := h.store.CollectionTimestamps(r.Context(), user)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	writeObject(w, m, now, true, func(b []byte, s Stamp) []byte { return s.AppendTo(b) })
}

func (h *storageHandler) infoCounts(w http.ResponseWriter, r *http.Request, user string, _ storagePath) {
	m, now, err := h.store.CollectionCounts(r.Context(), user)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	writeObject(w, m, now, true, func(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) })
}

func (h *storageHandler) infoUsage(w http.ResponseWriter, r *http.Request, user string, _ storagePath) {
	m, now, err := h.store.CollectionUsage(r.Context(), user)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	writeObject(w, m, now, false, appendKB)
}

func (h *storageHandler) infoQuota(w http.ResponseWriter, r *http.Request, user string, _ storagePath) {
	used, limit, now, err := h.store.Quota(r.Context(), user)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	b := append(make([]byte, 0, 48), '[')
	b = appendKB(b, used)
	b = append(b, ',')
	if limit > 0 {
		b = appendKB(b, limit)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, ']')
	setStamp(w.Header(), now)
	writeBody(w, "application/json", b)
}

// getCollection streams GET storage/{coll}: the store counts the records
// (X-Weave-Records precedes the body), then emits them one by one into a
// listWriter, so a request holds one record and a bounded buffer whatever
// the collection's size. A failure of the store after the status line went
// out cuts the connection (as api/sync15 does), so that a client cannot
// take a truncated list for a whole one.
func (h *storageHandler) getCollection(w http.ResponseWriter, r *http.Request, user string, vars storagePath) {
	q, err := ParseQuery(r.URL.Query(), false)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	coll := vars.coll
	l := newListWriter(w, NegotiateFormat(r.Header.Get("Accept")), q.Full)
	defer l.release()
	var want, emitted int
	var writeErr error
	err = h.store.GetCollection(r.Context(), user, coll, q, func(n int, now Stamp) error {
		want = n
		hd := w.Header()
		setStamp(hd, now)
		setRecords(hd, n)
		return nil
	}, func(rec *WBO) error {
		if emitted >= want {
			return fmt.Errorf("store emitted more than the %d records it counted", want)
		}
		emitted++
		if err := l.add(rec); err != nil {
			writeErr = err
			return err
		}
		return nil
	})
	if err == nil && emitted != want {
		err = fmt.Errorf("store emitted %d of the %d records it counted", emitted, want)
	}
	if err == nil {
		err = l.finish()
		if err != nil {
			writeErr = err
		}
	}
	switch {
	case err == nil:
	case writeErr != nil:
		// The client went away or stopped reading: nothing to answer.
		panic(http.ErrAbortHandler)
	case !l.sent:
		w.Header().Del("X-Weave-Records")
		h.rs.writeError(w, r, err)
	default:
		// The status is sent: cut the connection.
		h.rs.log.Error("collection read failed mid-stream", "collection", coll, "records", emitted, "of", want, "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (h *storageHandler) getItem(w http.ResponseWriter, r *http.Request, user string, vars storagePath) {
	id := vars.id
	if len(id) > MaxIDBytes {
		h.rs.writeError(w, r, ErrNotFound)
		return
	}
	wbo, now, err := h.store.GetItem(r.Context(), user, vars.coll, id)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	bp := getBuf()
	b := AppendWBOJSON((*bp)[:0], wbo)
	setStamp(w.Header(), now)
	writeBody(w, "application/json", b)
	*bp = b
	putBuf(bp)
}

// precondition reads X-If-Unmodified-Since; a malformed value is a 400.
func precondition(r *http.Request) (Precondition, error) {
	vs := r.Header.Values("X-If-Unmodified-Since")
	if len(vs) == 0 {
		return Precondition{}, nil
	}
	ts, err := ParseStamp(vs[0])
	if err != nil {
		return Precondition{}, errBadRequest
	}
	return Precondition{Set: true, Since: ts}, nil
}

// readBody reads the whole request body within the size limit and returns
// it as a string sharing the freshly allocated buffer.
func (h *storageHandler) readBody(w http.ResponseWriter, r *http.Request) (string, error) {
	if r.ContentLength > h.maxBody {
		return "", errBodyTooLarge
	}
	body := http.MaxBytesReader(w, r.Body, h.maxBody)
	var buf []byte
	var err error
	if r.ContentLength > 0 && r.ContentLength <= 1<<20 {
		// Trust a declared length only up to 1 MiB; larger bodies grow as
		// they arrive so a false Content-Length cannot reserve memory.
		buf = make([]byte, r.ContentLength)
		_, err = io.ReadFull(body, buf)
	} else {
		buf, err = io.ReadAll(body)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", errBodyTooLarge
		}
		return "", errBadRequest
	}
	if len(buf) == 0 {
		return "", nil
	}
	// buf is never written again: the decoded strings may share it.
	return unsafe.String(&buf[0], len(buf)), nil
}

// bodyError answers a bad body after the checks the protocol makes first:
// quota (PUT only) and X-If-Unmodified-Since.
func (h *storageHandler) bodyError(w http.ResponseWriter, r *http.Request, user, coll string, pre Precondition, post bool, err error) {
	if cerr := h.store.CheckWrite(r.Context(), user, coll, pre); cerr != nil {
		if !post || !errors.Is(cerr, ErrOverQuota) {
			h.rs.writeError(w, r, cerr)
			return
		}
	}
	h.rs.writeError(w, r, err)
}

func setQuotaRemaining(hd http.Header, remaining int64) {
	if remaining >= 0 && remaining <= 1024*1024 {
		hd["X-Weave-Quota-Remaining"] = []string{string(appendKB(nil, remaining))}
	}
}

func (h *storageHandler) putItem(w http.ResponseWriter, r *http.Request, user string, vars storagePath) {
	coll, id := vars.coll, vars.id
	pre, err := precondition(r)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	body, err := h.readBody(w, r)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	wbo, err := decodeWBOString(body)
	if err == nil && (len(id) > MaxIDBytes || !utf8.ValidString(id)) {
		err = ErrInvalidID
	}
	if err == nil && len(wbo.Payload) > h.maxPayload {
		err = ErrPayloadTooLarge
	}
	if err != nil {
		h.bodyError(w, r, user, coll, pre, false, err)
		return
	}
	wbo.ID = id
	h.writeOne(w, r, user, coll, wbo, pre)
}

// writeOne stores one record and answers as PUT storage/{coll}/{id} does.
func (h *storageHandler) writeOne(w http.ResponseWriter, r *http.Request, user, coll string, wbo WBO, pre Precondition) {
	res, err := h.store.PutItem(r.Context(), user, coll, wbo, pre)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	hd := w.Header()
	ts := res.Timestamp.String()
	hd["X-Weave-Timestamp"] = []string{ts}
	setQuotaRemaining(hd, res.QuotaRemaining)
	var body string
	switch {
	case wbo.Has&FieldPayload != 0:
		body = ts
	case res.Modified != 0:
		body = res.Modified.String()
	default:
		body = "null"
	}
	writeBody(w, "application/json", []byte(body))
}

func (h *storageHandler) postCollection(w http.ResponseWriter, r *http.Request, user string, vars storagePath) {
	coll := vars.coll
	pre, err := precondition(r)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	body, err := h.readBody(w, r)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	entries, err := decodeBatchString(body)
	if errors.Is(err, ErrNotArray) {
		// A single object with an id is a PUT of that id.
		wbo, err := decodeWBOString(body)
		if err == nil && (wbo.ID == "" || strings.Contains(wbo.ID, "/")) {
			err = ErrInvalidID
		}
		if err == nil && len(wbo.Payload) > h.maxPayload {
			err = ErrPayloadTooLarge
		}
		if err != nil {
			h.bodyError(w, r, user, coll, pre, true, err)
			return
		}
		h.writeOne(w, r, user, coll, wbo, pre)
		return
	}
	if err != nil {
		h.bodyError(w, r, user, coll, pre, true, err)
		return
	}
	failed := make(map[string][]string)
	ws := make([]WBO, 0, len(entries))
	var total int
	for i, e := range entries {
		id := e.WBO.ID
		switch {
		case e.Err != nil:
			failed[id] = []string{e.Err.Error()}
		case id == "" || strings.Contains(id, "/"):
			failed[id] = []string{ErrInvalidID.Error()}
		case len(e.WBO.Payload) > h.maxPayload:
			failed[id] = []string{ErrPayloadTooLarge.Error()}
		case i >= h.maxPostRecords:
			failed[id] = []string{ErrRetryWBO.Error()}
		case total+len(e.WBO.Payload) >= h.maxPostBytes:
			failed[id] = []string{ErrRetryBytes.Error()}
		default:
			total += len(e.WBO.Payload)
			ws = append(ws, e.WBO)
		}
	}
	res, err := h.store.PostItems(r.Context(), user, coll, ws, pre)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	for id, reasons := range res.Failed {
		failed[id] = append(failed[id], reasons...)
	}
	bp := getBuf()
	b := append((*bp)[:0], `{"modified":`...)
	b = res.Timestamp.AppendTo(b)
	b = append(b, `,"success":[`...)
	for i, id := range res.Success {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, id)
	}
	b = append(b, `],"failed":{`...)
	for i, id := range sortedKeys(failed) {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, id)
		b = append(b, ':', '[')
		for j, reason := range failed[id] {
			if j > 0 {
				b = append(b, ',')
			}
			b = AppendJSONString(b, reason)
		}
		b = append(b, ']')
	}
	b = append(b, '}', '}')
	hd := w.Header()
	setStamp(hd, res.Timestamp)
	setQuotaRemaining(hd, res.QuotaRemaining)
	writeBody(w, "application/json", b)
	*bp = b
	putBuf(bp)
}

// writeStamp answers a delete with its timestamp as body and header.
func (h *storageHandler) writeStamp(w http.ResponseWriter, ts Stamp) {
	s := ts.String()
	w.Header()["X-Weave-Timestamp"] = []string{s}
	writeBody(w, "application/json", []byte(s))
}

func (h *storageHandler) deleteCollection(w http.ResponseWriter, r *http.Request, user string, vars storagePath) {
	pre, err := precondition(r)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	q, err := ParseQuery(r.URL.Query(), true)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	res, err := h.store.DeleteCollection(r.Context(), user, vars.coll, q, pre)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	h.writeStamp(w, res.Timestamp)
}

func (h *storageHandler) deleteItem(w http.ResponseWriter, r *http.Request, user string, vars storagePath) {
	pre, err := precondition(r)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	res, err := h.store.DeleteItem(r.Context(), user, vars.coll, vars.id, pre)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	h.writeStamp(w, res.Timestamp)
}

func (h *storageHandler) deleteStorage(w http.ResponseWriter, r *http.Request, user string, _ storagePath) {
	if len(r.Header.Values("X-Confirm-Delete")) == 0 {
		h.rs.writeError(w, r, weaveErr(CodeCannotOverwrite))
		return
	}
	res, err := h.store.DeleteStorage(r.Context(), user)
	if err != nil {
		h.rs.writeError(w, r, err)
		return
	}
	h.writeStamp(w, res.Timestamp)
}
