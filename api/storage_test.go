package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// fakeStore is a minimal Store for routing and header tests: it records
// the last call and answers with canned values.
type fakeStore struct {
	mu        sync.Mutex
	now       Stamp
	items     map[string]WBO // by coll+"/"+id
	checkErr  error          // CheckWrite result
	writeErr  error          // PutItem/PostItems/Delete* result
	readErr   error
	healthy   error
	quotaLeft int64
	lastCall  string
	lastQuery *Query
	lastWBOs  []WBO
	lastPre   Precondition
	lastID    string
}

func newFakeStore() *fakeStore {
	return &fakeStore{now: 127810983990, items: map[string]WBO{}, quotaLeft: -1}
}

func (s *fakeStore) stamp() Stamp {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *fakeStore) record(call string) {
	s.mu.Lock()
	s.lastCall = call
	s.mu.Unlock()
}

func (s *fakeStore) Healthy(context.Context) error { return s.healthy }

func (s *fakeStore) CollectionTimestamps(_ context.Context, user string) (map[string]Stamp, Stamp, error) {
	s.record("timestamps")
	return map[string]Stamp{"tabs": 127810983990, "bookmarks": 5}, s.stamp(), s.readErr
}

func (s *fakeStore) CollectionCounts(context.Context, string) (map[string]int64, Stamp, error) {
	s.record("counts")
	return map[string]int64{"a": 3, "b": 5}, s.stamp(), s.readErr
}

func (s *fakeStore) CollectionUsage(context.Context, string) (map[string]int64, Stamp, error) {
	s.record("usage")
	return map[string]int64{"a": 503, "b": 2048}, s.stamp(), s.readErr
}

func (s *fakeStore) Quota(context.Context, string) (int64, int64, Stamp, error) {
	s.record("quota")
	return 500, 0, s.stamp(), s.readErr
}

func (s *fakeStore) GetCollection(_ context.Context, user, coll string, q *Query, start func(int, Stamp) error, emit func(*WBO) error) error {
	s.record("getcoll")
	s.mu.Lock()
	s.lastQuery = q
	now := s.now
	s.mu.Unlock()
	if s.readErr != nil {
		return s.readErr
	}
	ws := []WBO{
		{ID: "id1", Modified: 100, Payload: "p1", Has: FieldPayload},
		{ID: "id2", Modified: 200, Payload: "p2", SortIndex: 3, Has: FieldPayload | FieldSortIndex},
	}
	return EmitRecords(ws, now, start, emit)
}

func (s *fakeStore) GetItem(_ context.Context, user, coll, id string) (WBO, Stamp, error) {
	s.record("getitem")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastID = id
	w, ok := s.items[coll+"/"+id]
	if !ok {
		return WBO{}, 0, ErrNotFound
	}
	return w, s.now, nil
}

func (s *fakeStore) CheckWrite(_ context.Context, user, coll string, pre Precondition) error {
	return s.checkErr
}

func (s *fakeStore) PutItem(_ context.Context, user, coll string, w WBO, pre Precondition) (WriteResult, error) {
	s.record("putitem")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastWBOs, s.lastPre = []WBO{w}, pre
	if s.writeErr != nil {
		return WriteResult{}, s.writeErr
	}
	s.now++
	old, ok := s.items[coll+"/"+w.ID]
	mod := old.Modified
	if w.Has&FieldPayload != 0 {
		mod = s.now
	}
	w.Modified = mod
	s.items[coll+"/"+w.ID] = w
	if !ok && w.Has&FieldPayload == 0 {
		mod = 0
	}
	return WriteResult{Timestamp: s.now, Modified: mod, QuotaRemaining: s.quotaLeft}, nil
}

func (s *fakeStore) PostItems(_ context.Context, user, coll string, ws []WBO, pre Precondition) (BatchResult, error) {
	s.record("postitems")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastWBOs, s.lastPre = ws, pre
	if s.writeErr != nil {
		return BatchResult{}, s.writeErr
	}
	s.now++
	res := BatchResult{Timestamp: s.now, QuotaRemaining: s.quotaLeft}
	for _, w := range ws {
		if w.ID == "dbfail" {
			if res.Failed == nil {
				res.Failed = map[string][]string{}
			}
			res.Failed[w.ID] = []string{"db error"}
			continue
		}
		res.Success = append(res.Success, w.ID)
	}
	return res, nil
}

