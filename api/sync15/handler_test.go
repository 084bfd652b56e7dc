package sync15

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawk"
)

func TestAuthentication(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("GET", "/info/collections", ""), 200, "{}")

	r := c.do("GET", "/info/collections", "", "Authorization: none")
	expect(t, r, 401, "0")
	if r.header.Get("WWW-Authenticate") != "Hawk" || r.header.Get("X-Weave-Timestamp") != e.stamp().String() {
		t.Fatalf("401 headers %v", r.header)
	}
	expect(t, c.do("GET", "/info/collections", "", "Authorization: Basic YTpi"), 401, "0")
	expect(t, c.do("GET", "/info/collections", "", `Authorization: Hawk id="x", ts="1", nonce="n", mac="m"`), 401, "0")

	// Credentials for uid 42 do not open /1.5/43.
	other := *c
	other.uid = 43
	expect(t, other.do("GET", "/info/collections", ""), 401, "0")

	// A tampered MAC.
	bad := *c
	bad.key = strings.Repeat("A", len(c.key))
	expect(t, bad.do("GET", "/info/collections", ""), 401, "0")

	// Credentials sealed for another node's key.
	e2 := newEnv(t, nil)
	foreign := e2.newClient(42, "alice", time.Hour)
	foreign.e = e
	expect(t, foreign.do("GET", "/info/collections", ""), 401, "0")

	// A client whose clock is off gets the server time in WWW-Authenticate.
	skewed := *c
	skewed.skew = -2 * time.Minute
	r = skewed.do("GET", "/info/quota", "")
	expect(t, r, 401, "0")
	want := fmt.Sprintf(`Hawk ts="%d", tsm="%s", error="Stale timestamp"`, e.clock.Now().Unix(), hawk.TimestampMAC([]byte(c.key), e.clock.Now().Unix()))
	if r.header.Get("WWW-Authenticate") != want {
		t.Fatalf("stale: WWW-Authenticate %q, want %q", r.header.Get("WWW-Authenticate"), want)
	}

	// Expired credentials: refused, except for info/collections within the
	// grace period.
	short := e.newClient(42, "alice", time.Minute)
	e.clock.Add(2 * time.Minute)
	expect(t, short.do("GET", "/info/quota", ""), 401, "0")
	expect(t, short.do("GET", "/info/collections", ""), 200, "*")
	e.clock.Add(10 * time.Minute)
	expect(t, short.do("GET", "/info/collections", ""), 401, "0")
}

func TestReplayRefused(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	u := e.srv.URL + "/1.5/42/info/collections"
	req, _ := http.NewRequest("GET", u, nil)
	host, port := hostPort(t, e)
	auth, err := hawk.Sign(hawk.Credentials{ID: c.id, Key: []byte(c.key)}, "GET", "/1.5/42/info/collections", host, port, hawk.SignOptions{Nonce: "fixed"}, e.clock.Now().Unix())
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{200, 401} {
		req.Header.Set("Authorization", auth)
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Fatalf("request %d: %d, want %d", i, res.StatusCode, want)
		}
	}
}

func hostPort(t *testing.T, e *env) (string, int) {
	t.Helper()
	h, p, ok := hawk.ParseHost(strings.TrimPrefix(e.srv.URL, "http://"))
	if !ok {
		t.Fatal(e.srv.URL)
	}
	return h, p
}

func TestPayloadHash(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	c.hashBody = true
	expect(t, c.do("PUT", "/storage/col/a", `{"payload":"x"}`), 200, "*")
	// A body that does not match the signed hash is refused.
	host, port := hostPort(t, e)
	req, _ := http.NewRequest("PUT", e.srv.URL+"/1.5/42/storage/col/a", strings.NewReader(`{"payload":"y"}`))
	req.Header.Set("Content-Type", "application/json")
	auth, _ := hawk.Sign(hawk.Credentials{ID: c.id, Key: []byte(c.key)}, "PUT", "/1.5/42/storage/col/a", host, port,
		hawk.SignOptions{PayloadHash: hawk.PayloadHash("application/json", []byte(`{"payload":"x"}`))}, e.clock.Now().Unix())
	req.Header.Set("Authorization", auth)
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("mismatched payload hash: %d", res.StatusCode)
	}
}

func TestRoutes(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/info/nothing", 404},
		{"PUT", "/info/quota", 405},
		{"POST", "/info/collections", 405},
		{"GET", "/storage", 405},
		{"PUT", "/storage/col", 405},
		{"POST", "/storage/col/a", 405},
		{"GET", "/storage/" + strings.Repeat("c", 33), 404},
		{"GET", "/storage/bad%20name", 404},
		{"GET", "/storage/col/" + strings.Repeat("i", 65), 404},
		{"GET", "/storage/col/%7F", 404},
		{"GET", "/storage/col/", 404},
		{"GET", "//1.5/abc/info/collections", 404},
		{"GET", "//1.5/12345678901/info/collections", 404},
		{"GET", "//1.1/42/info/collections", 404},
		{"HEAD", "/info/collections", 405},
	} {
		r := c.do(tc.method, tc.path, "")
		if r.status != tc.status || tc.method != "HEAD" && r.body != "0" {
			t.Errorf("%s %s = %d %q, want %d", tc.method, tc.path, r.status, r.body, tc.status)
		}
		if r.header.Get("X-Weave-Timestamp") == "" {
			t.Errorf("%s %s: no X-Weave-Timestamp", tc.method, tc.path)
		}
	}
}

