package node

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

func TestPutSemantics(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)

	// A payload-less PUT of a missing record creates it without modified.
	r := mustPut(t, s, "u", "c", api.WBO{ID: "a", Has: api.FieldSortIndex, SortIndex: 5})
	if r.Modified != 0 || r.Timestamp == 0 || r.QuotaRemaining != -1 {
		t.Fatalf("payload-less create: %+v", r)
	}
	w, _, err := s.GetItem(ctx, "u", "c", "a")
	if err != nil || w.Modified != 0 || w.Has != api.FieldSortIndex || w.SortIndex != 5 {
		t.Fatalf("payload-less record: %+v %v", w, err)
	}

	clk.Add(time.Second)
	r1 := mustPut(t, s, "u", "c", api.WBO{ID: "a", Has: api.FieldPayload | api.FieldParentID, Payload: "one", ParentID: "p"})
	if r1.Modified != r1.Timestamp || r1.Timestamp <= r.Timestamp {
		t.Fatalf("payload write: %+v after %+v", r1, r)
	}
	// A metadata-only update keeps modified and payload, returns the old modified.
	clk.Add(time.Second)
	r2 := mustPut(t, s, "u", "c", api.WBO{ID: "a", Has: api.FieldSortIndex | api.FieldPredecessorID, SortIndex: 9, PredecessorID: "q"})
	if r2.Modified != r1.Modified || r2.Timestamp <= r1.Timestamp {
		t.Fatalf("metadata update: %+v", r2)
	}
	w, _, _ = s.GetItem(ctx, "u", "c", "a")
	want := api.WBO{ID: "a", Modified: r1.Modified, Has: api.FieldPayload | api.FieldSortIndex | api.FieldParentID | api.FieldPredecessorID,
		SortIndex: 9, Payload: "one", ParentID: "p", PredecessorID: "q"}
	if w != want {
		t.Fatalf("after metadata update: %+v, want %+v", w, want)
	}
	// The sortindex index follows the update.
	sameIDs(t, "index_above 6", mustGet(t, s, "u", "c", api.Query{HasIndexAbove: true, IndexAbove: 6}), "a")
	sameIDs(t, "index_below 6", mustGet(t, s, "u", "c", api.Query{HasIndexBelow: true, IndexBelow: 6}))
	// A payload write replaces only the given fields.
	r3 := mustPut(t, s, "u", "c", testkit.WBO("a", "two"))
	w, _, _ = s.GetItem(ctx, "u", "c", "a")
	want.Payload, want.Modified = "two", r3.Timestamp
	if w != want {
		t.Fatalf("after payload rewrite: %+v, want %+v", w, want)
	}
	// info/collections follows the payload writes, not metadata-only ones.
	ts, _, _ := s.CollectionTimestamps(ctx, "u")
	if ts["c"] != r3.Timestamp {
		t.Fatalf("collection time %v, want %v", ts["c"], r3.Timestamp)
	}
	mustPut(t, s, "u", "c", api.WBO{ID: "a", Has: api.FieldSortIndex, SortIndex: 1})
	if ts2, _, _ := s.CollectionTimestamps(ctx, "u"); ts2["c"] != r3.Timestamp {
		t.Fatalf("metadata-only write moved the collection time to %v", ts2["c"])
	}
}

func TestPostDuplicatesAndOneTimestamp(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	r := mustPost(t, s, "u", "c",
		testkit.WBO("x", "first"),
		api.WBO{ID: "y", Has: api.FieldPayload | api.FieldSortIndex, Payload: "y", SortIndex: 3},
		testkit.WBO("x", "second"),
		api.WBO{ID: "y", Has: api.FieldSortIndex, SortIndex: 4},
		api.WBO{ID: "z", Has: api.FieldParentID, ParentID: "p"},
	)
	if len(r.Success) != 5 || len(r.Failed) != 0 || r.Failed == nil {
		t.Fatalf("result %+v", r)
	}
	ws := mustGet(t, s, "u", "c", api.Query{Full: true})
	sameIDs(t, "post order", ws, "x", "y", "z")
	if ws[0].Payload != "second" || ws[0].Modified != r.Timestamp || ws[1].SortIndex != 4 || ws[1].Modified != r.Timestamp || ws[2].Modified != 0 {
		t.Fatalf("records %+v", ws)
	}
	counts, _, _ := s.CollectionCounts(ctx, "u")
	usage, _, _ := s.CollectionUsage(ctx, "u")
	if counts["c"] != 3 || usage["c"] != int64(len("second")+len("y")) {
		t.Fatalf("counts %v usage %v", counts, usage)
	}
	// An empty POST stores nothing, creates no collection, still ticks.
	r2 := mustPost(t, s, "u", "empty")
	if r2.Timestamp <= r.Timestamp {
		t.Fatalf("empty post time %v", r2.Timestamp)
	}
	if ts, _, _ := s.CollectionTimestamps(ctx, "u"); len(ts) != 1 {
		t.Fatalf("collections %v", ts)
	}
}

