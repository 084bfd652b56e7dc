package sync15

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/hce-sync/hce/api"
)

// Config configures the storage API handler.
type Config struct {
	// Store serves the records. Required.
	Store Store
	// Auth checks credentials. Required.
	Auth Authenticator
	// Logger receives backend failures; nil discards.
	Logger *slog.Logger
	// Limits are the size limits; zero fields take DefaultLimits' values.
	Limits Limits
	// QuotaBytes is the per-user quota reported by info/quota and
	// info/configuration; 0 reports none. The store enforces it
	// (api.ErrOverQuota).
	QuotaBytes int64
	// MaxGetRecords caps the page of a collection GET, with or without a
	// client limit (a capped page carries X-Weave-Next-Offset, as
	// syncstorage-rs does). Zero means the default, 10000.
	MaxGetRecords int
	// BatchLifetime is how long a batch stays usable after its creation.
	// Zero means the default, 2 hours (syncstorage-rs's).
	BatchLifetime time.Duration
	// RetryAfter is the Retry-After of 503 answers to backend failures, in
	// seconds. Zero means the default, 1800.
	RetryAfter int
	// ConflictRetryAfter is the Retry-After of 503 answers to ErrConflict,
	// in seconds. Zero means the default, 10 (Mozilla's servers').
	ConflictRetryAfter int
	// Backoff, when set, is asked on every request for the X-Weave-Backoff
	// value in seconds; 0 sends no header. It must be cheap and safe for
	// concurrent use.
	Backoff func() int
	// Clock returns the time; nil means time.Now.
	Clock func() time.Time
	// Rand is the randomness of batch ids; nil means crypto/rand.
	Rand io.Reader
}

// Defaults of Config.
const (
	DefaultMaxGetRecords      = DefaultMaxTotalRecords
	DefaultBatchLifetime      = 2 * time.Hour
	DefaultRetryAfter         = 1800
	DefaultConflictRetryAfter = 10
)

// ErrBadConfig is wrapped by Config.Validate.
var ErrBadConfig = errors.New("sync15: invalid configuration")

// DefaultConfig returns a Config with the defaults filled in (Store and
// Auth still to be set).
func DefaultConfig() Config {
	return Config{
		Limits:             DefaultLimits(),
		MaxGetRecords:      DefaultMaxGetRecords,
		BatchLifetime:      DefaultBatchLifetime,
		RetryAfter:         DefaultRetryAfter,
		ConflictRetryAfter: DefaultConflictRetryAfter,
	}
}

// Validate reports a missing Store or Authenticator or a negative setting.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return fmt.Errorf("%w: Store is nil", ErrBadConfig)
	case c.Auth == nil:
		return fmt.Errorf("%w: Auth is nil", ErrBadConfig)
	case c.QuotaBytes < 0 || c.MaxGetRecords < 0 || c.BatchLifetime < 0 || c.RetryAfter < 0 || c.ConflictRetryAfter < 0:
		return fmt.Errorf("%w: negative setting", ErrBadConfig)
	}
	return c.Limits.validate()
}

type handler struct {
	store      Store
	authn      Authenticator
	limits     Limits
	quota      int64
	maxGet     int
	batchLife  time.Duration
	backoff    func() int
	clock      func() time.Time
	rand       io.Reader
	log        *slog.Logger
	ew         *errorWriter
	routes     [numRoutes15][]routeHandler
	configBody []byte
}