func (s *fakeStore) DeleteCollection(_ context.Context, user, coll string, q *Query, pre Precondition) (WriteResult, error) {
	s.record("deletecoll")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastQuery, s.lastPre = q, pre
	s.now++
	return WriteResult{Timestamp: s.now}, s.writeErr
}

func (s *fakeStore) DeleteItem(_ context.Context, user, coll, id string, pre Precondition) (WriteResult, error) {
	s.record("deleteitem")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastID, s.lastPre = id, pre
	s.now++
	return WriteResult{Timestamp: s.now}, s.writeErr
}

func (s *fakeStore) DeleteStorage(context.Context, string) (WriteResult, error) {
	s.record("deletestorage")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now++
	return WriteResult{Timestamp: s.now}, s.writeErr
}

// fakeAuth accepts user "alice"/"secret" (and the account of
// alice@example.com), and the bearer token "good".
type fakeAuth struct{ err error }

func (a fakeAuth) Authenticate(_ context.Context, pathUser string, c Credentials) error {
	if a.err != nil {
		return a.err
	}
	switch c.Scheme {
	case "basic":
		if c.Password == "secret" && (c.User == "alice" || c.User == AccountName("alice@example.com")) {
			return nil
		}
	case "bearer":
		if c.Token == "good" {
			return nil
		}
	}
	return fmt.Errorf("bad: %w", ErrUnauthorized)
}

func basic(user, pw string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
}

type storageFixture struct {
	store *fakeStore
	h     http.Handler
	auth  *fakeAuth
}

func newStorageFixture(t *testing.T) *storageFixture {
	t.Helper()
	st := newFakeStore()
	fa := &fakeAuth{}
	cfg := DefaultStorageConfig()
	cfg.Store, cfg.Auth = st, authFunc(func(ctx context.Context, u string, c Credentials) error { return fa.Authenticate(ctx, u, c) })
	cfg.RetryAfter = 60
	h, err := NewStorageHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &storageFixture{store: st, h: h, auth: fa}
}

type authFunc func(context.Context, string, Credentials) error

func (f authFunc) Authenticate(ctx context.Context, u string, c Credentials) error {
	return f(ctx, u, c)
}

type resp struct {
	code int
	hdr  http.Header
	body string
}

func (f *storageFixture) do(method, path, body string, hdr ...string) resp {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", basic("alice", "secret"))
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "<del>" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return resp{rec.Code, rec.Result().Header, string(b)}
}

func TestStorageRouting(t *testing.T) {
	f := newStorageFixture(t)
	f.store.items["tabs/x"] = WBO{ID: "x", Modified: 100, Payload: "p", Has: FieldPayload}
	tests := []struct {
		method, path string
		code         int
		call         string
	}{
		{"GET", "/1.0/alice/info/collections", 200, "timestamps"},
		{"GET", "/1/alice/info/collections", 200, "timestamps"},
		{"GET", "/1.1/alice/info/collections/", 200, "timestamps"},
		{"GET", "/1.1/alice/info/collections?client=FxHome&v=1.1b2", 200, "timestamps"},
		{"HEAD", "/1.1/alice/info/collections", 200, "timestamps"},
		{"GET", "/1.1/alice/info/collection_counts", 200, "counts"},
		{"GET", "/1.1/alice/info/collection_usage", 200, "usage"},
		{"GET", "/1.1/alice/info/quota", 200, "quota"},
		{"GET", "/1.1/alice/storage/tabs", 200, "getcoll"},
		{"GET", "/1.1/alice/storage/tabs/", 200, "getcoll"},
		{"GET", "/1.1/alice/storage/tabs/x", 200, "getitem"},
		{"GET", "/1.1/alice/storage/tabs/x?full=1", 200, "getitem"},
		{"GET", "/1.1/alice/storage/tabs/missing", 404, "getitem"},
		{"DELETE", "/1.1/alice/storage/tabs", 200, "deletecoll"},
		{"DELETE", "/1.1/alice/storage/tabs/x", 200, "deleteitem"},
		{"POST", "/1.1/alice/info/collections", 405, ""},
		{"PUT", "/1.1/alice/info/quota", 405, ""},
		{"POST", "/1.1/alice/storage/tabs/x", 405, ""},
		{"GET", "/1.1/alice/storage", 405, ""},
		{"GET", "/2.0/alice/info/collections", 404, ""},
		{"GET", "/1.1/alice/info/nothing", 404, ""},
		{"GET", "/1.1/al%20ice/info/collections", 404, ""},
		{"GET", "/1.1/alice/storage/" + strings.Repeat("c", 33), 404, ""},
		{"GET", "/1.1/alice/storage/bad!name", 404, ""},
		{"HEAD", "/1.0/alice", 404, ""},
		{"PUT", "/1.0/alice/storage/", 404, ""},
		{"POST", "/1.0/alice/storage/", 404, ""},
		{"GET", "/", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			f.store.record("")
			r := f.do(tt.method, tt.path, "")
			if r.code != tt.code {
				t.Fatalf("status %d, want %d (body %q)", r.code, tt.code, r.body)
			}
			if f.store.lastCall != tt.call {
				t.Fatalf("store call %q, want %q", f.store.lastCall, tt.call)
			}
			if r.code == 200 && r.hdr.Get("X-Weave-Timestamp") == "" {
				t.Fatal("no X-Weave-Timestamp")
			}
			if r.code >= 400 && r.hdr.Get("X-Weave-Timestamp") != "" {
				t.Fatal("X-Weave-Timestamp on an error")
			}
		})
	}
}

