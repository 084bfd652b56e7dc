package sync15test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/sync15"
)

func testAuthentication(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, nil)
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("GET", "/info/collections", ""), 200, "{}")
	r := c.do("GET", "/info/collections", "", "Authorization: none")
	expect(t, r, 401, "0")
	if r.header.Get("WWW-Authenticate") != "Hawk" {
		t.Fatalf("401 headers %v", r.header)
	}
	other := *c
	other.uid = 43
	expect(t, other.do("GET", "/info/collections", ""), 401, "0")
	short := e.newClient(42, "alice", time.Minute)
	e.clock.Add(2 * time.Minute)
	expect(t, short.do("GET", "/info/quota", ""), 401, "0")
	expect(t, short.do("GET", "/info/collections", ""), 200, "*")
}

func testInfo(t *testing.T, f Factory) {
	e := newEnv(t, f, 10<<20, nil)
	c := e.newClient(42, "alice", time.Hour)
	r := c.do("GET", "/info/configuration", "")
	expect(t, r, 200, "*")
	if !strings.HasSuffix(r.body, `"max_quota_limit":10485760}`) {
		t.Fatalf("configuration %s", r.body)
	}
	expect(t, c.do("GET", "/info/quota", ""), 200, `[0.0,10240.0]`)
	expect(t, c.do("GET", "/info/collection_counts", ""), 200, `{}`)
	expect(t, c.do("GET", "/info/collections", ""), 200, `{}`)

	t1, _ := c.write("POST", "/storage/bookmarks", `[{"id":"a","payload":"`+strings.Repeat("x", 500)+`"},{"id":"b","payload":"xyz"}]`)
	e.tick()
	t2, r := c.write("PUT", "/storage/tabs/t1", `{"payload":"123","ttl":30}`)
	expect(t, r, 200, t2.String())
	e.tick()

	r = c.do("GET", "/info/collections", "")
	expect(t, r, 200, fmt.Sprintf(`{"bookmarks":%s,"tabs":%s}`, t1, t2))
	if r.header.Get("X-Weave-Records") != "2" || r.header.Get("X-Last-Modified") != t2.String() || r.header.Get("X-Weave-Timestamp") != e.stamp().String() {
		t.Fatalf("info/collections headers %v", r.header)
	}
	r = c.do("GET", "/info/collection_counts", "")
	expect(t, r, 200, `{"bookmarks":2,"tabs":1}`)
	if r.header.Get("X-Weave-Records") != "2" || r.header.Get("X-Last-Modified") != t2.String() {
		t.Fatalf("counts headers %v", r.header)
	}
	expect(t, c.do("GET", "/info/collection_usage", ""), 200, `{"bookmarks":0.4912109375,"tabs":0.0029296875}`)
	expect(t, c.do("GET", "/info/quota", ""), 200, `[0.494140625,10240.0]`)

	// The tabs record expires after its ttl: no longer counted, but the
	// collection still exists.
	e.clock.Add(30 * time.Second)
	expect(t, c.do("GET", "/info/collection_counts", ""), 200, `{"bookmarks":2}`)
	expect(t, c.do("GET", "/info/collection_usage", ""), 200, `{"bookmarks":0.4912109375}`)
	expect(t, c.do("GET", "/info/collections", ""), 200, fmt.Sprintf(`{"bookmarks":%s,"tabs":%s}`, t1, t2))
	expect(t, c.do("GET", "/storage/tabs", ""), 200, `[]`)

	// Preconditions on info: the storage's last-modified time.
	r = c.do("GET", "/info/collections", "", "X-If-Modified-Since: "+t2.String())
	expect(t, r, 304, "")
	if r.header.Get("X-Last-Modified") != t2.String() {
		t.Fatalf("304 headers %v", r.header)
	}
	expect(t, c.do("GET", "/info/collections", "", "X-If-Modified-Since: "+(t2-1).String()), 200, "*")
	expect(t, c.do("GET", "/info/quota", "", "X-If-Unmodified-Since: "+(t2-1).String()), 412, "0")
	expect(t, c.do("GET", "/info/quota", "", "X-If-Unmodified-Since: "+t2.String()), 200, "*")
	expect(t, c.do("GET", "/info/collection_counts", "", "X-If-Unmodified-Since: "+(t2-1).String()), 412, "0")
	expect(t, c.do("GET", "/info/collections", "", "X-If-Unmodified-Since: 1", "X-If-Modified-Since: 1"), 400, "1")
	expect(t, c.do("GET", "/info/collections", "", "X-If-Modified-Since: -1"), 400, "1")

	// Users are isolated.
	bob := e.newClient(7, "bob", time.Hour)
	expect(t, bob.do("GET", "/info/collections", ""), 200, "{}")
	expect(t, bob.do("GET", "/storage/bookmarks", ""), 200, "[]")
}