// NewHandler returns the Sync 1.5 storage API under /1.5/{uid}/:
//
//	GET    info/configuration | info/collections | info/quota |
//	       info/collection_usage | info/collection_counts
//	GET    storage/{coll}            POST storage/{coll}      DELETE storage/{coll}
//	GET    storage/{coll}/{id}       PUT  storage/{coll}/{id} DELETE storage/{coll}/{id}
//	DELETE storage                   DELETE /1.5/{uid}
//
// Paths are matched as sent (percent-encoded), by parsePath15; a path
// that is none of these is 404, a method a path does not take 405.
// Every route authenticates through Config.Auth. Every answer carries
// X-Weave-Timestamp (and X-Weave-Backoff when Config.Backoff asks for
// it); successful ones carry X-Last-Modified. The handler is safe for
// concurrent use.
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.MaxGetRecords == 0 {
		cfg.MaxGetRecords = d.MaxGetRecords
	}
	if cfg.BatchLifetime == 0 {
		cfg.BatchLifetime = d.BatchLifetime
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = d.RetryAfter
	}
	if cfg.ConflictRetryAfter == 0 {
		cfg.ConflictRetryAfter = d.ConflictRetryAfter
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{
		store:     cfg.Store,
		authn:     cfg.Auth,
		limits:    cfg.Limits.withDefaults(),
		quota:     cfg.QuotaBytes,
		maxGet:    cfg.MaxGetRecords,
		batchLife: cfg.BatchLifetime,
		backoff:   cfg.Backoff,
		clock:     cfg.Clock,
		rand:      cfg.Rand,
		log:       log,
		ew: &errorWriter{log: log, retryAfter: strconv.Itoa(cfg.RetryAfter),
			conflictRetry: strconv.Itoa(cfg.ConflictRetryAfter)},
	}
	h.configBody = h.limits.appendConfiguration(nil, h.quota)
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	route := func(rt route15, method string, fn func(*request), allowExpired bool) {
		h.routes[rt] = append(h.routes[rt], routeHandler{method, fn, allowExpired})
	}
	route(r15InfoConfiguration, get, h.infoConfiguration, false)
	route(r15InfoCollections, get, h.infoCollections, true)
	route(r15InfoQuota, get, h.infoQuota, false)
	route(r15InfoUsage, get, h.infoUsage, false)
	route(r15InfoCounts, get, h.infoCounts, false)
	route(r15Collection, get, h.getCollection, false)
	route(r15Collection, post, h.postCollection, false)
	route(r15Collection, del, h.deleteCollection, false)
	route(r15Item, get, h.getItem, false)
	route(r15Item, put, h.putItem, false)
	route(r15Item, del, h.deleteItem, false)
	route(r15Storage, del, h.deleteStorage, false)
	route(r15Base, del, h.deleteStorage, false)
	return h, nil
}

// routeHandler is a route's handler for one method.
type routeHandler struct {
	method       string
	fn           func(*request)
	allowExpired bool
}

// ServeHTTP stamps the answer with X-Weave-Timestamp (the request's
// server time, raised by the handlers to a write's timestamp or a read's
// X-Last-Modified) and X-Weave-Backoff, then routes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := h.clock()
	hd := w.Header()
	hd["X-Weave-Timestamp"] = []string{stampOf(now).String()}
	if h.backoff != nil {
		if s := h.backoff(); s > 0 {
			hd.Set("X-Weave-Backoff", strconv.Itoa(s))
		}
	}
	p := parsePath15(r.URL.EscapedPath())
	if p.route == r15None {
		h.ew.writeError(w, r, errRouteNotFound)
		return
	}
	for _, rh := range h.routes[p.route] {
		if rh.method == r.Method {
			h.serve(w, r, now, p, rh)
			return
		}
	}
	h.ew.writeError(w, r, errMethodNotAllowed)
}

// stampOf returns a time as a Stamp, truncated to the centisecond.
func stampOf(t time.Time) api.Stamp { return api.Stamp(t.UnixMilli() / 10) }

// request is an authenticated request on its way through a route.
type request struct {
	w     http.ResponseWriter
	r     *http.Request
	ctx   context.Context
	now   time.Time
	user  string
	ident Identity
	pre   Precondition
	// uid, coll and id are the path's variables, as sent (id is still
	// percent-encoded: itemID decodes it).
	uid, coll, id string
}