func TestStorageItemIDsPercentDecoded(t *testing.T) {
	f := newStorageFixture(t)
	for _, tt := range []struct{ path, id string }{
		{"/1.1/alice/storage/tabs/a%23b", "a#b"},
		{"/1.1/alice/storage/tabs/a%3Fb", "a?b"},
		{"/1.1/alice/storage/tabs/~x~", "~x~"},
		{"/1.1/alice/storage/tabs/a%5Cb", `a\b`},
		{"/1.1/alice/storage/tabs/%7Bguid%7D", "{guid}"},
	} {
		r := f.do("PUT", tt.path, `{"payload":"x"}`)
		if r.code != 200 {
			t.Fatalf("PUT %s: %d %q", tt.path, r.code, r.body)
		}
		if got := f.store.lastWBOs[0].ID; got != tt.id {
			t.Fatalf("PUT %s stored id %q, want %q", tt.path, got, tt.id)
		}
		r = f.do("GET", tt.path, "")
		if r.code != 200 || f.store.lastID != tt.id {
			t.Fatalf("GET %s: %d, id %q", tt.path, r.code, f.store.lastID)
		}
		var w map[string]any
		if err := json.Unmarshal([]byte(r.body), &w); err != nil || w["id"] != tt.id {
			t.Fatalf("GET %s body %q", tt.path, r.body)
		}
	}
}

func TestStorageAuth(t *testing.T) {
	f := newStorageFixture(t)
	p := "/1.1/alice/info/collections"
	tests := []struct {
		name      string
		authz     string
		path      string
		authErr   error
		code      int
		challenge bool
	}{
		{"ok", basic("alice", "secret"), p, nil, 200, false},
		{"no header", "<del>", p, nil, 401, true},
		{"wrong password", basic("alice", "nope"), p, nil, 401, false},
		{"path mismatch", basic("alice", "secret"), "/1.1/bob/info/collections", nil, 401, false},
		{"bad scheme", "Digest abc", p, nil, 401, false},
		{"bad base64", "Basic !!!", p, nil, 401, false},
		{"no colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice")), p, nil, 401, false},
		{"email user", basic("alice@example.com", "secret"), "/1.1/" + AccountName("alice@example.com") + "/info/collections", nil, 200, false},
		{"bearer", "Bearer good", p, nil, 200, false},
		{"bearer bad", "Bearer bad", p, nil, 401, false},
		{"backend down", basic("alice", "secret"), p, ErrUnavailable, 503, false},
		{"password with colon", basic("alice", "sec:ret"), p, nil, 401, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.auth.err = tt.authErr
			r := f.do("GET", tt.path, "", "Authorization", tt.authz)
			if r.code != tt.code {
				t.Fatalf("status %d, want %d", r.code, tt.code)
			}
			if got := r.hdr.Get("WWW-Authenticate"); (got == `Basic realm="Sync"`) != tt.challenge {
				t.Fatalf("WWW-Authenticate %q", got)
			}
			if r.code == 503 && (r.hdr.Get("Retry-After") != "60" || !strings.HasPrefix(r.body, `"application error`)) {
				t.Fatalf("503 answer: %v %q", r.hdr, r.body)
			}
		})
	}
}

