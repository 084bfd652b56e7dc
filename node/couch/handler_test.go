package couch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

func TestConfigValidate(t *testing.T) {
	st := newEnv(t).store
	auth := passwords{}
	good := DefaultConfig()
	good.Store = st
	good.Auth, _ = node.NewAuthenticator(node.AuthConfig{Checker: auth})
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no store":      func(c *Config) { c.Store = nil },
		"no auth":       func(c *Config) { c.Auth = nil },
		"prefix slash":  func(c *Config) { c.Prefix = "/couch/" },
		"prefix rel":    func(c *Config) { c.Prefix = "couch" },
		"negative body": func(c *Config) { c.MaxBodyBytes = -1 },
		"negative wait": func(c *Config) { c.ChangesTimeout = -1 },
		"bad realm":     func(c *Config) { c.Realm = `a"b` },
	} {
		c := good
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: Validate = %v", name, err)
		}
		if _, err := NewHandler(c); err == nil {
			t.Errorf("%s: NewHandler accepted it", name)
		}
	}
}

func TestRootAndDatabase(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/", nil, "Authorization", "")
	wantStatus(t, r, http.StatusOK)
	var root struct {
		CouchDB, UUID, Version string
	}
	r.json(t, &root)
	if root.CouchDB != "Welcome" || root.UUID != e.store.UUID() || root.UUID == "" {
		t.Fatalf("root %s, store uuid %s", r.body, e.store.UUID())
	}
	// Without the trailing slash too.
	req, _ := http.NewRequest("GET", e.base, nil)
	res, err := e.srv.Client().Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET prefix: %v %v", res, err)
	}
	res.Body.Close()

	r = e.do(t, "GET", "/alice", nil)
	wantStatus(t, r, http.StatusOK)
	var info struct {
		DBName            string `json:"db_name"`
		UpdateSeq         uint64 `json:"update_seq"`
		InstanceStartTime string `json:"instance_start_time"`
	}
	r.json(t, &info)
	if info.DBName != alice || info.UpdateSeq != 0 || info.InstanceStartTime != "0" {
		t.Fatalf("db info %s", r.body)
	}
	if _, err := e.store.PutItem(bg, alice, "tabs", api.WBO{ID: "a", Has: api.FieldPayload, Payload: "x"}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	r = e.do(t, "GET", "/alice/", nil)
	r.json(t, &info)
	if info.UpdateSeq != 1 {
		t.Fatalf("update_seq after a write: %s", r.body)
	}
	wantStatus(t, e.do(t, "HEAD", "/alice", nil), http.StatusOK)
	wantError(t, e.do(t, "PUT", "/alice", nil), http.StatusPreconditionFailed, "file_exists")
	wantError(t, e.do(t, "DELETE", "/alice", nil), http.StatusMethodNotAllowed, "method_not_allowed")
	r = e.do(t, "POST", "/alice/_ensure_full_commit", "")
	wantStatus(t, r, http.StatusCreated)
	if !strings.Contains(string(r.body), `"ok":true`) {
		t.Fatalf("_ensure_full_commit: %s", r.body)
	}
	wantError(t, e.do(t, "GET", "/_all_dbs", nil), http.StatusNotFound, "not_found")
	wantError(t, e.do(t, "GET", "/alice/_all_docs", nil), http.StatusNotFound, "not_found")
	wantError(t, e.do(t, "GET", "/alice/_bulk_get", nil), http.StatusMethodNotAllowed, "method_not_allowed")
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, path, auth string
		status           int
		code             string
	}{
		{"no credentials", "/alice", "", 401, "unauthorized"},
		{"wrong password", "/alice", basicAuth(alice, "nope"), 401, "unauthorized"},
		{"unknown user", "/carol", basicAuth("carol", "x"), 401, "unauthorized"},
		{"garbage header", "/alice", "Basic !!!", 401, "unauthorized"},
		{"unknown scheme", "/alice", "Digest abc", 401, "unauthorized"},
		{"bearer without keys", "/alice", "Bearer abc", 401, "unauthorized"},
		{"other user's db", "/bob", basicAuth(alice, alicePW), 403, "forbidden"},
		{"other user's db, bad password", "/bob", basicAuth(alice, "nope"), 401, "unauthorized"},
		{"other user's docs", "/bob/_changes", basicAuth(alice, alicePW), 403, "forbidden"},
		{"other user's local", "/bob/_local/x", basicAuth(alice, alicePW), 403, "forbidden"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, "GET", c.path, nil, "Authorization", c.auth)
			wantError(t, r, c.status, c.code)
			if c.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic realm=") {
				t.Fatalf("401 without a Basic challenge: %v", r.header)
			}
		})
	}
	wantStatus(t, e.do(t, "GET", "/bob", nil, "Authorization", basicAuth(bob, bobPW)), 200)
	wantStatus(t, e.do(t, "GET", "/alice", nil), 200)
}

