package revtree

import (
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseRev(t *testing.T) {
	h := "0123456789abcdef0123456789abcdef"
	tests := []struct {
		in      string
		wantPos uint64
		ok      bool
	}{
		{"1-" + h, 1, true},
		{"42-" + h, 42, true},
		{"9007199254740991-" + h, MaxPos, true},
		{"9007199254740992-" + h, 0, false},     // MaxPos+1
		{"18446744073709551616-" + h, 0, false}, // uint64 overflow
		{"99999999999999999999999-" + h, 0, false},
		{"0-" + h, 0, false},
		{"01-" + h, 0, false},
		{"00-" + h, 0, false},
		{"+1-" + h, 0, false},
		{"-1-" + h, 0, false},
		{" 1-" + h, 0, false},
		{"1 -" + h, 0, false},
		{"0x1-" + h, 0, false},
		{"1-" + strings.ToUpper(h), 0, false},
		{"1-0123456789ABCDEF0123456789abcdef", 0, false},
		{"1-" + h[:31], 0, false},
		{"1-" + h + "0", 0, false},
		{"1-" + h[:30] + "g0", 0, false},
		{"1-" + h[:31] + "-", 0, false},
		{"1-", 0, false},
		{"-" + h, 0, false},
		{"1" + h, 0, false},
		{"", 0, false},
		{"1-" + h + "\n", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseRev(tc.in)
			if !tc.ok {
				if !errors.Is(err, ErrInvalidRev) {
					t.Fatalf("ParseRev(%q) = %v, %v; want ErrInvalidRev", tc.in, r, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRev(%q): %v", tc.in, err)
			}
			if r.Pos != tc.wantPos || r.HashString() != h {
				t.Fatalf("ParseRev(%q) = %+v", tc.in, r)
			}
			if r.String() != tc.in {
				t.Fatalf("String() = %q, want %q", r.String(), tc.in)
			}
			var u Rev
			txt, err := r.MarshalText()
			if err != nil || u.UnmarshalText(txt) != nil || u != r {
				t.Fatalf("text round trip: %q %v %v", txt, err, u)
			}
		})
	}
}

func TestCompareMatchesStringOrder(t *testing.T) {
	// Hash byte order must equal the string order PouchDB uses on the hex.
	hashes := []string{hx("0"), hx("9"), hx("a"), hx("f"), "9" + hx("f")[1:], "a" + hx("0")[1:], hx("ab"), hx("ba")}
	var revs []Rev
	for _, h := range hashes {
		r, err := ParseRev("3-" + h)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r)
	}
	slices.SortFunc(revs, Compare)
	sorted := slices.Clone(hashes)
	slices.Sort(sorted)
	for i := range revs {
		if revs[i].HashString() != sorted[i] {
			t.Fatalf("order %d: %s, want %s", i, revs[i].HashString(), sorted[i])
		}
	}
	a, b := rv(t, 2, "f"), rv(t, 10, "0")
	if !a.Less(b) || Compare(b, a) != 1 || Compare(a, a) != 0 {
		t.Fatal("position must dominate the hash")
	}
	if !(Rev{}).IsZero() || a.IsZero() {
		t.Fatal("IsZero")
	}
}

func TestNewRevHash(t *testing.T) {
	p := rv(t, 3, "c")
	base := NewRevHash(p, false, []byte(`{"payload":"x"}`))
	if base != NewRevHash(p, false, []byte(`{"payload":"x"}`)) {
		t.Fatal("not deterministic")
	}
	variants := map[string][16]byte{
		"deleted":     NewRevHash(p, true, []byte(`{"payload":"x"}`)),
		"parent pos":  NewRevHash(Rev{Pos: 4, Hash: p.Hash}, false, []byte(`{"payload":"x"}`)),
		"parent hash": NewRevHash(rv(t, 3, "d"), false, []byte(`{"payload":"x"}`)),
		"body":        NewRevHash(p, false, []byte(`{"payload":"y"}`)),
		"no parent":   NewRevHash(Rev{}, false, []byte(`{"payload":"x"}`)),
		"empty body":  NewRevHash(p, false, nil),
	}
	for name, h := range variants {
		if h == base {
			t.Errorf("%s does not change the hash", name)
		}
	}
	// Pinned vector: changing the encoding changes every revision id in
	// existing stores, so it must be deliberate (and change revHashTag).
	got := hex.EncodeToString(func() []byte { h := NewRevHash(Rev{}, false, []byte("hello")); return h[:] }())
	if got != pinnedHello {
		t.Fatalf("NewRevHash(zero, false, hello) = %s, want %s", got, pinnedHello)
	}
	r, err := NewRev(p, false, []byte("b"))
	if err != nil || r.Pos != 4 || r.Hash != NewRevHash(p, false, []byte("b")) {
		t.Fatalf("NewRev = %v, %v", r, err)
	}
	if _, err := NewRev(Rev{Pos: MaxPos}, false, nil); !errors.Is(err, ErrInvalidRev) {
		t.Fatalf("NewRev at MaxPos: %v", err)
	}
}

const pinnedHello = "14daf2aa5e367ed3c1c1980720207e90" // checked with Python hashlib

// TestSumRevHashInPlace: the in-place form gives NewRevHash's hash (and a
// vector computed with the streaming SHA-256 the first version used)
// without allocating.
func TestSumRevHashInPlace(t *testing.T) {
	parent := Rev{Pos: 3, Hash: [HashLen]byte{0xab, 1, 2, 3}}
	body := []byte(`{"payload":"x"}`)
	buf := append(make([]byte, RevHashHeaderLen), body...)
	for _, deleted := range []bool{false, true} {
		if got, want := SumRevHash(buf, parent, deleted), NewRevHash(parent, deleted, body); got != want {
			t.Fatalf("deleted %v: %x, want %x", deleted, got, want)
		}
	}
	h := SumRevHash(buf, parent, false)
	if got := hex.EncodeToString(h[:]); got != "dc182ed83e628fc0aa38693ed4ff5112" {
		t.Fatalf("vector: %s", got)
	}
	if n := testing.AllocsPerRun(100, func() { SumRevHash(buf, parent, false) }); n != 0 {
		t.Fatalf("%v allocations per hash", n)
	}
}