func testQuota(t *testing.T, f Factory) {
	e := newEnv(t, f, 5, nil)
	c := e.newClient(42, "alice", time.Hour)
	// The write that reaches the quota passes; the next ones fail.
	c.write("PUT", "/storage/col/a", `{"payload":"123456"}`)
	expect(t, c.do("PUT", "/storage/col/b", `{"payload":"1"}`), 400, "14")
	expect(t, c.do("POST", "/storage/col", `[{"id":"b"}]`), 400, "14")
	expect(t, c.do("POST", "/storage/col?batch=true&commit=true", `[{"id":"b"}]`), 400, "14")
	// Deleting brings the user under the quota again.
	e.tick()
	c.write("DELETE", "/storage/col/a", "")
	e.tick()
	c.write("PUT", "/storage/col/b", `{"payload":"1"}`)
}

func testItems(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, nil)
	c := e.newClient(42, "alice", time.Hour)
	t1, r := c.write("PUT", "/storage/col/a", `{"payload":"one","sortindex":3}`)
	expect(t, r, 200, t1.String())
	r = c.do("GET", "/storage/col/a", "")
	expect(t, r, 200, `{"id":"a","modified":`+t1.String()+`,"payload":"one","sortindex":3}`)
	if r.lastMod(t) != t1 {
		t.Fatalf("GET headers %v", r.header)
	}
	expect(t, c.do("GET", "/storage/col/missing", ""), 404, "0")
	expect(t, c.do("GET", "/storage/other/a", ""), 404, "0")

	// A ttl-only update keeps modified and the other fields; the record
	// then expires.
	e.tick()
	c.write("PUT", "/storage/col/a", `{"ttl":10}`)
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t1.String()+`,"payload":"one","sortindex":3}`)
	e.clock.Add(10 * time.Second)
	expect(t, c.do("GET", "/storage/col/a", ""), 404, "0")
	// An expired record is overwritten as a new one: default fields.
	t3, _ := c.write("PUT", "/storage/col/a", `{"sortindex":9}`)
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t3.String()+`,"payload":"","sortindex":9}`)
	// A payload write keeps the sortindex.
	c.write("PUT", "/storage/col/a", `{"payload":"p"}`)
	// A sortindex-only update bumps modified and keeps the payload.
	e.tick()
	t4, _ := c.write("PUT", "/storage/col/a", `{"sortindex":1}`)
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t4.String()+`,"payload":"p","sortindex":1}`)
	// A payload write keeps an expiry set before.
	e.tick()
	c.write("PUT", "/storage/col/e", `{"payload":"1","ttl":5}`)
	c.write("PUT", "/storage/col/e", `{"payload":"2"}`)
	e.clock.Add(6 * time.Second)
	expect(t, c.do("GET", "/storage/col/e", ""), 404, "0")
	// A body id is ignored; the URL's wins.
	c.write("PUT", "/storage/col/b", `{"id":"zzz","payload":"b"}`)
	expect(t, c.do("GET", "/storage/col/b", ""), 200, "*")
	expect(t, c.do("GET", "/storage/col/zzz", ""), 404, "0")
	// Ids with escaped characters round-trip.
	for _, id := range []string{"{guid-1}", "a b", "a/b", "q?x", "h#1", "~tilde"} {
		p := "/storage/col/" + escapeID(id)
		c.write("PUT", p, `{"payload":"x"}`)
		r := c.do("GET", p, "")
		var raw map[string]any
		r.json(t, &raw)
		if got, _ := raw["id"].(string); r.status != 200 || got != id {
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
		{`"notabso"`, "", 400, "8"},
		{`{"payload":5}`, "", 400, "8"},
		{`{"ttl":-1}`, "", 400, "8"},
		{`{"foo":1}`, "", 400, "8"},
		{`{"payload":"x"}`, "text/plain", 200, "*"},
		{`{"payload":"x"}`, "application/newlines", 415, "0"},
	} {
		hdr := []string{}
		if tc.ct != "" {
			hdr = append(hdr, "Content-Type: "+tc.ct)
		}
		r := c.do("PUT", "/storage/col/x", tc.body, hdr...)
		expect(t, r, tc.status, tc.want)
		if r.status == 200 {
			e.last = r.lastMod(t)
		}
	}
	expect(t, c.do("PUT", "/storage/crypto/keys", `{"payload":"{\"IV\": \"AAAAAAAAAAAAAAAAAAAAAA==\"}"}`), 400, "8")

	// DELETE item.
	e.tick()
	t5, r := c.write("DELETE", "/storage/col/b", "")
	expect(t, r, 200, `{"modified":`+t5.String()+`}`)
	expect(t, c.do("GET", "/storage/col/b", ""), 404, "0")
	expect(t, c.do("DELETE", "/storage/col/b", ""), 404, "0")
	r = c.do("GET", "/info/collections", "")
	var m map[string]float64
	r.json(t, &m)
	if api.Stamp(m["col"]*100+0.5) != t5 {
		t.Fatalf("collection time after delete: %v, want %s", m, t5)
	}
}