func TestInfo(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.QuotaBytes = 10 << 20 })
	c := e.newClient(42, "alice", time.Hour)
	r := c.do("GET", "/info/configuration", "")
	expect(t, r, 200, `{"max_post_bytes":2621440,"max_post_records":100,"max_record_payload_bytes":2621440,"max_request_bytes":2625536,"max_total_bytes":262144000,"max_total_records":10000,"max_quota_limit":10485760}`)
	if r.header.Get("X-Last-Modified") != "0.00" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("configuration headers %v", r.header)
	}
	expect(t, c.do("GET", "/info/quota", ""), 200, `[0.0,10240.0]`)
	expect(t, c.do("GET", "/info/collection_counts", ""), 200, `{}`)

	t1 := e.stamp()
	expect(t, c.do("POST", "/storage/bookmarks", `[{"id":"a","payload":"`+strings.Repeat("x", 500)+`"},{"id":"b","payload":"xyz"}]`), 200, "*")
	e.tick()
	t2 := e.stamp()
	expect(t, c.do("PUT", "/storage/tabs/t1", `{"payload":"123","ttl":30}`), 200, t2.String())
	e.tick()

	r = c.do("GET", "/info/collections", "")
	expect(t, r, 200, fmt.Sprintf(`{"bookmarks":%s,"tabs":%s}`, t1, t2))
	if r.header.Get("X-Weave-Records") != "2" || r.header.Get("X-Last-Modified") != t2.String() || r.header.Get("X-Weave-Timestamp") != e.stamp().String() {
		t.Fatalf("info/collections headers %v", r.header)
	}
	r = c.do("GET", "/info/collection_counts", "")
	expect(t, r, 200, `{"bookmarks":2,"tabs":1}`)
	if r.header.Get("X-Weave-Records") != "2" {
		t.Fatalf("counts headers %v", r.header)
	}
	expect(t, c.do("GET", "/info/collection_usage", ""), 200, `{"bookmarks":0.4912109375,"tabs":0.0029296875}`)
	expect(t, c.do("GET", "/info/quota", ""), 200, `[0.494140625,10240.0]`)

	// The tabs record expires after its ttl: it is no longer counted.
	e.clock.Add(30 * time.Second)
	expect(t, c.do("GET", "/info/collection_counts", ""), 200, `{"bookmarks":2}`)
	expect(t, c.do("GET", "/info/collections", ""), 200, fmt.Sprintf(`{"bookmarks":%s,"tabs":%s}`, t1, t2))

	// Preconditions on info: the storage's last-modified time.
	r = c.do("GET", "/info/collections", "", "X-If-Modified-Since: "+t2.String())
	expect(t, r, 304, "")
	if r.header.Get("X-Last-Modified") != t2.String() {
		t.Fatalf("304 headers %v", r.header)
	}
	expect(t, c.do("GET", "/info/collections", "", "X-If-Modified-Since: "+(t2-1).String()), 200, "*")
	expect(t, c.do("GET", "/info/quota", "", "X-If-Unmodified-Since: "+(t2-1).String()), 412, "0")
	expect(t, c.do("GET", "/info/quota", "", "X-If-Unmodified-Since: "+t2.String()), 200, "*")
	expect(t, c.do("GET", "/info/collections", "", "X-If-Unmodified-Since: 1", "X-If-Modified-Since: 1"), 400, "1")
	expect(t, c.do("GET", "/info/collections", "", "X-If-Modified-Since: -1"), 400, "1")
	expect(t, c.do("GET", "/info/collections", "", "X-If-Modified-Since: soon"), 400, "1")

	// Users are isolated.
	bob := e.newClient(7, "bob", time.Hour)
	expect(t, bob.do("GET", "/info/collections", ""), 200, "{}")
}

