package couch

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestBulkDocsConflictLimits checks the CouchDB endpoint's answer to
// revisions past the per-document limits: each refused document is a
// "forbidden" row of the _bulk_docs answer with the reason (the
// replicator counts it as a write failure and goes on), a PUT of one is a
// 403, and the others of the batch are stored.
func TestBulkDocsConflictLimits(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("b", 250<<10)
	var docs []map[string]any
	for i := range 40 {
		docs = append(docs, clientDoc("c/x", 1, []string{hashOf(fmt.Sprint("x", i))}, map[string]any{"payload": big}))
	}
	docs = append(docs, clientDoc("c/y", 1, []string{hashOf("y")}, map[string]any{"payload": "small"}))
	fails := e.bulkDocs(t, docs...)
	if len(fails) < 20 {
		t.Fatalf("%d failures: %v", len(fails), fails)
	}
	for _, f := range fails {
		if f["id"] != "c/x" || f["error"] != "forbidden" || !strings.Contains(f["reason"], "too large") {
			t.Fatalf("failure %v", f)
		}
	}
	if r := e.do(t, "GET", "/alice/c%2Fy", nil); r.status != 200 {
		t.Fatalf("c/y: %d %s", r.status, r.body)
	}
	var small []map[string]any
	for i := range 40 {
		small = append(small, clientDoc("c/z", 1, []string{hashOf(fmt.Sprint("z", i))}, map[string]any{"payload": "s"}))
	}
	fails = e.bulkDocs(t, small...)
	if len(fails) != 40-33 || !strings.Contains(fails[0]["reason"], "conflicts") {
		t.Fatalf("%d failures: %v", len(fails), fails)
	}
	r := e.do(t, "PUT", "/alice/c%2Fz?new_edits=false", clientDoc("c/z", 1, []string{hashOf("z-put")}, map[string]any{"payload": "s"}))
	wantError(t, r, http.StatusForbidden, "forbidden")
}
