package node

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node/revtree"
)

// TestApplyMatchesRevtree feeds random revision histories (mostly linear,
// sometimes branching, with tombstones, stemmed at a small limit) to
// ApplyRevisions in random order and checks that every document's tree is
// exactly what merging the same paths into a revtree.Tree gives: the
// single-path fast paths must not change the outcome.
func TestApplyMatchesRevtree(t *testing.T) {
	const limit = 6
	for seed := uint64(1); seed <= 25; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			cfg := DefaultConfig()
			cfg.Dir = t.TempDir()
			cfg.RevsLimit = limit
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			oracle, _ := revtree.New(revtree.Config{RevsLimit: limit, MaxPathLen: revtree.HardMaxPathLen})
			// Build a random history in a private tree.
			hist, _ := revtree.New(revtree.Config{RevsLimit: 1000})
			var nodes []revtree.Rev
			var paths []revtree.Path
			newHash := func() (h [revtree.HashLen]byte) {
				for i := range h {
					h[i] = byte(rng.IntN(256))
				}
				return h
			}
			for step := range 40 {
				var parent revtree.Rev
				if len(nodes) > 0 {
					if rng.IntN(5) == 0 {
						parent = nodes[rng.IntN(len(nodes))] // a branch
					} else {
						parent = nodes[len(nodes)-1] // extend the newest
					}
				}
				r := revtree.Rev{Pos: parent.Pos + 1, Hash: newHash()}
				p := revtree.Path{Start: r.Pos, IDs: [][revtree.HashLen]byte{r.Hash}, Deleted: rng.IntN(6) == 0 && step > 0}
				if !parent.IsZero() {
					pp, _ := hist.PathTo(parent, 0)
					p.IDs = append(p.IDs, pp.IDs...)
				}
				if _, err := hist.Merge(p); err != nil {
					t.Fatal(err)
				}
				nodes = append(nodes, r)
				paths = append(paths, p)
			}
			// Deliver mostly in order, sometimes shuffled, sometimes twice,
			// sometimes truncated (stemmed by the sender).
			for i := range paths {
				if rng.IntN(4) == 0 {
					j := rng.IntN(len(paths))
					paths[i], paths[j] = paths[j], paths[i]
				}
			}
			for _, p := range paths {
				if rng.IntN(5) == 0 && len(p.IDs) > 2 {
					p.IDs = p.IDs[:2+rng.IntN(len(p.IDs)-2)]
				}
				rev := Revision{Coll: "c", ID: "d", Path: p}
				if !p.Deleted {
					rev.Body = Body{Has: api.FieldPayload, Payload: p.Leaf().String()}
				}
				errs, err := s.ApplyRevisions(ctx, "u", []Revision{rev}, "peer", nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, merr := oracle.Merge(p); (merr == nil) != (errs[0] == nil) {
					t.Fatalf("store says %v, revtree says %v", errs[0], merr)
				}
				if oracle.Len() > limit {
					oracle.Stem(0)
				}
				d, err := s.GetDoc(ctx, "u", "c", "d")
				if oracle.Len() == 0 && errors.Is(err, ErrDocNotFound) {
					continue
				}
				if err != nil {
					t.Fatalf("after %s (%v): %v", p.Leaf(), errs[0], err)
				}
				if !d.Tree.Equal(oracle) {
					t.Fatalf("after %s: store tree %v, revtree %v", p.Leaf(), d.Tree.Leaves(), oracle.Leaves())
				}
				w, body := d.Winner()
				ow, _ := oracle.Winner()
				if w != ow || (!w.Deleted && body.Payload != w.Rev.String()) {
					t.Fatalf("winner %v %q, revtree %v", w, body.Payload, ow)
				}
			}
		})
	}
}