func TestTTL(t *testing.T) {
	clk := newFakeClock()
	clk.Set(time.Unix(base, 50e7)) // base + 0.5 s: int(now) = base
	s := openTest(t, t.TempDir(), clk, 0)
	mustPost(t, s, "u", "c",
		api.WBO{ID: "short", Has: api.FieldPayload | api.FieldTTL, Payload: "s", TTL: 2},
		api.WBO{ID: "zero", Has: api.FieldPayload | api.FieldTTL, Payload: "z", TTL: 0},
		testkit.WBO("forever", "f"),
	)
	sameIDs(t, "ttl 0 invisible at once", mustGet(t, s, "u", "c", api.Query{}), "short", "forever")
	clk.Set(time.Unix(base+1, 99e7))
	sameIDs(t, "before expiry", mustGet(t, s, "u", "c", api.Query{}), "short", "forever")
	clk.Set(time.Unix(base+2, 0))
	sameIDs(t, "at expiry", mustGet(t, s, "u", "c", api.Query{}), "forever")
	if _, _, err := s.GetItem(ctx, "u", "c", "short"); err != api.ErrNotFound {
		t.Fatalf("expired GetItem: %v", err)
	}
	for _, q := range []api.Query{{Sort: api.SortIndex}, {Sort: api.SortNewest}, {HasIDs: true, IDs: []string{"short", "zero", "forever"}}, {HasNewer: true, Newer: 1}} {
		if ws := mustGet(t, s, "u", "c", q); len(ws) != 1 {
			t.Fatalf("query %+v returned expired records: %v", q, idsOf(ws))
		}
	}
	counts, _, _ := s.CollectionCounts(ctx, "u")
	usage, _, _ := s.CollectionUsage(ctx, "u")
	used, _, _, _ := s.Quota(ctx, "u")
	if counts["c"] != 1 || usage["c"] != 1 || used != 1 {
		t.Fatalf("counts %v usage %v used %d", counts, usage, used)
	}
	// An expired record can be overwritten; it comes back without a ttl.
	mustPut(t, s, "u", "c", testkit.WBO("short", "again"))
	sameIDs(t, "overwritten", mustGet(t, s, "u", "c", api.Query{}), "forever", "short")
	// A metadata-only update with ttl sets a new expiry, keeping modified.
	mustPut(t, s, "u", "c", api.WBO{ID: "forever", Has: api.FieldTTL, TTL: 1})
	clk.Add(time.Second)
	sameIDs(t, "metadata ttl", mustGet(t, s, "u", "c", api.Query{}), "short")
	// Everything expired: the collection's count disappears.
	mustPut(t, s, "u", "c", api.WBO{ID: "short", Has: api.FieldTTL, TTL: 0})
	counts, _, _ = s.CollectionCounts(ctx, "u")
	if len(counts) != 0 {
		t.Fatalf("counts after all expired: %v", counts)
	}
}