func TestLocalDocs(t *testing.T) {
	e := newEnv(t)
	// PouchDB's checkpoint ids are base64 with '=' sent as %3D.
	path := "/alice/_local/bV3JbVI_8hYY.jMG0femFA%3D%3D"
	wantError(t, e.do(t, "GET", path, nil), 404, "not_found")
	r := e.do(t, "PUT", path, map[string]any{"_id": "_local/bV3JbVI_8hYY.jMG0femFA==", "session_id": "s1", "last_seq": 7, "history": []any{map[string]any{"last_seq": 7, "session_id": "s1"}}})
	wantStatus(t, r, 201)
	var put struct {
		OK      bool
		ID, Rev string
	}
	r.json(t, &put)
	if !put.OK || put.ID != "_local/bV3JbVI_8hYY.jMG0femFA==" || put.Rev != "0-1" {
		t.Fatalf("PUT _local: %s", r.body)
	}
	r = e.do(t, "GET", path, nil)
	wantStatus(t, r, 200)
	var got map[string]any
	r.json(t, &got)
	if got["_id"] != put.ID || got["_rev"] != "0-1" || got["session_id"] != "s1" || got["last_seq"] != 7.0 || got["history"] == nil {
		t.Fatalf("GET _local: %s", r.body)
	}
	// Update with the current rev, then a stale one.
	r = e.do(t, "PUT", path, map[string]any{"_rev": "0-1", "session_id": "s2"})
	wantStatus(t, r, 201)
	wantError(t, e.do(t, "PUT", path, map[string]any{"_rev": "0-1", "session_id": "s3"}), 409, "conflict")
	r = e.do(t, "GET", path, nil)
	got = nil
	r.json(t, &got)
	if got["_rev"] != "0-2" || got["session_id"] != "s2" || got["last_seq"] != nil {
		t.Fatalf("after update: %s", r.body)
	}
	// An empty object and a mismatched _id.
	wantStatus(t, e.do(t, "PUT", "/alice/_local/empty", map[string]any{}), 201)
	r = e.do(t, "GET", "/alice/_local/empty", nil)
	if string(r.body) != `{"_id":"_local/empty","_rev":"0-1"}`+"\n" {
		t.Fatalf("empty local doc: %q", r.body)
	}
	wantError(t, e.do(t, "PUT", "/alice/_local/x", map[string]any{"_id": "_local/y"}), 400, "bad_request")
	wantError(t, e.do(t, "PUT", "/alice/_local/x", "[1]"), 400, "bad_request")
	wantError(t, e.do(t, "PUT", "/alice/_local/x", `{"a":`), 400, "bad_request")
	wantError(t, e.do(t, "PUT", "/alice/_local/x", map[string]any{"big": strings.Repeat("x", node.MaxLocalDocBytes)}), 413, "too_large")
	// _local documents never show in the feed.
	if c := e.changes(t, ""); len(c.Results) != 0 {
		t.Fatalf("feed shows local docs: %+v", c)
	}
}

// TestBulkDocsToWeave writes client revisions with _bulk_docs and reads
// them back through the Weave view, the feed, GET and _bulk_get.
func TestBulkDocsToWeave(t *testing.T) {
	e := newEnv(t)
	h1, h2, h3 := hashOf("a1"), hashOf("a2"), hashOf("b1")
	exp := time.Now().Add(time.Hour).Unix()
	fails := e.bulkDocs(t,
		clientDoc("bookmarks/a", 2, []string{h2, h1}, map[string]any{"payload": `{"ciphertext":"c"}`, "sortindex": 42, "parentid": "p", "predecessorid": "", "expiry": exp}),
		clientDoc("bookmarks/b", 1, []string{h3}, map[string]any{"payload": "gone soon"}),
	)
	if len(fails) != 0 {
		t.Fatalf("failures %v", fails)
	}
	w, _, err := e.store.GetItem(bg, alice, "bookmarks", "a")
	if err != nil {
		t.Fatalf("Weave GetItem: %v", err)
	}
	if w.Payload != `{"ciphertext":"c"}` || w.SortIndex != 42 || w.ParentID != "p" || w.Has&api.FieldPredecessorID == 0 {
		t.Fatalf("Weave view %+v", w)
	}
	// Delete b with a tombstone that still carries fields (CouchDB
	// clients may): the fields are dropped.
	h4 := hashOf("b2")
	fails = e.bulkDocs(t, clientDoc("bookmarks/b", 2, []string{h4, h3}, map[string]any{"_deleted": true, "payload": "ignored"}))
	if len(fails) != 0 {
		t.Fatalf("tombstone failures %v", fails)
	}
	if _, _, err := e.store.GetItem(bg, alice, "bookmarks", "b"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("deleted record still visible: %v", err)
	}
	// Idempotent: the same batch again changes nothing.
	seq, _ := e.store.UpdateSeq(bg, alice)
	e.bulkDocs(t, clientDoc("bookmarks/b", 2, []string{h4, h3}, map[string]any{"_deleted": true}))
	if again, _ := e.store.UpdateSeq(bg, alice); again != seq {
		t.Fatalf("a known revision moved the feed from %d to %d", seq, again)
	}

	c := e.changes(t, "style=all_docs&since=0")
	if len(c.Results) != 2 || c.LastSeq != seq {
		t.Fatalf("changes %+v (update seq %d)", c, seq)
	}
	if r := c.Results[1]; r.ID != "bookmarks/b" || !r.Deleted || r.Changes[0].Rev != revStr(2, h4) {
		t.Fatalf("tombstone row %+v", r)
	}
	if r := c.Results[0]; r.ID != "bookmarks/a" || r.Deleted || r.Changes[0].Rev != revStr(2, h2) {
		t.Fatalf("row %+v", r)
	}

	r := e.do(t, "GET", "/alice/bookmarks%2Fa?revs=true", nil)
	wantStatus(t, r, 200)
	var doc map[string]any
	r.json(t, &doc)
	revs, _ := doc["_revisions"].(map[string]any)
	if doc["_id"] != "bookmarks/a" || doc["_rev"] != revStr(2, h2) || doc["payload"] != `{"ciphertext":"c"}` ||
		doc["sortindex"] != 42.0 || doc["expiry"] != float64(exp) || doc["predecessorid"] != "" ||
		revs == nil || revs["start"] != 2.0 || len(revs["ids"].([]any)) != 2 {
		t.Fatalf("GET doc %s", r.body)
	}
	if _, ok := doc["hce_origin"]; ok {
		t.Fatalf("client revision served with an origin: %s", r.body)
	}
	// An unescaped '/' in the path names the same document.
	wantStatus(t, e.do(t, "GET", "/alice/bookmarks/a", nil), 200)
	wantError(t, e.do(t, "GET", "/alice/bookmarks%2Fb", nil), 404, "not_found")
	if _, reason := e.do(t, "GET", "/alice/bookmarks%2Fb", nil).errOf(t); reason != "deleted" {
		t.Fatalf("deleted doc reason %q", reason)
	}
	if _, reason := e.do(t, "GET", "/alice/bookmarks%2Fzz", nil).errOf(t); reason != "missing" {
		t.Fatalf("missing doc reason %q", reason)
	}
	// A deleted revision asked for by rev is served.
	r = e.do(t, "GET", "/alice/bookmarks%2Fb?rev="+revStr(2, h4), nil)
	wantStatus(t, r, 200)
	if !strings.Contains(string(r.body), `"_deleted":true`) || strings.Contains(string(r.body), "payload") {
		t.Fatalf("tombstone %s", r.body)
	}
}