func TestItems(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	t1 := e.stamp()
	r := c.do("PUT", "/storage/col/a", `{"payload":"one","sortindex":3}`)
	expect(t, r, 200, t1.String())
	if r.header.Get("X-Last-Modified") != t1.String() || r.header.Get("X-Weave-Timestamp") != t1.String() {
		t.Fatalf("PUT headers %v", r.header)
	}
	r = c.do("GET", "/storage/col/a", "")
	expect(t, r, 200, `{"id":"a","modified":`+t1.String()+`,"payload":"one","sortindex":3}`)
	if r.header.Get("X-Last-Modified") != t1.String() {
		t.Fatalf("GET headers %v", r.header)
	}
	expect(t, c.do("GET", "/storage/col/missing", ""), 404, "0")
	expect(t, c.do("GET", "/storage/other/a", ""), 404, "0")

	// A ttl-only update keeps modified and the other fields; the record
	// then expires.
	e.tick()
	t2 := e.stamp()
	expect(t, c.do("PUT", "/storage/col/a", `{"ttl":10}`), 200, t2.String())
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t1.String()+`,"payload":"one","sortindex":3}`)
	e.clock.Add(10 * time.Second)
	expect(t, c.do("GET", "/storage/col/a", ""), 404, "0")
	// An expired record is overwritten as a new one: default fields.
	t3 := e.stamp()
	expect(t, c.do("PUT", "/storage/col/a", `{"sortindex":9}`), 200, t3.String())
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t3.String()+`,"payload":"","sortindex":9}`)
	// A sortindex-only update bumps modified and keeps the payload.
	expect(t, c.do("PUT", "/storage/col/a", `{"payload":"p"}`), 200, "*")
	e.tick()
	t4 := e.stamp()
	expect(t, c.do("PUT", "/storage/col/a", `{"sortindex":1}`), 200, t4.String())
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t4.String()+`,"payload":"p","sortindex":1}`)
	// A body id is ignored; the URL's wins.
	expect(t, c.do("PUT", "/storage/col/b", `{"id":"zzz","payload":"b"}`), 200, "*")
	expect(t, c.do("GET", "/storage/col/b", ""), 200, "*")
	expect(t, c.do("GET", "/storage/col/zzz", ""), 404, "0")
	// Ids with escaped characters round-trip.
	for _, id := range []string{"{guid-1}", "a b", "a/b", "q?x", "h#1", "~tilde"} {
		p := "/storage/col/" + escapeID(id)
		expect(t, c.do("PUT", p, `{"payload":"x"}`), 200, "*")
		r := c.do("GET", p, "")
		var got BSO
		var raw map[string]any
		r.json(t, &raw)
		got.ID, _ = raw["id"].(string)
		if r.status != 200 || got.ID != id {
			t.Fatalf("id %q came back as %d %q", id, r.status, r.body)
		}
	}

	// Body and media type errors.
	for _, tc := range []struct {
		body, ct string
		status   int
		want     string
	}{
		{`{"payload":`, "", 400, "6"},
		{`not json`, "", 400, "6"},
		{`"notabso"`, "", 400, "8"},
		{`[{"id":"a"}]`, "", 400, "8"},
		{`{"payload":5}`, "", 400, "8"},
		{`{"sortindex":"5"}`, "", 400, "8"},
		{`{"ttl":-1}`, "", 400, "8"},
		{`{"id":"` + strings.Repeat("x", 65) + `"}`, "", 400, "8"},
		{`{"foo":1}`, "", 400, "8"},
		{`{"payload":"x"}`, "text/plain", 200, "*"},
		{`{"payload":"x"}`, "application/json; charset=utf-8", 200, "*"},
		{`{"payload":"x"}`, "application/newlines", 415, "0"},
		{`{"payload":"x"}`, "text/html", 415, "0"},
	} {
		hdr := []string{}
		if tc.ct != "" {
			hdr = append(hdr, "Content-Type: "+tc.ct)
		}
		expect(t, c.do("PUT", "/storage/col/x", tc.body, hdr...), tc.status, tc.want)
	}
	// The known-bad crypto/keys payload.
	expect(t, c.do("PUT", "/storage/crypto/keys", `{"payload":"{\"IV\": \"AAAAAAAAAAAAAAAAAAAAAA==\"}"}`), 400, "8")
	expect(t, c.do("PUT", "/storage/crypto/keys", `{"payload":"{\"IV\": \"AAAAAAAAAAAAAAAAAAAAAB==\"}"}`), 200, "*")
	expect(t, c.do("POST", "/storage/crypto", `[{"id":"keys","payload":"IV\": \"AAAAAAAAAAAAAAAAAAAAAA==\""}]`), 400, "8")

	// DELETE item.
	e.tick()
	t5 := e.stamp()
	expect(t, c.do("DELETE", "/storage/col/b", ""), 200, `{"modified":`+t5.String()+`}`)
	expect(t, c.do("GET", "/storage/col/b", ""), 404, "0")
	expect(t, c.do("DELETE", "/storage/col/b", ""), 404, "0")
	r = c.do("GET", "/info/collections", "")
	var m map[string]float64
	r.json(t, &m)
	if api.Stamp(m["col"]*100+0.5) != t5 {
		t.Fatalf("collection time after delete: %v, want %s", m, t5)
	}
}

func escapeID(id string) string {
	r := strings.NewReplacer(" ", "%20", "/", "%2F", "?", "%3F", "#", "%23")
	return r.Replace(id)
}

