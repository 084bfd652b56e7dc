package revtree

import (
	"errors"
	"slices"
	"testing"
)

func TestWinnerConflictShapes(t *testing.T) {
	type pathSpec struct {
		start   uint64
		deleted bool
		ids     []string
	}
	tests := []struct {
		name        string
		paths       []pathSpec
		winner      string
		winnerDel   bool
		conflicts   []string
		delConflict []string
	}{
		{
			name:      "two concurrent creates",
			paths:     []pathSpec{{1, false, []string{"a"}}, {1, false, []string{"b"}}},
			winner:    "1-" + hx("b"),
			conflicts: []string{"1-" + hx("a")},
		},
		{
			name:      "concurrent creates, hex digit vs letter",
			paths:     []pathSpec{{1, false, []string{"9"}}, {1, false, []string{"a"}}},
			winner:    "1-" + hx("a"),
			conflicts: []string{"1-" + hx("9")},
		},
		{
			name:      "fork at rev 2",
			paths:     []pathSpec{{2, false, []string{"c", "a"}}, {2, false, []string{"b", "a"}}},
			winner:    "2-" + hx("c"),
			conflicts: []string{"2-" + hx("b")},
		},
		{
			name:        "3-deep live branch against a 2-deep tombstone",
			paths:       []pathSpec{{3, false, []string{"c", "b", "a"}}, {2, true, []string{"f", "a"}}},
			winner:      "3-" + hx("c"),
			delConflict: []string{"2-" + hx("f")},
		},
		{
			name:        "5-deep tombstone against a 2-deep live branch: the shorter live branch wins",
			paths:       []pathSpec{{5, true, []string{"e", "d", "c", "b", "a"}}, {2, false, []string{"1", "a"}}},
			winner:      "2-" + hx("1"),
			delConflict: []string{"5-" + hx("e")},
		},
		{
			name:        "all leaves deleted: the longest tombstone wins and the doc is deleted",
			paths:       []pathSpec{{3, true, []string{"c", "b", "a"}}, {2, true, []string{"f", "a"}}},
			winner:      "3-" + hx("c"),
			winnerDel:   true,
			delConflict: []string{"2-" + hx("f")},
		},
		{
			name: "three leaves, two live, one deleted",
			paths: []pathSpec{
				{3, false, []string{"3", "b", "a"}}, {3, false, []string{"4", "b", "a"}}, {4, true, []string{"9", "8", "7", "a"}},
			},
			winner:      "3-" + hx("4"),
			conflicts:   []string{"3-" + hx("3")},
			delConflict: []string{"4-" + hx("9")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			paths := make([]Path, len(tc.paths))
			for i, s := range tc.paths {
				paths[i] = pth(t, s.start, s.deleted, s.ids...)
			}
			var encoded []byte
			// Every merge order must give the same tree and winner.
			for _, order := range permutations(len(paths)) {
				var tr Tree
				for _, i := range order {
					mustMerge(t, &tr, paths[i])
				}
				w, ok := tr.Winner()
				if !ok || w.Rev.String() != tc.winner || w.Deleted != tc.winnerDel {
					t.Fatalf("order %v: winner %v (deleted %v), want %s (deleted %v)", order, w.Rev, w.Deleted, tc.winner, tc.winnerDel)
				}
				if l := tr.Leaves(); l[0] != w || len(l) != len(paths) {
					t.Fatalf("Leaves()[0] = %v, want the winner; %d leaves", l[0], len(l))
				}
				if got := revStrings(tr.Conflicts()); !slices.Equal(got, tc.conflicts) && (len(got) != 0 || len(tc.conflicts) != 0) {
					t.Fatalf("Conflicts = %v, want %v", got, tc.conflicts)
				}
				if got := revStrings(tr.DeletedConflicts()); !slices.Equal(got, tc.delConflict) && (len(got) != 0 || len(tc.delConflict) != 0) {
					t.Fatalf("DeletedConflicts = %v, want %v", got, tc.delConflict)
				}
				e := tr.Encode()
				if encoded != nil && string(e) != string(encoded) {
					t.Fatalf("order %v gives a different tree", order)
				}
				encoded = e
			}
		})
	}
}

func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}