// TestWeaveToCouch: records written through the Weave store API are
// documents with an origin, and a node revision fetched with _bulk_get and
// pushed to another store keeps its origin (its hash checks).
func TestWeaveToCouch(t *testing.T) {
	src, dst := newEnv(t), newEnv(t)
	if _, err := src.store.PostItems(bg, alice, "tabs", []api.WBO{
		{ID: "t1", Has: api.FieldPayload | api.FieldSortIndex, Payload: "one", SortIndex: 5},
		{ID: "t2", Has: api.FieldPayload | api.FieldTTL, Payload: "two", TTL: 3600},
	}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.store.PutItem(bg, alice, "tabs", api.WBO{ID: "t1", Has: api.FieldPayload, Payload: "one v2"}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.store.DeleteItem(bg, alice, "tabs", "t2", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	c := src.changes(t, "style=all_docs")
	if len(c.Results) != 2 {
		t.Fatalf("changes %+v", c)
	}
	req := map[string]any{}
	var get []map[string]string
	for _, row := range c.Results {
		req[row.ID] = []string{row.Changes[0].Rev}
		get = append(get, map[string]string{"id": row.ID, "rev": row.Changes[0].Rev})
	}
	// The destination lacks both.
	r := dst.do(t, "POST", "/alice/_revs_diff", req)
	wantStatus(t, r, 200)
	var diff map[string]struct{ Missing []string }
	r.json(t, &diff)
	if len(diff) != 2 {
		t.Fatalf("revs_diff %s", r.body)
	}
	r = src.do(t, "POST", "/alice/_bulk_get?revs=true&latest=true", map[string]any{"docs": get})
	wantStatus(t, r, 200)
	var bg1 struct {
		Results []struct {
			ID   string
			Docs []struct {
				OK    map[string]any
				Error map[string]string
			}
		}
	}
	r.json(t, &bg1)
	var docs []map[string]any
	for _, res := range bg1.Results {
		if len(res.Docs) != 1 || res.Docs[0].OK == nil {
			t.Fatalf("bulk_get %s", r.body)
		}
		docs = append(docs, res.Docs[0].OK)
	}
	t1 := docs[0]
	if t1["_id"] != "tabs/t1" || t1["payload"] != "one v2" || t1["hce_origin"] != src.store.Origin() ||
		t1["hce_origin_time"] == nil || t1["_revisions"].(map[string]any)["start"] != 2.0 {
		t.Fatalf("t1 %v", t1)
	}
	if t1["sortindex"] != 5.0 {
		t.Fatalf("a PUT without sortindex lost it: %v", t1)
	}
	if docs[1]["_deleted"] != true {
		t.Fatalf("t2 %v", docs[1])
	}
	if fails := dst.bulkDocs(t, docs...); len(fails) != 0 {
		t.Fatalf("push to dst: %v", fails)
	}
	w, _, err := dst.store.GetItem(bg, alice, "tabs", "t1")
	if err != nil || w.Payload != "one v2" {
		t.Fatalf("dst Weave view %+v %v", w, err)
	}
	d, err := dst.store.GetDoc(bg, alice, "tabs", "t1")
	if err != nil {
		t.Fatal(err)
	}
	if _, body := d.Winner(); body.Origin != src.store.Origin() {
		t.Fatalf("origin lost: %+v", body)
	}
	r = dst.do(t, "POST", "/alice/_revs_diff", req)
	if string(r.body) != "{}\n" {
		t.Fatalf("revs_diff after push: %s", r.body)
	}

	// A client edit that copies the node revision's origin members is
	// stored as the client's own revision (no origin), not refused.
	edit := map[string]any{}
	for k, v := range t1 {
		edit[k] = v
	}
	old := t1["_revisions"].(map[string]any)
	ids := append([]any{hashOf("client edit")}, old["ids"].([]any)...)
	edit["_revisions"] = map[string]any{"start": 3, "ids": ids}
	edit["_rev"] = revStr(3, hashOf("client edit"))
	edit["payload"] = "edited in pouch"
	if fails := dst.bulkDocs(t, edit); len(fails) != 0 {
		t.Fatalf("client edit refused: %v", fails)
	}
	d, _ = dst.store.GetDoc(bg, alice, "tabs", "t1")
	if w, body := d.Winner(); w.Rev.Pos != 3 || body.Origin != "" || body.OriginTime != 0 || body.Payload != "edited in pouch" {
		t.Fatalf("client edit stored as %v %+v", w, body)
	}
}

func TestBulkDocsBadInput(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 1 << 20 })
	h := hashOf("x")
	ok := clientDoc("c/ok", 1, []string{h}, map[string]any{"payload": "p"})
	for _, c := range []struct {
		name string
		doc  any
	}{
		{"unknown field", clientDoc("c/a", 1, []string{h}, map[string]any{"color": "red"})},
		{"attachments", clientDoc("c/a", 1, []string{h}, map[string]any{"_attachments": map[string]any{}})},
		{"special member", clientDoc("c/a", 1, []string{h}, map[string]any{"_foo": 1})},
		{"payload not a string", clientDoc("c/a", 1, []string{h}, map[string]any{"payload": 1})},
		{"sortindex float", clientDoc("c/a", 1, []string{h}, map[string]any{"sortindex": 1.5})},
		{"sortindex out of range", clientDoc("c/a", 1, []string{h}, map[string]any{"sortindex": 1e12})},
		{"payload too large", clientDoc("c/a", 1, []string{h}, map[string]any{"payload": strings.Repeat("x", api.MaxPayloadBytes+1)})},
		{"negative expiry", clientDoc("c/a", 1, []string{h}, map[string]any{"expiry": -1})},
		{"no collection", clientDoc("plain", 1, []string{h}, nil)},
		{"bad collection", clientDoc("a b/c", 1, []string{h}, nil)},
		{"local id", clientDoc("_local/x", 1, []string{h}, nil)},
		{"uppercase rev", map[string]any{"_id": "c/a", "_rev": "1-" + strings.ToUpper(h)}},
		{"bad rev", map[string]any{"_id": "c/a", "_rev": "x"}},
		{"no rev", map[string]any{"_id": "c/a"}},
		{"no id", map[string]any{"_rev": revStr(1, h)}},
		{"rev mismatch", map[string]any{"_id": "c/a", "_rev": revStr(2, h), "_revisions": map[string]any{"start": 1, "ids": []string{h}}}},
		{"revisions start too low", map[string]any{"_id": "c/a", "_revisions": map[string]any{"start": 1, "ids": []string{h, hashOf("y")}}}},
		{"revisions empty", map[string]any{"_id": "c/a", "_revisions": map[string]any{"start": 1, "ids": []string{}}}},
		{"revisions shape", map[string]any{"_id": "c/a", "_revisions": "x"}},
		{"duplicate ids", map[string]any{"_id": "c/a", "_revisions": map[string]any{"start": 2, "ids": []string{h, h}}}},
		{"not an object", []int{1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, "POST", "/alice/_bulk_docs", map[string]any{"docs": []any{ok, c.doc}, "new_edits": false})
			wantStatus(t, r, 201)
			var out []map[string]string
			r.json(t, &out)
			if len(out) != 1 || out[0]["error"] != "forbidden" || out[0]["reason"] == "" {
				t.Fatalf("answer %s", r.body)
			}
		})
	}
	if _, _, err := e.store.GetItem(bg, alice, "c", "ok"); err != nil {
		t.Fatalf("the good document was not stored: %v", err)
	}
	if _, err := e.store.GetDoc(bg, alice, "c", "a"); !errors.Is(err, node.ErrDocNotFound) {
		t.Fatalf("a refused document was stored: %v", err)
	}
	// A revision that contradicts the tree (a known rev given another
	// parent) is refused by the store: forbidden too.
	h2 := hashOf("x2")
	e.bulkDocs(t, clientDoc("c/t", 2, []string{h2, hashOf("p1")}, nil))
	out := e.bulkDocs(t, clientDoc("c/t", 2, []string{h2, hashOf("p2")}, nil))
	if len(out) != 1 || out[0]["error"] != "forbidden" || out[0]["id"] != "c/t" || out[0]["rev"] != revStr(2, h2) {
		t.Fatalf("parent mismatch: %v", out)
	}

	// Whole-request errors.
	wantError(t, e.do(t, "POST", "/alice/_bulk_docs", `{"docs":[`), 400, "bad_request")
	wantError(t, e.do(t, "POST", "/alice/_bulk_docs", `{"new_edits":false}`), 400, "bad_request")
	wantError(t, e.do(t, "POST", "/alice/_bulk_docs", map[string]any{"docs": []any{ok}}), 501, "not_implemented")
	wantError(t, e.do(t, "POST", "/alice/_bulk_docs", map[string]any{"docs": []any{ok}, "new_edits": true}), 501, "not_implemented")
	wantError(t, e.do(t, "POST", "/alice/_bulk_docs", `{"docs":[],"new_edits":false}`, "Content-Type", "text/plain"), 415, "bad_content_type")
	big := map[string]any{"docs": []any{map[string]any{"payload": strings.Repeat("x", 2<<20)}}, "new_edits": false}
	wantError(t, e.do(t, "POST", "/alice/_bulk_docs", big), 413, "too_large")
	wantError(t, e.do(t, "PUT", "/alice/c%2Fnew", map[string]any{"payload": "x"}), 501, "not_implemented")
	wantError(t, e.do(t, "POST", "/alice/_revs_diff", `[1,2]`), 400, "bad_request")
	wantError(t, e.do(t, "POST", "/alice/_bulk_get", `{}`), 400, "bad_request")
	wantError(t, e.do(t, "GET", "/alice/_changes?feed=eventsource", nil), 400, "bad_request")
	wantError(t, e.do(t, "GET", "/alice/_changes?since=abc", nil), 400, "bad_request")
	wantError(t, e.do(t, "GET", "/alice/_changes?limit=-1", nil), 400, "query_parse_error")
	wantError(t, e.do(t, "GET", "/alice/_changes?filter=_doc_ids", nil), 400, "bad_request")
	wantError(t, e.do(t, "GET", "/alice/c%2Fok?open_revs=nope", nil), 400, "bad_request")
	wantError(t, e.do(t, "GET", "/alice/c%2Fok?rev=1-x", nil), 400, "bad_request")
	wantError(t, e.do(t, "GET", "/alice/c%2Fok?revs=maybe", nil), 400, "query_parse_error")
}

