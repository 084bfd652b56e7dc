package node

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

const base = 1_700_000_000

func stampAt(sec int) api.Stamp { return api.Stamp((base + sec) * 100) }

// seedQueryData writes ids 0..9 one second apart, then rewrites id 2.
func seedQueryData(t *testing.T) *Store {
	t.Helper()
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	si := map[int]int64{0: 1, 1: 34, 2: 12, 3: 50, 4: 7, 6: -5, 7: 12, 8: 99, 9: 0}
	for i := 0; i < 10; i++ {
		w := testkit.WBO(strconv.Itoa(i), "payload"+strconv.Itoa(i))
		if v, ok := si[i]; ok {
			w.Has |= api.FieldSortIndex
			w.SortIndex = v
		}
		if i%2 == 0 {
			w.Has |= api.FieldParentID
			w.ParentID = "p"
		}
		if i == 4 {
			w.Has |= api.FieldPredecessorID
			w.PredecessorID = "x"
		}
		r := mustPost(t, s, "alice", "c", w)
		if r.Timestamp != stampAt(i) {
			t.Fatalf("write %d stamped %v, want %v", i, r.Timestamp, stampAt(i))
		}
		clk.Add(time.Second)
	}
	// Rewrite 2's payload at base+10: it keeps its place and sortindex.
	r := mustPut(t, s, "alice", "c", testkit.WBO("2", "new2"))
	if r.Modified != stampAt(10) || r.Timestamp != stampAt(10) {
		t.Fatalf("rewrite of 2: %+v", r)
	}
	// Another collection and user must never leak in.
	mustPost(t, s, "alice", "c2", testkit.WBO("0", "x"))
	mustPost(t, s, "alic", "c", testkit.WBO("zz", "x"))
	return s
}