func TestParseAuthorizationColonAndUTF8(t *testing.T) {
	c, err := ParseAuthorization(basic("u", "pa:ss:é"))
	if err != nil || c != (Credentials{Scheme: "basic", User: "u", Password: "pa:ss:é"}) {
		t.Fatalf("%+v %v", c, err)
	}
	raw := "Basic " + base64.StdEncoding.EncodeToString([]byte("u:\xff"))
	if _, err := ParseAuthorization(raw); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("invalid UTF-8 accepted: %v", err)
	}
}

func TestStorageInfoBodies(t *testing.T) {
	f := newStorageFixture(t)
	tests := []struct {
		path, body, records string
	}{
		{"/1.1/alice/info/collections", `{"bookmarks":0.05,"tabs":1278109839.90}`, "2"},
		{"/1.1/alice/info/collection_counts", `{"a":3,"b":5}`, "2"},
		{"/1.1/alice/info/collection_usage", `{"a":0.4912109375,"b":2.0}`, ""},
		{"/1.1/alice/info/quota", `[0.48828125,null]`, ""},
	}
	for _, tt := range tests {
		r := f.do("GET", tt.path, "")
		if r.code != 200 || r.body != tt.body {
			t.Errorf("%s: %d %q, want %q", tt.path, r.code, r.body, tt.body)
		}
		if got := r.hdr.Get("X-Weave-Records"); got != tt.records {
			t.Errorf("%s: X-Weave-Records %q, want %q", tt.path, got, tt.records)
		}
		if r.hdr.Get("Content-Type") != "application/json" || r.hdr.Get("X-Weave-Timestamp") != "1278109839.90" {
			t.Errorf("%s: headers %v", tt.path, r.hdr)
		}
	}
}

func TestStorageGetCollection(t *testing.T) {
	f := newStorageFixture(t)
	tests := []struct {
		query, accept, body, ctype string
	}{
		{"", "", `["id1","id2"]`, "application/json"},
		{"?full=1", "", `[{"id":"id1","modified":1.00,"payload":"p1"},{"id":"id2","modified":2.00,"payload":"p2","sortindex":3}]`, "application/json"},
		{"", "application/whoisi", "\x00\x00\x00\x05\"id1\"\x00\x00\x00\x05\"id2\"", "application/whoisi"},
		{"", "application/newlines", "\"id1\"\n\"id2\"\n", "application/newlines"},
		{"?sort=index&limit=2&offset=1&newer=1.5&ids=a,b", "", `["id1","id2"]`, "application/json"},
	}
	for _, tt := range tests {
		r := f.do("GET", "/1.1/alice/storage/history"+tt.query, "", "Accept", tt.accept)
		if r.code != 200 || r.body != tt.body || r.hdr.Get("Content-Type") != tt.ctype || r.hdr.Get("X-Weave-Records") != "2" {
			t.Errorf("%q %q: %d %q %v", tt.query, tt.accept, r.code, r.body, r.hdr)
		}
	}
	want := Query{IDs: []string{"a", "b"}, HasIDs: true, Newer: 150, HasNewer: true, Limit: 2, Offset: 1, Sort: SortIndex}
	if !reflect.DeepEqual(*f.store.lastQuery, want) {
		t.Errorf("query %+v", *f.store.lastQuery)
	}
	for _, q := range []string{"?newer=abc", "?older=x", "?index_above=x", "?index_below=", "?limit=x", "?offset=1.5"} {
		f.store.record("")
		r := f.do("GET", "/1.1/alice/storage/history"+q, "")
		if r.code != 400 || r.body != "" || f.store.lastCall != "" {
			t.Errorf("%s: %d %q call %q", q, r.code, r.body, f.store.lastCall)
		}
	}
}

