package node

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// TestPostBatchMatchesPuts checks that a POST large enough to prefetch
// heads and sort its writes stores the same records, indexes and
// accounting as the same WBOs written one by one with PUT: overwrites,
// metadata-only updates, duplicates in the batch, new ids and rewrites of
// expired records.
func TestPostBatchMatchesPuts(t *testing.T) {
	clkA, clkB := newFakeClock(), newFakeClock()
	a := openTest(t, t.TempDir(), clkA, 0)
	b := openTest(t, t.TempDir(), clkB, 0)
	var seed []api.WBO
	for i, id := range []string{"k", "b", "j", "e", "a", "h", "c", "i", "d", "g", "f"} {
		w := testkit.WBO(id, strings.Repeat(id, i+1))
		if i%2 == 0 {
			w.Has |= api.FieldSortIndex
			w.SortIndex = int64(i - 3)
		}
		if i%3 == 0 {
			w.Has |= api.FieldParentID
			w.ParentID = "p" + id
		}
		if id == "c" || id == "d" || id == "g" {
			w.Has |= api.FieldTTL
			w.TTL = 1
		}
		seed = append(seed, w)
	}
	ra := mustPost(t, a, "u", "c", seed...)
	for _, w := range seed {
		mustPut(t, b, "u", "c", w)
	}
	clkA.Add(3 * time.Second) // c, d and g expire
	clkB.Add(3 * time.Second)
	batch := []api.WBO{
		testkit.WBO("z", "new z"),
		{ID: "a", Has: api.FieldSortIndex | api.FieldPredecessorID, SortIndex: 7, PredecessorID: "q"},
		testkit.WBO("b", "new b"),
		{ID: "c", Has: api.FieldSortIndex, SortIndex: 2}, // expired: recreated payload-less
		testkit.WBO("d", "new d"),                        // expired: rewritten
		testkit.WBO("z", "z again"),
		{ID: "b", Has: api.FieldSortIndex, SortIndex: -4},
		{ID: "e", Has: api.FieldPayload | api.FieldTTL, Payload: "ttl e", TTL: 100},
		{ID: "y", Has: api.FieldParentID, ParentID: "py"},
		testkit.WBO("k", "new k"),
		{ID: "h", Has: api.FieldTTL, TTL: 50},
		testkit.WBO("a", "new a"),
		{ID: "y", Has: api.FieldPayload, Payload: "y now"},
	}
	if len(batch) < prefetchMin {
		t.Fatalf("batch of %d does not take the prefetch path", len(batch))
	}
	rb := mustPost(t, a, "u", "c", batch...)
	for _, w := range batch {
		mustPut(t, b, "u", "c", w)
	}
	strip := func(ws []api.WBO) []api.WBO {
		ws = slices.Clone(ws)
		for i := range ws {
			ws[i].Modified = 0
		}
		slices.SortFunc(ws, func(x, y api.WBO) int { return strings.Compare(x.ID, y.ID) })
		return ws
	}
	tests := []struct {
		name string
		q    api.Query
	}{
		{"all", api.Query{Full: true}},
		{"by sortindex", api.Query{Full: true, Sort: api.SortIndex}},
		{"index above 0", api.Query{Full: true, HasIndexAbove: true, IndexAbove: 0}},
		{"index below 3", api.Query{Full: true, HasIndexBelow: true, IndexBelow: 3}},
		{"ids", api.Query{Full: true, HasIDs: true, IDs: []string{"a", "c", "d", "g", "y", "z"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ga, gb := strip(mustGet(t, a, "u", "c", tc.q)), strip(mustGet(t, b, "u", "c", tc.q))
			if !slices.Equal(ga, gb) {
				t.Fatalf("POST gave\n%+v\nPUTs gave\n%+v", ga, gb)
			}
		})
	}
	// The modified index: exactly the records written with a payload by
	// the batch are newer than the seed.
	newer := mustGet(t, a, "u", "c", api.Query{Full: true, HasNewer: true, Newer: ra.Timestamp})
	for _, w := range newer {
		if w.Modified != rb.Timestamp {
			t.Fatalf("record %s modified %v, want the batch's %v", w.ID, w.Modified, rb.Timestamp)
		}
	}
	sameIDs(t, "newer than seed", strip(newer), "a", "b", "d", "e", "k", "y", "z")
	ca, _, _ := a.CollectionCounts(ctx, "u")
	cb, _, _ := b.CollectionCounts(ctx, "u")
	ua, _, _ := a.CollectionUsage(ctx, "u")
	ub, _, _ := b.CollectionUsage(ctx, "u")
	if ca["c"] != cb["c"] || ua["c"] != ub["c"] {
		t.Fatalf("POST counts %v usage %v; PUTs counts %v usage %v", ca, ua, cb, ub)
	}
}
