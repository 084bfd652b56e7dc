package revtree

import (
	"strings"
	"testing"
)

// hx returns a 32-character hash string made of c repeated.
func hx(c string) string { return strings.Repeat(c, 32/len(c)) }

// rv builds a Rev from a position and a one-character hash pattern.
func rv(t testing.TB, pos uint64, c string) Rev {
	t.Helper()
	h, err := ParseHash(hx(c))
	if err != nil {
		t.Fatal(err)
	}
	return Rev{Pos: pos, Hash: h}
}

// pth builds a Path from its start and one-character id patterns, newest
// first.
func pth(t testing.TB, start uint64, deleted bool, ids ...string) Path {
	t.Helper()
	full := make([]string, len(ids))
	for i, c := range ids {
		full[i] = hx(c)
	}
	p, err := ParseRevisions(start, full, deleted)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustMerge(t testing.TB, tr *Tree, p Path) bool {
	t.Helper()
	changed, err := tr.Merge(p)
	if err != nil {
		t.Fatalf("Merge(%d %v): %v", p.Start, p.HashStrings(), err)
	}
	return changed
}

func revStrings(rs []Rev) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}