func TestPurgeReclaims(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	for _, u := range []string{"u1", "u2", "u3"} {
		mustPost(t, s, u, "tabs",
			api.WBO{ID: "a", Has: api.FieldPayload | api.FieldTTL | api.FieldSortIndex, Payload: "aaaa", TTL: 10, SortIndex: 1},
			api.WBO{ID: "b", Has: api.FieldPayload | api.FieldTTL, Payload: "bb", TTL: 100},
			testkit.WBO("c", "c"))
	}
	if n, err := s.PurgeExpired(ctx); err != nil || n != 0 {
		t.Fatalf("early purge: %d %v", n, err)
	}
	clk.Add(11 * time.Second)
	if n, err := s.PurgeExpired(ctx); err != nil || n != 3 {
		t.Fatalf("purge: %d %v", n, err)
	}
	// The record and all its index entries are gone from Pebble.
	for _, u := range []string{"u1", "u2", "u3"} {
		keys := rawKeys(t, s, u)
		if keys != 2*4+1+1+1 { // b,c: R (document embedded) D M Q; b: X; coll meta; user meta; a (all its keys) gone
			t.Fatalf("user %s has %d keys after purge", u, keys)
		}
	}
	clk.Add(100 * time.Second)
	if n, err := s.PurgeExpired(ctx); err != nil || n != 3 {
		t.Fatalf("second purge: %d %v", n, err)
	}
	counts, _, _ := s.CollectionCounts(ctx, "u1")
	if !maps.Equal(counts, map[string]int64{"tabs": 1}) {
		t.Fatalf("counts %v", counts)
	}
	// No global expiry entry is left behind.
	if n := rawPrefixKeys(t, s, globalExpPrefix); n != 0 {
		t.Fatalf("%d global expiry keys left", n)
	}
}

func TestQuota(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 10)
	r := mustPut(t, s, "u", "c", testkit.WBO("a", "123456"))
	if r.QuotaRemaining != 4 {
		t.Fatalf("remaining %d", r.QuotaRemaining)
	}
	br := mustPost(t, s, "u", "c", testkit.WBO("b", "12345"))
	if br.QuotaRemaining != -1 {
		t.Fatalf("remaining %d", br.QuotaRemaining)
	}
	if err := s.CheckWrite(ctx, "u", "c", api.Precondition{Set: true, Since: 1}); !errors.Is(err, api.ErrOverQuota) {
		t.Fatalf("CheckWrite over quota and modified: %v", err)
	}
	if _, err := s.PutItem(ctx, "u", "c", testkit.WBO("x", "1"), api.Precondition{}); !errors.Is(err, api.ErrOverQuota) {
		t.Fatalf("PutItem over quota: %v", err)
	}
	if _, err := s.PostItems(ctx, "u", "c", []api.WBO{testkit.WBO("x", "1")}, api.Precondition{}); !errors.Is(err, api.ErrOverQuota) {
		t.Fatalf("PostItems over quota: %v", err)
	}
	// POST checks the precondition first.
	if _, err := s.PostItems(ctx, "u", "c", []api.WBO{testkit.WBO("x", "1")}, api.Precondition{Set: true, Since: 1}); !errors.Is(err, api.ErrPreconditionFailed) {
		t.Fatalf("PostItems precondition first: %v", err)
	}
	used, limit, _, _ := s.Quota(ctx, "u")
	if used != 11 || limit != 10 {
		t.Fatalf("quota %d/%d", used, limit)
	}
	dr, err := s.DeleteItem(ctx, "u", "c", "a", api.Precondition{})
	if err != nil || dr.QuotaRemaining != 5 {
		t.Fatalf("delete: %+v %v", dr, err)
	}
	if err := s.CheckWrite(ctx, "u", "c", api.Precondition{}); err != nil {
		t.Fatalf("CheckWrite under quota: %v", err)
	}
	// Expired records do not count against the quota.
	mustPut(t, s, "u", "c", api.WBO{ID: "t", Has: api.FieldPayload | api.FieldTTL, Payload: "12345", TTL: 1})
	if err := s.CheckWrite(ctx, "u", "c", api.Precondition{}); !errors.Is(err, api.ErrOverQuota) {
		t.Fatalf("CheckWrite at quota: %v", err)
	}
	clk.Add(2 * time.Second)
	if err := s.CheckWrite(ctx, "u", "c", api.Precondition{}); err != nil {
		t.Fatalf("CheckWrite after expiry: %v", err)
	}
}

