package couch

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
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

// TestQuotaOnCouchEndpoint is issue #11's finding 3 over HTTP: with a
// 1 MiB quota and 1,250 KB stored through the Weave API, a _bulk_docs of
// 40 x 250 KB was accepted (usage went to about 11 MB). Now every
// document of it is a "forbidden" row saying the quota is exceeded, a PUT
// is a 403, and _local documents are bounded by the quota too.
func TestQuotaOnCouchEndpoint(t *testing.T) {
	e := newEnvWith(t, func(c *node.Config) { c.QuotaBytes = 1 << 20 })
	big := strings.Repeat("b", 250<<10)
	for i := range 5 {
		if _, err := e.store.PutItem(bg, alice, "c", api.WBO{ID: fmt.Sprint("w", i), Has: api.FieldPayload, Payload: big}, api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	used, _, _, _ := e.store.Quota(bg, alice)
	var docs []map[string]any
	for i := range 40 {
		docs = append(docs, clientDoc(fmt.Sprint("c/couch", i), 1, []string{hashOf(fmt.Sprint("q", i))}, map[string]any{"payload": big}))
	}
	fails := e.bulkDocs(t, docs...)
	if len(fails) != 40 {
		t.Fatalf("%d of 40 refused", len(fails))
	}
	for _, f := range fails {
		if f["error"] != "forbidden" || !strings.Contains(f["reason"], "quota") {
			t.Fatalf("row %v", f)
		}
	}
	if after, _, _, _ := e.store.Quota(bg, alice); after != used {
		t.Fatalf("usage went from %d to %d", used, after)
	}
	r := e.do(t, "PUT", "/alice/c%2Fput?new_edits=false", clientDoc("c/put", 1, []string{hashOf("put")}, map[string]any{"payload": "x"}))
	wantError(t, r, http.StatusForbidden, "forbidden")
	r = e.do(t, "PUT", "/alice/_local/ck", map[string]any{"x": strings.Repeat("l", 60<<10)})
	wantError(t, r, http.StatusForbidden, "forbidden")

	// Bob has no data: his _local documents stop at the quota.
	stored := 0
	for i := range 300 {
		r := e.do(t, "PUT", fmt.Sprint("/bob/_local/ck", i), map[string]any{"x": strings.Repeat("l", 60<<10)}, "Authorization", basicAuth(bob, bobPW))
		if r.status != http.StatusCreated {
			wantError(t, r, http.StatusForbidden, "forbidden")
			break
		}
		stored++
	}
	if used, _, _, _ := e.store.Quota(bg, bob); stored > 18 || used > 1<<20+64<<10 {
		t.Fatalf("%d _local documents, %d bytes", stored, used)
	}
	r = e.do(t, "DELETE", "/bob/_local/ck0", nil, "Authorization", basicAuth(bob, bobPW))
	wantStatus(t, r, http.StatusOK)
	r = e.do(t, "GET", "/bob/_local/ck0", nil, "Authorization", basicAuth(bob, bobPW))
	wantError(t, r, http.StatusNotFound, "not_found")
}