func testItemPreconditions(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, nil)
	c := e.newClient(42, "alice", time.Hour)
	// X-If-Unmodified-Since: 0 creates only when absent.
	t1, _ := c.write("PUT", "/storage/col/a", `{"payload":"1"}`, "X-If-Unmodified-Since: 0")
	r := c.do("PUT", "/storage/col/a", `{"payload":"2"}`, "X-If-Unmodified-Since: 0")
	expect(t, r, 412, "0")
	if r.lastMod(t) != t1 {
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
		if r := c.do(tc.method, "/storage/col/a", body, tc.hdr); r.status != tc.status {
			t.Errorf("%s with %s: %d %q, want %d", tc.method, tc.hdr, r.status, r.body, tc.status)
		}
	}
	// None of the refused writes happened.
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t1.String()+`,"payload":"1"}`)
	// The item's time, not the collection's, is the target.
	e.tick()
	c.write("PUT", "/storage/col/b", `{"payload":"b"}`)
	c.write("PUT", "/storage/col/a", `{"payload":"4"}`, "X-If-Unmodified-Since: "+t1.String())
}

func testPost(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, func(c *sync15.Config) {
		c.Limits = sync15.Limits{MaxPostRecords: 3, MaxPostBytes: 10, MaxRecordPayloadBytes: 6}
	})
	c := e.newClient(42, "alice", time.Hour)
	t1, r := c.write("POST", "/storage/col", `[{"id":"a","payload":"1234"},{"id":"b","payload":"123","ttl":"x"},{"id":"c","payload":"1234"},{"id":"d","payload":"123"},{"id":"e"},{"id":"f","payload":"1234567"}]`)
	expect(t, r, 200, `{"modified":`+t1.String()+`,"success":["a","c"],"failed":{"b":"invalid ttl","d":"retry bytes","e":"retry bso","f":"payload too large"}}`)
	// All records of a POST share its timestamp.
	r = c.do("GET", "/storage/col?full=1&sort=oldest", "")
	expect(t, r, 200, `[{"id":"a","modified":`+t1.String()+`,"payload":"1234"},{"id":"c","modified":`+t1.String()+`,"payload":"1234"}]`)

	// POST updates like PUT: fields not given are kept; the collection
	// takes the POST's time.
	e.tick()
	t2, r := c.write("POST", "/storage/col", `[{"id":"a","sortindex":5},{"id":"c","ttl":100}]`)
	expect(t, r, 200, `{"modified":`+t2.String()+`,"success":["a","c"],"failed":{}}`)
	expect(t, c.do("GET", "/storage/col/a", ""), 200, `{"id":"a","modified":`+t2.String()+`,"payload":"1234","sortindex":5}`)
	expect(t, c.do("GET", "/storage/col/c", ""), 200, `{"id":"c","modified":`+t1.String()+`,"payload":"1234"}`)
	if r := c.do("GET", "/storage/col", ""); r.lastMod(t) != t2 {
		t.Fatalf("collection time %v, want %s", r.header, t2)
	}

	// application/newlines input.
	e.tick()
	t3, r := c.write("POST", "/storage/nl", "{\"id\":\"x\",\"payload\":\"1\"}\n{\"id\":\"y\"}\n", "Content-Type: application/newlines")
	expect(t, r, 200, `{"modified":`+t3.String()+`,"success":["x","y"],"failed":{}}`)
	expect(t, c.do("POST", "/storage/nl", "{\"id\":\"x\"}\n\n", "Content-Type: application/newlines"), 400, "6")

	// An empty list creates the collection.
	e.tick()
	t4, r := c.write("POST", "/storage/empty", `[]`)
	expect(t, r, 200, `{"modified":`+t4.String()+`,"success":[],"failed":{}}`)
	r = c.do("GET", "/info/collections", "")
	if !strings.Contains(r.body, `"empty":`+t4.String()) {
		t.Fatalf("empty collection not listed: %s", r.body)
	}
	expect(t, c.do("GET", "/storage/empty", ""), 200, `[]`)

	// Whole-body refusals.
	for _, tc := range []struct {
		body string
		hdr  []string
		code int
		want string
	}{
		{`[{"id":"a"`, nil, 400, "6"},
		{`{"id":"a"}`, nil, 400, "8"},
		{`[{"id":"a"},{"id":"a"}]`, nil, 400, "8"},
		{`[]`, []string{"Content-Type: text/html"}, 415, "0"},
		{`[]`, []string{"X-Weave-Records: 4"}, 400, "17"},
		{`[]`, []string{"X-Weave-Bytes: 11"}, 400, "17"},
	} {
		expect(t, c.do("POST", "/storage/col", tc.body, tc.hdr...), tc.code, tc.want)
	}
	// X-If-Unmodified-Since on the collection.
	r = c.do("POST", "/storage/col", `[{"id":"z"}]`, "X-If-Unmodified-Since: "+t1.String())
	expect(t, r, 412, "0")
	expect(t, c.do("GET", "/storage/col/z", ""), 404, "0")
	c.write("POST", "/storage/col", `[{"id":"z"}]`, "X-If-Unmodified-Since: "+t2.String())
	// A new record without a payload has an empty one.
	expect(t, c.do("GET", "/storage/col/z", ""), 200, `{"id":"z","modified":`+e.last.String()+`,"payload":""}`)
}