// TestHistorySpills: a document updated many times keeps its leaf in
// the document and one ancestor key per older revision, stemmed at the
// limit; the full path survives restarts, replication and stemming, and
// the ancestor keys go with the document.
func TestHistorySpills(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.RevsLimit = 20
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 37 {
		mustPut(t, s, "u", "c", api.WBO{ID: "r", Has: api.FieldPayload | api.FieldTTL, Payload: fmt.Sprint(i), TTL: 3600})
	}
	check := func(s *Store, what string) *Doc {
		t.Helper()
		d, err := s.GetDoc(ctx, "u", "c", "r")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		w, body := d.Winner()
		rv, _ := d.Revision(w.Rev, 0)
		if w.Rev.Pos != 37 || len(rv.Path.IDs) != 20 || d.Tree.Len() != 20 || body.Payload != "36" {
			t.Fatalf("%s: winner %s, path %d, tree %d, payload %q", what, w.Rev, len(rv.Path.IDs), d.Tree.Len(), body.Payload)
		}
		if err := rv.Verify(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return d
	}
	d1 := check(s, "after the updates")
	// Positions 18..36 are ancestors: chunks 0 (18..31) and 1 (32..36).
	if n := rawPrefixKeys(t, s, userTag(nil, keyOf(t, s, "u"), tagAnc)); n != 2 {
		t.Fatalf("%d ancestor keys, want 2", n)
	}
	s.Close()
	s, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s, "after a restart")
	// A replica gets the same tree, and extends it the same way.
	bcfg := cfg
	bcfg.Dir = t.TempDir()
	b, err := Open(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pull(t, s, b, "u")
	d2, _ := b.GetDoc(ctx, "u", "c", "r")
	if !d1.Tree.Equal(d2.Tree) {
		t.Fatalf("replica's tree differs")
	}
	mustPut(t, s, "u", "c", testkit.WBO("r", "more"))
	pull(t, s, b, "u")
	sameDocs(t, "u", s, b)
	// The purge of an expired document removes its history key too.
	if _, err := s.DeleteItem(ctx, "u", "c", "r", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if err := s.WipeUser(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if n := rawKeys(t, s, "u"); n != 1 {
		t.Fatalf("%d keys after the wipe, want the user meta only", n)
	}
}

// TestRepeatedHashFromPeer: a peer's path whose new revision repeats the
// hash of an older one (at another position: a distinct revision) is
// stored as a tree, never as a single path, and reading the document
// back works.
func TestRepeatedHashFromPeer(t *testing.T) {
	s := openTest(t, t.TempDir(), nil, 0)
	h := func(b byte) (x [revtree.HashLen]byte) { x[0] = b; return x }
	body := Body{Has: api.FieldPayload, Payload: "p"}
	apply := func(p revtree.Path) error {
		errs, err := s.ApplyRevisions(ctx, "u", []Revision{{Coll: "c", ID: "d", Path: p, Body: body}}, "peer", nil)
		if err != nil {
			t.Fatal(err)
		}
		return errs[0]
	}
	if err := apply(revtree.Path{Start: 2, IDs: [][revtree.HashLen]byte{h(2), h(1)}}); err != nil {
		t.Fatal(err)
	}
	// 3-A extends 2-B, and A is also the hash of 1-A.
	if err := apply(revtree.Path{Start: 3, IDs: [][revtree.HashLen]byte{h(1), h(2)}}); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDoc(ctx, "u", "c", "d")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := d.Winner()
	if w.Rev.Pos != 3 || d.Tree.Len() != 3 {
		t.Fatalf("winner %s, tree of %d", w.Rev, d.Tree.Len())
	}
	// And a local edit on top of it.
	mustPut(t, s, "u", "c", testkit.WBO("d", "local"))
	if d, err = s.GetDoc(ctx, "u", "c", "d"); err != nil || d.Tree.Len() != 4 {
		t.Fatalf("after a local edit: %v", err)
	}
}

// TestTailRandomHistories: random client writes (PUTs, POSTs of several
// versions of one id, deletes) on two replicas, pulls both ways and
// restarts, at revision limits below, at and above the tail's length.
// After every write the written document's path is the previous one with
// the new leaf on top (stemmed at the limit), its stored tail is at most
// ancTail long and its ancestor keys cover exactly the rest; a restart
// reads every document back unchanged; the replicas end identical.
func TestTailRandomHistories(t *testing.T) {
	for _, limit := range []int{2, ancTail + 1, ancTail + 2, 9, ancChunk + 3, 1000} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("limit%d/seed%d", limit, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, uint64(limit)))
				clk := newFakeClock() // same clock, same hashes: a seed replays
				open := func(dir string) *Store { return openRevsLimit(t, dir, limit, clk) }
				dirs := []string{t.TempDir(), t.TempDir()}
				stores := []*Store{open(dirs[0]), open(dirs[1])}
				defer func() {
					for _, s := range stores {
						s.Close()
					}
				}()
				ids := []string{"a", "b", "c"}
				// winPath returns the path to id's winner; single: the
				// document is one path (other leaves keep more of the
				// winner's ancestors than the limit: revtree.Stem).
				var single bool
				winPath := func(s *Store, id string) (revtree.Path, bool) {
					d, err := s.GetDoc(ctx, "u", "c", id)
					if errors.Is(err, ErrDocNotFound) {
						return revtree.Path{}, false
					}
					if err != nil {
						t.Fatal(err)
					}
					w, _ := d.Winner()
					rv, ok := d.Revision(w.Rev, 0)
					if !ok {
						t.Fatalf("%s: winner %s without its revision", id, w.Rev)
					}
					if err := rv.Verify(); err != nil {
						t.Fatalf("%s: %v", id, err)
					}
					single = len(d.Tree.Leaves()) == 1 && len(rv.Path.IDs) == d.Tree.Len()
					return rv.Path, true
				}
				checkKeys := func(s *Store, id string) {
					d, err := s.GetDoc(ctx, "u", "c", id)
					if err != nil {
						t.Fatal(err)
					}
					w, _ := d.Winner()
					if p, _ := d.Tree.PathTo(w.Rev, 0); len(d.Tree.Leaves()) == 1 && len(p.IDs) == d.Tree.Len() {
						ancestorChunks(t, s, "u", "c", id, w.Rev.Pos, d.Tree.Len())
					}
				}
				for step := range 400 {
					clk.Add(10 * time.Millisecond)
					i := rng.IntN(2)
					if rng.IntN(5) == 0 {
						i = 1 - i // the second replica writes less
					}
					s, id := stores[i], ids[rng.IntN(len(ids))]
					switch op := rng.IntN(20); {
					case op < 12:
						before, had := winPath(s, id)
						n := 1
						if op >= 9 {
							n = 1 + rng.IntN(3) // one POST updating id n times
						}
						ws := make([]api.WBO, n)
						for k := range ws {
							ws[k] = testkit.WBO(id, fmt.Sprintf("%d.%d", step, k))
						}
						mustPost(t, s, "u", "c", ws...)
						after, _ := winPath(s, id)
						if had {
							want := min(len(before.IDs)+n, limit)
							if after.Start != before.Start+uint64(n) || len(after.IDs) < want || len(after.IDs) > len(before.IDs)+n || single && len(after.IDs) != want {
								t.Fatalf("step %d: %s went from %d (%d ids) to %d (%d ids), want +%d and %d ids", step, id, before.Start, len(before.IDs), after.Start, len(after.IDs), n, want)
							}
							for k := n; k < len(after.IDs); k++ {
								if after.IDs[k] != before.IDs[k-n] {
									t.Fatalf("step %d: %s: ancestor %d changed", step, id, after.Start-uint64(k))
								}
							}
						}
						checkKeys(s, id)
					case op < 14:
						if _, err := s.DeleteItem(ctx, "u", "c", id, api.Precondition{}); err != nil && !errors.Is(err, api.ErrNotFound) {
							t.Fatal(err)
						}
					case op < 18:
						pull(t, stores[i], stores[1-i], "u")
					default:
						before := docsOf(t, s, "u")
						s.Close()
						stores[i] = open(dirs[i])
						after := docsOf(t, stores[i], "u")
						for k, d := range before {
							if a, ok := after[k]; !ok || !a.Tree.Equal(d.Tree) {
								t.Fatalf("step %d: %s changed across a restart", step, k)
							}
						}
					}
				}
				for range 2 {
					pull(t, stores[0], stores[1], "u")
					pull(t, stores[1], stores[0], "u")
				}
				// Trees with several leaves can differ in what stemming
				// removed (merging a path after a stem puts back what it
				// removed: CouchDB's trees have the same property), so
				// those are compared by their leaves, winners and views.
				compareDocs(t, "u", stores[0], stores[1], false)
			})
		}
	}
}