// serve authenticates a request to route p, reads its precondition
// headers and calls the route's handler.
func (h *handler) serve(w http.ResponseWriter, r *http.Request, now time.Time, p path15, rh routeHandler) {
	req := &request{w: w, r: r, ctx: r.Context(), now: now, uid: p.uid, coll: p.coll, id: p.id}
	id, err := h.authn.Authenticate(req.ctx, AuthRequest{HTTP: r, UID: p.uid, AllowExpired: rh.allowExpired})
	if err == nil && id.User == "" {
		err = errors.New("authenticator returned no user")
	}
	if err != nil {
		if !errors.Is(err, api.ErrUnauthorized) {
			err = fmt.Errorf("authenticate uid %s: %w", p.uid, err)
		}
		h.ew.writeError(w, r, err)
		return
	}
	req.ident, req.user = id, id.User
	if req.pre, err = ParsePrecondition(r.Header); err != nil {
		h.ew.writeError(w, r, err)
		return
	}
	rh.fn(req)
}

func (h *handler) fail(req *request, err error) { h.ew.writeError(req.w, req.r, err) }

// reply writes a 200 (or status) JSON answer. For reads X-Weave-Timestamp
// is the later of the request time and lastModified; for writes it is the
// write's timestamp, which is also X-Last-Modified.
func (h *handler) reply(req *request, status int, body []byte, lastModified api.Stamp, write bool) {
	hd := req.w.Header()
	hd["X-Last-Modified"] = []string{lastModified.String()}
	ts := lastModified
	if !write {
		ts = max(stampOf(req.now), lastModified)
	}
	hd["X-Weave-Timestamp"] = []string{ts.String()}
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	req.w.WriteHeader(status)
	_, _ = req.w.Write(body)
}

func (h *handler) infoConfiguration(req *request) {
	h.reply(req, http.StatusOK, h.configBody, 0, false)
}

// writeMap answers an info object: sorted keys, values by enc, and
// X-Weave-Records (which syncstorage-rs sends with every info object).
func writeMap[V any](h *handler, req *request, m map[string]V, storageTS api.Stamp, err error, enc func([]byte, V) []byte) {
	if err == nil {
		err = req.pre.Check(storageTS)
	}
	if err != nil {
		h.fail(req, err)
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := append(make([]byte, 0, 32*len(m)+2), '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = api.AppendJSONString(b, k)
		b = append(b, ':')
		b = enc(b, m[k])
	}
	b = append(b, '}')
	req.w.Header()["X-Weave-Records"] = []string{strconv.Itoa(len(m))}
	h.reply(req, http.StatusOK, b, storageTS, false)
}

func (h *handler) infoCollections(req *request) {
	m, ts, err := h.store.CollectionTimestamps(req.ctx, req.user)
	writeMap(h, req, m, ts, err, func(b []byte, s api.Stamp) []byte { return s.AppendTo(b) })
}

func (h *handler) infoCounts(req *request) {
	m, ts, err := h.store.CollectionCounts(req.ctx, req.user)
	writeMap(h, req, m, ts, err, func(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) })
}

func (h *handler) infoUsage(req *request) {
	m, ts, err := h.store.CollectionUsage(req.ctx, req.user)
	writeMap(h, req, m, ts, err, appendKB)
}

func (h *handler) infoQuota(req *request) {
	used, ts, err := h.store.StorageUsage(req.ctx, req.user)
	if err == nil {
		err = req.pre.Check(ts)
	}
	if err != nil {
		h.fail(req, err)
		return
	}
	b := appendKB([]byte{'['}, used)
	b = append(b, ',')
	if h.quota > 0 {
		b = appendKB(b, h.quota)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, ']')
	h.reply(req, http.StatusOK, b, ts, false)
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

// negotiate picks the output format of a multi-record GET from the Accept
// header: application/json (also for */* and application/*) or
// application/newlines, the highest q winning and JSON winning ties; none
// acceptable gives errNotAcceptable. No header means JSON.
func negotiate(values []string) (newlines bool, err error) {
	if len(values) == 0 {
		return false, nil
	}
	bestQ := -1.0
	best := -1 // 0 json, 1 newlines
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, _ := strings.Cut(part, ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
			var f int
			switch mt {
			case "application/json", "*/*", "application/*":
				f = 0
			case "application/newlines":
				f = 1
			case "":
				continue
			default:
				continue
			}
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(p, "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					n, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
					if err != nil || n < 0 || n > 1 {
						n = 0
					}
					q = n
				}
			}
			if q <= 0 {
				continue
			}
			if q > bestQ || q == bestQ && f < best {
				bestQ, best = q, f
			}
		}
	}
	if best < 0 {
		return false, errNotAcceptable
	}
	return best == 1, nil
}