func testRequestSize(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, func(c *sync15.Config) { c.Limits = sync15.Limits{MaxRequestBytes: 100} })
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("PUT", "/storage/col/a", `{"payload":"`+strings.Repeat("x", 100)+`"}`), 413, "17")
	expect(t, c.do("POST", "/storage/col", bsoList(5, "r", "xxxxxxxxxxxxxx")), 413, "17")
	c.write("POST", "/storage/col", bsoList(2, "r", "x"))
}

func testGetCollection(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, nil)
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("GET", "/storage/nothing", ""), 200, "[]")
	// Records 0..9: record i written at its own second, sortindex i%3.
	stamps := make([]api.Stamp, 10)
	for i := range stamps {
		stamps[i], _ = c.write("PUT", fmt.Sprintf("/storage/col/r%d", i), fmt.Sprintf(`{"payload":"p%d","sortindex":%d}`, i, i%3))
		e.tick()
	}
	last, _ := c.write("PUT", "/storage/col/nosort", `{"payload":"n"}`)
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
		{"ids=r1,r3,r2&sort=index", `["r2","r1","r3"]`},
		{"ids=r1,r3", `["r3","r1"]`},
		{"newer=" + stamps[7].String(), `["nosort","r9","r8"]`},
		{"older=" + stamps[2].String(), `["r1","r0"]`},
		{"newer=" + stamps[2].String() + "&older=" + stamps[5].String(), `["r4","r3"]`},
		{"newer=" + stamps[2].String() + "&older=" + stamps[5].String() + "&sort=oldest", `["r3","r4"]`},
		{"newer=" + stamps[5].String() + "&sort=index", `["r8","r7","r9","r6","nosort"]`},
		{"ids=r2&full=1", `[{"id":"r2","modified":` + stamps[2].String() + `,"payload":"p2","sortindex":2}]`},
		{"full=&ids=nosort", `[{"id":"nosort","modified":` + last.String() + `,"payload":"n"}]`},
		{"limit=3&sort=oldest", `["r0","r1","r2"]`},
		{"limit=2&sort=index&full=1", `[{"id":"r8","modified":` + stamps[8].String() + `,"payload":"p8","sortindex":2},{"id":"r5","modified":` + stamps[5].String() + `,"payload":"p5","sortindex":2}]`},
		{"limit=0", `[]`},
		{"unknown=param", `["nosort","r9","r8","r7","r6","r5","r4","r3","r2","r1","r0"]`},
	} {
		r := c.do("GET", "/storage/col?"+tc.q, "")
		expect(t, r, 200, tc.want)
		if r.lastMod(t) != last || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: headers %v", tc.q, r.header)
		}
		var list []any
		r.json(t, &list)
		if r.header.Get("X-Weave-Records") != strconv.Itoa(len(list)) {
			t.Errorf("%s: X-Weave-Records %q for %d records", tc.q, r.header.Get("X-Weave-Records"), len(list))
		}
	}
	// An expired record leaves every listing.
	c.write("PUT", "/storage/col/r4", `{"ttl":1}`)
	e.clock.Add(2 * time.Second)
	expect(t, c.do("GET", "/storage/col?sort=oldest&newer="+stamps[2].String()+"&older="+stamps[5].String(), ""), 200, `["r3"]`)
	expect(t, c.do("GET", "/storage/col?ids=r4,r3", ""), 200, `["r3"]`)
	expect(t, c.do("GET", "/storage/col?sort=index&limit=5", ""), 200, `["r8","r5","r2","r7","r1"]`)
	// newlines output.
	r := c.do("GET", "/storage/col?ids=r1,r2&sort=oldest&full=1", "", "Accept: application/newlines")
	want := `{"id":"r1","modified":` + stamps[1].String() + `,"payload":"p1","sortindex":1}` + "\n" +
		`{"id":"r2","modified":` + stamps[2].String() + `,"payload":"p2","sortindex":2}` + "\n"
	expect(t, r, 200, want)
	// Preconditions on the collection.
	lm := c.do("GET", "/storage/col", "").lastMod(t)
	expect(t, c.do("GET", "/storage/col", "", "X-If-Modified-Since: "+lm.String()), 304, "")
	expect(t, c.do("GET", "/storage/col", "", "X-If-Unmodified-Since: "+(lm-1).String()), 412, "0")
	expect(t, c.do("GET", "/storage/nothing", "", "X-If-Modified-Since: 0"), 304, "")
	// Bad parameters.
	for _, q := range []string{"newer=x", "limit=-1", "sort=random", "offset=nonsense", "limit=1&limit=2"} {
		expect(t, c.do("GET", "/storage/col?"+q, ""), 400, "1")
	}
}