func TestItemPreconditions(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	t1 := e.stamp()
	// X-If-Unmodified-Since: 0 creates only when absent.
	expect(t, c.do("PUT", "/storage/col/a", `{"payload":"1"}`, "X-If-Unmodified-Since: 0"), 200, t1.String())
	r := c.do("PUT", "/storage/col/a", `{"payload":"2"}`, "X-If-Unmodified-Since: 0")
	expect(t, r, 412, "0")
	if r.header.Get("X-Last-Modified") != t1.String() {
		t.Fatalf("412 headers %v", r.header)
	}
	e.tick()
	for _, tc := range []struct {
		method, hdr string
		status      int
	}{
		{"GET", "X-If-Modified-Since: " + t1.String(), 304},
		{"GET", "X-If-Modified-Since: " + (t1 - 1).String(), 200},
		{"GET", "X-If-Unmodified-Since: " + (t1 - 1).String(), 412},
		{"GET", "X-If-Unmodified-Since: " + t1.String(), 200},
		{"PUT", "X-If-Unmodified-Since: " + (t1 - 1).String(), 412},
		{"DELETE", "X-If-Unmodified-Since: " + (t1 - 1).String(), 412},
		{"PUT", "X-If-Modified-Since: " + t1.String(), 304},
		{"PUT", "X-If-Unmodified-Since: x", 400},
	} {
		body := ""
		if tc.method == "PUT" {
			body = `{"payload":"3"}`
		}
		r := c.do(tc.method, "/storage/col/a", body, tc.hdr)
		if r.status != tc.status {
			t.Errorf("%s with %s: %d %q, want %d", tc.method, tc.hdr, r.status, r.body, tc.status)
		}
	}
	// None of the refused writes happened.
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t1.String()+`,"payload":"1"}`)
	// The item's time, not the collection's, is the target.
	expect(t, c.do("PUT", "/storage/col/b", `{"payload":"b"}`), 200, "*")
	expect(t, c.do("PUT", "/storage/col/a", `{"payload":"4"}`, "X-If-Unmodified-Since: "+t1.String()), 200, "*")
}

func TestPost(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Limits = Limits{MaxPostRecords: 3, MaxPostBytes: 10, MaxRecordPayloadBytes: 6}
	})
	c := e.newClient(42, "alice", time.Hour)
	t1 := e.stamp()
	r := c.do("POST", "/storage/col", `[{"id":"a","payload":"1234"},{"id":"b","payload":"123","ttl":"x"},{"id":"c","payload":"1234"},{"id":"d","payload":"123"},{"id":"e"},{"id":"f","payload":"1234567"}]`)
	expect(t, r, 200, `{"modified":`+t1.String()+`,"success":["a","c"],"failed":{"b":"invalid ttl","d":"retry bytes","e":"retry bso","f":"payload too large"}}`)
	if r.header.Get("X-Last-Modified") != t1.String() || r.header.Get("X-Weave-Timestamp") != t1.String() {
		t.Fatalf("POST headers %v", r.header)
	}
	// All records of a POST share its timestamp.
	r = c.do("GET", "/storage/col?full=1&sort=oldest", "")
	expect(t, r, 200, `[{"id":"a","modified":`+t1.String()+`,"payload":"1234"},{"id":"c","modified":`+t1.String()+`,"payload":"1234"}]`)

	// POST updates like PUT: fields not given are kept.
	e.tick()
	t2 := e.stamp()
	expect(t, c.do("POST", "/storage/col", `[{"id":"a","sortindex":5},{"id":"c","ttl":100}]`), 200, `{"modified":`+t2.String()+`,"success":["a","c"],"failed":{}}`)
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t2.String()+`,"payload":"1234","sortindex":5}`)
	expect(t, c.do("GET", "/storage/col/c", ""), 200, `{"id":"c","modified":`+t1.String()+`,"payload":"1234"}`)

	// application/newlines input.
	e.tick()
	t3 := e.stamp()
	expect(t, c.do("POST", "/storage/nl", "{\"id\":\"x\",\"payload\":\"1\"}\n{\"id\":\"y\"}\n", "Content-Type: application/newlines"),
		200, `{"modified":`+t3.String()+`,"success":["x","y"],"failed":{}}`)
	expect(t, c.do("POST", "/storage/nl", "{\"id\":\"x\"}\n\n", "Content-Type: application/newlines"), 400, "6")

	// An empty list creates the collection.
	e.tick()
	t4 := e.stamp()
	expect(t, c.do("POST", "/storage/empty", `[]`), 200, `{"modified":`+t4.String()+`,"success":[],"failed":{}}`)
	r = c.do("GET", "/info/collections", "")
	if !strings.Contains(r.body, `"empty":`+t4.String()) {
		t.Fatalf("empty collection not listed: %s", r.body)
	}

	// Whole-body refusals.
	for _, tc := range []struct {
		body string
		hdr  []string
		code int
		want string
	}{
		{`[{"id":"a"`, nil, 400, "6"},
		{``, nil, 400, "6"},
		{`{"id":"a"}`, nil, 400, "8"},
		{`[{"id":"a"},[]]`, nil, 400, "8"},
		{`[{"payload":"x"}]`, nil, 400, "8"},
		{`[{"id":"a"},{"id":"a"}]`, nil, 400, "8"},
		{`[]`, []string{"Content-Type: text/html"}, 415, "0"},
		{`[]`, []string{"X-Weave-Records: 4"}, 400, "17"},
		{`[]`, []string{"X-Weave-Bytes: 11"}, 400, "17"},
		{`[]`, []string{"X-Weave-Records: many"}, 400, "1"},
		{`[]`, []string{"X-Weave-Records: -1"}, 400, "1"},
		{`[]`, []string{"X-Weave-Total-Records: 1"}, 400, "1"}, // not a batch
		{`[{"id":"k","payload":"IV\": \"AAAAAAAAAAAAAAAAAAAAAA==\""}]`, nil, 200, "*"},
	} {
		expect(t, c.do("POST", "/storage/col", tc.body, tc.hdr...), tc.code, tc.want)
	}
	expect(t, c.do("POST", "/storage/col", `[]`, "X-Weave-Records: 3", "X-Weave-Bytes: 10"), 200, "*")

	// X-If-Unmodified-Since on the collection.
	r = c.do("POST", "/storage/col", `[{"id":"z"}]`, "X-If-Unmodified-Since: "+t1.String())
	expect(t, r, 412, "0")
	expect(t, c.do("GET", "/storage/col/z", ""), 404, "0")
}

