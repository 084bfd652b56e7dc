package revtree

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// source yields bounded random choices; the property tests use math/rand/v2
// and the fuzz targets read the fuzzer's bytes.
type source interface{ IntN(n int) int }

type byteSource struct{ b []byte }

func (s *byteSource) IntN(n int) int {
	if len(s.b) == 0 || n <= 1 {
		return 0
	}
	v := int(s.b[0]) % n
	s.b = s.b[1:]
	return v
}

// genHistory creates edits revisions of one document: new roots, children
// of any existing revision (forks included), tombstones and resurrections,
// with a small body space so that identical edits collide into the same
// revision as they would on two nodes. It returns one path per distinct
// revision, oldest ancestor to the new revision, possibly truncated as a
// stemmed sender would send it.
func genHistory(t testing.TB, src source, edits int) []Path {
	t.Helper()
	full := map[Rev]Path{}
	var revs []Rev
	var out []Path
	for range edits {
		var parent Rev
		if len(revs) > 0 && src.IntN(8) != 0 {
			parent = revs[src.IntN(len(revs))]
		}
		deleted := src.IntN(4) == 0
		body := []byte{byte(src.IntN(3))}
		r, err := NewRev(parent, deleted, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := full[r]; dup {
			continue
		}
		p := Path{Start: r.Pos, IDs: [][HashLen]byte{r.Hash}, Deleted: deleted}
		if !parent.IsZero() {
			p.IDs = append(p.IDs, full[parent].IDs...)
		}
		full[r] = p
		revs = append(revs, r)
		sent := p
		if len(p.IDs) > 1 && src.IntN(4) == 0 {
			sent.IDs = p.IDs[:1+src.IntN(len(p.IDs)-1)]
		}
		out = append(out, sent)
	}
	return out
}

// checkInvariants verifies the tree's internal consistency.
func checkInvariants(t testing.TB, tr *Tree) {
	t.Helper()
	kids := map[Rev]int{}
	for r, n := range tr.nodes {
		if r.Pos < 1 || r.Pos > MaxPos {
			t.Fatalf("position out of range: %v", r)
		}
		if !n.parent.IsZero() {
			if _, ok := tr.nodes[n.parent]; !ok || n.parent.Pos != r.Pos-1 {
				t.Fatalf("bad parent %v of %v", n.parent, r)
			}
			kids[n.parent]++
		}
	}
	for r, n := range tr.nodes {
		if n.children != kids[r] {
			t.Fatalf("%v: children %d, want %d", r, n.children, kids[r])
		}
		if n.children != 0 && (n.deleted || n.value != 0) {
			t.Fatalf("%v: leaf flags on an inner revision", r)
		}
	}
	rt, err := Decode(tr.Encode())
	if err != nil || !rt.Equal(tr) {
		t.Fatalf("encoding round trip: %v", err)
	}
}

func shuffled[T any](rng *rand.Rand, s []T) []T {
	out := append([]T(nil), s...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestConvergenceThreeReplicas splits random histories across three
// replicas, lets each merge its share in a random order, then exchanges
// every leaf's full path in random orders: all replicas must end with the
// identical tree (byte-identical encoding), winner and conflicts, equal to
// the tree of all paths merged in creation order; stemming the converged
// trees at the same limit keeps them identical.
func TestConvergenceThreeReplicas(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			paths := genHistory(t, rng, 5+rng.IntN(60))
			var ref Tree
			for _, p := range paths {
				mustMerge(t, &ref, p)
			}
			checkInvariants(t, &ref)

			replicas := make([]*Tree, 3)
			shares := make([][]Path, 3)
			for _, p := range paths {
				i := rng.IntN(3)
				shares[i] = append(shares[i], p)
			}
			for i := range replicas {
				replicas[i] = &Tree{}
				for _, p := range shuffled(rng, shares[i]) {
					mustMerge(t, replicas[i], p)
				}
			}
			exported := make([][]Path, 3)
			for i, tr := range replicas {
				for _, l := range tr.Leaves() {
					p, _ := tr.PathTo(l.Rev, 0)
					exported[i] = append(exported[i], p)
				}
			}
			for i, tr := range replicas {
				var in []Path
				for j := range replicas {
					if j != i {
						in = append(in, exported[j]...)
					}
				}
				for _, p := range shuffled(rng, in) {
					mustMerge(t, tr, p)
				}
				checkInvariants(t, tr)
			}
			want := ref.Encode()
			refWinner, _ := ref.Winner()
			for i, tr := range replicas {
				if string(tr.Encode()) != string(want) {
					t.Fatalf("replica %d differs from the reference", i)
				}
				if w, _ := tr.Winner(); w != refWinner {
					t.Fatalf("replica %d winner %v, want %v", i, w, refWinner)
				}
				// Idempotence: merging everything again changes nothing.
				for _, p := range paths {
					if mustMerge(t, tr, p) {
						t.Fatalf("replica %d: re-merge changed the tree", i)
					}
				}
			}
			limit := 1 + rng.IntN(5)
			for _, tr := range append(replicas, &ref) {
				tr.Stem(limit)
				checkInvariants(t, tr)
			}
			for i, tr := range replicas {
				if !tr.Equal(&ref) {
					t.Fatalf("replica %d differs after Stem(%d)", i, limit)
				}
			}
			if w, _ := ref.Winner(); w != refWinner {
				t.Fatalf("Stem changed the winner: %v -> %v", refWinner, w)
			}
		})
	}
}

// TestIdenticalEditsConverge checks that the same edit made independently
// on two nodes yields the same revision and no conflict.
func TestIdenticalEditsConverge(t *testing.T) {
	root, _ := NewRev(Rev{}, false, []byte(`{"payload":"a"}`))
	a, _ := NewRev(root, false, []byte(`{"payload":"b"}`))
	b, _ := NewRev(root, false, []byte(`{"payload":"b"}`))
	if a != b {
		t.Fatal("identical edits must give identical revisions")
	}
	var tr Tree
	mustMerge(t, &tr, Path{Start: a.Pos, IDs: [][HashLen]byte{a.Hash, root.Hash}})
	if mustMerge(t, &tr, Path{Start: b.Pos, IDs: [][HashLen]byte{b.Hash, root.Hash}}) || len(tr.Conflicts()) != 0 {
		t.Fatal("the second identical edit must be a no-op")
	}
}