// TestLongPathsReplicate: a document whose conflicts were tombstoned at
// staggered positions keeps, through its deleted leaves, more of its
// winner's ancestors than the revision limit (revtree.Stem keeps the
// limit from every leaf), so the winner's path runs past twice the limit.
// A new replica must still accept it: a replica that refused it would
// never get the record.
func TestLongPathsReplicate(t *testing.T) {
	const limit = 10
	open := func() *Store {
		s := openRevsLimit(t, t.TempDir(), limit, nil)
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	n := 0
	put := func(s *Store) {
		n++
		mustPut(t, s, "u", "c", testkit.WBO("r", fmt.Sprint(n)))
	}
	for range 4 {
		// Forks limit-3 positions apart: the deleted leaves' ancestors
		// join up.
		for range limit - 6 {
			put(a)
		}
		pull(t, a, b, "u")
		put(a)
		put(b) // a conflict
		pull(t, b, a, "u")
		put(a) // tombstones the conflict: a deleted leaf stays
	}
	d, err := a.GetDoc(ctx, "u", "c", "r")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := d.Winner()
	p, _ := d.Tree.PathTo(w.Rev, 0)
	if len(p.IDs) <= 2*limit {
		t.Fatalf("the winner's path has %d ids: the test needs more than %d", len(p.IDs), 2*limit)
	}
	c := open()
	pull(t, a, c, "u") // fails on a refused revision
	sameDocs(t, "u", a, c)
}

// openRevsLimit opens a store in dir with revision limit limit and, when
// clk is set, that clock (its node id is then dir, so that replicas'
// revisions differ); the caller closes it.
func openRevsLimit(t *testing.T, dir string, limit int, clk *testkit.Clock) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.RevsLimit = limit
	cfg.MinFreeBytes = -1
	if clk != nil {
		cfg.Clock = clk.Now
		cfg.NodeID = dir
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
