package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node/revtree"
)

// pull copies user's changes from src to dst the way a replicator does:
// changes since the checkpoint, revs_diff, fetch of the missing leaves with
// their paths, apply with the checkpoint. It returns the revisions applied.
func pull(t testing.TB, src, dst *Store, user string) int {
	t.Helper()
	peer := "peer-" + src.UUID()
	cp, err := dst.GetCheckpoint(ctx, user, peer)
	if err != nil {
		t.Fatal(err)
	}
	since := cp.Seq
	if cp.Source != src.UUID() {
		since = 0
	}
	applied := 0
	for {
		rows, last, err := src.Changes(ctx, user, since, 3)
		if err != nil {
			t.Fatal(err)
		}
		var q []DocRevs
		for _, r := range rows {
			q = append(q, DocRevs{Coll: r.Coll, ID: r.ID, Revs: r.Leaves})
		}
		miss, err := dst.RevsDiff(ctx, user, q)
		if err != nil {
			t.Fatal(err)
		}
		var revs []Revision
		for _, m := range miss {
			d, err := src.GetDoc(ctx, user, m.Coll, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range m.Revs {
				for _, l := range d.LeavesFrom(r) {
					rv, ok := d.Revision(l, 0)
					if !ok {
						t.Fatalf("leaf %s of %s/%s has no revision", l, m.Coll, m.ID)
					}
					revs = append(revs, rv)
				}
			}
		}
		errs, err := dst.ApplyRevisions(ctx, user, revs, peer, &Checkpoint{Source: src.UUID(), Seq: last})
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range errs {
			if e != nil {
				t.Fatalf("revision %s/%s %s refused: %v", revs[i].Coll, revs[i].ID, revs[i].Rev(), e)
			}
		}
		applied += len(revs)
		since = last
		if len(rows) < 3 {
			return applied
		}
	}
}

// docsOf returns every document of user in s by collection/id.
func docsOf(t testing.TB, s *Store, user string) map[string]*Doc {
	t.Helper()
	rows, _, err := s.Changes(ctx, user, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*Doc{}
	for _, r := range rows {
		d, err := s.GetDoc(ctx, user, r.Coll, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		out[r.Coll+"/"+r.ID] = d
	}
	return out
}

// sameDocs fails unless a and b hold identical documents: same trees, same
// winners with the same bodies, and the same Weave views.
func sameDocs(t testing.TB, user string, a, b *Store) {
	t.Helper()
	compareDocs(t, user, a, b, true)
}

// compareDocs fails unless a and b hold the same documents with the same
// leaves, winners and winners' bodies, and the same Weave views. Trees
// must be equal too when allTrees is set; otherwise only where a document
// is one path on either side (replicas' trees with several leaves can
// differ in what stemming removed).
func compareDocs(t testing.TB, user string, a, b *Store, allTrees bool) {
	t.Helper()
	da, db := docsOf(t, a, user), docsOf(t, b, user)
	if len(da) != len(db) {
		t.Fatalf("%d documents vs %d", len(da), len(db))
	}
	for k, x := range da {
		y, ok := db[k]
		if !ok {
			t.Fatalf("%s missing on the second store", k)
		}
		lx, ly := x.Tree.Leaves(), y.Tree.Leaves()
		if fmt.Sprint(lx) != fmt.Sprint(ly) {
			t.Fatalf("%s: leaves differ: %v vs %v", k, lx, ly)
		}
		if (allTrees || len(lx) == 1 || len(ly) == 1) && !x.Tree.Equal(y.Tree) {
			for _, tr := range []*revtree.Tree{x.Tree, y.Tree} {
				for _, l := range tr.Leaves() {
					p, _ := tr.PathTo(l.Rev, 0)
					t.Logf("leaf %s deleted=%v path %d (len %d of tree %d)", l.Rev, l.Deleted, p.Start, len(p.IDs), tr.Len())
				}
			}
			t.Fatalf("%s: trees differ", k)
		}
		wx, bx := x.Winner()
		wy, by := y.Winner()
		if wx.Rev != wy.Rev || bx != by {
			t.Fatalf("%s: winners differ: %s %+v vs %s %+v", k, wx.Rev, bx, wy.Rev, by)
		}
	}
	sameViews(t, user, a, b, da)
}

// sameViews fails unless a and b have the same Weave views of
// collections c and d (modified aside); docs (a's) are logged on failure.
func sameViews(t testing.TB, user string, a, b *Store, da map[string]*Doc) {
	t.Helper()
	for _, coll := range []string{"c", "d"} {
		ga, gb := mustGet(t, a, user, coll, api.Query{Full: true}), mustGet(t, b, user, coll, api.Query{Full: true})
		pa, pb := map[string]string{}, map[string]string{}
		for _, w := range ga {
			pa[w.ID] = w.Payload
		}
		for _, w := range gb {
			pb[w.ID] = w.Payload
		}
		if fmt.Sprint(pa) != fmt.Sprint(pb) {
			for k, d := range da {
				w, bd := d.Winner()
				t.Logf("%s: winner %s deleted=%v payload %q leaves %v", k, w.Rev, w.Deleted, bd.Payload, d.Tree.Leaves())
			}
			t.Fatalf("views of %s differ:\n%v\n%v", coll, pa, pb)
		}
	}
}

func TestClientWritesMakeRevisions(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	mustPut(t, s, "u", "c", testkit.WBO("a", "one"))
	mustPut(t, s, "u", "c", api.WBO{ID: "a", Has: api.FieldSortIndex, SortIndex: 5})
	mustPut(t, s, "u", "c", testkit.WBO("b", "x"))
	d, err := s.GetDoc(ctx, "u", "c", "a")
	if err != nil {
		t.Fatal(err)
	}
	w, body := d.Winner()
	if w.Rev.Pos != 2 || w.Deleted || body.Payload != "one" || body.SortIndex != 5 || body.Origin != s.Origin() {
		t.Fatalf("winner %s %+v", w.Rev, body)
	}
	// The revision verifies: its hash is over its parent and body.
	rv, ok := d.Revision(w.Rev, 0)
	if !ok || len(rv.Path.IDs) != 2 || rv.Verify() != nil {
		t.Fatalf("revision %+v ok=%v verify=%v", rv.Path, ok, rv.Verify())
	}
	rows, last, err := s.Changes(ctx, "u", 0, 0)
	if err != nil || len(rows) != 2 || last != 3 {
		t.Fatalf("changes %+v last %d %v", rows, last, err)
	}
	if rows[0].ID != "a" || rows[0].Seq != 2 || rows[1].ID != "b" || rows[1].Seq != 3 {
		t.Fatalf("each document once at its latest change: %+v", rows)
	}
	if seq, _ := s.UpdateSeq(ctx, "u"); seq != 3 {
		t.Fatalf("update seq %d", seq)
	}
	// Deletes are tombstones in the feed.
	if _, err := s.DeleteItem(ctx, "u", "c", "b", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	rows, _, _ = s.Changes(ctx, "u", 3, 0)
	if len(rows) != 1 || !rows[0].Deleted || rows[0].Leaves[0].Pos != 2 {
		t.Fatalf("tombstone row %+v", rows)
	}
	// The feed and its numbers survive a restart.
	dir := t.TempDir()
	s2 := openTest(t, dir, nil, 0)
	mustPut(t, s2, "u", "c", testkit.WBO("a", "1"))
	uuid := s2.UUID()
	s2.Close()
	s3 := openTest(t, dir, nil, 0)
	if s3.UUID() != uuid {
		t.Fatalf("uuid changed across restart")
	}
	mustPut(t, s3, "u", "c", testkit.WBO("b", "1"))
	if seq, _ := s3.UpdateSeq(ctx, "u"); seq != 2 {
		t.Fatalf("seq after restart %d", seq)
	}
}

func TestReplicatedWinnerBecomesVisibleLater(t *testing.T) {
	clkA, clkB := newFakeClock(), newFakeClock()
	a := openTest(t, t.TempDir(), clkA, 0)
	b := openTest(t, t.TempDir(), clkB, 0)
	// A writes at time 100; B's client writes and polls later.
	mustPut(t, a, "u", "c", testkit.WBO("r", "from A"))
	clkB.Add(100 * time.Second)
	mustPut(t, b, "u", "c", testkit.WBO("x", "from B"))
	_, pointer, err := api.ReadCollection(ctx, b, "u", "c", &api.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if n := pull(t, a, b, "u"); n != 1 {
		t.Fatalf("pulled %d revisions", n)
	}
	got := mustGet(t, b, "u", "c", api.Query{HasNewer: true, Newer: pointer, Full: true})
	if len(got) != 1 || got[0].ID != "r" || got[0].Payload != "from A" || got[0].Modified <= pointer {
		t.Fatalf("newer=%v after replication: %+v", pointer, got)
	}
	// Pulling again changes nothing and keeps modified.
	if n := pull(t, a, b, "u"); n != 0 {
		t.Fatalf("second pull applied %d", n)
	}
	again := mustGet(t, b, "u", "c", api.Query{HasIDs: true, IDs: []string{"r"}, Full: true})
	if again[0].Modified != got[0].Modified {
		t.Fatalf("an idempotent pull moved modified")
	}
}

func TestConcurrentEditsConverge(t *testing.T) {
	a := openTest(t, t.TempDir(), newFakeClock(), 0)
	b := openTest(t, t.TempDir(), newFakeClock(), 0)
	mustPut(t, a, "u", "c", testkit.WBO("r", "base"))
	pull(t, a, b, "u")
	// Both edit r; B also deletes s, which A updates.
	mustPut(t, a, "u", "c", testkit.WBO("s", "s on A"))
	pull(t, a, b, "u")
	mustPut(t, a, "u", "c", testkit.WBO("r", "A's edit"))
	mustPut(t, b, "u", "c", testkit.WBO("r", "B's edit"))
	mustPut(t, b, "u", "c", testkit.WBO("r", "B's second edit"))
	mustPut(t, a, "u", "c", testkit.WBO("s", "s again on A"))
	if _, err := b.DeleteItem(ctx, "u", "c", "s", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	tsB, _, _ := b.CollectionTimestamps(ctx, "u")
	pull(t, a, b, "u")
	pull(t, b, a, "u")
	sameDocs(t, "u", a, b)
	d, _ := a.GetDoc(ctx, "u", "c", "r")
	w, body := d.Winner()
	// B's branch is longer (3 vs 2), so it wins everywhere.
	if w.Rev.Pos != 3 || body.Payload != "B's second edit" || len(d.Tree.Conflicts()) != 1 {
		t.Fatalf("winner %s %q conflicts %v", w.Rev, body.Payload, d.Tree.Conflicts())
	}
	// s: the live edit beats the tombstone (non-deleted wins).
	got := mustGet(t, b, "u", "c", api.Query{HasIDs: true, IDs: []string{"s"}, Full: true})
	if len(got) != 1 || got[0].Payload != "s again on A" {
		t.Fatalf("s on B %+v", got)
	}
	// B's losing-branch-free pull from A (r's winner unchanged on B) did
	// not move B's r; s came back with a fresh stamp.
	if got[0].Modified <= tsB["c"] {
		t.Fatalf("resurrected s has modified %v <= %v", got[0].Modified, tsB["c"])
	}
}

func TestLosingRevisionStaysInvisible(t *testing.T) {
	a := openTest(t, t.TempDir(), newFakeClock(), 0)
	b := openTest(t, t.TempDir(), newFakeClock(), 0)
	mustPut(t, a, "u", "c", testkit.WBO("r", "1"))
	pull(t, a, b, "u")
	mustPut(t, b, "u", "c", testkit.WBO("r", "b2"))
	mustPut(t, b, "u", "c", testkit.WBO("r", "b3")) // B's branch will win
	mustPut(t, a, "u", "c", testkit.WBO("r", "a2"))
	before := mustGet(t, b, "u", "c", api.Query{Full: true})
	tsBefore, _, _ := b.CollectionTimestamps(ctx, "u")
	seqBefore, _ := b.UpdateSeq(ctx, "u")
	if n := pull(t, a, b, "u"); n != 1 {
		t.Fatalf("pulled %d", n)
	}
	after := mustGet(t, b, "u", "c", api.Query{Full: true})
	tsAfter, _, _ := b.CollectionTimestamps(ctx, "u")
	seqAfter, _ := b.UpdateSeq(ctx, "u")
	if after[0].Modified != before[0].Modified || after[0].Payload != "b3" || tsAfter["c"] != tsBefore["c"] {
		t.Fatalf("a losing revision changed the view: %+v -> %+v", before, after)
	}
	if seqAfter != seqBefore+1 {
		t.Fatalf("the tree changed, so the feed must move: %d -> %d", seqBefore, seqAfter)
	}
}

func TestWipesReplicateAsTombstones(t *testing.T) {
	a := openTest(t, t.TempDir(), newFakeClock(), 0)
	b := openTest(t, t.TempDir(), newFakeClock(), 0)
	mustPost(t, a, "u", "c", testkit.WBO("1", "x"), testkit.WBO("2", "y"), testkit.WBO("3", "z"))
	mustPost(t, a, "u", "d", testkit.WBO("4", "x"))
	pull(t, a, b, "u")
	if _, err := a.DeleteCollection(ctx, "u", "c", nil, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	pull(t, a, b, "u")
	sameIDs(t, "c on B after the wipe", mustGet(t, b, "u", "c", api.Query{}))
	sameIDs(t, "d on B", mustGet(t, b, "u", "d", api.Query{}), "4")
	// A wipe on B of everything, then A pulls: nothing comes back.
	if _, err := b.DeleteStorage(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	pull(t, b, a, "u")
	pull(t, a, b, "u")
	sameDocs(t, "u", a, b)
	if ts, _, _ := a.CollectionTimestamps(ctx, "u"); len(ts) != 0 {
		t.Fatalf("collections on A after the storage wipe: %v", ts)
	}
	// Writing again after a wipe: a child of the tombstone, replicated.
	mustPut(t, b, "u", "c", testkit.WBO("2", "back"))
	pull(t, b, a, "u")
	sameIDs(t, "rewritten", mustGet(t, a, "u", "c", api.Query{}), "2")
}

func TestExpiryTravelsAbsolute(t *testing.T) {
	clkA, clkB := newFakeClock(), newFakeClock()
	a := openTest(t, t.TempDir(), clkA, 0)
	b := openTest(t, t.TempDir(), clkB, 0)
	mustPut(t, a, "u", "c", api.WBO{ID: "t", Has: api.FieldPayload | api.FieldTTL, Payload: "p", TTL: 60})
	clkA.Add(30 * time.Second)
	clkB.Add(30 * time.Second)
	pull(t, a, b, "u")
	d, _ := b.GetDoc(ctx, "u", "c", "t")
	_, body := d.Winner()
	if want := clkA.Now().Unix() + 30; body.Expiry != want {
		t.Fatalf("expiry %d want %d", body.Expiry, want)
	}
	clkB.Add(31 * time.Second)
	sameIDs(t, "expired on B", mustGet(t, b, "u", "c", api.Query{}))
	if rows, _, _ := b.Changes(ctx, "u", 0, 0); len(rows) != 0 {
		t.Fatalf("expired document in the feed: %+v", rows)
	}
	if n, err := b.PurgeExpired(ctx); err != nil || n != 1 {
		t.Fatalf("purge %d %v", n, err)
	}
	if _, err := b.GetDoc(ctx, "u", "c", "t"); !errors.Is(err, ErrDocNotFound) {
		t.Fatalf("purged document: %v", err)
	}
}

func TestApplyRefusesBadRevisions(t *testing.T) {
	a := openTest(t, t.TempDir(), newFakeClock(), 0)
	b := openTest(t, t.TempDir(), newFakeClock(), 0)
	mustPut(t, a, "u", "c", testkit.WBO("r", "real"))
	mustPut(t, a, "u", "c", testkit.WBO("r", "real 2"))
	d, _ := a.GetDoc(ctx, "u", "c", "r")
	w, _ := d.Winner()
	good, _ := d.Revision(w.Rev, 0)
	forged := good
	forged.Body.Payload = "forged"
	badColl := good
	badColl.Coll = "no/slash"
	tomb := good
	tomb.Path.Deleted = true
	big := good
	big.Body.Payload = string(make([]byte, api.MaxPayloadBytes+1))
	contra := good
	contra.Path = revtree.Path{Start: 2, IDs: [][revtree.HashLen]byte{good.Path.IDs[0], {9}}}
	contra.Body.Origin = ""
	revs := []Revision{forged, badColl, tomb, big, good, contra}
	errs, err := b.ApplyRevisions(ctx, "u", revs, "p", &Checkpoint{Source: "x", Seq: 7})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if (i == 4) != (e == nil) {
			t.Fatalf("revision %d: %v", i, e)
		}
		if e != nil && !errors.Is(e, ErrRevRejected) {
			t.Fatalf("revision %d: %v is not ErrRevRejected", i, e)
		}
	}
	got := mustGet(t, b, "u", "c", api.Query{Full: true})
	if len(got) != 1 || got[0].Payload != "real 2" {
		t.Fatalf("stored %+v", got)
	}
	if cp, _ := b.GetCheckpoint(ctx, "u", "p"); cp.Seq != 7 || cp.Source != "x" {
		t.Fatalf("checkpoint %+v", cp)
	}
	// A forged revision alone stores nothing at all.
	seq, _ := b.UpdateSeq(ctx, "u")
	forged.Path = good.Path
	if errs, _ := b.ApplyRevisions(ctx, "u", []Revision{forged}, "p", nil); errs[0] == nil {
		t.Fatalf("forged revision accepted")
	}
	if s2, _ := b.UpdateSeq(ctx, "u"); s2 != seq {
		t.Fatalf("a refused revision moved the feed")
	}
}

func TestStemmingKeepsRevsLimit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.RevsLimit = 5
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 12 {
		mustPut(t, s, "u", "c", testkit.WBO("r", fmt.Sprint(i)))
	}
	d, _ := s.GetDoc(ctx, "u", "c", "r")
	w, _ := d.Winner()
	rv, _ := d.Revision(w.Rev, 0)
	if d.Tree.Len() != 5 || w.Rev.Pos != 12 || len(rv.Path.IDs) != 5 {
		t.Fatalf("tree of %d, winner %s, path %d", d.Tree.Len(), w.Rev, len(rv.Path.IDs))
	}
}

func TestLocalDocsAndWaitChanges(t *testing.T) {
	s := openTest(t, t.TempDir(), nil, 0)
	if _, err := s.GetLocal(ctx, "u", "cp"); !errors.Is(err, ErrDocNotFound) {
		t.Fatalf("missing local doc: %v", err)
	}
	r1, err := s.PutLocal(ctx, "u", "cp", []byte(`{"last_seq":3}`), "")
	if err != nil || r1 != "0-1" {
		t.Fatalf("put %q %v", r1, err)
	}
	if _, err := s.PutLocal(ctx, "u", "cp", []byte(`{}`), "0-7"); !errors.Is(err, ErrLocalConflict) {
		t.Fatalf("stale rev: %v", err)
	}
	r2, _ := s.PutLocal(ctx, "u", "cp", []byte(`{"last_seq":4}`), r1)
	got, _ := s.GetLocal(ctx, "u", "cp")
	if r2 != "0-2" || got.Rev != r2 || string(got.Body) != `{"last_seq":4}` {
		t.Fatalf("local doc %+v", got)
	}
	if rows, _, _ := s.Changes(ctx, "u", 0, 0); len(rows) != 0 {
		t.Fatalf("local docs in the feed: %+v", rows)
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitChanges(ctx, "u", 0) }()
	select {
	case err := <-done:
		t.Fatalf("WaitChanges returned before any change: %v", err)
	default:
	}
	mustPut(t, s, "u", "c", testkit.WBO("a", "1"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := s.WaitChanges(cctx, "u", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait without a change: %v", err)
	}
}

// TestRandomReplicationConverges applies random client operations on
// three stores and random pulls between them, then pulls all pairs until
// quiet: the stores must end identical. Seeded and reproducible.
func TestRandomReplicationConverges(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			stores := []*Store{
				openTest(t, t.TempDir(), newFakeClock(), 0),
				openTest(t, t.TempDir(), newFakeClock(), 0),
				openTest(t, t.TempDir(), newFakeClock(), 0),
			}
			ids := []string{"a", "b", "c", "d", "e"}
			for range 150 {
				s := stores[rng.IntN(3)]
				coll := []string{"c", "d"}[rng.IntN(2)]
				switch op := rng.IntN(10); {
				case op < 6:
					mustPut(t, s, "u", coll, testkit.WBO(ids[rng.IntN(len(ids))], fmt.Sprint(rng.IntN(1000))))
				case op < 8:
					if _, err := s.DeleteItem(ctx, "u", coll, ids[rng.IntN(len(ids))], api.Precondition{}); err != nil {
						t.Fatal(err)
					}
				case op < 9:
					if _, err := s.DeleteCollection(ctx, "u", coll, nil, api.Precondition{}); err != nil {
						t.Fatal(err)
					}
				default:
					i, j := rng.IntN(3), rng.IntN(3)
					if i != j {
						pull(t, stores[i], stores[j], "u")
					}
				}
			}
			for range 2 {
				for i := range stores {
					for j := range stores {
						if i != j {
							pull(t, stores[i], stores[j], "u")
						}
					}
				}
			}
			sameDocs(t, "u", stores[0], stores[1])
			sameDocs(t, "u", stores[1], stores[2])
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range docsOf(t, stores[0], "u") {
					if !yield(k) {
						return
					}
				}
			})
			if len(keys) == 0 {
				t.Fatalf("no documents")
			}
		})
	}
}
