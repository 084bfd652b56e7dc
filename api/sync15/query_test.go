package sync15

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

func TestParseQuery(t *testing.T) {
	tok := EncodeOffset(SortNewest, &Position{Modified: 500, ID: "x"})
	for _, tc := range []struct {
		in   string
		want Query
		err  bool
	}{
		{"", Query{}, false},
		{"ids=a,b&full=&sort=index&older=2.43", Query{IDs: []string{"a", "b"}, Full: true, Sort: SortIndex, Older: 243, HasOlder: true}, false},
		{"ids=%20a%20,b", Query{IDs: []string{"a", "b"}}, false},
		{"newer=1.5&limit=10&sort=oldest", Query{Newer: 150, HasNewer: true, Limit: 10, HasLimit: true, Sort: SortOldest}, false},
		{"limit=0", Query{Limit: 0, HasLimit: true}, false},
		{"sort=newest&offset=" + tok, Query{Sort: SortNewest, After: &Position{Modified: 500, ID: "x"}}, false},
		{"unknown=1&client=fx", Query{}, false},
		{"ids=", Query{}, true},
		{"ids=a,,b", Query{}, true},
		{"ids=" + strings.Repeat("a,", 100) + "a", Query{}, true},
		{"ids=" + strings.Repeat("x", 65), Query{}, true},
		{"ids=a&ids=b", Query{}, true},
		{"newer=abc", Query{}, true},
		{"newer=-1", Query{}, true},
		{"older=", Query{}, true},
		{"limit=-1", Query{}, true},
		{"limit=1.5", Query{}, true},
		{"limit=+5", Query{}, true},
		{"limit=4294967296", Query{}, true},
		{"sort=whatever", Query{}, true},
		{"sort=", Query{}, true},
		{"offset=" + tok, Query{}, true},                          // token of another sort
		{"sort=newest&offset=" + tok + "&newer=6", Query{}, true}, // position below newer
		{"sort=newest&offset=" + tok + "&older=4", Query{}, true}, // position above older
		{"sort=newest&offset=abc", Query{}, true},
		{"full=1&full=1", Query{}, true},
	} {
		v, _ := url.ParseQuery(tc.in)
		got, err := ParseQuery(v)
		if tc.err {
			if !errors.Is(err, ErrBadQuery) {
				t.Errorf("ParseQuery(%q) = %+v, %v; want an error", tc.in, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseQuery(%q): %v", tc.in, err)
			continue
		}
		if !slices.Equal(got.IDs, tc.want.IDs) || got.Newer != tc.want.Newer || got.HasNewer != tc.want.HasNewer ||
			got.Older != tc.want.Older || got.HasOlder != tc.want.HasOlder || got.Full != tc.want.Full ||
			got.Limit != tc.want.Limit || got.HasLimit != tc.want.HasLimit || got.Sort != tc.want.Sort ||
			(got.After == nil) != (tc.want.After == nil) || got.After != nil && *got.After != *tc.want.After {
			t.Errorf("ParseQuery(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestOffsetTokens(t *testing.T) {
	for _, tc := range []struct {
		s Sort
		p *Position
	}{
		{SortNone, nil},
		{SortIndex, nil},
		{SortNewest, &Position{Modified: 180000000012, ID: "abc"}},
		{SortOldest, &Position{Modified: 0, ID: strings.Repeat("z", 64)}},
		{SortIndex, &Position{SortIndex: -999999999, HasSortIndex: true, ID: " "}},
		{SortIndex, &Position{ID: "no-sortindex"}},
	} {
		s := EncodeOffset(tc.s, tc.p)
		if len(s) > maxOffsetLen || strings.TrimLeft(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Fatalf("token %q not urlsafe-base64 within bounds", s)
		}
		got, err := DecodeOffset(s)
		if err != nil || got.Sort != tc.s || (got.Position == nil) != (tc.p == nil) || got.Position != nil && *got.Position != keysOf(tc.s, tc.p) {
			t.Fatalf("round trip of %+v: %+v, %v", tc.p, got, err)
		}
	}
	good := EncodeOffset(SortNewest, &Position{Modified: 5, ID: "a"})
	raw, _ := b64.DecodeString(good)
	mut := func(f func([]byte) []byte) string { return b64.EncodeToString(f(append([]byte(nil), raw...))) }
	for name, s := range map[string]string{
		"empty":            "",
		"padding":          good + "=",
		"standard base64":  strings.ReplaceAll(b64.EncodeToString([]byte{1, 1, 1, 0xfb, 0xff}), "-", "+"),
		"too long":         strings.Repeat("A", maxOffsetLen+1),
		"version":          mut(func(b []byte) []byte { b[0] = 2; return b }),
		"sort":             mut(func(b []byte) []byte { b[1] = 9; return b }),
		"flags":            mut(func(b []byte) []byte { b[2] = 4; return b }),
		"sortindex flag":   mut(func(b []byte) []byte { b[2] = 3; return b }),
		"short":            mut(func(b []byte) []byte { return b[:7] }),
		"id length":        mut(func(b []byte) []byte { b[11] = 5; return b }),
		"trailing":         mut(func(b []byte) []byte { return append(b, 'x') }),
		"negative time":    mut(func(b []byte) []byte { b[3] = 0x80; return b }),
		"bad id":           mut(func(b []byte) []byte { b[12] = 0x01; return b }),
		"empty id":         mut(func(b []byte) []byte { b[11] = 0; return b[:12] }),
		"start with bytes": b64.EncodeToString([]byte{1, 1, 0, 'x'}),
		"index range":      b64.EncodeToString([]byte{1, 3, 3, 0x7f, 0, 0, 0, 0, 0, 0, 0, 1, 'a'}),
	} {
		if _, err := DecodeOffset(s); !errors.Is(err, ErrBadQuery) {
			t.Errorf("%s: DecodeOffset(%q) = %v", name, s, err)
		}
	}
}

// keysOf keeps the fields of p that sort s's tokens carry.
func keysOf(s Sort, p *Position) Position {
	if s == SortIndex {
		return Position{SortIndex: p.SortIndex, HasSortIndex: p.HasSortIndex, ID: p.ID}
	}
	return Position{Modified: p.Modified, ID: p.ID}
}

func TestBatchIDs(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_123)
	id, err := NewBatchID(now, strings.NewReader(strings.Repeat("r", 12)))
	if err != nil {
		t.Fatal(err)
	}
	s := id.String()
	if len(s) != BatchIDLen || url.QueryEscape(s) != s {
		t.Fatalf("batch id %q", s)
	}
	got, err := ParseBatchID(s)
	if err != nil || !got.Created.Equal(now) || got != id {
		t.Fatalf("ParseBatchID = %+v, %v", got, err)
	}
	raw, _ := b64.DecodeString(s)
	for name, bad := range map[string]string{
		"empty":    "",
		"short":    s[:len(s)-1],
		"long":     s + "A",
		"padding":  s[:len(s)-1] + "=",
		"version":  b64.EncodeToString(append([]byte{2}, raw[1:]...)),
		"zero":     b64.EncodeToString(append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0}, raw[9:]...)),
		"negative": b64.EncodeToString(append([]byte{1, 0x80, 0, 0, 0, 0, 0, 0, 1}, raw[9:]...)),
		"true":     "true",
	} {
		if _, err := ParseBatchID(bad); !errors.Is(err, ErrBadQuery) {
			t.Errorf("%s: ParseBatchID(%q) = %v", name, bad, err)
		}
	}
	if _, err := NewBatchID(now, strings.NewReader("")); err == nil {
		t.Fatal("NewBatchID without randomness")
	}
}

func TestParsePrecondition(t *testing.T) {
	for _, tc := range []struct {
		hdr  map[string][]string
		want Precondition
		err  bool
	}{
		{nil, Precondition{}, false},
		{map[string][]string{"X-If-Modified-Since": {"12.34"}}, Precondition{CondIfModifiedSince, 1234}, false},
		{map[string][]string{"X-If-Unmodified-Since": {"0"}}, Precondition{CondIfUnmodifiedSince, 0}, false},
		{map[string][]string{"X-If-Unmodified-Since": {"1.005"}}, Precondition{CondIfUnmodifiedSince, 100}, false},
		{map[string][]string{"X-If-Modified-Since": {"1"}, "X-If-Unmodified-Since": {"1"}}, Precondition{}, true},
		{map[string][]string{"X-If-Modified-Since": {"-1"}}, Precondition{}, true},
		{map[string][]string{"X-If-Unmodified-Since": {"abc"}}, Precondition{}, true},
		{map[string][]string{"X-If-Unmodified-Since": {""}}, Precondition{}, true},
		{map[string][]string{"X-If-Modified-Since": {"1", "2"}}, Precondition{}, true},
	} {
		h := http.Header{}
		for k, vs := range tc.hdr {
			for _, v := range vs {
				h.Add(k, v)
			}
		}
		got, err := ParsePrecondition(h)
		if tc.err != (err != nil) || got != tc.want || err != nil && !errors.Is(err, ErrBadQuery) {
			t.Errorf("ParsePrecondition(%v) = %+v, %v", tc.hdr, got, err)
		}
	}
	for _, tc := range []struct {
		p    Precondition
		last api.Stamp
		want error
	}{
		{Precondition{}, 5, nil},
		{Precondition{CondIfModifiedSince, 5}, 5, ErrNotModified},
		{Precondition{CondIfModifiedSince, 5}, 4, ErrNotModified},
		{Precondition{CondIfModifiedSince, 5}, 6, nil},
		{Precondition{CondIfUnmodifiedSince, 5}, 5, nil},
		{Precondition{CondIfUnmodifiedSince, 5}, 6, ErrPreconditionFailed},
		{Precondition{CondIfUnmodifiedSince, 0}, 0, nil},
		{Precondition{CondIfUnmodifiedSince, 0}, 1, ErrPreconditionFailed},
	} {
		err := tc.p.Check(tc.last)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%+v.Check(%d) = %v", tc.p, tc.last, err)
		}
		var ce *ConditionError
		if err != nil && (!errors.As(err, &ce) || ce.LastModified != tc.last) {
			t.Errorf("%+v.Check(%d) = %v, want LastModified", tc.p, tc.last, err)
		}
	}
}

func TestOrders(t *testing.T) {
	recs := []BSO{
		{ID: "a", Modified: 10, Has: FieldSortIndex, SortIndex: 5},
		{ID: "b", Modified: 10, Has: FieldSortIndex, SortIndex: 5},
		{ID: "c", Modified: 20},
		{ID: "d", Modified: 5, Has: FieldSortIndex, SortIndex: 100},
		{ID: "e", Modified: 30},
		{ID: "f", Modified: 20, Has: FieldSortIndex, SortIndex: -3},
	}
	for _, tc := range []struct {
		s    Sort
		want string
	}{
		{SortNone, "efcbad"},
		{SortNewest, "efcbad"},
		{SortOldest, "dabcfe"},
		{SortIndex, "dbafec"},
	} {
		got := slices.Clone(recs)
		slices.SortFunc(got, func(a, b BSO) int {
			pa, pb := PositionOf(&a), PositionOf(&b)
			return Compare(tc.s, &pa, &pb)
		})
		var ids string
		for _, b := range got {
			ids += b.ID
		}
		if ids != tc.want {
			t.Errorf("sort %v: %s, want %s", tc.s, ids, tc.want)
		}
		// Matches(After = each record) keeps exactly the records after it.
		for i := range got {
			p := PositionOf(&got[i])
			q := Query{Sort: tc.s, After: &p}
			var after string
			for j := range recs {
				if q.Matches(&recs[j]) {
					after += recs[j].ID
				}
			}
			if len(after) != len(got)-i-1 || strings.ContainsAny(after, ids[:i+1]) {
				t.Errorf("sort %v after %s: %s", tc.s, got[i].ID, after)
			}
		}
	}
	q := Query{IDs: []string{"a", "c"}, Newer: 5, HasNewer: true, Older: 20, HasOlder: true}
	for i := range recs {
		if q.Matches(&recs[i]) != (recs[i].ID == "a") {
			t.Errorf("filters on %s", recs[i].ID)
		}
	}
}