// TestPutNewEditsFalse: the single-document form CouchDB's replicator
// uses.
func TestPutNewEditsFalse(t *testing.T) {
	e := newEnv(t)
	h := hashOf("put")
	r := e.do(t, "PUT", "/alice/c%2Fp?new_edits=false", map[string]any{"_rev": revStr(1, h), "_revisions": map[string]any{"start": 1, "ids": []string{h}}, "payload": "x"})
	wantStatus(t, r, 201)
	if w, _, err := e.store.GetItem(bg, alice, "c", "p"); err != nil || w.Payload != "x" {
		t.Fatalf("GetItem %+v %v", w, err)
	}
	wantError(t, e.do(t, "PUT", "/alice/c%2Fp?new_edits=false", map[string]any{"_id": "c/other", "_rev": revStr(1, h)}), 400, "bad_request")
	wantError(t, e.do(t, "PUT", "/alice/c%2Fp?new_edits=false", map[string]any{"_rev": revStr(1, h), "bad": 1}), 403, "forbidden")
}

func TestRevsDiffAndBulkGet(t *testing.T) {
	e := newEnv(t)
	a1, a2, a3 := hashOf("a1"), hashOf("a2"), hashOf("a3")
	e.bulkDocs(t, clientDoc("c/a", 2, []string{a2, a1}, map[string]any{"payload": "v2"}))
	r := e.do(t, "POST", "/alice/_revs_diff", map[string]any{
		"c/a":     []string{revStr(1, a1), revStr(2, a2), revStr(3, a3)},
		"c/new":   []string{revStr(1, a1)},
		"nocoll":  []string{revStr(1, a1)},
		"c/badrv": []string{"zzz"},
	})
	wantStatus(t, r, 200)
	var diff map[string]struct{ Missing []string }
	r.json(t, &diff)
	if len(diff) != 4 || len(diff["c/a"].Missing) != 1 || diff["c/a"].Missing[0] != revStr(3, a3) ||
		diff["c/new"].Missing[0] != revStr(1, a1) || diff["nocoll"].Missing[0] != revStr(1, a1) || diff["c/badrv"].Missing[0] != "zzz" {
		t.Fatalf("revs_diff %s", r.body)
	}

	type bgResp struct {
		Results []struct {
			ID   string
			Docs []struct {
				OK    map[string]any
				Error *struct{ ID, Rev, Error, Reason string }
			}
		}
	}
	r = e.do(t, "POST", "/alice/_bulk_get?revs=true&latest=true", map[string]any{"docs": []map[string]string{
		{"id": "c/a", "rev": revStr(2, a2)},
		{"id": "c/a", "rev": revStr(3, a3)}, // not there
		{"id": "c/a", "rev": revStr(1, a1)}, // ancestor: latest gives the leaf
		{"id": "c/missing", "rev": revStr(1, a1)},
		{"id": "c/a"}, // no rev: the winner
		{"id": "c/a", "rev": "garbage"},
	}})
	wantStatus(t, r, 200)
	var out bgResp
	r.json(t, &out)
	if len(out.Results) != 6 {
		t.Fatalf("bulk_get %s", r.body)
	}
	okRev := func(i int) string {
		res := out.Results[i]
		if len(res.Docs) != 1 || res.Docs[0].OK == nil {
			t.Fatalf("result %d: %s", i, r.body)
		}
		return res.Docs[0].OK["_rev"].(string)
	}
	errOf := func(i int, id, rev, code string) {
		res := out.Results[i]
		if len(res.Docs) != 1 || res.Docs[0].Error == nil || res.Docs[0].OK != nil {
			t.Fatalf("result %d not an error: %s", i, r.body)
		}
		e := res.Docs[0].Error
		if e.ID != id || e.Rev != rev || e.Error != code || e.Reason == "" {
			t.Fatalf("result %d error %+v", i, e)
		}
	}
	if okRev(0) != revStr(2, a2) || okRev(2) != revStr(2, a2) || okRev(4) != revStr(2, a2) {
		t.Fatalf("bulk_get revs %s", r.body)
	}
	if revs := out.Results[0].Docs[0].OK["_revisions"].(map[string]any); revs["start"] != 2.0 || len(revs["ids"].([]any)) != 2 {
		t.Fatalf("_revisions %v", revs)
	}
	errOf(1, "c/a", revStr(3, a3), "not_found")
	errOf(3, "c/missing", revStr(1, a1), "not_found")
	errOf(5, "c/a", "garbage", "bad_request")
	if strings.Contains(string(r.body), `"missing"`+":") {
		t.Fatalf("pouchdb-server's missing form: %s", r.body)
	}
	// Without latest an ancestor has no body to serve; without revs no
	// _revisions.
	r = e.do(t, "POST", "/alice/_bulk_get", map[string]any{"docs": []map[string]string{{"id": "c/a", "rev": revStr(1, a1)}, {"id": "c/a", "rev": revStr(2, a2)}}})
	out = bgResp{}
	r.json(t, &out)
	errOf(0, "c/a", revStr(1, a1), "not_found")
	if _, ok := out.Results[1].Docs[0].OK["_revisions"]; ok {
		t.Fatalf("_revisions without revs=true: %s", r.body)
	}
}