func (h *handler) getCollection(req *request) {
	coll := req.coll
	q, err := ParseQuery(req.r.URL.Query())
	if err != nil {
		h.fail(req, err)
		return
	}
	newlines, err := negotiate(req.r.Header.Values("Accept"))
	if err != nil {
		h.fail(req, err)
		return
	}
	if !q.HasLimit || q.Limit > h.maxGet {
		q.Limit = h.maxGet
	}
	var (
		page    Page
		started bool // the page's headers are set
		sent    bool // the status and some of the body are sent
		emitted int
	)
	// The body is built in a pooled buffer and written when it passes
	// listFlushAt bytes or ends: a page that fits goes out with a
	// Content-Length in one write, and a store error before the first
	// write still gets a proper error answer.
	bp := listBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() {
		if cap(buf) <= maxPooledList {
			*bp = buf[:0]
			listBufs.Put(bp)
		}
	}()
	write := func() error {
		if !sent {
			sent = true
			req.w.WriteHeader(http.StatusOK)
		}
		_, err := req.w.Write(buf)
		buf = buf[:0]
		return err
	}
	hd := req.w.Header()
	err = h.store.GetCollection(req.ctx, req.user, coll, q, func(p *Page) error {
		if err := req.pre.Check(p.LastModified); err != nil {
			return err
		}
		if p.Count < 0 || p.Count > q.Limit || p.Count == 0 && p.Last != (Position{}) {
			return fmt.Errorf("store returned a page of %d records for limit %d", p.Count, q.Limit)
		}
		page = *p
		hd["X-Last-Modified"] = []string{p.LastModified.String()}
		hd["X-Weave-Timestamp"] = []string{max(stampOf(req.now), p.LastModified).String()}
		hd["X-Weave-Records"] = []string{strconv.Itoa(p.Count)}
		if p.More {
			next := q.After
			if p.Count > 0 {
				next = &page.Last
			}
			hd["X-Weave-Next-Offset"] = []string{EncodeOffset(q.Sort, next)}
		}
		if newlines {
			hd.Set("Content-Type", "application/newlines")
		} else {
			hd.Set("Content-Type", "application/json")
		}
		started = true
		if !newlines {
			buf = append(buf, '[')
		}
		return nil
	}, func(b *BSO) error {
		if emitted >= page.Count {
			return fmt.Errorf("store emitted more than the %d records of its page", page.Count)
		}
		if !newlines && emitted > 0 {
			buf = append(buf, ',')
		}
		if q.Full {
			buf = AppendBSOJSON(buf, b)
		} else {
			buf = api.AppendJSONString(buf, b.ID)
		}
		if newlines {
			buf = append(buf, '\n')
		}
		emitted++
		if len(buf) >= listFlushAt {
			return write()
		}
		return nil
	})
	if err == nil && emitted != page.Count {
		err = fmt.Errorf("store emitted %d of the %d records of its page", emitted, page.Count)
	}
	if err != nil {
		if !sent {
			if started {
				for _, k := range []string{"X-Last-Modified", "X-Weave-Timestamp", "X-Weave-Records", "X-Weave-Next-Offset", "Content-Type"} {
					delete(hd, k)
				}
			}
			h.fail(req, err)
			return
		}
		// The status is sent: cut the connection so the client cannot take
		// a truncated list for a whole one.
		h.log.Error("sync15 collection read failed mid-stream", "collection", coll, "err", err)
		panic(http.ErrAbortHandler)
	}
	if !newlines {
		buf = append(buf, ']')
	}
	if !sent {
		hd.Set("Content-Length", strconv.Itoa(len(buf)))
	}
	_ = write()
}