func TestStoragePutItem(t *testing.T) {
	f := newStorageFixture(t)
	p := "/1.1/alice/storage/tabs/abc"
	// Payload write: body == X-Weave-Timestamp.
	r := f.do("PUT", p, `{"id":"ignored","payload":"x","sortindex":"5"}`)
	if r.code != 200 || r.body != r.hdr.Get("X-Weave-Timestamp") || r.body != "1278109839.91" {
		t.Fatalf("PUT: %d %q %v", r.code, r.body, r.hdr)
	}
	if w := f.store.lastWBOs[0]; w.ID != "abc" || w.SortIndex != 5 || w.Payload != "x" {
		t.Fatalf("stored %+v", w)
	}
	// Metadata-only on an existing record: body is the old modified.
	r = f.do("PUT", p, `{"sortindex":7}`)
	if r.code != 200 || r.body != "1278109839.91" || r.hdr.Get("X-Weave-Timestamp") != "1278109839.92" {
		t.Fatalf("metadata PUT: %d %q %v", r.code, r.body, r.hdr)
	}
	// Metadata-only on a new record: null.
	r = f.do("PUT", "/1.1/alice/storage/tabs/new", `{"sortindex":7}`)
	if r.code != 200 || r.body != "null" {
		t.Fatalf("new metadata PUT: %d %q", r.code, r.body)
	}
	// Quota remaining header.
	f.store.quotaLeft = 512 * 1024
	r = f.do("PUT", p, `{"payload":"x"}`)
	if r.hdr.Get("X-Weave-Quota-Remaining") != "512.0" {
		t.Fatalf("quota header %v", r.hdr)
	}
	f.store.quotaLeft = 2 << 20
	if r = f.do("PUT", p, `{"payload":"x"}`); r.hdr.Get("X-Weave-Quota-Remaining") != "" {
		t.Fatalf("quota header with lots left: %v", r.hdr)
	}
	f.store.quotaLeft = -1

	long := strings.Repeat("a", 65)
	tests := []struct {
		name     string
		path     string
		body     string
		hdr      []string
		checkErr error
		writeErr error
		code     int
		resBody  string
	}{
		{"not json", p, `{"payload":`, nil, nil, nil, 400, "6"},
		{"string", p, `"notawbo"`, nil, nil, nil, 400, "8"},
		{"number", p, `42`, nil, nil, nil, 400, "8"},
		{"list id", p, `{"id":["1","2"],"payload":"x"}`, nil, nil, nil, 400, "8"},
		{"bad sortindex", p, `{"sortindex":"abc"}`, nil, nil, nil, 400, "8"},
		{"big sortindex", p, `{"sortindex":"1234567890123"}`, nil, nil, nil, 400, "8"},
		{"bad ttl", p, `{"ttl":-1}`, nil, nil, nil, 400, "8"},
		{"too long url id", "/1.1/alice/storage/tabs/" + long, `{"payload":"x"}`, nil, nil, nil, 400, "8"},
		{"over quota before 412", p, `bad`, nil, ErrOverQuota, nil, 400, "14"},
		{"412 before json", p, `bad`, nil, ErrPreconditionFailed, nil, 412, ""},
		{"412 from store", p, `{"payload":"x"}`, []string{"X-If-Unmodified-Since", "1.5"}, nil, ErrPreconditionFailed, 412, ""},
		{"quota from store", p, `{"payload":"x"}`, nil, nil, ErrOverQuota, 400, "14"},
		{"backend", p, `{"payload":"x"}`, nil, nil, errors.New("disk"), 503, ""},
		{"bad precondition", p, `{"payload":"x"}`, []string{"X-If-Unmodified-Since", "abc"}, nil, nil, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.store.checkErr, f.store.writeErr = tt.checkErr, tt.writeErr
			defer func() { f.store.checkErr, f.store.writeErr = nil, nil }()
			r := f.do("PUT", tt.path, tt.body, tt.hdr...)
			if r.code != tt.code {
				t.Fatalf("status %d, want %d (%q)", r.code, tt.code, r.body)
			}
			if tt.code != 503 && r.body != tt.resBody {
				t.Fatalf("body %q, want %q", r.body, tt.resBody)
			}
			if tt.resBody != "" && r.hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("content type %q", r.hdr.Get("Content-Type"))
			}
		})
	}
	// The precondition is passed to the store.
	f.do("PUT", p, `{"payload":"x"}`, "X-If-Unmodified-Since", "12.345")
	if f.store.lastPre != (Precondition{Set: true, Since: 1234}) {
		t.Fatalf("precondition %+v", f.store.lastPre)
	}
}