func TestConflictsAndOpenRevs(t *testing.T) {
	e := newEnv(t)
	root, x, y := hashOf("root"), hashOf("x"), hashOf("y")
	e.bulkDocs(t,
		clientDoc("c/d", 2, []string{x, root}, map[string]any{"payload": "x"}),
		clientDoc("c/d", 2, []string{y, root}, map[string]any{"payload": "y"}),
	)
	win, lose := revStr(2, x), revStr(2, y)
	if y > x {
		win, lose = lose, win
	}
	c := e.changes(t, "style=all_docs")
	if len(c.Results) != 1 || len(c.Results[0].Changes) != 2 || c.Results[0].Changes[0].Rev != win || c.Results[0].Changes[1].Rev != lose {
		t.Fatalf("all_docs %+v", c)
	}
	c = e.changes(t, "")
	if len(c.Results[0].Changes) != 1 || c.Results[0].Changes[0].Rev != win {
		t.Fatalf("main_only %+v", c)
	}
	r := e.do(t, "GET", "/alice/c%2Fd?conflicts=true", nil)
	var doc map[string]any
	r.json(t, &doc)
	if doc["_rev"] != win || len(doc["_conflicts"].([]any)) != 1 || doc["_conflicts"].([]any)[0] != lose {
		t.Fatalf("conflicts %s", r.body)
	}
	var arr []map[string]any
	r = e.do(t, "GET", "/alice/c%2Fd?open_revs=all&revs=true", nil)
	wantStatus(t, r, 200)
	r.json(t, &arr)
	if len(arr) != 2 || arr[0]["ok"] == nil || arr[1]["ok"] == nil {
		t.Fatalf("open_revs=all %s", r.body)
	}
	q := `["` + revStr(1, root) + `","` + revStr(3, x) + `","nonsense"]`
	r = e.do(t, "GET", "/alice/c%2Fd?latest=true&revs=true&open_revs="+urlEscape(q), nil)
	arr = nil
	r.json(t, &arr)
	// The root's leaves (both branches), then two missing.
	if len(arr) != 4 || arr[0]["ok"] == nil || arr[1]["ok"] == nil || arr[2]["missing"] != revStr(3, x) || arr[3]["missing"] != "nonsense" {
		t.Fatalf("open_revs list %s", r.body)
	}
	r = e.do(t, "GET", "/alice/c%2Fnone?open_revs="+urlEscape(`["`+revStr(1, root)+`"]`), nil)
	arr = nil
	r.json(t, &arr)
	if len(arr) != 1 || arr[0]["missing"] != revStr(1, root) {
		t.Fatalf("open_revs on a missing doc %s", r.body)
	}
}