// testPagination walks every order with several page sizes and checks
// that the pages, chained by X-Weave-Next-Offset, return every record
// exactly once and in order, including records that share a timestamp
// or a sortindex, and that writes between pages do not disturb the pages
// of records they do not move.
func testPagination(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, nil)
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
		c.write("POST", "/storage/col", "["+strings.Join(recs, ",")+"]")
		e.tick()
	}
	sorts := []string{"", "newest", "oldest", "index"}
	wants := map[string]string{
		"":       "r24,r23,r22,r21,r20,r19,r18,r17,r16,r15,r14,r13,r12,r11,r10,r09,r08,r07,r06,r05,r04,r03,r02,r01,r00",
		"newest": "r24,r23,r22,r21,r20,r19,r18,r17,r16,r15,r14,r13,r12,r11,r10,r09,r08,r07,r06,r05,r04,r03,r02,r01,r00",
		"oldest": "r00,r01,r02,r03,r04,r05,r06,r07,r08,r09,r10,r11,r12,r13,r14,r15,r16,r17,r18,r19,r20,r21,r22,r23,r24",
		// sortindex n%4 desc, then id desc; r00, r07, r14, r21 have none.
		"index": "r23,r19,r15,r11,r03,r22,r18,r10,r06,r02,r17,r13,r09,r05,r01,r24,r20,r16,r12,r08,r04,r21,r14,r07,r00",
	}
	for _, sort := range sorts {
		base := "/storage/col?x=1"
		if sort != "" {
			base += "&sort=" + sort
		}
		var all []string
		c.do("GET", base, "").json(t, &all)
		if strings.Join(all, ",") != wants[sort] {
			t.Fatalf("sort %q: %v", sort, all)
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
	// newer with offsets: the pages of the newer records only.
	r := c.do("GET", "/storage/col?newer=1&limit=10&sort=oldest&full=1", "")
	var first []struct{ ID string }
	r.json(t, &first)
	off := r.header.Get("X-Weave-Next-Offset")
	if len(first) != 10 || off == "" {
		t.Fatalf("first page %d %q", len(first), off)
	}
	// A record deleted and one added between pages: the next page goes on
	// after the position, wherever the records moved.
	e.tick()
	c.write("DELETE", "/storage/col/r12", "")
	c.write("PUT", "/storage/col/r99", `{"payload":"new"}`)
	var rest []string
	c.do("GET", "/storage/col?newer=1&limit=100&sort=oldest&offset="+off, "").json(t, &rest)
	if strings.Join(rest, ",") != "r10,r11,r13,r14,r15,r16,r17,r18,r19,r20,r21,r22,r23,r24,r99" {
		t.Fatalf("after changes: %v", rest)
	}
	// limit=0 answers no record but an offset that starts the listing.
	r = c.do("GET", "/storage/col?limit=0&sort=oldest", "")
	expect(t, r, 200, "[]")
	tok := r.header.Get("X-Weave-Next-Offset")
	if tok == "" {
		t.Fatal("limit=0 without a next offset")
	}
	expect(t, c.do("GET", "/storage/col?limit=2&sort=oldest&offset="+tok, ""), 200, `["r00","r01"]`)
	expect(t, c.do("GET", "/storage/col?limit=2&sort=newest&offset="+tok, ""), 400, "1")
	if r := c.do("GET", "/storage/none?limit=0", ""); r.header.Get("X-Weave-Next-Offset") != "" {
		t.Fatalf("next offset on an empty collection")
	}
}

func testGetCap(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, func(c *sync15.Config) { c.MaxGetRecords = 4 })
	c := e.newClient(42, "alice", time.Hour)
	c.write("POST", "/storage/col", bsoList(6, "r", "x"))
	r := c.do("GET", "/storage/col?sort=oldest", "")
	expect(t, r, 200, `["r0","r1","r2","r3"]`)
	off := r.header.Get("X-Weave-Next-Offset")
	if off == "" {
		t.Fatal("capped page without a next offset")
	}
	expect(t, c.do("GET", "/storage/col?sort=oldest&limit=100&offset="+off, ""), 200, `["r4","r5"]`)
}