func TestRequestSize(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Limits = Limits{MaxRequestBytes: 100} })
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("PUT", "/storage/col/a", `{"payload":"`+strings.Repeat("x", 100)+`"}`), 413, "17")
	expect(t, c.do("POST", "/storage/col", bsoList(5, "r", "xxxxxxxxxxxxxx")), 413, "17")
	expect(t, c.do("POST", "/storage/col", bsoList(2, "r", "x")), 200, "*")
}

func TestGetCollection(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("GET", "/storage/nothing", ""), 200, "[]")
	// Records 0..9: record i written at its own second, sortindex i%3.
	stamps := make([]api.Stamp, 10)
	for i := range stamps {
		stamps[i] = e.stamp()
		expect(t, c.do("PUT", fmt.Sprintf("/storage/col/r%d", i), fmt.Sprintf(`{"payload":"p%d","sortindex":%d}`, i, i%3)), 200, "*")
		e.tick()
	}
	expect(t, c.do("PUT", "/storage/col/nosort", `{"payload":"n"}`), 200, "*")
	last := e.stamp()
	e.tick()
	for _, tc := range []struct {
		q    string
		want string
	}{
		{"", `["nosort","r9","r8","r7","r6","r5","r4","r3","r2","r1","r0"]`},
		{"sort=newest", `["nosort","r9","r8","r7","r6","r5","r4","r3","r2","r1","r0"]`},
		{"sort=oldest", `["r0","r1","r2","r3","r4","r5","r6","r7","r8","r9","nosort"]`},
		{"sort=index", `["r8","r5","r2","r7","r4","r1","r9","r6","r3","r0","nosort"]`},
		{"ids=r1,r3,missing&sort=oldest", `["r1","r3"]`},
		{"newer=" + stamps[7].String(), `["nosort","r9","r8"]`},
		{"older=" + stamps[2].String(), `["r1","r0"]`},
		{"newer=" + stamps[2].String() + "&older=" + stamps[5].String(), `["r4","r3"]`},
		{"ids=r2&full=1", `[{"id":"r2","modified":` + stamps[2].String() + `,"payload":"p2","sortindex":2}]`},
		{"full=&ids=nosort", `[{"id":"nosort","modified":` + last.String() + `,"payload":"n"}]`},
		{"limit=3&sort=oldest", `["r0","r1","r2"]`},
		{"limit=0", `[]`},
		{"unknown=param&client=FxHome", `["nosort","r9","r8","r7","r6","r5","r4","r3","r2","r1","r0"]`},
	} {
		r := c.do("GET", "/storage/col?"+tc.q, "")
		expect(t, r, 200, tc.want)
		if r.header.Get("X-Last-Modified") != last.String() || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: headers %v", tc.q, r.header)
		}
		var list []any
		r.json(t, &list)
		if r.header.Get("X-Weave-Records") != strconv.Itoa(len(list)) {
			t.Errorf("%s: X-Weave-Records %q for %d records", tc.q, r.header.Get("X-Weave-Records"), len(list))
		}
	}
	// Bad parameters and headers.
	for _, q := range []string{"newer=x", "older=-1", "limit=-1", "limit=x", "sort=random", "ids=" + strings.Repeat("a,", 100) + "a",
		"ids=a,,b", "offset=nonsense", "limit=1&limit=2"} {
		expect(t, c.do("GET", "/storage/col?"+q, ""), 400, "1")
	}
	// newlines output, and Accept negotiation.
	r := c.do("GET", "/storage/col?ids=r1,r2&sort=oldest&full=1", "", "Accept: application/newlines")
	want := `{"id":"r1","modified":` + stamps[1].String() + `,"payload":"p1","sortindex":1}` + "\n" +
		`{"id":"r2","modified":` + stamps[2].String() + `,"payload":"p2","sortindex":2}` + "\n"
	expect(t, r, 200, want)
	if r.header.Get("Content-Type") != "application/newlines" {
		t.Fatalf("newlines content type %v", r.header)
	}
	expect(t, c.do("GET", "/storage/col?ids=r1", "", "Accept: application/newlines"), 200, "\"r1\"\n")
	for accept, want := range map[string]string{
		"application/json":               `["r1"]`,
		"*/*":                            `["r1"]`,
		"text/html, application/*;q=0.5": `["r1"]`,
		"application/newlines;q=0.9, application/json": `["r1"]`,
		"application/json;q=0.5, application/newlines": "\"r1\"\n",
		"application/json, application/newlines":       `["r1"]`,
	} {
		expect(t, c.do("GET", "/storage/col?ids=r1", "", "Accept: "+accept), 200, want)
	}
	expect(t, c.do("GET", "/storage/col?ids=r1", "", "Accept: text/html"), 406, "0")
	expect(t, c.do("GET", "/storage/col?ids=r1", "", "Accept: application/json;q=0"), 406, "0")

	// Preconditions on the collection.
	expect(t, c.do("GET", "/storage/col", "", "X-If-Modified-Since: "+last.String()), 304, "")
	expect(t, c.do("GET", "/storage/col", "", "X-If-Unmodified-Since: "+(last-1).String()), 412, "0")
	expect(t, c.do("GET", "/storage/nothing", "", "X-If-Modified-Since: 0"), 304, "")
}