func urlEscape(s string) string {
	return strings.NewReplacer("[", "%5B", "]", "%5D", `"`, "%22", ",", "%2C").Replace(s)
}

func TestChangesPaging(t *testing.T) {
	e := newEnv(t)
	var ws []api.WBO
	for i := range 7 {
		ws = append(ws, api.WBO{ID: string(rune('a' + i)), Has: api.FieldPayload, Payload: "p"})
	}
	if _, err := e.store.PostItems(bg, alice, "c", ws, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	since := uint64(0)
	for pages := 0; ; pages++ {
		c := e.changes(t, "style=all_docs&limit=3&since="+jsonNum(since))
		for _, r := range c.Results {
			seen = append(seen, r.ID)
		}
		since = c.LastSeq
		if len(c.Results) < 3 {
			break
		}
		if pages > 5 {
			t.Fatal("paging never ends")
		}
	}
	if len(seen) != 7 || seen[0] != "c/a" || seen[6] != "c/g" {
		t.Fatalf("pages gave %v", seen)
	}
	if c := e.changes(t, "since=now"); len(c.Results) != 0 || c.LastSeq != since {
		t.Fatalf("since=now %+v", c)
	}
	c := e.changes(t, "include_docs=true&limit=1")
	var doc map[string]any
	if err := json.Unmarshal(c.Results[0].Doc, &doc); err != nil || doc["payload"] != "p" {
		t.Fatalf("include_docs %+v", c)
	}
	// Rewriting a doc moves it to the end of the feed.
	if _, err := e.store.PutItem(bg, alice, "c", api.WBO{ID: "a", Has: api.FieldPayload, Payload: "q"}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	c = e.changes(t, "")
	if len(c.Results) != 7 || c.Results[6].ID != "c/a" {
		t.Fatalf("after rewrite %+v", c)
	}
}

func jsonNum(v uint64) string { b, _ := json.Marshal(v); return string(b) }

// TestLongpoll: a longpoll request waits for the next write and answers
// with it; with nothing to report it answers at its timeout, sending
// heartbeats meanwhile.
func TestLongpoll(t *testing.T) {
	e := newEnv(t)
	seq, _ := e.store.UpdateSeq(bg, alice)
	done := make(chan changesResp, 1)
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", e.base+"/alice/_changes?feed=longpoll&style=all_docs&timeout=30000&heartbeat=20&since="+jsonNum(seq), nil)
		req.Header.Set("Authorization", basicAuth(alice, alicePW))
		res, err := e.srv.Client().Do(req)
		if err != nil {
			errc <- err
			return
		}
		defer res.Body.Close()
		var c changesResp
		if err := json.NewDecoder(res.Body).Decode(&c); err != nil {
			errc <- err
			return
		}
		done <- c
	}()
	// The request is waiting once the store has a watcher; writing before
	// that is fine too (then it answers at once).
	if _, err := e.store.PutItem(bg, alice, "c", api.WBO{ID: "w", Has: api.FieldPayload, Payload: "woke"}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-done:
		if len(c.Results) != 1 || c.Results[0].ID != "c/w" || c.LastSeq != seq+1 {
			t.Fatalf("longpoll %+v", c)
		}
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("longpoll did not wake")
	}

	start := time.Now()
	r := e.do(t, "GET", "/alice/_changes?feed=longpoll&timeout=300&heartbeat=50&since="+jsonNum(seq+1), nil)
	wantStatus(t, r, 200)
	if time.Since(start) < 300*time.Millisecond {
		t.Fatalf("longpoll answered after %v, before its timeout", time.Since(start))
	}
	if !strings.HasPrefix(string(r.body), "\n") {
		t.Fatalf("no heartbeat before the answer: %q", r.body)
	}
	var c changesResp
	r.json(t, &c)
	if len(c.Results) != 0 || c.LastSeq != seq+1 {
		t.Fatalf("timed-out longpoll %s", r.body)
	}
	// With changes already there, longpoll answers at once.
	c = e.changes(t, "feed=longpoll&timeout=60000&since=0")
	if len(c.Results) != 1 {
		t.Fatalf("longpoll with changes %+v", c)
	}
}

// TestLongpollWakesForAWriteMadeWhileWaiting makes sure the write happens
// after the request is parked in WaitChanges (heartbeats prove it).
func TestLongpollWakesForAWriteMadeWhileWaiting(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest("GET", e.base+"/alice/_changes?feed=longpoll&timeout=30000&heartbeat=20&since=0", nil)
	req.Header.Set("Authorization", basicAuth(alice, alicePW))
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	if b, err := br.ReadByte(); err != nil || b != '\n' {
		t.Fatalf("first heartbeat: %q %v", b, err)
	}
	if _, err := e.store.PutItem(bg, alice, "c", api.WBO{ID: "late", Has: api.FieldPayload, Payload: "x"}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	var c changesResp
	if err := json.NewDecoder(br).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if len(c.Results) != 1 || c.Results[0].ID != "c/late" || c.LastSeq != 1 {
		t.Fatalf("longpoll %+v", c)
	}
}

func TestContinuous(t *testing.T) {
	e := newEnv(t)
	if _, err := e.store.PutItem(bg, alice, "c", api.WBO{ID: "first", Has: api.FieldPayload, Payload: "x"}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/alice/_changes?feed=continuous&style=all_docs&heartbeat=20&timeout=1000&since=0", nil)
	req.Header.Set("Authorization", basicAuth(alice, alicePW))
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	next := func() map[string]any {
		t.Helper()
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "" {
				continue // heartbeat
			}
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			return m
		}
		t.Fatalf("feed ended: %v", sc.Err())
		return nil
	}
	if m := next(); m["id"] != "c/first" || m["seq"] != 1.0 {
		t.Fatalf("first row %v", m)
	}
	if _, err := e.store.PutItem(bg, alice, "c", api.WBO{ID: "second", Has: api.FieldPayload, Payload: "x"}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if m := next(); m["id"] != "c/second" || m["seq"] != 2.0 {
		t.Fatalf("second row %v", m)
	}
	// Idle for the timeout: the feed ends with last_seq.
	if m := next(); m["last_seq"] != 2.0 {
		t.Fatalf("last line %v", m)
	}
	if sc.Scan() {
		t.Fatalf("data after last_seq: %q", sc.Text())
	}

	// limit ends the feed too.
	r := e.do(t, "GET", "/alice/_changes?feed=continuous&limit=1", nil)
	lines := strings.Split(strings.TrimSpace(string(r.body)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"c/first"`) || lines[1] != `{"last_seq":1}` {
		t.Fatalf("continuous with limit: %q", r.body)
	}
}

// TestChangesEndWithClient: a client that goes away ends a waiting feed.
func TestChangesEndWithClient(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(bg)
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/alice/_changes?feed=continuous&heartbeat=20&timeout=60000", nil)
	req.Header.Set("Authorization", basicAuth(alice, alicePW))
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(res.Body)
	if _, err := br.ReadByte(); err != nil {
		t.Fatal(err)
	}
	cancel()
	res.Body.Close()
	// The server's handler returns: httptest.Server.Close (in Cleanup)
	// waits for it, and would hang the test otherwise.
}

func TestDecodeDocRoundTrip(t *testing.T) {
	h := hashOf("r")
	for _, body := range []node.Body{
		{},
		{Has: api.FieldPayload, Payload: ""},
		{Has: api.FieldPayload | api.FieldSortIndex | api.FieldParentID | api.FieldPredecessorID, Payload: "p<&>\u2028", SortIndex: -5, ParentID: "", PredecessorID: "q", Expiry: 99},
		{Has: api.FieldSortIndex},
	} {
		rev := node.Revision{Coll: "c", ID: "i", Path: revtree.Path{Start: 1, IDs: [][revtree.HashLen]byte{mustHash(t, h)}}, Body: body}
		got, err := decodeDoc(encodeDoc(&rev, true))
		if err != nil {
			t.Fatalf("%+v: %v", body, err)
		}
		if got.Revision.Body != body || got.Revision.Coll != "c" || got.Revision.ID != "i" || got.Rev != revStr(1, h) {
			t.Fatalf("round trip %+v -> %+v", body, got)
		}
	}
}

func mustHash(t *testing.T, s string) [revtree.HashLen]byte {
	h, err := revtree.ParseHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestStoreClosed: a closed store answers 503, and a waiting feed ends.
func TestStoreClosed(t *testing.T) {
	e := newEnv(t)
	e.store.Close()
	wantError(t, e.do(t, "GET", "/alice", nil), 503, "service_unavailable")
}

// TestStopEndsFeeds: closing Config.Stop answers waiting feeds as if their
// timeout had passed.
func TestStopEndsFeeds(t *testing.T) {
	stop := make(chan struct{})
	e := newEnv(t, func(c *Config) { c.Stop = stop })
	type answer struct {
		body string
		err  error
	}
	got := make(chan answer, 2)
	for _, feed := range []string{"longpoll", "continuous"} {
		req, _ := http.NewRequest("GET", e.base+"/alice/_changes?feed="+feed+"&heartbeat=20&timeout=600000", nil)
		req.Header.Set("Authorization", basicAuth(alice, alicePW))
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(res.Body)
		if _, err := br.ReadByte(); err != nil { // parked: a heartbeat came
			t.Fatal(err)
		}
		go func() {
			defer res.Body.Close()
			b, err := io.ReadAll(br)
			got <- answer{string(b), err}
		}()
	}
	close(stop)
	for range 2 {
		select {
		case a := <-got:
			if a.err != nil || !strings.Contains(a.body, `"last_seq":0`) {
				t.Fatalf("feed after stop: %q %v", a.body, a.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a feed did not end on stop")
		}
	}
}

// refusingWaiter is a node.ReplicaWaiter that never lets a write be
// acknowledged (the directory could not be told about unconfirmed
// members).
type refusingWaiter struct{}

func (refusingWaiter) WaitReplicated(context.Context, string, uint64) (bool, error) {
	return false, errors.New("report not committed")
}

// movedWaiter is a node.ReplicaWaiter of a node that is no longer a
// current member of the user's set.
type movedWaiter struct{}

func (movedWaiter) WaitReplicated(context.Context, string, uint64) (bool, error) {
	return false, fmt.Errorf("not a current member: %w", node.ErrNotServing)
}

// TestWriteNotAcknowledged: a CouchDB client's write (_bulk_docs, PUT of a
// document) that the replica waiter refuses is answered 503 with a short
// Retry-After, never 201, and stays committed (401 when the waiter says
// the node no longer serves the user); so does a 503 of the
// authenticator (directory unreachable).
func TestWriteNotAcknowledged(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RetryAfter = 1500 * time.Millisecond })
	e.store.SetReplicaWaiter(refusingWaiter{})
	h := hashOf("w")
	r := e.do(t, "POST", "/alice/_bulk_docs", map[string]any{"docs": []any{clientDoc("c/a", 1, []string{h}, map[string]any{"payload": "x"})}, "new_edits": false})
	wantError(t, r, 503, "service_unavailable")
	if ra := r.header.Get("Retry-After"); ra != "2" {
		t.Fatalf("Retry-After %q, want 2", ra)
	}
	if w, _, err := e.store.GetItem(bg, alice, "c", "a"); err != nil || w.Payload != "x" {
		t.Fatalf("refused write not committed: %+v %v", w, err)
	}
	r = e.do(t, "PUT", "/alice/c%2Fp?new_edits=false", map[string]any{"_rev": revStr(1, h), "_revisions": map[string]any{"start": 1, "ids": []string{h}}, "payload": "y"})
	wantError(t, r, 503, "service_unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}

	// A write refused because the node no longer serves the user (it
	// moved while the write waited): 401, so the client asks again where
	// the user lives.
	e.store.SetReplicaWaiter(movedWaiter{})
	r = e.do(t, "PUT", "/alice/c%2Fm?new_edits=false", map[string]any{"_rev": revStr(1, h), "_revisions": map[string]any{"start": 1, "ids": []string{h}}, "payload": "z"})
	wantError(t, r, 401, "unauthorized")

	down := newEnvAuth(t, unavailableAuth{})
	r = down.do(t, "GET", "/alice", nil)
	wantError(t, r, 503, "service_unavailable")
	if ra := r.header.Get("Retry-After"); ra != "2" {
		t.Fatalf("Retry-After %q on an unreachable directory", ra)
	}
}

// unavailableAuth is an authenticator whose directory cannot be reached.
type unavailableAuth struct{}

func (unavailableAuth) Authenticate(context.Context, string, api.Credentials) error {
	return fmt.Errorf("directory unreachable: %w", api.ErrUnavailable)
}

// newEnvAuth is newEnv with another authenticator.
func newEnvAuth(t *testing.T, auth api.Authenticator) *env {
	return newEnv(t, func(c *Config) { c.Auth = auth })
}