func testDeletes(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, nil)
	c := e.newClient(42, "alice", time.Hour)
	c.write("POST", "/storage/col", bsoList(4, "r", "x"))
	c.write("POST", "/storage/other", bsoList(1, "o", "x"))
	e.tick()

	// Deleting some ids keeps the collection, with a new time.
	t1, r := c.write("DELETE", "/storage/col?ids=r0,r2,missing", "")
	expect(t, r, 200, `{"modified":`+t1.String()+`}`)
	expect(t, c.do("GET", "/storage/col?sort=oldest", ""), 200, `["r1","r3"]`)
	expect(t, c.do("DELETE", "/storage/col?ids="+strings.Repeat("a,", 100)+"a", ""), 400, "1")
	e.tick()
	c.write("DELETE", "/storage/col?ids=r1&newer=9999999999&limit=0", "")
	expect(t, c.do("GET", "/storage/col", ""), 200, `["r3"]`)
	c.write("DELETE", "/storage/col?ids=r3", "")
	r = c.do("GET", "/info/collections", "")
	if !strings.Contains(r.body, `"col":`) {
		t.Fatalf("emptied collection gone from info/collections: %s", r.body)
	}
	expect(t, c.do("GET", "/info/collection_counts", ""), 200, `{"other":1}`)

	// Deleting the collection removes it.
	e.tick()
	t2, r := c.write("DELETE", "/storage/col", "")
	expect(t, r, 200, `{"modified":`+t2.String()+`}`)
	r = c.do("GET", "/info/collections", "")
	if strings.Contains(r.body, `"col"`) || r.lastMod(t) != t2 {
		t.Fatalf("deleted collection listed or storage time not its: %s %v", r.body, r.header)
	}
	expect(t, c.do("GET", "/storage/col", ""), 200, "[]")
	// Deleting a missing collection succeeds with the storage time.
	e.tick()
	expect(t, c.do("DELETE", "/storage/col", ""), 200, `{"modified":`+t2.String()+`}`)
	expect(t, c.do("DELETE", "/storage/never?ids=a", ""), 200, `{"modified":`+t2.String()+`}`)
	expect(t, c.do("DELETE", "/storage/other", "", "X-If-Unmodified-Since: 1"), 412, "0")

	// DELETE storage and DELETE /1.5/{uid} wipe everything.
	for _, path := range []string{"/storage", "", "/"} {
		c.write("PUT", "/storage/x/y", `{"payload":"1"}`)
		e.tick()
		ts, r := c.write("DELETE", path, "", "X-Confirm-Delete: 1")
		expect(t, r, 200, `{}`)
		r = c.do("GET", "/info/collections", "")
		expect(t, r, 200, "{}")
		if r.lastMod(t) != ts {
			t.Fatalf("storage time after wipe %v, want %s", r.header, ts)
		}
		expect(t, c.do("GET", "/storage/x/y", ""), 404, "0")
	}
	expect(t, c.do("DELETE", "/storage", "", "X-If-Unmodified-Since: 1"), 412, "0")
	// Later writes get later timestamps than the wipe, even with the
	// clock set back.
	e.clock.Add(-time.Hour)
	c2 := e.newClient(42, "alice", time.Hour)
	c2.write("PUT", "/storage/x/y", `{"payload":"1"}`)
}