// TestPagination walks every order with several page sizes and checks
// that the pages, chained by X-Weave-Next-Offset, return every record
// exactly once and in order, including records that share a timestamp.
func TestPagination(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	// 25 records; groups of 5 share a timestamp (one POST each), sortindex
	// repeats, a few have none.
	for g := 0; g < 5; g++ {
		var recs []string
		for i := 0; i < 5; i++ {
			n := g*5 + i
			si := ""
			if n%7 != 0 {
				si = fmt.Sprintf(`,"sortindex":%d`, n%4)
			}
			recs = append(recs, fmt.Sprintf(`{"id":"r%02d","payload":"p"%s}`, n, si))
		}
		expect(t, c.do("POST", "/storage/col", "["+strings.Join(recs, ",")+"]"), 200, "*")
		e.tick()
	}
	for _, sort := range []string{"", "newest", "oldest", "index"} {
		base := "/storage/col?x=1"
		if sort != "" {
			base += "&sort=" + sort
		}
		r := c.do("GET", base, "")
		var all []string
		r.json(t, &all)
		if len(all) != 25 {
			t.Fatalf("sort %q: %d records", sort, len(all))
		}
		for _, limit := range []int{1, 2, 3, 7, 24, 25, 26} {
			var got []string
			offset := ""
			for pages := 0; ; pages++ {
				q := fmt.Sprintf("/storage/col?limit=%d", limit)
				if sort != "" {
					q += "&sort=" + sort
				}
				if offset != "" {
					q += "&offset=" + offset
				}
				r := c.do("GET", q, "")
				expect(t, r, 200, "*")
				var page []string
				r.json(t, &page)
				got = append(got, page...)
				offset = r.header.Get("X-Weave-Next-Offset")
				if offset == "" {
					break
				}
				if len(page) != limit || pages > 30 {
					t.Fatalf("sort %q limit %d: page of %d with a next offset", sort, limit, len(page))
				}
			}
			if strings.Join(got, ",") != strings.Join(all, ",") {
				t.Fatalf("sort %q limit %d: pages gave %v, want %v", sort, limit, got, all)
			}
		}
	}
	// limit=0 answers no record but an offset that starts the listing.
	r := c.do("GET", "/storage/col?limit=0&sort=oldest", "")
	expect(t, r, 200, "[]")
	tok := r.header.Get("X-Weave-Next-Offset")
	if tok == "" {
		t.Fatal("limit=0 without a next offset")
	}
	r = c.do("GET", "/storage/col?limit=2&sort=oldest&offset="+tok, "")
	expect(t, r, 200, `["r00","r01"]`)
	// A token is bound to its order.
	expect(t, c.do("GET", "/storage/col?limit=2&sort=newest&offset="+tok, ""), 400, "1")
	// No next offset on an empty collection with limit=0.
	r = c.do("GET", "/storage/none?limit=0", "")
	if r.header.Get("X-Weave-Next-Offset") != "" {
		t.Fatalf("next offset on an empty collection")
	}
}

func TestGetCap(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxGetRecords = 4 })
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("POST", "/storage/col", bsoList(6, "r", "x")), 200, "*")
	r := c.do("GET", "/storage/col?sort=oldest", "")
	expect(t, r, 200, `["r0","r1","r2","r3"]`)
	off := r.header.Get("X-Weave-Next-Offset")
	if off == "" {
		t.Fatal("capped page without a next offset")
	}
	expect(t, c.do("GET", "/storage/col?sort=oldest&limit=100&offset="+off, ""), 200, `["r4","r5"]`)
}

