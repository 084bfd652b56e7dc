package testnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// Bad input: every malformed, oversized or unauthenticated request gets
// the protocol's answer, stores nothing, and leaves the server up.

// snapshot is what an account's storage looks like from outside.
type snapshot struct {
	collections string
	counts      string
	records     map[string]string // collection -> GET ?full=1 body
}

func takeSnapshot(t *testing.T, a *account) snapshot {
	t.Helper()
	r := a.do(t, "GET", "info/collections", nil)
	want(t, r, 200)
	sn := snapshot{collections: r.body(), records: map[string]string{}}
	r = a.do(t, "GET", "info/collection_counts", nil)
	want(t, r, 200)
	sn.counts = r.body()
	for coll := range decodeObject(t, a.do(t, "GET", "info/collections", nil)) {
		g := a.do(t, "GET", "storage/"+coll+"?full=1", nil)
		want(t, g, 200)
		sn.records[coll] = g.body()
	}
	return sn
}

func (sn snapshot) equal(t *testing.T, other snapshot) {
	t.Helper()
	var a, b any
	_ = json.Unmarshal([]byte(sn.collections), &a)
	_ = json.Unmarshal([]byte(other.collections), &b)
	eq(t, "info/collections", b, a)
	a, b = nil, nil
	_ = json.Unmarshal([]byte(sn.counts), &a)
	_ = json.Unmarshal([]byte(other.counts), &b)
	eq(t, "info/collection_counts", b, a)
	eq(t, "collections", sortedKeys(other.records), sortedKeys(sn.records))
	for coll, body := range sn.records {
		var x, y any
		_ = json.Unmarshal([]byte(body), &x)
		_ = json.Unmarshal([]byte(other.records[coll]), &y)
		eq(t, "records of "+coll, y, x)
	}
}