func TestMergeShapes(t *testing.T) {
	var tr Tree
	if _, ok := tr.Winner(); ok || tr.Len() != 0 || tr.Leaves() != nil {
		t.Fatal("zero tree must be empty")
	}
	if !mustMerge(t, &tr, pth(t, 3, false, "c", "b", "a")) {
		t.Fatal("first merge must change the tree")
	}
	// Idempotence: the same path, a prefix of it, a suffix of it.
	for _, p := range []Path{pth(t, 3, false, "c", "b", "a"), pth(t, 2, false, "b", "a"), pth(t, 3, false, "c", "b"), pth(t, 3, false, "c")} {
		if mustMerge(t, &tr, p) {
			t.Fatalf("known path %d %v changed the tree", p.Start, p.HashStrings())
		}
	}
	// A shared prefix extends.
	mustMerge(t, &tr, pth(t, 5, false, "e", "d", "c"))
	if w, _ := tr.Winner(); w.Rev != rv(t, 5, "e") || len(tr.Leaves()) != 1 {
		t.Fatalf("extension: winner %v, leaves %v", w, tr.Leaves())
	}
	// A divergence branches.
	mustMerge(t, &tr, pth(t, 4, false, "f", "c", "b"))
	if got := revStrings(tr.Conflicts()); !slices.Equal(got, []string{"4-" + hx("f")}) {
		t.Fatalf("branch: conflicts %v", got)
	}
	// A higher path sharing no id becomes a separate root...
	mustMerge(t, &tr, pth(t, 9, false, "9", "8"))
	if _, ok := tr.Parent(rv(t, 8, "8")); ok {
		t.Fatal("8-8 must be a root")
	}
	if len(tr.Leaves()) != 3 {
		t.Fatalf("leaves %v", tr.Leaves())
	}
	// ...and gets attached when a later path supplies its parent.
	if !mustMerge(t, &tr, pth(t, 8, false, "8", "7", "6", "e")) {
		t.Fatal("attaching a root must change the tree")
	}
	if p, ok := tr.Parent(rv(t, 8, "8")); !ok || p != rv(t, 7, "7") {
		t.Fatalf("parent of 8-8 = %v %v", p, ok)
	}
	if got := revStrings(tr.Conflicts()); !slices.Equal(got, []string{"4-" + hx("f")}) {
		t.Fatalf("after attach: conflicts %v", got)
	}
	path, ok := tr.PathTo(rv(t, 9, "9"), 0)
	if !ok || path.Start != 9 || !slices.Equal(path.HashStrings(), []string{hx("9"), hx("8"), hx("7"), hx("6"), hx("e"), hx("d"), hx("c"), hx("b"), hx("a")}) {
		t.Fatalf("PathTo = %v %v", path, ok)
	}
	path, _ = tr.PathTo(rv(t, 9, "9"), 3)
	if len(path.IDs) != 3 || path.Rev(2) != rv(t, 7, "7") {
		t.Fatalf("PathTo max 3 = %v", path.HashStrings())
	}
	if _, ok := tr.PathTo(rv(t, 9, "1"), 0); ok {
		t.Fatal("PathTo of an unknown rev")
	}
	for _, r := range []Rev{rv(t, 1, "a"), rv(t, 5, "e"), rv(t, 9, "9")} {
		if !tr.Contains(r) {
			t.Fatalf("Contains(%v) = false", r)
		}
	}
	if tr.Contains(rv(t, 2, "a")) || tr.Contains(rv(t, 1, "b")) {
		t.Fatal("Contains must compare position and hash")
	}
	// A tombstone child of the winner, then resurrection of the tombstone.
	mustMerge(t, &tr, pth(t, 10, true, "0", "9"))
	if w, _ := tr.Winner(); w.Rev != rv(t, 4, "f") {
		t.Fatalf("live 4-f must beat tombstone 10-0, got %v", w)
	}
	mustMerge(t, &tr, pth(t, 11, false, "1", "0"))
	if w, _ := tr.Winner(); w.Rev != rv(t, 11, "1") || w.Deleted {
		t.Fatalf("resurrected winner %v", w)
	}
	if path, _ := tr.PathTo(rv(t, 10, "0"), 1); path.Deleted {
		t.Fatal("an inner revision has no deleted flag")
	}
}