func TestDeletes(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("POST", "/storage/col", bsoList(4, "r", "x")), 200, "*")
	expect(t, c.do("POST", "/storage/other", bsoList(1, "o", "x")), 200, "*")
	e.tick()

	// Deleting some ids keeps the collection, with a new time.
	t1 := e.stamp()
	r := c.do("DELETE", "/storage/col?ids=r0,r2,missing", "")
	expect(t, r, 200, `{"modified":`+t1.String()+`}`)
	if r.header.Get("X-Last-Modified") != t1.String() {
		t.Fatalf("delete headers %v", r.header)
	}
	expect(t, c.do("GET", "/storage/col?sort=oldest", ""), 200, `["r1","r3"]`)
	expect(t, c.do("DELETE", "/storage/col?ids="+strings.Repeat("a,", 100)+"a", ""), 400, "1")
	expect(t, c.do("DELETE", "/storage/col?ids=", ""), 400, "1")
	// Other parameters are ignored on DELETE.
	e.tick()
	expect(t, c.do("DELETE", "/storage/col?ids=r1&newer=9999999999&limit=0", ""), 200, "*")
	expect(t, c.do("GET", "/storage/col", ""), 200, `["r3"]`)
	expect(t, c.do("DELETE", "/storage/col?ids=r3", ""), 200, "*")
	r = c.do("GET", "/info/collections", "")
	if !strings.Contains(r.body, `"col":`) {
		t.Fatalf("emptied collection gone from info/collections: %s", r.body)
	}
	expect(t, c.do("GET", "/info/collection_counts", ""), 200, `{"other":1}`)

	// Deleting the collection removes it.
	e.tick()
	t2 := e.stamp()
	expect(t, c.do("DELETE", "/storage/col", ""), 200, `{"modified":`+t2.String()+`}`)
	r = c.do("GET", "/info/collections", "")
	if strings.Contains(r.body, `"col"`) {
		t.Fatalf("deleted collection listed: %s", r.body)
	}
	expect(t, c.do("GET", "/storage/col", ""), 200, "[]")
	// Deleting a missing collection succeeds with the storage time.
	e.tick()
	expect(t, c.do("DELETE", "/storage/col", ""), 200, `{"modified":`+t2.String()+`}`)
	expect(t, c.do("DELETE", "/storage/never?ids=a", ""), 200, `{"modified":`+t2.String()+`}`)
	expect(t, c.do("DELETE", "/storage/other", "", "X-If-Unmodified-Since: 1"), 412, "0")

	// DELETE storage and DELETE /1.5/{uid} wipe everything.
	for _, path := range []string{"/storage", "", "/"} {
		expect(t, c.do("PUT", "/storage/x/y", `{"payload":"1"}`), 200, "*")
		e.tick()
		ts := e.stamp()
		r := c.do("DELETE", path, "", "X-Confirm-Delete: 1")
		expect(t, r, 200, `{}`)
		if r.header.Get("X-Last-Modified") != ts.String() || r.header.Get("X-Weave-Timestamp") != ts.String() {
			t.Fatalf("DELETE %q headers %v", path, r.header)
		}
		r = c.do("GET", "/info/collections", "")
		expect(t, r, 200, "{}")
		if r.header.Get("X-Last-Modified") != ts.String() {
			t.Fatalf("storage time after wipe %v, want %s", r.header, ts)
		}
	}
	expect(t, c.do("DELETE", "/storage", "", "X-If-Unmodified-Since: 1"), 412, "0")
	// Later writes get later timestamps than the wipe.
	before := e.stamp()
	e.clock.Add(-time.Hour)
	r = e.newClient(42, "alice", time.Hour).do("PUT", "/storage/x/y", `{"payload":"1"}`)
	e.clock.Add(time.Hour)
	ts, _ := api.ParseStamp(r.body)
	if r.status != 200 || ts <= before {
		t.Fatalf("write after wipe stamped %s, wipe at %s", r.body, before)
	}
}