// tryDo sends a request and returns a transport error instead of failing.
func (s *server) tryDo(method, path string, body io.Reader, hdr ...string) (reply, error) {
	req, err := http.NewRequest(method, s.base+path, body)
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return reply{Status: resp.StatusCode, StatusLine: resp.Status, Header: resp.Header, Body: data, req: method + " " + path}, nil
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)
	other := s.newAccount(t)
	a.put(t, "keep", "one", map[string]any{"payload": "1", "sortindex": 1})
	a.post(t, "keep", []map[string]any{{"id": "two", "payload": "2"}, {"id": "three", "payload": "3", "parentid": "x"}})
	a.put(t, "bm", "b", map[string]any{"payload": "b"})
	before := takeSnapshot(t, a)
	otherBefore := takeSnapshot(t, other)

	t.Run("malformed_json", func(t *testing.T) {
		// 2.4 step 3 / 2.5 step 2: not JSON -> 400 6.
		for _, body := range []string{"", "{", "[{", `{"payload": "x"`, `{'payload': 'x'}`, "payload=x", "\x00\x01\x02", `{"payload": "x"}}`, `[{"id": "a", "payload": "x"}]]`} {
			wantCode(t, a.do(t, "PUT", "storage/keep/one", body), 400, 6)
			wantCode(t, a.do(t, "PUT", "storage/bad/new", body), 400, 6)
			wantCode(t, a.do(t, "POST", "storage/keep", body), 400, 6)
		}
	})

	t.Run("non_object_bodies", func(t *testing.T) {
		// 2.4 step 4 -> 400 8; 2.5 step 3 -> 400 8.
		for _, body := range []string{`[]`, `"str"`, `null`, `true`, `42`, `[{"id": "x", "payload": "p"}]`} {
			wantCode(t, a.do(t, "PUT", "storage/keep/one", body), 400, 8)
		}
		for _, body := range []string{`"notalist"`, `42`, `null`, `true`, `{"payload": "noid"}`, `{"id": "a/b", "payload": "x"}`, `{"id": {"x": 1}, "payload": "x"}`} {
			wantCode(t, a.do(t, "POST", "storage/keep", body), 400, 8)
		}
	})

	t.Run("deep_nesting", func(t *testing.T) {
		deep := strings.Repeat("[", 200000) + strings.Repeat("]", 200000)
		for _, m := range []string{"PUT", "POST"} {
			p := "storage/keep"
			if m == "PUT" {
				p += "/one"
			}
			r := a.do(t, m, p, deep)
			// A JSON parser may refuse the depth (400 6), or a POST may
			// see an array whose element is not an object (2.5 step 4:
			// failed[""] = ["invalid wbo"]); a PUT must answer 400.
			if m == "POST" && r.Status == 200 {
				b := decodeBatch(t, r)
				eq(t, "deep POST success", b.Success, []string{})
				eq(t, "deep POST failed", b.Failed, map[string][]string{"": {"invalid wbo"}})
				continue
			}
			if r.Status != 400 {
				t.Errorf("%s deep nesting: want 400: %v", m, r)
			}
		}
		deepObj := `{"payload": "x", "sortindex": ` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`
		if r := a.do(t, "PUT", "storage/keep/one", deepObj); r.Status != 400 {
			t.Errorf("deep value: want 400: %v", r)
		}
	})

	t.Run("bad_numbers", func(t *testing.T) {
		// 1.1: out-of-range or non-numeric fields -> 400 8.
		for _, body := range []string{
			`{"payload": "x", "sortindex": 1e400}`,
			`{"payload": "x", "sortindex": 1e10}`,
			`{"payload": "x", "sortindex": "NaN"}`,
			`{"payload": "x", "sortindex": "Infinity"}`,
			`{"payload": "x", "sortindex": ""}`,
			`{"payload": "x", "ttl": 1e20}`,
			`{"payload": "x", "ttl": "-1"}`,
			`{"payload": "x", "ttl": 99999999999999999999999}`,
		} {
			wantCode(t, a.do(t, "PUT", "storage/keep/one", body), 400, 8)
		}
	})

	t.Run("oversized_fields", func(t *testing.T) {
		wantCode(t, a.do(t, "PUT", "storage/keep/one", map[string]any{"payload": strings.Repeat("x", 262145)}), 400, 8)
		wantCode(t, a.do(t, "PUT", "storage/keep/"+strings.Repeat("i", 65), map[string]any{"payload": "x"}), 400, 8)
		wantCode(t, a.do(t, "PUT", "storage/keep/"+strings.Repeat("i", 5000), map[string]any{"payload": "x"}), 400, 8)
		wantCode(t, a.do(t, "PUT", "storage/keep/one", map[string]any{"payload": "x", "parentid": strings.Repeat("p", 1000)}), 400, 8)
		// 2.5: ids and sizes in a batch fail per item; nothing from the
		// failing items is stored.
		var items []map[string]any
		for i := 0; i < 300; i++ {
			items = append(items, map[string]any{"id": fmt.Sprintf("big%d", i), "payload": strings.Repeat("z", 20000)})
		}
		r := a.do(t, "POST", "storage/bigbatch", items)
		want(t, r, 200)
		b := decodeBatch(t, r)
		if len(b.Success) > 100 || len(b.Success)+len(b.Failed) != 300 {
			t.Fatalf("300-item batch: %d success, %d failed", len(b.Success), len(b.Failed))
		}
		for id, why := range b.Failed {
			if len(why) != 1 || (why[0] != "retry wbo" && why[0] != "retry bytes") {
				t.Errorf("failed[%s] = %v", id, why)
			}
		}
		eq(t, "stored", len(a.ids(t, "storage/bigbatch")), len(b.Success))
		want(t, a.do(t, "DELETE", "storage/bigbatch", nil), 200)
	})

	t.Run("bad_filters", func(t *testing.T) {
		// 2.2 / 2.6: unparseable filter values -> 400.
		for _, q := range []string{"newer=abc", "older=1.2.3", "index_above=--1", "index_below=1e", "limit=ten", "limit=1&offset=two", "newer=%00", "newer=NaN", "older=Infinity"} {
			want(t, a.do(t, "GET", "storage/keep?"+q, nil), 400)
			want(t, a.do(t, "DELETE", "storage/keep?"+q, nil), 400)
		}
		want(t, a.do(t, "GET", "storage/keep?ids="+strings.Repeat("x,", 5000), nil), 200)
	})

	t.Run("odd_ids", func(t *testing.T) {
		// Odd characters: either refused (4xx) or round-tripped exactly.
		for _, enc := range []string{"a%2Fb", "%00", "sp%20ace", "%C3%A9t%C3%A9", "%FF", "..", ".", "%2E%2E", "a%0Ab", "%7B%7D", "a,b", "%25"} {
			r := a.do(t, "PUT", "storage/odd/"+enc, map[string]any{"payload": "odd"})
			id, _ := url.PathUnescape(enc)
			switch {
			case r.Status == 200:
				g := a.do(t, "GET", "storage/odd/"+enc, nil)
				want(t, g, 200)
				if got := decodeWBO(t, g).str(t, "id"); got != id {
					// An id the server cannot give back (e.g. not UTF-8)
					// must be refused, not stored under another name.
					t.Errorf("odd id %s: stored, but read back as %q, want %q", enc, got, id)
				}
				want(t, a.do(t, "DELETE", "storage/odd/"+enc, nil), 200)
			case r.Status >= 400 && r.Status < 500:
			default:
				t.Errorf("odd id %s: %v", enc, r)
			}
		}
		eq(t, "odd ids left", a.ids(t, "storage/odd"), []string{})
	})

	t.Run("content_type_ignored", func(t *testing.T) {
		// 2: bodies are parsed as JSON whatever the Content-Type.
		for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "application/octet-stream"} {
			r := a.do(t, "PUT", "storage/ct/x", `{"payload": "ct"}`, "Content-Type", ct)
			want(t, r, 200)
		}
		want(t, a.do(t, "DELETE", "storage/ct", nil), 200)
	})

	t.Run("auth_failures_store_nothing", func(t *testing.T) {
		// 3.1: missing/wrong credentials and the wrong user in the path.
		for _, hdr := range [][]string{
			nil,
			{"Authorization", testkit.BasicAuth(a.Name, "bad password")},
			{"Authorization", testkit.BasicAuth(other.Name, other.Password)},
			{"Authorization", "Basic " + strings.Repeat("A", 10000)},
		} {
			r := s.do(t, "PUT", a.path("storage/keep/one"), map[string]any{"payload": "evil"}, hdr...)
			want(t, r, 401)
			r = s.do(t, "POST", a.path("storage/evil"), []map[string]any{{"id": "e", "payload": "evil"}}, hdr...)
			want(t, r, 401)
			r = s.do(t, "DELETE", a.path("storage"), nil, append(hdr, "X-Confirm-Delete", "1")...)
			want(t, r, 401)
		}
	})

	t.Run("huge_header", func(t *testing.T) {
		// Headers above 64 KiB are refused (431 or 400), nothing stored.
		r, err := s.tryDo("PUT", a.path("storage/keep/one"), strings.NewReader(`{"payload": "huge header"}`),
			"Authorization", testkit.BasicAuth(a.Name, a.Password), "X-Junk", strings.Repeat("h", 100<<10))
		if err != nil {
			t.Fatalf("huge header: transport error instead of an answer: %v", err)
		}
		if r.Status != 431 && r.Status != 400 {
			t.Errorf("huge header: want 431 or 400: %v", r)
		}
	})

	t.Run("huge_bodies", func(t *testing.T) {
		// Bodies above 20 MiB: 413 or 400, never stored.
		big := bytes.Repeat([]byte("x"), 21<<20)
		put := append(append([]byte(`{"payload": "`), big...), `"}`...)
		post := append(append([]byte(`[{"id": "huge", "payload": "`), big...), `"}]`...)
		for _, c := range []struct {
			method, rel string
			body        []byte
		}{
			{"PUT", "storage/keep/one", put},
			{"PUT", "storage/huge/h", put},
			{"POST", "storage/huge", post},
			{"PUT", "storage/huge", post},
		} {
			r, err := s.tryDo(c.method, a.path(c.rel), bytes.NewReader(c.body), "Authorization", testkit.BasicAuth(a.Name, a.Password), "Content-Type", "application/json")
			if err != nil {
				t.Errorf("%s %s with 21 MiB: transport error instead of 413/400: %v", c.method, c.rel, err)
				continue
			}
			if r.Status != 413 && r.Status != 400 {
				t.Errorf("%s %s with 21 MiB: want 413 or 400: %v", c.method, c.rel, r)
			}
		}
	})

	t.Run("user_api_bad_input", func(t *testing.T) {
		email := uniqueEmail(t)
		name := accountName(email)
		wantCode(t, s.do(t, "PUT", "/user/1.0/"+name, "{"), 400, 6)
		wantCode(t, s.do(t, "PUT", "/user/1.0/"+name, `"string"`), 400, 6)
		r := s.do(t, "PUT", "/user/1.0/"+name, map[string]any{"email": email, "password": strings.Repeat("p", 200<<10)})
		if r.Status != 400 && r.Status != 413 {
			t.Errorf("huge create body: want 400/413: %v", r)
		}
		r = s.do(t, "PUT", "/user/1.0/"+name, map[string]any{"email": []string{email}, "password": "a good password"})
		if r.Status != 400 {
			t.Errorf("non-string email: want 400: %v", r)
		}
		eq(t, "not created", s.do(t, "GET", "/user/1.0/"+name, nil).body(), "0")
	})

	// Nothing changed, and the server is still up.
	want(t, s.do(t, "GET", "/__heartbeat__", nil), 200)
	takeSnapshot(t, a).equal(t, before)
	takeSnapshot(t, other).equal(t, otherBefore)
}

// TestRestart: Shutdown then StartStandalone on the same DataDir finds
// every account and record.
func TestRestart(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)
	b := s.newAccount(t)
	a.put(t, "bookmarks", "x", map[string]any{"payload": "bx", "sortindex": 5, "parentid": "p"})
	a.post(t, "history", []map[string]any{{"id": "h1", "payload": "1"}, {"id": "h2", "payload": "2", "ttl": 100000}})
	// 2.4: a payload-less PUT of a new record answers null.
	r := a.do(t, "PUT", "storage/history/meta-only", map[string]any{"sortindex": 3})
	want(t, r, 200)
	eq(t, "payload-less PUT body", r.body(), "null")
	a.put(t, "gone", "g", map[string]any{"payload": "g"})
	want(t, a.do(t, "DELETE", "storage/gone", nil), 200)
	last := b.put(t, "tabs", "t", map[string]any{"payload": "t"})
	// Password change before the restart must survive it.
	r = s.do(t, "POST", "/user/1.0/"+b.Name+"/password", "changed before restart", "Authorization", testkit.BasicAuth(b.Name, b.Password))
	want(t, r, 200)
	b.Password = "changed before restart"
	snapA, snapB := takeSnapshot(t, a), takeSnapshot(t, b)
	url1 := s.s.URL()

	s.stop()

	// Same data folder and the same address (node/weave hands it out).
	cfg := s.cfg
	cfg.Addr = strings.TrimSuffix(strings.TrimPrefix(url1, "http://"), "/")
	s2 := startServerConfig(t, cfg)
	a.s, b.s = s2, s2
	eq(t, "URL", s2.s.URL(), url1)

	takeSnapshot(t, a).equal(t, snapA)
	takeSnapshot(t, b).equal(t, snapB)
	for _, u := range []*account{a, b} {
		eq(t, "exists", s2.do(t, "GET", "/user/1.0/"+u.Name, nil).body(), "1")
		eq(t, "node", s2.do(t, "GET", "/user/1.0/"+u.Name+"/node/weave", nil).body(), url1)
	}
	want(t, s2.do(t, "GET", b.path("info/collections"), nil, "Authorization", testkit.BasicAuth(b.Name, "correct horse battery")), 401)
	// Timestamps keep increasing across the restart.
	next := b.put(t, "tabs", "t2", map[string]any{"payload": "t2"})
	if stampCS(t, next) <= stampCS(t, last) {
		t.Fatalf("timestamp after restart %s not after %s", next, last)
	}
	want(t, a.do(t, "GET", "storage/gone/g", nil), 404)
}
