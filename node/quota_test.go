package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node/revtree"
)

func usageOf(t testing.TB, s *Store, user string) int64 {
	t.Helper()
	used, _, _, err := s.Quota(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	return used
}

// TestQuotaCountsEverySurface is issue #11's finding 3: with a 1 MiB
// quota a Weave write over quota failed, but 40 revisions of 250 KB sent
// with new_edits=false were stored (usage 1,232 KB -> 10,998 KB), and
// neither conflicting leaves nor _local documents were counted. Now one
// usage counts every way data enters the store, client writes are refused
// on each surface, and replicated revisions are stored and reported.
func TestQuotaCountsEverySurface(t *testing.T) {
	const quota = 1 << 20
	dir := t.TempDir()
	s := openWith(t, dir, func(c *Config) { c.QuotaBytes = quota })
	p := strings.Repeat("w", 250<<10)
	big := func(id string) api.WBO { return api.WBO{ID: id, Has: api.FieldPayload, Payload: p} }
	// Weave: five records take alice to 1,250 KB; the next write fails.
	for i := range 5 {
		mustPut(t, s, "alice", "c", big(fmt.Sprint("w", i)))
	}
	if _, err := s.PutItem(ctx, "alice", "c", big("w5"), api.Precondition{}); !errors.Is(err, api.ErrOverQuota) {
		t.Fatalf("Weave PUT over quota: %v", err)
	}
	before := usageOf(t, s, "alice")
	// CouchDB client (new_edits=false): 40 documents of 250 KB, all refused.
	revs := make([]Revision, 40)
	for i := range revs {
		revs[i] = conflictRevs("c", fmt.Sprint("couch", i), 1, 250<<10)[0]
	}
	errs, err := s.ApplyRevisions(ctx, "alice", revs, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if !errors.Is(e, api.ErrOverQuota) || !errors.Is(e, ErrRevRejected) {
			t.Fatalf("revision %d over quota: %v", i, e)
		}
	}
	if got := usageOf(t, s, "alice"); got != before {
		t.Fatalf("usage went from %d to %d", before, got)
	}
	// A tombstone passes over quota (it frees space).
	d, err := s.GetDoc(ctx, "alice", "c", "w0")
	if err != nil {
		t.Fatal(err)
	}
	win, _ := d.Winner()
	tomb := Revision{Coll: "c", ID: "w0", Path: revtree.Path{Start: win.Rev.Pos + 1, IDs: [][revtree.HashLen]byte{{1}, win.Rev.Hash}, Deleted: true}}
	if errs, err := s.ApplyRevisions(ctx, "alice", []Revision{tomb}, "", nil); err != nil || errs[0] != nil {
		t.Fatalf("tombstone over quota: %v %v", err, errs)
	}
	if got := usageOf(t, s, "alice"); got != before-int64(len(p)) {
		t.Fatalf("usage %d after a delete, want %d", got, before-int64(len(p)))
	}

	// From an empty account, one call is cut where the quota is reached:
	// at most one document beyond it.
	for i := range revs {
		revs[i] = conflictRevs("c", fmt.Sprint("couch", i), 1, 250<<10)[0]
	}
	errs, err = s.ApplyRevisions(ctx, "bob", revs, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for _, e := range errs {
		if e == nil {
			accepted++
		}
	}
	if got := usageOf(t, s, "bob"); accepted != 5 || got > quota+int64(len(p)) {
		t.Fatalf("%d accepted, usage %d", accepted, got)
	}

	// Conflicting leaves count, whichever leaf wins: carol's record gets
	// 5 replicated conflicts of 250 KB (replication is never refused: she
	// ends over quota, which is reported); she cannot write, but her
	// delete removes the record and its conflicts.
	mustPut(t, s, "carol", "c", api.WBO{ID: "x", Has: api.FieldPayload, Payload: "small"})
	reported := s.ReplicatedOverQuota()
	for range 5 {
		if errs, err := s.ApplyRevisions(ctx, "carol", conflictRevs("c", "x", 1, 250<<10), "peer", nil); err != nil || errs[0] != nil {
			t.Fatalf("replicated conflict: %v %v", err, errs)
		}
	}
	if got := usageOf(t, s, "carol"); got != 5+5*int64(len(p)) {
		t.Fatalf("carol's usage %d, want %d", got, 5+5*int64(len(p)))
	}
	if s.ReplicatedOverQuota() <= reported {
		t.Fatal("a replicated batch over quota was not reported")
	}
	if _, err := s.PutItem(ctx, "carol", "c", api.WBO{ID: "x", Has: api.FieldPayload, Payload: "edit"}, api.Precondition{}); !errors.Is(err, api.ErrOverQuota) {
		t.Fatalf("write over quota: %v", err)
	}
	if _, err := s.DeleteItem(ctx, "carol", "c", "x", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if got := usageOf(t, s, "carol"); got != 0 {
		t.Fatalf("carol's usage %d after deleting the record and its conflicts", got)
	}

	// _local documents count, and their number is bounded.
	body := json.RawMessage(`{"x":"` + strings.Repeat("l", 60<<10) + `"}`)
	stored := 0
	for i := range 300 {
		_, err := s.PutLocal(ctx, "dave", fmt.Sprint("ck", i), body, "")
		if errors.Is(err, api.ErrOverQuota) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		stored++
	}
	if got := usageOf(t, s, "dave"); stored > 18 || got < quota || got > quota+int64(len(body)) {
		t.Fatalf("%d _local documents stored, usage %d", stored, got)
	}
	if err := s.DeleteLocal(ctx, "dave", "ck0", ""); err != nil {
		t.Fatal(err)
	}
	if got := usageOf(t, s, "dave"); got != int64(stored-1)*int64(len(body)) {
		t.Fatalf("usage %d after deleting one", got)
	}

	// Everything is persisted: a restart gives the same usage.
	want := map[string]int64{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		want[u] = usageOf(t, s, u)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openWith(t, dir, func(c *Config) { c.QuotaBytes = quota })
	for u, w := range want {
		if got := usageOf(t, s, u); got != w {
			t.Errorf("%s: usage %d after a restart, want %d", u, got, w)
		}
	}
}

// TestLocalDocsBounded: without a quota, a user keeps at most
// MaxLocalDocs _local documents (300 of 64 KB were accepted).
func TestLocalDocsBounded(t *testing.T) {
	s := openWith(t, t.TempDir(), nil)
	body := json.RawMessage(`{"x":"` + strings.Repeat("l", 60<<10) + `"}`)
	for i := range 300 {
		_, err := s.PutLocal(ctx, "u", fmt.Sprint("ck", i), body, "")
		if i < DefaultMaxLocalDocs && err != nil || i >= DefaultMaxLocalDocs && !errors.Is(err, ErrTooManyLocal) {
			t.Fatalf("_local document %d: %v", i, err)
		}
	}
	// Rewriting one that exists is not a new one.
	if _, err := s.PutLocal(ctx, "u", "ck1", body, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLocal(ctx, "u", "ck1", "0-1"); !errors.Is(err, ErrLocalConflict) {
		t.Fatalf("delete with a stale rev: %v", err)
	}
	if err := s.DeleteLocal(ctx, "u", "ck1", "0-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutLocal(ctx, "u", "new", body, ""); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
	if used, _, _, _ := s.Quota(ctx, "u"); used != DefaultMaxLocalDocs*int64(len(body)) {
		t.Fatalf("usage %d", used)
	}
}