func TestMergeRefusals(t *testing.T) {
	var tr Tree
	mustMerge(t, &tr, pth(t, 3, true, "c", "b", "a"))
	before := tr.Encode()
	long := Path{Start: 3000}
	for i := range 2001 {
		long.IDs = append(long.IDs, [16]byte{byte(i), byte(i >> 8), 1})
	}
	tests := []struct {
		name string
		p    Path
		want error
	}{
		{"empty", Path{Start: 1}, ErrInvalidPath},
		{"start below length", pth(t, 2, false, "c", "b", "a"), ErrInvalidPath},
		{"start zero", Path{Start: 0, IDs: [][16]byte{{1}}}, ErrInvalidPath},
		{"start overflow", Path{Start: MaxPos + 1, IDs: [][16]byte{{1}}}, ErrInvalidPath},
		{"start max uint64", Path{Start: ^uint64(0), IDs: [][16]byte{{1}}}, ErrInvalidPath},
		{"duplicate ids", pth(t, 5, false, "d", "e", "d"), ErrInvalidPath},
		{"longer than 2*limit", long, ErrInvalidPath},
		{"parent mismatch", pth(t, 3, true, "c", "9", "a"), ErrParentMismatch},
		{"deleted flag mismatch on a leaf", pth(t, 3, false, "c", "b", "a"), ErrDeletedMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changed, err := tr.Merge(tc.p)
			if !errors.Is(err, tc.want) || changed {
				t.Fatalf("Merge = %v, %v; want %v", changed, err, tc.want)
			}
			if string(tr.Encode()) != string(before) {
				t.Fatal("a refused merge changed the tree")
			}
		})
	}
	// A deleted flag on an inner revision is not checked: it is not a leaf.
	mustMerge(t, &tr, pth(t, 4, false, "d", "c"))
	if mustMerge(t, &tr, pth(t, 3, false, "c", "b")) {
		t.Fatal("known inner revision changed the tree")
	}
	// Configurable bound.
	small, err := New(Config{RevsLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.Merge(pth(t, 5, false, "e", "d", "c", "b", "a")); !errors.Is(err, ErrInvalidPath) {
		t.Fatalf("5 ids with RevsLimit 2: %v", err)
	}
	mustMerge(t, small, pth(t, 5, false, "e", "d", "c", "b"))
	if _, err := New(Config{MaxPathLen: HardMaxPathLen + 1}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New with MaxPathLen too large: %v", err)
	}
	if err := (Config{RevsLimit: -1}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatal("negative RevsLimit must be invalid")
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestStem(t *testing.T) {
	t.Run("linear", func(t *testing.T) {
		var tr Tree
		mustMerge(t, &tr, pth(t, 5, false, "e", "d", "c", "b", "a"))
		if n := tr.Stem(3); n != 2 || tr.Len() != 3 {
			t.Fatalf("Stem removed %d, len %d", n, tr.Len())
		}
		if tr.Contains(rv(t, 2, "b")) || !tr.Contains(rv(t, 3, "c")) {
			t.Fatal("wrong revisions stemmed")
		}
		if _, ok := tr.Parent(rv(t, 3, "c")); ok {
			t.Fatal("3-c must be a root after stemming")
		}
		if tr.Stem(3) != 0 {
			t.Fatal("Stem is idempotent")
		}
		if tr.Stem(1) != 2 || tr.Len() != 1 {
			t.Fatal("Stem(1) keeps only leaves")
		}
	})
	t.Run("never drops leaves; short branch keeps the fork point", func(t *testing.T) {
		var tr Tree
		// Long branch a..f (6 deep), short branch forking at b: 3-9.
		mustMerge(t, &tr, pth(t, 6, false, "f", "e", "d", "c", "b", "a"))
		mustMerge(t, &tr, pth(t, 3, true, "9", "b", "a"))
		tr.Stem(2)
		want := []Rev{rv(t, 6, "f"), rv(t, 5, "e"), rv(t, 3, "9"), rv(t, 2, "b")}
		if tr.Len() != len(want) {
			t.Fatalf("len %d, want %d", tr.Len(), len(want))
		}
		for _, r := range want {
			if !tr.Contains(r) {
				t.Fatalf("missing %v", r)
			}
		}
		// 2-b lost its child 3-c: it is still inner (child 3-9), and 5-e
		// is now a root.
		if tr.IsLeaf(rv(t, 2, "b")) || !tr.IsLeaf(rv(t, 3, "9")) {
			t.Fatal("leaf set changed")
		}
		if _, ok := tr.Parent(rv(t, 5, "e")); ok {
			t.Fatal("5-e must be a root")
		}
		if got := revStrings(tr.DeletedConflicts()); !slices.Equal(got, []string{"3-" + hx("9")}) {
			t.Fatalf("deleted conflicts %v", got)
		}
		rt, err := Decode(tr.Encode())
		if err != nil || !rt.Equal(&tr) {
			t.Fatalf("round trip after stem: %v", err)
		}
	})
	t.Run("a path longer than the limit merges into a stemmed tree", func(t *testing.T) {
		var tr Tree
		mustMerge(t, &tr, pth(t, 5, false, "e", "d", "c", "b", "a"))
		tr.Stem(3) // 3-c, 4-d, 5-e
		// The peer sends its full 8-long history: it shares 3..5, so it
		// merges linearly, re-adds 1-a and 2-b, and no conflict appears.
		if !mustMerge(t, &tr, pth(t, 8, false, "8", "7", "f", "e", "d", "c", "b", "a")) {
			t.Fatal("merge must change the tree")
		}
		if len(tr.Leaves()) != 1 || tr.Len() != 8 {
			t.Fatalf("leaves %v len %d", tr.Leaves(), tr.Len())
		}
		tr.Stem(3)
		if tr.Len() != 3 || !tr.Contains(rv(t, 6, "f")) || tr.Contains(rv(t, 5, "e")) {
			t.Fatalf("after stem len %d", tr.Len())
		}
	})
	t.Run("spurious conflict when both sides stemmed past the common ancestor", func(t *testing.T) {
		var tr Tree
		mustMerge(t, &tr, pth(t, 5, false, "e", "d", "c", "b", "a"))
		tr.Stem(3) // 3-c, 4-d, 5-e
		// The peer edited 5-e three more times but sends only the newest
		// 3 revisions (its own _revs_limit): nothing is shared.
		mustMerge(t, &tr, pth(t, 8, false, "8", "7", "f"))
		if w, _ := tr.Winner(); w.Rev != rv(t, 8, "8") {
			t.Fatalf("winner %v", w)
		}
		if got := revStrings(tr.Conflicts()); !slices.Equal(got, []string{"5-" + hx("e")}) {
			t.Fatalf("spurious conflict expected, got %v", got)
		}
		// Once a path linking them arrives, the conflict disappears.
		mustMerge(t, &tr, pth(t, 6, false, "f", "e"))
		if len(tr.Conflicts()) != 0 {
			t.Fatalf("conflicts after the link: %v", tr.Conflicts())
		}
	})
	t.Run("default limit", func(t *testing.T) {
		tr, _ := New(Config{RevsLimit: 2})
		mustMerge(t, tr, pth(t, 3, false, "c", "b"))
		mustMerge(t, tr, pth(t, 2, false, "b", "a"))
		if tr.Stem(0) != 1 || tr.Len() != 2 {
			t.Fatalf("Stem(0) with RevsLimit 2: len %d", tr.Len())
		}
	})
}

func TestSetValue(t *testing.T) {
	var tr Tree
	mustMerge(t, &tr, pth(t, 2, false, "b", "a"))
	if err := tr.SetValue(rv(t, 1, "a"), 7); !errors.Is(err, ErrNotLeaf) {
		t.Fatalf("SetValue on inner: %v", err)
	}
	if err := tr.SetValue(rv(t, 9, "a"), 7); !errors.Is(err, ErrNotLeaf) {
		t.Fatalf("SetValue on unknown: %v", err)
	}
	if err := tr.SetValue(rv(t, 2, "b"), 7); err != nil {
		t.Fatal(err)
	}
	if w, _ := tr.Winner(); w.Value != 7 {
		t.Fatalf("value %d", w.Value)
	}
	c := tr.Clone()
	mustMerge(t, &tr, pth(t, 3, false, "c", "b"))
	if w, _ := tr.Winner(); w.Value != 0 {
		t.Fatal("new leaf has no value")
	}
	rt, err := Decode(tr.Encode())
	if err != nil || !rt.Equal(&tr) {
		t.Fatalf("round trip: %v", err)
	}
	if w, _ := c.Winner(); w.Value != 7 || c.Len() != 2 {
		t.Fatal("Clone must be independent")
	}
}