func TestStoragePost(t *testing.T) {
	f := newStorageFixture(t)
	p := "/1.1/alice/storage/history"
	long := strings.Repeat("a", 65)
	body := `[{"id":"1","payload":"x"},{"id":"2","sortindex":3},{"payload":"noid"},"str",` +
		`{"id":"` + long + `"},{"id":"p","parentid":"` + long + `"},{"id":"s","sortindex":"x"},` +
		`{"id":"d","predecessorid":"` + long + `"},{"id":"a/b","payload":"x"},{"id":"dbfail","payload":"x"}]`
	r := f.do("POST", p, body)
	if r.code != 200 {
		t.Fatalf("%d %q", r.code, r.body)
	}
	var res struct {
		Modified json.Number         `json:"modified"`
		Success  []string            `json:"success"`
		Failed   map[string][]string `json:"failed"`
	}
	if err := json.Unmarshal([]byte(r.body), &res); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.body, `{"modified":1278109839.91,"success":["1","2"],"failed":{`) {
		t.Fatalf("body %s", r.body)
	}
	wantFailed := map[string][]string{
		"": {"invalid wbo"}, long: {"invalid id"}, "p": {"invalid parentid"}, "s": {"invalid sortindex"},
		"d": {"invalid predecessorid"}, "a/b": {"invalid id"}, "dbfail": {"db error"},
	}
	if !reflect.DeepEqual(res.Failed, wantFailed) {
		t.Fatalf("failed %v", res.Failed)
	}
	if r.hdr.Get("X-Weave-Timestamp") != "1278109839.91" {
		t.Fatalf("timestamp %v", r.hdr)
	}

	// Batch limits: 105 items -> 5 retry wbo; 5 x 210 KiB -> 1 retry bytes.
	var b strings.Builder
	b.WriteString("[")
	for i := range 105 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":"%d","payload":"x"}`, i)
	}
	b.WriteString("]")
	r = f.do("POST", p, b.String())
	res.Success, res.Failed = nil, nil
	_ = json.Unmarshal([]byte(r.body), &res)
	if len(res.Success) != 100 || len(res.Failed) != 5 || res.Failed["104"][0] != "retry wbo" {
		t.Fatalf("105 items: %d success, failed %v", len(res.Success), res.Failed)
	}
	big := strings.Repeat("x", 210*1024)
	b.Reset()
	b.WriteString("[")
	for i := range 5 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":"%d","payload":"%s"}`, i, big)
	}
	b.WriteString("]")
	r = f.do("POST", p, b.String())
	res.Success, res.Failed = nil, nil
	_ = json.Unmarshal([]byte(r.body), &res)
	if len(res.Success) != 4 || !reflect.DeepEqual(res.Failed, map[string][]string{"4": {"retry bytes"}}) {
		t.Fatalf("5 x 210 KiB: %d success, failed %v", len(res.Success), res.Failed)
	}

	// Empty array.
	if r = f.do("POST", p, `[]`); r.code != 200 || !strings.Contains(r.body, `"success":[],"failed":{}`) {
		t.Fatalf("empty: %d %q", r.code, r.body)
	}
	// Single object with id: PUT semantics and answer.
	r = f.do("POST", p, `{"id":"one","payload":"x"}`)
	if r.code != 200 || r.body != r.hdr.Get("X-Weave-Timestamp") || f.store.lastCall != "putitem" || f.store.lastWBOs[0].ID != "one" {
		t.Fatalf("single: %d %q %s", r.code, r.body, f.store.lastCall)
	}
	// PUT on the collection is the same handler.
	if r = f.do("PUT", p, `[{"id":"z","payload":"x"}]`); r.code != 200 || f.store.lastCall != "postitems" {
		t.Fatalf("PUT collection: %d %s", r.code, f.store.lastCall)
	}
	for _, tt := range []struct {
		body     string
		checkErr error
		writeErr error
		code     int
		resBody  string
	}{
		{`{"payload":"x"}`, nil, nil, 400, "8"},
		{`{"id":"a/b","payload":"x"}`, nil, nil, 400, "8"},
		{`"notalist"`, nil, nil, 400, "8"},
		{`42`, nil, nil, 400, "8"},
		{`[{"id":"a"`, nil, nil, 400, "6"},
		{`[{"id":"a"`, ErrPreconditionFailed, nil, 412, ""},
		{`{"payload":"x"}`, ErrPreconditionFailed, nil, 412, ""},
		{`[{"id":"a"`, ErrOverQuota, nil, 400, "6"},
		{`[{"id":"a","payload":"x"}]`, nil, ErrOverQuota, 400, "14"},
		{`[{"id":"a","payload":"x"}]`, nil, ErrPreconditionFailed, 412, ""},
	} {
		f.store.checkErr, f.store.writeErr = tt.checkErr, tt.writeErr
		r := f.do("POST", p, tt.body)
		if r.code != tt.code || r.body != tt.resBody {
			t.Errorf("POST %s (check %v, write %v): %d %q, want %d %q", tt.body, tt.checkErr, tt.writeErr, r.code, r.body, tt.code, tt.resBody)
		}
	}
}

