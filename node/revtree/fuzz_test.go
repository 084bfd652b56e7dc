package revtree

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Decode: it must never panic, and any
// accepted input must be canonical (re-encode to the same bytes) and
// internally consistent.
func FuzzDecode(f *testing.F) {
	var tr Tree
	mustMerge(f, &tr, pth(f, 5, true, "e", "d", "c", "b", "a"))
	mustMerge(f, &tr, pth(f, 3, false, "9", "b", "a"))
	mustMerge(f, &tr, pth(f, 40, false, "1"))
	_ = tr.SetValue(rv(f, 40, "1"), 99)
	f.Add(tr.Encode())
	f.Add((&Tree{}).Encode())
	f.Add([]byte{})
	f.Add([]byte{EncodingVersion, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Decode(data)
		if err != nil {
			return
		}
		if !bytes.Equal(tr.Encode(), data) {
			t.Fatalf("accepted a non-canonical encoding %x", data)
		}
		checkInvariants(t, tr)
		tr.Leaves()
		tr.Winner()
	})
}

// FuzzMerge builds a valid history from the fuzzer's bytes and merges its
// paths in three orders (creation, reverse, shuffled): the trees must be
// identical. It then merges arbitrary, possibly invalid paths drawn from a
// small alphabet and checks that the tree stays consistent.
func FuzzMerge(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint64(1), []byte{3, 1, 2, 0, 1})
	f.Add(bytes.Repeat([]byte{7, 0, 255, 3}, 40), uint64(2), []byte{9, 9, 9})
	f.Fuzz(func(t *testing.T, hist []byte, seed uint64, raw []byte) {
		paths := genHistory(t, &byteSource{b: hist}, len(hist)/3+1)
		var a, b, c Tree
		for _, p := range paths {
			mustMerge(t, &a, p)
		}
		for i := len(paths) - 1; i >= 0; i-- {
			mustMerge(t, &b, paths[i])
		}
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		for _, p := range shuffled(rng, paths) {
			mustMerge(t, &c, p)
		}
		if !a.Equal(&b) || !a.Equal(&c) || !bytes.Equal(a.Encode(), c.Encode()) {
			t.Fatal("merge order changed the tree")
		}
		wa, _ := a.Winner()
		if wb, _ := b.Winner(); wa != wb {
			t.Fatal("merge order changed the winner")
		}
		checkInvariants(t, &a)
		for _, p := range paths {
			if mustMerge(t, &c, p) {
				t.Fatal("re-merge changed the tree")
			}
		}
		limit := 1 + int(seed%7)
		a.Stem(limit)
		c.Stem(limit)
		if !a.Equal(&c) {
			t.Fatal("Stem is not a function of the tree")
		}
		checkInvariants(t, &a)

		// Arbitrary paths: ids from a 4-letter alphabet, any start.
		src := &byteSource{b: raw}
		for len(src.b) > 0 {
			n := src.IntN(6)
			p := Path{Start: uint64(src.IntN(10)), Deleted: src.IntN(2) == 1}
			for range n {
				p.IDs = append(p.IDs, [HashLen]byte{byte(src.IntN(4))})
			}
			before := a.Encode()
			if _, err := a.Merge(p); err != nil && !bytes.Equal(before, a.Encode()) {
				t.Fatalf("refused merge changed the tree: %v", err)
			}
		}
		checkInvariants(t, &a)
	})
}