func TestGetCollectionQueries(t *testing.T) {
	s := seedQueryData(t)
	tests := []struct {
		name string
		q    api.Query
		want []string
	}{
		{"all in insertion order", api.Query{}, []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
		{"offset limit", api.Query{Limit: 3, Offset: 2}, []string{"2", "3", "4"}},
		{"offset past end", api.Query{Limit: 3, Offset: 20}, nil},
		{"limit", api.Query{Limit: 2}, []string{"0", "1"}},
		{"newer strict, insertion order", api.Query{HasNewer: true, Newer: stampAt(6)}, []string{"2", "7", "8", "9"}},
		{"older strict", api.Query{HasOlder: true, Older: stampAt(3)}, []string{"0", "1"}},
		{"newer and older", api.Query{HasNewer: true, Newer: stampAt(3), HasOlder: true, Older: stampAt(8)}, []string{"4", "5", "6", "7"}},
		{"newer limit offset", api.Query{HasNewer: true, Newer: stampAt(6), Limit: 2, Offset: 1}, []string{"7", "8"}},
		{"newer empty", api.Query{HasNewer: true, Newer: stampAt(10)}, nil},
		{"older <= newer", api.Query{HasNewer: true, Newer: stampAt(5), HasOlder: true, Older: stampAt(5)}, nil},
		{"sort oldest", api.Query{Sort: api.SortOldest}, []string{"0", "1", "3", "4", "5", "6", "7", "8", "9", "2"}},
		{"sort newest", api.Query{Sort: api.SortNewest}, []string{"2", "9", "8", "7", "6", "5", "4", "3", "1", "0"}},
		{"sort newest limit offset", api.Query{Sort: api.SortNewest, Limit: 2, Offset: 1}, []string{"9", "8"}},
		{"sort oldest newer", api.Query{Sort: api.SortOldest, HasNewer: true, Newer: stampAt(7)}, []string{"8", "9", "2"}},
		{"sort index", api.Query{Sort: api.SortIndex}, []string{"8", "3", "1", "2", "7", "4", "0", "9", "6", "5"}},
		{"sort index limit offset", api.Query{Sort: api.SortIndex, Limit: 2, Offset: 2}, []string{"1", "2"}},
		{"index_above", api.Query{HasIndexAbove: true, IndexAbove: 10}, []string{"1", "2", "3", "7", "8"}},
		{"index_above sort index", api.Query{Sort: api.SortIndex, HasIndexAbove: true, IndexAbove: 10}, []string{"8", "3", "1", "2", "7"}},
		{"index_below", api.Query{HasIndexBelow: true, IndexBelow: 1}, []string{"6", "9"}},
		{"index range fractional", api.Query{Sort: api.SortIndex, HasIndexAbove: true, IndexAbove: 0.5, HasIndexBelow: true, IndexBelow: 12}, []string{"4", "0"}},
		{"index_above sort oldest", api.Query{Sort: api.SortOldest, HasIndexAbove: true, IndexAbove: 10}, []string{"1", "3", "7", "8", "2"}},
		{"newer sort index", api.Query{Sort: api.SortIndex, HasNewer: true, Newer: stampAt(6)}, []string{"8", "2", "7", "9"}},
		{"ids", api.Query{HasIDs: true, IDs: []string{"3", "1", "nope", "3"}}, []string{"1", "3"}},
		{"ids sort newest", api.Query{HasIDs: true, IDs: []string{"1", "2", "3"}, Sort: api.SortNewest}, []string{"2", "3", "1"}},
		{"ids sort index limit", api.Query{HasIDs: true, IDs: []string{"5", "0", "8"}, Sort: api.SortIndex, Limit: 2}, []string{"8", "0"}},
		{"parentid", api.Query{HasParentID: true, ParentID: "p"}, []string{"0", "2", "4", "6", "8"}},
		{"predecessorid", api.Query{HasPredecessorID: true, PredecessorID: "x"}, []string{"4"}},
		{"parentid newer", api.Query{HasParentID: true, ParentID: "p", HasNewer: true, Newer: stampAt(5)}, []string{"2", "6", "8"}},
		{"parentid no match", api.Query{HasParentID: true, ParentID: "q"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sameIDs(t, tc.name, mustGet(t, s, "alice", "c", tc.q), tc.want...)
		})
	}
}

func TestGetFullFields(t *testing.T) {
	s := seedQueryData(t)
	ws := mustGet(t, s, "alice", "c", api.Query{HasIDs: true, IDs: []string{"4"}, Full: true})
	want := api.WBO{ID: "4", Modified: stampAt(4), Has: api.FieldPayload | api.FieldSortIndex | api.FieldParentID | api.FieldPredecessorID,
		SortIndex: 7, Payload: "payload4", ParentID: "p", PredecessorID: "x"}
	if len(ws) != 1 || ws[0] != want {
		t.Fatalf("got %+v, want %+v", ws, want)
	}
	w, now, err := s.GetItem(ctx, "alice", "c", "2")
	if err != nil {
		t.Fatal(err)
	}
	want2 := api.WBO{ID: "2", Modified: stampAt(10), Has: api.FieldPayload | api.FieldSortIndex | api.FieldParentID,
		SortIndex: 12, Payload: "new2", ParentID: "p"}
	if w != want2 {
		t.Fatalf("GetItem = %+v, want %+v", w, want2)
	}
	if now < stampAt(10) {
		t.Fatalf("read time %v below last write", now)
	}
	if _, _, err := s.GetItem(ctx, "alice", "c", "nope"); err != api.ErrNotFound {
		t.Fatalf("missing item: %v", err)
	}
	if ws := mustGet(t, s, "alice", "empty", api.Query{}); ws == nil || len(ws) != 0 {
		t.Fatalf("empty collection: %#v", ws)
	}
	// Ids with arbitrary bytes, including NUL and a prefix of another id.
	for _, id := range []string{"a\x00b", "a", "a\x00", "\xff\xfe", "a#?~\\"} {
		mustPut(t, s, "bob", "c", testkit.WBO(id, "v:"+id))
	}
	for _, id := range []string{"a\x00b", "a", "a\x00", "\xff\xfe", "a#?~\\"} {
		w, _, err := s.GetItem(ctx, "bob", "c", id)
		if err != nil || w.Payload != "v:"+id {
			t.Fatalf("GetItem(%q) = %+v, %v", id, w, err)
		}
	}
	sameIDs(t, "odd ids", mustGet(t, s, "bob", "c", api.Query{}), "a\x00b", "a", "a\x00", "\xff\xfe", "a#?~\\")
}

// TestLargeRangeFallsBackToScan covers the plan switch from an index range
// to an insertion-order scan when most of the collection matches.
func TestLargeRangeFallsBackToScan(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	var stamps []api.Stamp
	for b := 0; b < 4; b++ {
		var ws []api.WBO
		for i := 0; i < 100; i++ {
			n := b*100 + i
			ws = append(ws, api.WBO{ID: strconv.Itoa(n), Has: api.FieldPayload | api.FieldSortIndex, Payload: "x", SortIndex: int64(n % 50)})
		}
		stamps = append(stamps, mustPost(t, s, "u", "c", ws...).Timestamp)
		clk.Add(time.Second)
	}
	// Rewrite an early record so that it matches newer= but keeps its place.
	mustPut(t, s, "u", "c", testkit.WBO("5", "y"))
	want := []string{"5"}
	for i := 100; i < 400; i++ {
		want = append(want, strconv.Itoa(i))
	}
	sameIDs(t, "newer large", mustGet(t, s, "u", "c", api.Query{HasNewer: true, Newer: stamps[0]}), want...)
	sameIDs(t, "newer large offset limit", mustGet(t, s, "u", "c", api.Query{HasNewer: true, Newer: stamps[0], Limit: 3, Offset: 1}), "100", "101", "102")
	got := mustGet(t, s, "u", "c", api.Query{HasIndexAbove: true, IndexAbove: 1, HasIndexBelow: true, IndexBelow: 48})
	if len(got) != 8*46 || got[0].ID != "2" || got[len(got)-1].ID != "397" {
		t.Fatalf("index range: %d records, first %s", len(got), got[0].ID)
	}
}

// TestCollectionCountMatches checks that the number a collection GET
// announces before its first record (X-Weave-Records) is the number it
// emits, for every query plan and counting shortcut, with and without
// records whose ttl has passed (api.ReadCollection fails on a mismatch).
func TestCollectionCountMatches(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	for i := range 40 {
		w := testkit.WBO(strconv.Itoa(i), "p"+strconv.Itoa(i))
		if i%3 == 0 {
			w.Has |= api.FieldSortIndex
			w.SortIndex = int64(i % 7)
		}
		if i%4 == 0 {
			w.Has |= api.FieldParentID
			w.ParentID = "p"
		}
		if i%5 == 0 {
			w.Has |= api.FieldTTL
			w.TTL = int64(1 + i%3)
		}
		if i%11 == 0 {
			w.Has &^= api.FieldPayload
			w.Payload = ""
		}
		mustPut(t, s, "u", "c", w)
		mustPut(t, s, "u", "plain", testkit.WBO(strconv.Itoa(i), "x"))
		clk.Add(100 * time.Millisecond)
	}
	mid := stampAt(2)
	queries := []api.Query{
		{}, {Full: true, Limit: 7, Offset: 3}, {Limit: 100, Offset: 39}, {Limit: 5, Offset: 500},
		{Sort: api.SortIndex}, {Sort: api.SortNewest, Limit: 9}, {Sort: api.SortOldest, Limit: 9, Offset: 30},
		{HasNewer: true, Newer: mid}, {HasOlder: true, Older: mid, Limit: 3, Offset: 1},
		{HasNewer: true, Newer: mid, Sort: api.SortIndex}, {HasIndexAbove: true, IndexAbove: 2.5},
		{HasIndexBelow: true, IndexBelow: 4, Sort: api.SortIndex, Limit: 2},
		{HasNewer: true, Newer: mid, HasIndexAbove: true, IndexAbove: 1},
		{HasParentID: true, ParentID: "p"}, {HasIDs: true, IDs: []string{"1", "5", "15", "nope"}, Limit: 2},
	}
	for _, when := range []string{"before expiry", "after expiry"} {
		for _, coll := range []string{"c", "plain", "none"} {
			for _, q := range queries {
				if _, _, err := api.ReadCollection(ctx, s, "u", coll, &q); err != nil {
					t.Errorf("%s %s %+v: %v", when, coll, q, err)
				}
			}
		}
		clk.Add(5 * time.Second)
	}
}

// TestCollectionReadsAreConsistentUnderWrites: a collection GET counts its
// answer (X-Weave-Records) before it streams it, and both must see one
// moment of the collection while writers add, replace and delete records
// meanwhile: the one-pass read (one iterator opened under the user's
// lock) and the snapshot reads (filters, orders, ids) alike: every answer
// streams exactly as many records as it counted.
func TestCollectionReadsAreConsistentUnderWrites(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	pre := api.Precondition{}
	for i := range 50 {
		mustPut(t, s, "u", "c", testkit.WBO(fmt.Sprintf("base%03d", i), "p"))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			batch := []api.WBO{testkit.WBO(fmt.Sprintf("new%05d", i), "p"), testkit.WBO(fmt.Sprintf("base%03d", i%50), fmt.Sprint(i))}
			if _, err := s.PostItems(ctx, "u", "c", batch, pre); err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				if _, err := s.DeleteItem(ctx, "u", "c", fmt.Sprintf("new%05d", i), pre); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	queries := []api.Query{
		{Full: true},                           // one pass
		{Full: true, Limit: 20, Offset: 10},    // one pass, a page
		{Sort: api.SortNewest, Limit: 30},      // snapshot
		{HasNewer: true, Newer: 1, Full: true}, // snapshot, counted by an index
		{HasIDs: true, IDs: []string{"base001", "new00003", "new00004", "nope"}},
	}
	deadline := time.Now().Add(2 * time.Second)
	for n := 0; time.Now().Before(deadline) || n < 50; n++ {
		q := queries[n%len(queries)]
		var want, got int
		err := s.GetCollection(ctx, "u", "c", &q, func(c int, _ api.Stamp) error { want = c; return nil },
			func(*api.WBO) error { got++; return nil })
		if err != nil {
			t.Fatalf("query %+v: %v", q, err)
		}
		if got != want {
			t.Fatalf("query %+v streamed %d records, counted %d", q, got, want)
		}
	}
	close(stop)
	wg.Wait()
}