func TestBatches(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Limits = Limits{MaxTotalRecords: 5, MaxTotalBytes: 20, MaxPostRecords: 3} })
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("PUT", "/storage/col/old", `{"payload":"o","sortindex":1}`), 200, "*")
	t0 := e.stamp()
	e.tick()

	r := c.do("POST", "/storage/col?batch=true", `[{"id":"a","payload":"1"},{"id":"b","ttl":-5}]`)
	expect(t, r, 202, "*")
	var open struct {
		Batch   string            `json:"batch"`
		Success []string          `json:"success"`
		Failed  map[string]string `json:"failed"`
	}
	r.json(t, &open)
	if len(open.Batch) != BatchIDLen || strings.Join(open.Success, ",") != "a" || open.Failed["b"] != "invalid ttl" {
		t.Fatalf("batch open %s", r.body)
	}
	if r.header.Get("X-Last-Modified") != t0.String() {
		t.Fatalf("append changed X-Last-Modified: %v", r.header)
	}
	id := open.Batch
	// Nothing is visible before the commit.
	expect(t, c.do("GET", "/storage/col", ""), 200, `["old"]`)
	e.tick()
	r = c.do("POST", "/storage/col?batch="+id, `[{"id":"c","payload":"3"},{"id":"old","payload":"new"},{"id":"a","sortindex":7}]`,
		"X-If-Unmodified-Since: "+t0.String(), "X-Weave-Total-Records: 5")
	expect(t, r, 202, `{"batch":"`+id+`","success":["c","old","a"],"failed":{}}`)
	if r.header.Get("X-Last-Modified") != t0.String() {
		t.Fatalf("append headers %v", r.header)
	}
	expect(t, c.do("GET", "/storage/col?ids=c", ""), 200, `[]`)
	e.tick()
	tc := e.stamp()
	r = c.do("POST", "/storage/col?commit=true&batch="+id, `[{"id":"d","ttl":60}]`, "X-If-Unmodified-Since: "+t0.String())
	expect(t, r, 200, `{"modified":`+tc.String()+`,"success":["d"],"failed":{}}`)
	if r.header.Get("X-Last-Modified") != tc.String() {
		t.Fatalf("commit headers %v", r.header)
	}
	// Every record of the batch has the commit's timestamp; merged fields.
	r = c.do("GET", "/storage/col?full=1&sort=oldest", "")
	s := tc.String()
	expect(t, r, 200, `[{"id":"a","modified":`+s+`,"payload":"1","sortindex":7},{"id":"c","modified":`+s+`,"payload":"3"},{"id":"d","modified":`+s+`,"payload":""},{"id":"old","modified":`+s+`,"payload":"new","sortindex":1}]`)
	// A committed batch is gone.
	expect(t, c.do("POST", "/storage/col?batch="+id, `[]`), 400, "1")

	// batch=true&commit=true is a plain POST.
	e.tick()
	t2 := e.stamp()
	expect(t, c.do("POST", "/storage/col?batch=true&commit=true", `[{"id":"e","payload":"e"}]`), 200, `{"modified":`+t2.String()+`,"success":["e"],"failed":{}}`)

	// Refusals.
	open2 := c.do("POST", "/storage/col?batch", `[]`)
	expect(t, open2, 202, "*")
	open2.json(t, &open)
	id2 := open.Batch
	for _, tc := range []struct {
		q, body string
		hdr     []string
		status  int
		want    string
	}{
		{"?commit=true", `[]`, nil, 400, "1"},
		{"?batch=" + id2 + "&commit=false", `[]`, nil, 400, "1"},
		{"?batch=" + id2 + "&commit=1", `[]`, nil, 400, "1"},
		{"?batch=notabatchid", `[]`, nil, 400, "1"},
		{"?batch=" + id2 + "&batch=" + id2, `[]`, nil, 400, "1"},
		{"?batch=" + strings.Repeat("A", BatchIDLen), `[]`, nil, 400, "1"},
		{"?batch=" + id2, `[]`, []string{"X-Weave-Total-Records: 6"}, 400, "17"},
		{"?batch=" + id2, `[]`, []string{"X-Weave-Total-Bytes: 21"}, 400, "17"},
		{"?batch=" + id2, `[]`, []string{"X-Weave-Total-Bytes: big"}, 400, "1"},
		{"?batch=" + id2, bsoList(3, "n", "1234567"), nil, 400, "17"}, // 21 bytes in the batch
		{"?batch=" + id2, `[]`, []string{"X-If-Unmodified-Since: " + t0.String()}, 412, "0"},
	} {
		expect(t, c.do("POST", "/storage/col"+tc.q, tc.body, tc.hdr...), tc.status, tc.want)
	}
	// The batch is bound to its collection.
	expect(t, c.do("POST", "/storage/elsewhere?batch="+id2, `[]`), 400, "1")
	// Too many records over the batch's requests.
	expect(t, c.do("POST", "/storage/col?batch="+id2, bsoList(3, "m", "x")), 202, "*")
	expect(t, c.do("POST", "/storage/col?batch="+id2, bsoList(3, "k", "x")), 400, "17")
	expect(t, c.do("POST", "/storage/col?batch="+id2, bsoList(2, "k", "x")), 202, "*")
	// Another user cannot use it.
	bob := e.newClient(7, "bob", time.Hour)
	expect(t, bob.do("POST", "/storage/col?batch="+id2+"&commit=true", `[]`), 400, "1")
	// It expires after the batch lifetime.
	e.clock.Add(DefaultBatchLifetime + time.Second)
	c = e.newClient(42, "alice", time.Hour)
	expect(t, c.do("POST", "/storage/col?batch="+id2+"&commit=true", `[]`), 400, "1")
}

func TestBackendErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Backoff = func() int { return 300 }; c.RetryAfter = 60 })
	c := e.newClient(42, "alice", time.Hour)
	r := c.do("GET", "/info/collections", "")
	if r.header.Get("X-Weave-Backoff") != "300" {
		t.Fatalf("no X-Weave-Backoff: %v", r.header)
	}
	e.store.setFail(errors.New("disk on fire"))
	r = c.do("GET", "/storage/col", "")
	if r.status != 503 || r.header.Get("Retry-After") != "60" || !strings.HasPrefix(r.body, `"application error: crash id `) {
		t.Fatalf("backend failure answered %d %v %q", r.status, r.header, r.body)
	}
	e.store.setFail(ErrConflict)
	r = c.do("PUT", "/storage/col/a", `{"payload":"x"}`)
	if r.status != 503 || r.header.Get("Retry-After") != "10" || r.body != "0" {
		t.Fatalf("conflict answered %d %v %q", r.status, r.header, r.body)
	}
	e.store.setFail(api.ErrOverQuota)
	expect(t, c.do("PUT", "/storage/col/a", `{"payload":"x"}`), 400, "14")
	e.store.setFail(nil)
	// Quota enforced by the store.
	e.store.quota = 5
	expect(t, c.do("PUT", "/storage/col/a", `{"payload":"123456"}`), 200, "*")
	expect(t, c.do("PUT", "/storage/col/b", `{"payload":"1"}`), 400, "14")
	expect(t, c.do("POST", "/storage/col", `[{"id":"b"}]`), 400, "14")
}

func TestConfigValidate(t *testing.T) {
	st := newMemStore(time.Now)
	for _, c := range []Config{
		{},
		{Store: st},
		{Store: st, Auth: &hawkAuth{}, MaxGetRecords: -1},
		{Store: st, Auth: &hawkAuth{}, Limits: Limits{MaxPostBytes: -1}},
	} {
		if _, err := NewHandler(c); !errors.Is(err, ErrBadConfig) {
			t.Errorf("NewHandler(%+v) = %v", c, err)
		}
	}
}
