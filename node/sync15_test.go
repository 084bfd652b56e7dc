package node

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/sync15"
	"github.com/hce-sync/hce/api/sync15/sync15test"
	"github.com/hce-sync/hce/api/testkit"
)

// TestSync15Conformance runs the Sync 1.5 conformance suite (the
// protocol's table tests, through the storage API handler on a loopback
// server) over the Pebble-backed store.
func TestSync15Conformance(t *testing.T) {
	sync15test.Run(t, func(t *testing.T, clock func() time.Time, quota int64) sync15.Store {
		cfg := DefaultConfig()
		cfg.Dir = t.TempDir()
		cfg.Clock = clock
		cfg.QuotaBytes = quota
		cfg.CacheBytes = 8 << 20
		cfg.MemTableBytes = 4 << 20
		cfg.MinFreeBytes = -1
		cfg.Logger = testkit.Logger(t, 0)
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s.Sync15()
	})
}

// bso is a Sync 1.5 record with a payload.
func bso(id, payload string) sync15.BSO {
	return sync15.BSO{ID: id, Has: sync15.FieldPayload, Payload: payload}
}

// list15 returns the ids of a Sync 1.5 listing.
func list15(t testing.TB, x *Sync15, user, coll string, q sync15.Query) (ids []string, page sync15.Page) {
	t.Helper()
	if q.Limit == 0 {
		q.Limit = 1000
	}
	err := x.GetCollection(ctx, user, coll, &q, func(p *sync15.Page) error { page = *p; return nil },
		func(b *sync15.BSO) error { ids = append(ids, strings.Clone(b.ID)); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return ids, page
}

var batchLimits = sync15.BatchLimits{MaxRecords: 100, MaxBytes: 1 << 20}

// TestSync15BatchSurvivesRestart opens a batch, adds to it, restarts the
// store twice (once with the batch still open) and commits it: nothing
// is visible before the commit, everything after it, with one timestamp.
func TestSync15BatchSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	s := openTest(t, dir, clk, 0)
	x := s.Sync15()
	id, err := sync15.NewBatchID(clk.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.WriteBatch(ctx, "u", "c", &sync15.BatchWrite{ID: id.String(), Create: true,
		BSOs: []sync15.BSO{bso("a", "1"), bso("b", "2")}, Limits: batchLimits}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk, 0)
	x = s.Sync15()
	if ids, _ := list15(t, x, "u", "c", sync15.Query{}); len(ids) != 0 {
		t.Fatalf("uncommitted batch visible: %v", ids)
	}
	clk.Add(time.Second)
	if _, err := x.WriteBatch(ctx, "u", "c", &sync15.BatchWrite{ID: id.String(),
		BSOs: []sync15.BSO{bso("c", "3"), {ID: "a", Has: sync15.FieldSortIndex, SortIndex: 5}}, Limits: batchLimits}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk, 0)
	x = s.Sync15()
	clk.Add(time.Second)
	ts, err := x.WriteBatch(ctx, "u", "c", &sync15.BatchWrite{ID: id.String(), Commit: true, Limits: batchLimits})
	if err != nil {
		t.Fatal(err)
	}
	ids, page := list15(t, x, "u", "c", sync15.Query{Sort: sync15.SortIndex, Full: true})
	if fmt.Sprint(ids) != "[a c b]" || page.LastModified != ts {
		t.Fatalf("after commit: %v %+v", ids, page)
	}
	for _, id := range ids {
		b, err := x.GetBSO(ctx, "u", "c", id)
		if err != nil || b.Modified != ts {
			t.Fatalf("%s: %+v %v", id, b, err)
		}
	}
	// The batch is gone, and so is its expiry entry.
	if _, err := x.WriteBatch(ctx, "u", "c", &sync15.BatchWrite{ID: id.String(), Commit: true, Limits: batchLimits}); !errors.Is(err, sync15.ErrBatchNotFound) {
		t.Fatalf("second commit: %v", err)
	}
	if n := rawPrefixKeys(t, s, globalBatchPrefix); n != 0 {
		t.Fatalf("%d batch expiry keys left", n)
	}
	if n := rawPrefixKeys(t, s, userTag(nil, keyOf(t, s, "u"), tagBatch)); n != 0 {
		t.Fatalf("%d batch keys left", n)
	}
}

// TestSync15PurgeBatches drops abandoned batches after their lifetime.
func TestSync15PurgeBatches(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	x := s.Sync15()
	old, _ := sync15.NewBatchID(clk.Now(), rand.Reader)
	if _, err := x.WriteBatch(ctx, "u", "c", &sync15.BatchWrite{ID: old.String(), Create: true, BSOs: []sync15.BSO{bso("a", "1")}, Limits: batchLimits}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	young, _ := sync15.NewBatchID(clk.Now(), rand.Reader)
	if _, err := x.WriteBatch(ctx, "v", "c", &sync15.BatchWrite{ID: young.String(), Create: true, BSOs: []sync15.BSO{bso("a", "1")}, Limits: batchLimits}); err != nil {
		t.Fatal(err)
	}
	clk.Add(defaultBatchLifetime - time.Hour + time.Second)
	n, err := s.PurgeBatches(ctx)
	if err != nil || n != 1 {
		t.Fatalf("purged %d: %v", n, err)
	}
	if _, err := x.WriteBatch(ctx, "u", "c", &sync15.BatchWrite{ID: old.String(), Limits: batchLimits}); !errors.Is(err, sync15.ErrBatchNotFound) {
		t.Fatalf("old batch: %v", err)
	}
	if _, err := x.WriteBatch(ctx, "v", "c", &sync15.BatchWrite{ID: young.String(), Commit: true, Limits: batchLimits}); err != nil {
		t.Fatalf("young batch: %v", err)
	}
	if n := rawPrefixKeys(t, s, globalBatchPrefix); n != 0 {
		t.Fatalf("%d expiry keys left", n)
	}
}

// TestSync15WritesAreClientWrites: a Sync 1.5 write makes revisions,
// enters the changes feed, replicates to another store (whose Sync 1.5
// view, built from the replicated records, lists them) and waits for the
// replicas like a Weave write.
func TestSync15WritesAreClientWrites(t *testing.T) {
	clk := newFakeClock()
	a := openTest(t, t.TempDir(), clk, 0)
	b := openTest(t, t.TempDir(), clk, 0)
	w := &fakeWaiter{}
	a.SetReplicaWaiter(w)
	xa, xb := a.Sync15(), b.Sync15()
	ts, err := xa.PostBSOs(ctx, "u", "c", []sync15.BSO{bso("a", "1"), bso("b", "2")}, sync15.Precondition{})
	if err != nil {
		t.Fatal(err)
	}
	if w.n() != 1 {
		t.Fatalf("waiter called %d times", w.n())
	}
	clk.Add(time.Second)
	if _, err := xa.PutBSO(ctx, "u", "c", &sync15.BSO{ID: "a", Has: sync15.FieldSortIndex, SortIndex: 9}, sync15.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := xa.DeleteBSO(ctx, "u", "c", "b", sync15.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if w.n() != 3 {
		t.Fatalf("waiter called %d times", w.n())
	}
	rows, _, err := a.Changes(ctx, "u", 0, 0)
	if err != nil || len(rows) != 2 {
		t.Fatalf("changes %+v %v", rows, err)
	}
	d, err := a.GetDoc(ctx, "u", "c", "a")
	if err != nil || d.Tree.Leaves()[0].Rev.Pos != 2 {
		t.Fatalf("document of a: %v", err)
	}
	// b is a replica that Sync 1.5 clients have not used yet.
	pull(t, a, b, "u")
	if ids, _ := list15(t, xb, "u", "c", sync15.Query{}); fmt.Sprint(ids) != "[a]" {
		t.Fatalf("replica lists %v", ids)
	}
	got, err := xb.GetBSO(ctx, "u", "c", "a")
	if err != nil || got.Payload != "1" || got.SortIndex != 9 {
		t.Fatalf("replica's a: %+v %v", got, err)
	}
	// Later replicated changes keep the replica's indexes current.
	clk.Add(time.Second)
	if _, err := xa.PostBSOs(ctx, "u", "c", []sync15.BSO{bso("z", "26"), {ID: "a", Has: sync15.FieldSortIndex, SortIndex: -1}}, sync15.Precondition{}); err != nil {
		t.Fatal(err)
	}
	pull(t, a, b, "u")
	if ids, _ := list15(t, xb, "u", "c", sync15.Query{Sort: sync15.SortIndex}); fmt.Sprint(ids) != "[a z]" {
		t.Fatalf("replica's index order %v", ids)
	}
	_ = ts
}

// TestSync15IndexesOfWeaveData builds the Sync 1.5 indexes over records a
// Weave client wrote, once, and keeps them through restarts and purges.
func TestSync15IndexesOfWeaveData(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	s := openTest(t, dir, clk, 0)
	for i := 0; i < 5; i++ {
		w := testkit.WBO(fmt.Sprintf("w%d", i), "p")
		w.Has |= api.FieldSortIndex
		w.SortIndex = int64(i % 2)
		mustPut(t, s, "u", "c", w)
		clk.Add(time.Second)
	}
	exp := testkit.WBO("short", "p")
	exp.Has |= api.FieldTTL
	exp.TTL = 2
	mustPut(t, s, "u", "c", exp)
	x := s.Sync15()
	if ids, _ := list15(t, x, "u", "c", sync15.Query{Sort: sync15.SortIndex}); fmt.Sprint(ids) != "[w3 w1 w4 w2 w0 short]" {
		t.Fatalf("built index order %v", ids)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk, 0)
	x = s.Sync15()
	st, _ := s.state("u")
	if !st.sync15 {
		t.Fatal("the flag did not survive the restart")
	}
	// A Weave write after the flag keeps the indexes too.
	mustPut(t, s, "u", "c", testkit.WBO("w9", "p"))
	if ids, _ := list15(t, x, "u", "c", sync15.Query{Sort: sync15.SortOldest}); fmt.Sprint(ids) != "[w0 w1 w2 w3 w4 short w9]" {
		t.Fatalf("oldest %v", ids)
	}
	// The purge removes expired records and their index entries.
	clk.Add(3 * time.Second)
	if n, err := s.PurgeExpired(ctx); err != nil || n != 1 {
		t.Fatalf("purge %d %v", n, err)
	}
	if n := rawPrefixKeys(t, s, collPrefix(nil, keyOf(t, s, "u"), tagIdx15, "c")); n != 6 {
		t.Fatalf("%d index entries after the purge", n)
	}
	if n := rawPrefixKeys(t, s, collPrefix(nil, keyOf(t, s, "u"), tagNew15, "c")); n != 6 {
		t.Fatalf("%d N entries after the purge", n)
	}
	// DELETE storage takes the indexes with the view.
	if _, err := x.DeleteStorage(ctx, "u", sync15.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if n := rawPrefixKeys(t, s, userTag(nil, keyOf(t, s, "u"), tagIdx15)) + rawPrefixKeys(t, s, userTag(nil, keyOf(t, s, "u"), tagNew15)); n != 0 {
		t.Fatalf("%d index entries after DELETE storage", n)
	}
}

// TestSync15TTLCapped stores a ttl above the Weave limit as that limit.
func TestSync15TTLCapped(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	x := s.Sync15()
	if _, err := x.PutBSO(ctx, "u", "c", &sync15.BSO{ID: "a", Has: sync15.FieldPayload | sync15.FieldTTL, Payload: "x", TTL: sync15.MaxTTL}, sync15.Precondition{}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Duration(api.MaxTTLSeconds+1) * time.Second)
	if _, err := x.GetBSO(ctx, "u", "c", "a"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("record past a year: %v", err)
	}
}

// TestSync15Codecs: user meta version 5 and collection meta version 2 are
// written only when their new fields are set, and round-trip; versions 4
// and 1 still read; bad flags are corrupt.
func TestSync15Codecs(t *testing.T) {
	m4 := userMeta{nextSeq: 7, last: 9, chg: 3, conf: 1, local: 2, nlocal: 1}
	b := appendUserMeta(nil, &m4)
	if b[0] != verUserMeta {
		t.Fatalf("plain user meta written as version %d", b[0])
	}
	if got, err := decodeUserMeta(b); err != nil || got != m4 {
		t.Fatalf("v4: %+v %v", got, err)
	}
	m5 := m4
	m5.flags, m5.smod = userSync15, 12345
	b = appendUserMeta(nil, &m5)
	if b[0] != verUserMeta5 {
		t.Fatalf("version %d", b[0])
	}
	if got, err := decodeUserMeta(b); err != nil || got != m5 {
		t.Fatalf("v5: %+v %v", got, err)
	}
	bad := append([]byte(nil), b...)
	bad[len(bad)-4] = 0x80 // flags byte: an unknown flag (smod 12345 takes 3 bytes)
	if _, err := decodeUserMeta(bad); err == nil {
		t.Fatal("unknown user flag accepted")
	}
	for _, cm := range []collMeta{{last: 5, count: 2, bytes: 10, ttl: 1}, {last: 6, keep: true}} {
		b := appendMeta(nil, &cm)
		if want := byte(verMeta); cm.keep && b[0] != verMeta2 || !cm.keep && b[0] != want {
			t.Fatalf("meta %+v written as version %d", cm, b[0])
		}
		var got collMeta
		if err := decodeMeta(b, &got); err != nil || got != cm {
			t.Fatalf("meta %+v: %+v %v", cm, got, err)
		}
	}
	var got collMeta
	if err := decodeMeta([]byte{verMeta2, 2, 0, 0, 0, 0}, &got); err == nil {
		t.Fatal("unknown collection flag accepted")
	}
	h := batchHeader{created: 99, count: 3, bytes: 40}
	var h2 batchHeader
	if err := decodeBatchHeader(appendBatchHeader(nil, &h), &h2); err != nil || h2 != h {
		t.Fatalf("batch header %+v %v", h2, err)
	}
	r := sync15.BSO{Has: sync15.FieldPayload | sync15.FieldTTL, Payload: "p", TTL: 5, SortIndex: -3}
	var r2 sync15.BSO
	if err := decodeBatchRec(appendBatchRec(nil, &r), &r2); err != nil || r2 != r {
		t.Fatalf("batch record %+v %v", r2, err)
	}
	created, user, coll, id, ok := parseGlobalBatchKey(globalBatchKey(nil, 77, "u", "c", "IDxx"))
	if !ok || created != 77 || user != "u" || coll != "c" || id != "IDxx" {
		t.Fatalf("global batch key %d %q %q %q %v", created, user, coll, id, ok)
	}
}

// TestSync15PlainHint checks the plain hint of the records a listing
// returns: the JSON a handler writes with it is the JSON it writes
// without it, for ids and payloads that need escaping and those that do
// not, and plain ones carry it.
func TestSync15PlainHint(t *testing.T) {
	s := openTest(t, t.TempDir(), nil, 0)
	x := s.Sync15()
	in := []sync15.BSO{
		bso("plain", "ciphertext-abc=="),
		bso(`q"uote`, "p"),
		bso(`back\slash`, `a\b`),
		bso("ctl", "line\nbreak\x01"),
		bso("utf8", "caf\u00e9 \u2028"),
		bso("json", `{"ciphertext":"abc"}`),
	}
	if _, err := x.PostBSOs(ctx, "u", "c", in, sync15.Precondition{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	check := func(b *sync15.BSO) error {
		n++
		got := string(sync15.AppendBSOJSON(nil, b))
		c := *b
		c.Plain = 0
		if want := string(sync15.AppendBSOJSON(nil, &c)); got != want {
			return fmt.Errorf("%q: with the hint %s, without %s", b.ID, got, want)
		}
		if b.ID == "plain" && b.Plain != api.PlainID|api.PlainPayload {
			return fmt.Errorf("plain record hinted %b", b.Plain)
		}
		return nil
	}
	q := sync15.Query{Full: true, Limit: 100}
	if err := x.GetCollection(ctx, "u", "c", &q, func(*sync15.Page) error { return nil }, check); err != nil {
		t.Fatal(err)
	}
	if n != len(in) {
		t.Fatalf("listed %d of %d", n, len(in))
	}
}

// TestSync15KeptPageMatchesRescan lists a collection (updated records,
// sortindexes, expiring records, so that every order differs from the
// insertion order) with many queries, keeping each page between its
// count and its emission and, again, reading the index twice: the
// pages, their headers and every record must be the same, and each
// page must emit what it counted.
func TestSync15KeptPageMatchesRescan(t *testing.T) {
	s := openTest(t, t.TempDir(), nil, 0)
	x := s.Sync15()
	for round := range 6 {
		var bs []sync15.BSO
		for i := round; i < 120; i += 1 + round {
			b := bso(fmt.Sprintf("r%03d", i), fmt.Sprintf("p%d-%d", i, round))
			if i%3 == 0 {
				b.Has |= sync15.FieldSortIndex
				b.SortIndex = int64((i * 7919) % 101)
			}
			if i%11 == 0 {
				b.Has |= sync15.FieldTTL
				b.TTL = 3600
			}
			bs = append(bs, b)
		}
		if _, err := x.PostBSOs(ctx, "u", "c", bs, sync15.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	list := func(q sync15.Query) string {
		var out strings.Builder
		var page sync15.Page
		n := 0
		err := x.GetCollection(ctx, "u", "c", &q, func(p *sync15.Page) error { page = *p; return nil },
			func(b *sync15.BSO) error { n++; out.Write(sync15.AppendBSOJSON(nil, b)); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if n != page.Count {
			t.Fatalf("%+v: emitted %d, counted %d", q, n, page.Count)
		}
		return fmt.Sprintf("%+v\n%s", page, out.String())
	}
	_, mid := list15(t, x, "u", "c", sync15.Query{Sort: sync15.SortOldest, Limit: 60})
	defer func(p, b int) { maxKeptPage, maxKeptPageIDs = p, b }(maxKeptPage, maxKeptPageIDs)
	n := 0
	for _, sort := range []sync15.Sort{sync15.SortNone, sync15.SortNewest, sync15.SortOldest, sync15.SortIndex} {
		for _, full := range []bool{false, true} {
			for _, limit := range []int{0, 1, 7, 100, 1000} {
				for _, f := range []func(*sync15.Query){
					func(*sync15.Query) {},
					func(q *sync15.Query) { q.Newer, q.HasNewer = mid.Last.Modified, true },
					func(q *sync15.Query) { q.Older, q.HasOlder = mid.Last.Modified, true },
					func(q *sync15.Query) { q.After = &mid.Last },
					func(q *sync15.Query) { q.IDs = []string{"r003", "r000", "r119", "r044", "nope"} },
				} {
					q := sync15.Query{Sort: sort, Full: full, Limit: limit}
					f(&q)
					maxKeptPage, maxKeptPageIDs = 2000, 64<<10
					kept := list(q)
					maxKeptPage = 0
					rescan := list(q)
					maxKeptPage, maxKeptPageIDs = 2000, 8
					part := list(q)
					if kept != rescan || part != rescan {
						t.Fatalf("%+v:\nkept   %s\nrescan %s\nids past the bound %s", q, kept, rescan, part)
					}
					n++
				}
			}
		}
	}
	t.Logf("%d queries", n)
}

// BenchmarkSync15GetFull100 reads a page of 100 full records in the
// default (newest) order: two passes over the N index, each record read
// with one data iterator (compare BenchmarkAppendFull100, Weave's).
func BenchmarkSync15GetFull100(b *testing.B) {
	s := openTest(b, b.TempDir(), nil, 0)
	x := s.Sync15()
	var bs []sync15.BSO
	for i := 0; i < 1000; i++ {
		bs = append(bs, sync15.BSO{ID: fmt.Sprintf("id%04d", i), Has: sync15.FieldPayload | sync15.FieldSortIndex, SortIndex: int64(i % 7), Payload: strings.Repeat("x", 300)})
		if len(bs) == 100 {
			if _, err := x.PostBSOs(ctx, "u", "c", bs, sync15.Precondition{}); err != nil {
				b.Fatal(err)
			}
			bs = bs[:0]
		}
	}
	for _, sort := range []sync15.Sort{sync15.SortNone, sync15.SortOldest, sync15.SortIndex} {
		b.Run(cmp.Or(sort.String(), "none"), func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				q := &sync15.Query{Full: true, Limit: 100, HasLimit: true, Sort: sort}
				n := 0
				if err := x.GetCollection(ctx, "u", "c", q, func(*sync15.Page) error { return nil }, func(*sync15.BSO) error { n++; return nil }); err != nil || n != 100 {
					b.Fatal(n, err)
				}
			}
		})
	}
}