func TestPreconditions(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	pre := func(since api.Stamp) api.Precondition { return api.Precondition{Set: true, Since: since} }
	// A collection with no records never fails.
	if err := s.CheckWrite(ctx, "u", "c", pre(1)); err != nil {
		t.Fatal(err)
	}
	r := mustPut(t, s, "u", "c", testkit.WBO("a", "x"))
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"check equal ok", func() error { return s.CheckWrite(ctx, "u", "c", pre(r.Timestamp)) }, nil},
		{"check older fails", func() error { return s.CheckWrite(ctx, "u", "c", pre(r.Timestamp-1)) }, api.ErrPreconditionFailed},
		{"other collection ok", func() error { return s.CheckWrite(ctx, "u", "d", pre(1)) }, nil},
		{"put fails", func() error {
			_, err := s.PutItem(ctx, "u", "c", testkit.WBO("b", "y"), pre(r.Timestamp-1))
			return err
		}, api.ErrPreconditionFailed},
		{"post fails", func() error {
			_, err := s.PostItems(ctx, "u", "c", []api.WBO{testkit.WBO("b", "y")}, pre(r.Timestamp-1))
			return err
		}, api.ErrPreconditionFailed},
		{"delete item fails", func() error { _, err := s.DeleteItem(ctx, "u", "c", "a", pre(r.Timestamp-1)); return err }, api.ErrPreconditionFailed},
		{"delete coll fails", func() error {
			_, err := s.DeleteCollection(ctx, "u", "c", &api.Query{}, pre(r.Timestamp-1000))
			return err
		}, api.ErrPreconditionFailed},
		{"post equal ok", func() error {
			_, err := s.PostItems(ctx, "u", "c", []api.WBO{testkit.WBO("b", "y")}, pre(r.Timestamp))
			return err
		}, nil},
		{"back to back fails", func() error {
			_, err := s.PostItems(ctx, "u", "c", []api.WBO{testkit.WBO("c", "y")}, pre(r.Timestamp))
			return err
		}, api.ErrPreconditionFailed},
	}
	for _, tc := range tests {
		if err := tc.op(); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	sameIDs(t, "nothing written by failed writes", mustGet(t, s, "u", "c", api.Query{}), "a", "b")
}