// listFlushAt is the buffered size past which a listing is streamed out;
// listing buffers up to maxPooledList bytes are kept for the next one.
const (
	listFlushAt   = 256 << 10
	maxPooledList = 1 << 20
)

var listBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// itemID returns the decoded item id of the path, or errRouteNotFound.
func itemID(req *request) (string, error) {
	id, err := url.PathUnescape(req.id)
	if err != nil || !ValidID(id) {
		return "", errRouteNotFound
	}
	return id, nil
}

func (h *handler) getItem(req *request) {
	id, err := itemID(req)
	if err != nil {
		h.fail(req, err)
		return
	}
	b, err := h.store.GetBSO(req.ctx, req.user, req.coll, id)
	if err == nil {
		err = req.pre.Check(b.Modified)
	}
	if err != nil {
		h.fail(req, err)
		return
	}
	h.reply(req, http.StatusOK, AppendBSOJSON(nil, &b), b.Modified, false)
}

// mediaType returns the request's Content-Type without parameters.
func mediaType(r *http.Request) string {
	mt, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// readBody reads the request body within max_request_bytes and checks it
// with the identity's VerifyBody. The returned string shares the buffer.
func (h *handler) readBody(req *request) (string, error) {
	limit := h.limits.MaxRequestBytes
	if req.r.ContentLength > limit {
		return "", errBodyTooLarge
	}
	body := http.MaxBytesReader(req.w, req.r.Body, limit)
	var buf []byte
	var err error
	if n := req.r.ContentLength; n > 0 && n <= 1<<20 {
		buf = make([]byte, n)
		_, err = io.ReadFull(body, buf)
	} else {
		buf, err = io.ReadAll(body)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", errBodyTooLarge
		}
		return "", fmt.Errorf("%w: reading body: %v", ErrBadQuery, err)
	}
	if v := req.ident.VerifyBody; v != nil {
		if err := v(req.r.Header.Get("Content-Type"), buf); err != nil {
			if !errors.Is(err, api.ErrUnauthorized) {
				err = fmt.Errorf("%w: %v", api.ErrUnauthorized, err)
			}
			return "", err
		}
	}
	if len(buf) == 0 {
		return "", nil
	}
	return unsafe.String(&buf[0], len(buf)), nil
}

// knownBadPayload matches the crypto/keys payload of a client known to
// have broken its encryption (an all-zero IV); Mozilla's servers refuse
// it.
var knownBadPayload = regexp.MustCompile(`IV":\s*"AAAAAAAAAAAAAAAAAAAAAA=="`)

func (h *handler) putItem(req *request) {
	coll := req.coll
	id, err := itemID(req)
	if err != nil {
		h.fail(req, err)
		return
	}
	switch mediaType(req.r) {
	case "", "application/json", "text/plain":
	default:
		h.fail(req, errMediaType)
		return
	}
	body, err := h.readBody(req)
	if err != nil {
		h.fail(req, err)
		return
	}
	b, err := DecodeBSO(body, h.limits.MaxRecordPayloadBytes)
	if err != nil {
		h.fail(req, err)
		return
	}
	if coll == "crypto" && knownBadPayload.MatchString(b.Payload) {
		h.fail(req, errKnownBadPayload)
		return
	}
	b.ID = id
	ts, err := h.store.PutBSO(req.ctx, req.user, coll, &b, req.pre)
	if err != nil {
		h.fail(req, err)
		return
	}
	h.reply(req, http.StatusOK, ts.AppendTo(nil), ts, true)
}