func testBatches(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, func(c *sync15.Config) {
		c.Limits = sync15.Limits{MaxTotalRecords: 5, MaxTotalBytes: 20, MaxPostRecords: 3}
	})
	c := e.newClient(42, "alice", time.Hour)
	t0, _ := c.write("PUT", "/storage/col/old", `{"payload":"o","sortindex":1}`)
	e.tick()

	r := c.do("POST", "/storage/col?batch=true", `[{"id":"a","payload":"1"},{"id":"b","ttl":-5}]`)
	expect(t, r, 202, "*")
	var open struct {
		Batch   string            `json:"batch"`
		Success []string          `json:"success"`
		Failed  map[string]string `json:"failed"`
	}
	r.json(t, &open)
	if len(open.Batch) != sync15.BatchIDLen || strings.Join(open.Success, ",") != "a" || open.Failed["b"] != "invalid ttl" {
		t.Fatalf("batch open %s", r.body)
	}
	if r.lastMod(t) != t0 {
		t.Fatalf("batch open changed X-Last-Modified: %v", r.header)
	}
	id := open.Batch
	// Nothing is visible before the commit.
	expect(t, c.do("GET", "/storage/col", ""), 200, `["old"]`)
	e.tick()
	r = c.do("POST", "/storage/col?batch="+id, `[{"id":"c","payload":"3"},{"id":"old","payload":"new"},{"id":"a","sortindex":7}]`,
		"X-If-Unmodified-Since: "+t0.String(), "X-Weave-Total-Records: 5")
	expect(t, r, 202, `{"batch":"`+id+`","success":["c","old","a"],"failed":{}}`)
	if r.lastMod(t) != t0 {
		t.Fatalf("append headers %v", r.header)
	}
	expect(t, c.do("GET", "/storage/col?ids=c", ""), 200, `[]`)
	expect(t, c.do("GET", "/storage/col/old", ""), 200, `{"id":"old","modified":`+t0.String()+`,"payload":"o","sortindex":1}`)
	e.tick()
	tc, r := c.write("POST", "/storage/col?commit=true&batch="+id, `[{"id":"d","ttl":60}]`, "X-If-Unmodified-Since: "+t0.String())
	expect(t, r, 200, `{"modified":`+tc.String()+`,"success":["d"],"failed":{}}`)
	// Every record of the batch has the commit's timestamp; merged fields.
	s := tc.String()
	expect(t, c.do("GET", "/storage/col?full=1&sort=oldest", ""), 200,
		`[{"id":"a","modified":`+s+`,"payload":"1","sortindex":7},{"id":"c","modified":`+s+`,"payload":"3"},{"id":"d","modified":`+s+`,"payload":""},{"id":"old","modified":`+s+`,"payload":"new","sortindex":1}]`)
	// The ttl given in the batch runs from the commit.
	e.clock.Add(61 * time.Second)
	expect(t, c.do("GET", "/storage/col/d", ""), 404, "0")
	// A committed batch is gone.
	expect(t, c.do("POST", "/storage/col?batch="+id, `[]`), 400, "1")

	// batch=true&commit=true is a plain POST.
	e.tick()
	t2, r := c.write("POST", "/storage/col?batch=true&commit=true", `[{"id":"e","payload":"e"}]`)
	expect(t, r, 200, `{"modified":`+t2.String()+`,"success":["e"],"failed":{}}`)

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
		{"?batch=" + id2 + "&commit=false", `[]`, nil, 400, "1"},
		{"?batch=notabatchid", `[]`, nil, 400, "1"},
		{"?batch=" + id2, `[]`, []string{"X-Weave-Total-Records: 6"}, 400, "17"},
		{"?batch=" + id2, bsoList(3, "n", "1234567"), nil, 400, "17"}, // 21 bytes in the batch
		{"?batch=" + id2, `[]`, []string{"X-If-Unmodified-Since: " + t0.String()}, 412, "0"},
	} {
		expect(t, c.do("POST", "/storage/col"+tc.q, tc.body, tc.hdr...), tc.status, tc.want)
	}
	// The batch is bound to its collection and user.
	expect(t, c.do("POST", "/storage/elsewhere?batch="+id2, `[]`), 400, "1")
	bob := e.newClient(7, "bob", time.Hour)
	expect(t, bob.do("POST", "/storage/col?batch="+id2+"&commit=true", `[]`), 400, "1")
	// Too many records over the batch's requests; a refused request adds
	// nothing.
	expect(t, c.do("POST", "/storage/col?batch="+id2, bsoList(3, "m", "x")), 202, "*")
	expect(t, c.do("POST", "/storage/col?batch="+id2, bsoList(3, "k", "x")), 400, "17")
	expect(t, c.do("POST", "/storage/col?batch="+id2, bsoList(2, "k", "x")), 202, "*")
	// Records sent again are merged, not counted twice.
	expect(t, c.do("POST", "/storage/col?batch="+id2, bsoList(2, "k", "y")), 202, "*")
	e.tick()
	c.write("POST", "/storage/col?batch="+id2+"&commit=true", `[]`)
	expect(t, c.do("GET", "/storage/col/k1", ""), 200, `{"id":"k1","modified":`+e.last.String()+`,"payload":"y"}`)
	// A batch expires after the batch lifetime.
	id3 := c.do("POST", "/storage/col?batch=true", `[{"id":"late"}]`)
	id3.json(t, &open)
	e.clock.Add(sync15.DefaultBatchLifetime + time.Second)
	c = e.newClient(42, "alice", time.Hour)
	expect(t, c.do("POST", "/storage/col?batch="+open.Batch+"&commit=true", `[]`), 400, "1")
	// DELETE storage drops open batches.
	open4 := c.do("POST", "/storage/col?batch=true", `[{"id":"x"}]`)
	open4.json(t, &open)
	e.tick()
	c.write("DELETE", "/storage", "")
	expect(t, c.do("POST", "/storage/col?batch="+open.Batch+"&commit=true", `[]`), 400, "1")
}

// testStampsIncrease interleaves reads and writes without moving the
// clock: every write is stamped above every time an earlier answer gave,
// so newer=<any answer's time> never skips a later write.
func testStampsIncrease(t *testing.T, f Factory) {
	e := newEnv(t, f, 0, nil)
	c := e.newClient(42, "alice", time.Hour)
	var seen api.Stamp
	for i := 0; i < 20; i++ {
		r := c.do("GET", "/storage/col", "")
		ts, _ := api.ParseStamp(r.header.Get("X-Weave-Timestamp"))
		seen = max(seen, ts, r.lastMod(t))
		w, _ := c.write("PUT", fmt.Sprintf("/storage/col/r%d", i), `{"payload":"x"}`)
		if w < seen {
			t.Fatalf("write %d stamped %s below a time already given, %s", i, w, seen)
		}
		var got []string
		c.do("GET", "/storage/col?newer="+(w-1).String(), "").json(t, &got)
		if len(got) != 1 || got[0] != fmt.Sprintf("r%d", i) {
			t.Fatalf("newer=%s after write %d: %v", w-1, i, got)
		}
	}
}