func TestDeletes(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	var stamps []api.Stamp
	for i, id := range []string{"0", "1", "2", "3", "4", "5"} {
		w := testkit.WBO(id, "xx")
		w.Has |= api.FieldSortIndex
		w.SortIndex = int64(i)
		stamps = append(stamps, mustPost(t, s, "u", "c", w).Timestamp)
		clk.Add(time.Second)
	}
	mustPost(t, s, "u", "d", testkit.WBO("k", "k"))
	mustPost(t, s, "u", "e", testkit.WBO("k", "k"))

	del := func(q api.Query) api.WriteResult {
		t.Helper()
		r, err := s.DeleteCollection(ctx, "u", "c", &q, api.Precondition{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Deleting a missing item succeeds with a fresh timestamp.
	r0, err := s.DeleteItem(ctx, "u", "c", "nope", api.Precondition{})
	if err != nil || r0.Timestamp <= stamps[5] {
		t.Fatalf("delete missing: %+v %v", r0, err)
	}
	r1 := del(api.Query{Sort: api.SortNewest, Limit: 2})
	if r1.Timestamp <= r0.Timestamp {
		t.Fatalf("delete time did not advance")
	}
	sameIDs(t, "after sort+limit delete", mustGet(t, s, "u", "c", api.Query{}), "0", "1", "2", "3")
	ts, _, _ := s.CollectionTimestamps(ctx, "u")
	if ts["c"] != r1.Timestamp {
		t.Fatalf("collection time after delete %v, want %v", ts["c"], r1.Timestamp)
	}
	del(api.Query{HasOlder: true, Older: stamps[1]})
	sameIDs(t, "after older delete", mustGet(t, s, "u", "c", api.Query{}), "1", "2", "3")
	del(api.Query{HasIDs: true, IDs: []string{"2", "zz"}})
	sameIDs(t, "after ids delete", mustGet(t, s, "u", "c", api.Query{}), "1", "3")
	ts, _, _ = s.CollectionTimestamps(ctx, "u")
	r := del(api.Query{HasIndexAbove: true, IndexAbove: 100})
	sameIDs(t, "no match", mustGet(t, s, "u", "c", api.Query{}), "1", "3")
	if ts2, _, _ := s.CollectionTimestamps(ctx, "u"); ts2["c"] != ts["c"] || r.Timestamp <= ts["c"] {
		t.Fatalf("no-match delete changed the collection time")
	}
	if _, err := s.DeleteItem(ctx, "u", "c", "1", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	counts, _, _ := s.CollectionCounts(ctx, "u")
	if !maps.Equal(counts, map[string]int64{"c": 1, "d": 1, "e": 1}) {
		t.Fatalf("counts %v", counts)
	}
	// Unfiltered delete removes the collection.
	del(api.Query{})
	ts, _, _ = s.CollectionTimestamps(ctx, "u")
	if _, ok := ts["c"]; ok || len(ts) != 2 {
		t.Fatalf("collections after delete %v", ts)
	}
	sameIDs(t, "deleted collection", mustGet(t, s, "u", "c", api.Query{}))
	// Writing again starts a fresh collection.
	mustPut(t, s, "u", "c", testkit.WBO("new", "n"))
	sameIDs(t, "recreated", mustGet(t, s, "u", "c", api.Query{Sort: api.SortIndex}), "new")
	// DeleteStorage removes everything of this user only.
	mustPut(t, s, "v", "c", testkit.WBO("keep", "n"))
	if _, err := s.DeleteStorage(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	ts, _, _ = s.CollectionTimestamps(ctx, "u")
	used, _, _, _ := s.Quota(ctx, "u")
	if len(ts) != 0 || used != 0 || viewKeys(t, s, "u") != 1 {
		t.Fatalf("after DeleteStorage: %v used %d keys %d", ts, used, viewKeys(t, s, "u"))
	}
	// Every document is a tombstone now, so peers cannot bring them back.
	rows, _, err := s.Changes(ctx, "u", 0, 0)
	if err != nil || len(rows) == 0 {
		t.Fatalf("changes after DeleteStorage: %v %v", rows, err)
	}
	for _, r := range rows {
		if !r.Deleted {
			t.Fatalf("live document after DeleteStorage: %+v", r)
		}
	}
	sameIDs(t, "other user", mustGet(t, s, "v", "c", api.Query{}), "keep")
	// Insertion numbers are not reused after DeleteStorage.
	mustPut(t, s, "u", "c", testkit.WBO("b", "1"))
	mustPut(t, s, "u", "c", testkit.WBO("a", "1"))
	sameIDs(t, "order after wipe", mustGet(t, s, "u", "c", api.Query{}), "b", "a")
}

func TestBadNames(t *testing.T) {
	s := openTest(t, t.TempDir(), nil, 0)
	if _, err := s.PutItem(ctx, "a\x00b", "c", testkit.WBO("x", "y"), api.Precondition{}); !errors.Is(err, ErrBadName) {
		t.Fatalf("NUL in user: %v", err)
	}
	if _, _, err := api.ReadCollection(ctx, s, "u", "", &api.Query{}); !errors.Is(err, ErrBadName) {
		t.Fatalf("empty collection: %v", err)
	}
}

// TestSortedOpsKeepRangeDeleteOrder checks that writes buffered for
// sorting reach the batch in the order a range deletion needs: staged
// before it, they are deleted by it; staged after, they stay, whatever
// their keys' order.
func TestSortedOpsKeepRangeDeleteOrder(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	key := func(peer string) []byte { return ckptKey(nil, "u", peer) }
	_, _, err := s.writeLocked("u", nil, func(st *userState, ts stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		w := s.newWriter(b, sc, st, "u", "c", ts)
		w.ops = getOps()
		defer w.ops.release()
		for _, k := range []string{"m", "b", "z"} { // before: "b" and "m" in the range
			if err := w.set(key(k), []byte("before")); err != nil {
				return nil, err
			}
		}
		if err := w.deleteRange(key("a"), key("n")); err != nil {
			return nil, err
		}
		for _, k := range []string{"c", "m"} { // after, in the range
			if err := w.set(key(k), []byte("after")); err != nil {
				return nil, err
			}
		}
		return func() {}, w.flushOps()
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"b": "", "c": "after", "m": "after", "z": "before"} {
		v, closer, err := s.db.Get(key(k))
		got := ""
		if err == nil {
			got = string(v)
			closer.Close()
		} else if !errors.Is(err, pebble.ErrNotFound) {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("key %s: %q, want %q", k, got, want)
		}
	}
}