// queryValue returns the single value of a query parameter; a repeated
// parameter is an error.
func queryValue(v url.Values, k string) (string, bool, error) {
	vs, ok := v[k]
	if !ok {
		return "", false, nil
	}
	if len(vs) != 1 {
		return "", false, fmt.Errorf("%w: %s given %d times", ErrBadQuery, k, len(vs))
	}
	return vs[0], true, nil
}

// countHeader reads a non-negative integer header (X-Weave-Records and
// the like): absent gives -1.
func countHeader(h http.Header, name string) (int64, error) {
	vs := h.Values(name)
	if len(vs) == 0 {
		return -1, nil
	}
	s := strings.TrimSpace(vs[0])
	if len(vs) > 1 || s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%w: %s: %q", ErrBadQuery, name, vs[0])
	}
	return strconv.ParseInt(s, 10, 64)
}

// batchMode is what a POST does with batches.
type batchMode uint8

const (
	batchNone   batchMode = iota // a plain POST (also batch=true&commit=true)
	batchCreate                  // batch=true: open a batch
	batchAppend                  // batch=<id>: add to it
	batchCommit                  // batch=<id>&commit=true: add and commit
)

func (h *handler) postCollection(req *request) {
	coll := req.coll
	v := req.r.URL.Query()
	batchParam, hasBatch, err := queryValue(v, "batch")
	if err != nil {
		h.fail(req, err)
		return
	}
	commitParam, hasCommit, err := queryValue(v, "commit")
	if err != nil {
		h.fail(req, err)
		return
	}
	if hasCommit && (!strings.EqualFold(commitParam, "true") || !hasBatch) {
		h.fail(req, fmt.Errorf("%w: commit must be \"true\" and come with batch", ErrBadQuery))
		return
	}
	mode := batchNone
	var batch BatchID
	switch {
	case !hasBatch:
	case batchParam == "" || strings.EqualFold(batchParam, "true"):
		if !hasCommit {
			mode = batchCreate
		}
	default:
		if batch, err = ParseBatchID(batchParam); err != nil {
			h.fail(req, err)
			return
		}
		if req.now.Sub(batch.Created) > h.batchLife {
			h.fail(req, ErrBatchNotFound)
			return
		}
		mode = batchAppend
		if hasCommit {
			mode = batchCommit
		}
	}
	// Limits announced in headers (syncstorage-rs and the Python server).
	for _, c := range []struct {
		name  string
		limit int64
		batch bool
	}{
		{"X-Weave-Records", int64(h.limits.MaxPostRecords), false},
		{"X-Weave-Bytes", h.limits.MaxPostBytes, false},
		{"X-Weave-Total-Records", int64(h.limits.MaxTotalRecords), true},
		{"X-Weave-Total-Bytes", h.limits.MaxTotalBytes, true},
	} {
		n, err := countHeader(req.r.Header, c.name)
		if err != nil {
			h.fail(req, err)
			return
		}
		if n < 0 {
			continue
		}
		if c.batch && !hasBatch {
			h.fail(req, fmt.Errorf("%w: %s without batch", ErrBadQuery, c.name))
			return
		}
		if n > c.limit {
			h.fail(req, ErrSizeLimitExceeded)
			return
		}
	}
	var newlines bool
	switch mediaType(req.r) {
	case "", "application/json", "text/plain":
	case "application/newlines":
		newlines = true
	default:
		h.fail(req, errMediaType)
		return
	}
	body, err := h.readBody(req)
	if err != nil {
		h.fail(req, err)
		return
	}
	entries, err := DecodeBSOs(body, newlines, h.limits.MaxRecordPayloadBytes)
	if err != nil {
		h.fail(req, err)
		return
	}
	valid := make([]BSO, 0, len(entries))
	failed := make(map[string]string)
	var count int
	var bytes int64
	for _, e := range entries {
		switch {
		case e.Err != nil:
			failed[e.BSO.ID] = e.Err.Error()
		case count >= h.limits.MaxPostRecords:
			failed[e.BSO.ID] = ErrRetryBSO.Error()
		case bytes+int64(len(e.BSO.Payload)) > h.limits.MaxPostBytes:
			// As Mozilla's servers do, the bytes still count: every later
			// record fails too and the client resends them in order.
			count++
			bytes += int64(len(e.BSO.Payload))
			failed[e.BSO.ID] = ErrRetryBytes.Error()
		default:
			if coll == "crypto" && knownBadPayload.MatchString(e.BSO.Payload) {
				h.fail(req, errKnownBadPayload)
				return
			}
			count++
			bytes += int64(len(e.BSO.Payload))
			valid = append(valid, e.BSO)
		}
	}
	var ts api.Stamp
	status := http.StatusOK
	if mode == batchNone {
		ts, err = h.store.PostBSOs(req.ctx, req.user, coll, valid, req.pre)
	} else {
		if mode == batchCreate {
			if batch, err = NewBatchID(req.now, h.rand); err != nil {
				h.fail(req, err)
				return
			}
		}
		ts, err = h.store.WriteBatch(req.ctx, req.user, coll, &BatchWrite{
			ID:     batch.String(),
			Create: mode == batchCreate,
			Commit: mode == batchCommit,
			BSOs:   valid,
			Limits: BatchLimits{MaxRecords: h.limits.MaxTotalRecords, MaxBytes: h.limits.MaxTotalBytes},
			Pre:    req.pre,
		})
		if mode != batchCommit {
			status = http.StatusAccepted
		}
	}
	if err != nil {
		h.fail(req, err)
		return
	}
	b := make([]byte, 0, 64+16*len(valid)+32*len(failed))
	if status == http.StatusAccepted {
		b = append(b, `{"batch":`...)
		b = api.AppendJSONString(b, batch.String())
	} else {
		b = append(b, `{"modified":`...)
		b = ts.AppendTo(b)
	}
	b = append(b, `,"success":[`...)
	for i := range valid {
		if i > 0 {
			b = append(b, ',')
		}
		b = api.AppendJSONString(b, valid[i].ID)
	}
	b = append(b, `],"failed":{`...)
	keys := make([]string, 0, len(failed))
	for k := range failed {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = api.AppendJSONString(b, k)
		b = append(b, ':')
		b = api.AppendJSONString(b, failed[k])
	}
	b = append(b, '}', '}')
	h.reply(req, status, b, ts, status == http.StatusOK)
}