func TestStorageDeletes(t *testing.T) {
	f := newStorageFixture(t)
	r := f.do("DELETE", "/1.1/alice/storage", "")
	if r.code != 400 || r.body != "4" {
		t.Fatalf("no confirm: %d %q", r.code, r.body)
	}
	r = f.do("DELETE", "/1.1/alice/storage", "", "X-Confirm-Delete", "1")
	if r.code != 200 || r.body != r.hdr.Get("X-Weave-Timestamp") || f.store.lastCall != "deletestorage" {
		t.Fatalf("confirmed: %d %q", r.code, r.body)
	}
	r = f.do("DELETE", "/1.1/alice/storage/", "", "X-Confirm-Delete", "1")
	if r.code != 200 {
		t.Fatalf("trailing slash: %d", r.code)
	}
	r = f.do("DELETE", "/1.1/alice/storage/tabs?ids=a,b&full=1&sort=newest&limit=1", "", "X-If-Unmodified-Since", "2")
	want := Query{IDs: []string{"a", "b"}, HasIDs: true, Sort: SortNewest, Limit: 1}
	if r.code != 200 || !reflect.DeepEqual(*f.store.lastQuery, want) || f.store.lastPre != (Precondition{Set: true, Since: 200}) {
		t.Fatalf("delete coll: %d %+v %+v", r.code, *f.store.lastQuery, f.store.lastPre)
	}
	if r = f.do("DELETE", "/1.1/alice/storage/tabs?older=x", ""); r.code != 400 || r.body != "" {
		t.Fatalf("bad filter: %d %q", r.code, r.body)
	}
	f.store.writeErr = ErrPreconditionFailed
	if r = f.do("DELETE", "/1.1/alice/storage/tabs/x", ""); r.code != 412 {
		t.Fatalf("412: %d", r.code)
	}
}

func TestStorageHeartbeatAndBackoff(t *testing.T) {
	st := newFakeStore()
	cfg := DefaultStorageConfig()
	cfg.Store, cfg.Auth = st, fakeAuth{}
	cfg.Backoff = func() int { return 1800 }
	h, err := NewStorageHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"GET", "HEAD"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(m, "/__heartbeat__", nil))
		if rec.Code != 200 || rec.Header().Get("X-Weave-Backoff") != "1800" {
			t.Fatalf("%s heartbeat: %d %v", m, rec.Code, rec.Header())
		}
	}
	st.healthy = errors.New("closing")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/__heartbeat__", nil))
	if rec.Code != 503 || rec.Header().Get("Retry-After") != "10" {
		t.Fatalf("unhealthy: %d %v", rec.Code, rec.Header())
	}
	if _, err := NewStorageHandler(StorageConfig{}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("empty config: %v", err)
	}
}

func TestStorageBodyLimit(t *testing.T) {
	st := newFakeStore()
	cfg := DefaultStorageConfig()
	cfg.Store, cfg.Auth, cfg.MaxBodyBytes = st, fakeAuth{}, 100
	h, _ := NewStorageHandler(cfg)
	body := `{"payload":"` + strings.Repeat("x", 200) + `"}`
	for _, cl := range []bool{true, false} {
		req := httptest.NewRequest("PUT", "/1.1/alice/storage/tabs/a", strings.NewReader(body))
		if !cl {
			req.ContentLength = -1
		}
		req.Header.Set("Authorization", basic("alice", "secret"))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 413 {
			t.Fatalf("content-length %v: %d", cl, rec.Code)
		}
	}
}

// TestStorageConcurrent exercises the handler from many goroutines (run
// with -race).
func TestStorageConcurrent(t *testing.T) {
	f := newStorageFixture(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				switch i % 3 {
				case 0:
					f.do("GET", "/1.1/alice/info/collections", "")
				case 1:
					f.do("GET", "/1.1/alice/storage/tabs?full=1", "")
				default:
					f.do("POST", "/1.1/alice/storage/tabs", fmt.Sprintf(`[{"id":"%d","payload":"x"}]`, g))
				}
			}
		}()
	}
	wg.Wait()
}