// writeModified answers a delete: {"modified": ts}.
func (h *handler) writeModified(req *request, ts api.Stamp) {
	b := append([]byte(`{"modified":`), ts.AppendTo(nil)...)
	h.reply(req, http.StatusOK, append(b, '}'), ts, true)
}

func (h *handler) deleteCollection(req *request) {
	var ids []string
	s, ok, err := queryValue(req.r.URL.Query(), "ids")
	if err == nil && ok {
		ids, err = ParseIDs(s)
	}
	if err != nil {
		h.fail(req, err)
		return
	}
	ts, err := h.store.DeleteCollection(req.ctx, req.user, req.coll, ids, req.pre)
	if err != nil {
		h.fail(req, err)
		return
	}
	h.writeModified(req, ts)
}

func (h *handler) deleteItem(req *request) {
	id, err := itemID(req)
	if err != nil {
		h.fail(req, err)
		return
	}
	ts, err := h.store.DeleteBSO(req.ctx, req.user, req.coll, id, req.pre)
	if err != nil {
		h.fail(req, err)
		return
	}
	h.writeModified(req, ts)
}

func (h *handler) deleteStorage(req *request) {
	ts, err := h.store.DeleteStorage(req.ctx, req.user, req.pre)
	if err != nil {
		h.fail(req, err)
		return
	}
	h.reply(req, http.StatusOK, []byte("{}"), ts, true)
}
