package sync15

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func FuzzDecodeBSO(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","payload":"p","sortindex":5,"ttl":60,"modified":1.5,"collection":"x"}`,
		`{"id":"a\"b\u00e9\ud83d\ude00","payload":""}`, `{"id":5}`, `{"ttl":-0}`, `{"sortindex":1e3}`, `{"payload":{"a":[1,{}]}}`,
		`{"id":"a","id":"b"}`, `{"foo":null}`, `[{"id":"a"},{"id":"b","ttl":1}]`, `[{"id":"a"},{"id":"a"}]`, `[5]`, `[]`, `"x"`,
		"{\"id\":\"a\"}\n{\"id\":\"b\"}\n", "{\"id\":\"\xff\"}", `{"payload":"\ud800"}`, `{`, ``, `[[[[]]]]`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		const maxPayload = 64
		valid := json.Valid([]byte(s))
		b, err := DecodeBSO(s, maxPayload)
		if err == nil {
			if !valid {
				t.Fatalf("accepted invalid JSON %q", s)
			}
			checkBSO(t, &b, maxPayload)
			// What the handler writes back decodes to the same record.
			b.Modified = 12345
			b.Has |= FieldPayload
			if b.ID == "" {
				b.ID = "x"
			}
			out := AppendBSOJSON(nil, &b)
			if !json.Valid(out) {
				t.Fatalf("invalid output %q", out)
			}
			again, err := DecodeBSO(string(out), maxPayload)
			b.TTL, b.Has = 0, b.Has&^FieldTTL
			if err != nil || again.ID != b.ID || again.Payload != b.Payload || again.SortIndex != b.SortIndex ||
				again.Has != b.Has {
				t.Fatalf("round trip %q: %+v, %v", out, again, err)
			}
		} else {
			var ib InvalidBSO
			if !errors.Is(err, ErrMalformedJSON) && !errors.As(err, &ib) {
				t.Fatalf("unexpected error %T %v", err, err)
			}
			// Only text encoding/json refuses (or that holds invalid
			// Unicode, which this decoder refuses too) is malformed.
			if errors.Is(err, ErrMalformedJSON) && valid && utf8.ValidString(s) && !strings.Contains(s, `\u`) && !deep(s) {
				t.Fatalf("refused valid JSON %q as malformed", s)
			}
			if !errors.Is(err, ErrMalformedJSON) && !valid {
				t.Fatalf("invalid JSON %q not reported as malformed: %v", s, err)
			}
		}
		for _, newlines := range []bool{false, true} {
			entries, err := DecodeBSOs(s, newlines, maxPayload)
			if err != nil {
				if !errors.Is(err, ErrMalformedJSON) && !errors.Is(err, ErrInvalidBSOs) {
					t.Fatalf("unexpected error %v", err)
				}
				if !newlines && !valid && !errors.Is(err, ErrMalformedJSON) {
					t.Fatalf("invalid JSON %q not reported as malformed", s)
				}
				continue
			}
			if !newlines && !valid {
				t.Fatalf("accepted invalid JSON array %q", s)
			}
			seen := map[string]bool{}
			for _, e := range entries {
				if seen[e.BSO.ID] {
					t.Fatalf("duplicate id %q accepted", e.BSO.ID)
				}
				seen[e.BSO.ID] = true
				if e.Err == nil {
					if !ValidID(e.BSO.ID) {
						t.Fatalf("valid entry with id %q", e.BSO.ID)
					}
					checkBSO(t, &e.BSO, maxPayload)
				}
			}
		}
	})
}

// deep reports nesting beyond the scanner's limit (refused on purpose).
func deep(s string) bool { return strings.Count(s, "[")+strings.Count(s, "{") > maxDepth }

func checkBSO(t *testing.T, b *BSO, maxPayload int64) {
	t.Helper()
	if b.ID != "" && !ValidID(b.ID) || int64(len(b.Payload)) > maxPayload || !utf8.ValidString(b.Payload) ||
		b.SortIndex < MinSortIndex || b.SortIndex > MaxSortIndex || b.TTL < 0 || b.TTL > MaxTTL {
		t.Fatalf("limits broken: %+v", b)
	}
}

func FuzzOffsetToken(f *testing.F) {
	for _, p := range []struct {
		s Sort
		p *Position
	}{
		{SortNone, nil}, {SortNewest, &Position{Modified: 180000000012, ID: "abc"}},
		{SortIndex, &Position{SortIndex: -5, HasSortIndex: true, ID: "x y"}}, {SortIndex, &Position{ID: "z"}},
	} {
		f.Add(EncodeOffset(p.s, p.p))
	}
	f.Add("AQEBAAAAAAAAAAUBYQ")
	f.Add("")
	f.Add("====")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := DecodeOffset(s)
		if err != nil {
			if !errors.Is(err, ErrBadQuery) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(s) > maxOffsetLen || tok.Sort >= sortCount {
			t.Fatalf("accepted %q", s)
		}
		if p := tok.Position; p != nil {
			if !ValidID(p.ID) || p.Modified < 0 || p.Modified > maxStamp || p.SortIndex < MinSortIndex || p.SortIndex > MaxSortIndex {
				t.Fatalf("accepted out-of-range %+v", p)
			}
		}
		// Only canonical encodings decode.
		if again := EncodeOffset(tok.Sort, tok.Position); again != s {
			t.Fatalf("%q decodes but encodes as %q", s, again)
		}
	})
}

func FuzzBatchID(f *testing.F) {
	id, _ := NewBatchID(time.UnixMilli(1_800_000_000_123), strings.NewReader(strings.Repeat("r", 12)))
	f.Add(id.String())
	f.Add("true")
	f.Add(strings.Repeat("A", BatchIDLen))
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBatchID(s)
		if err != nil {
			if !errors.Is(err, ErrBadQuery) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if b.Created.UnixMilli() <= 0 || b.String() != s {
			t.Fatalf("%q parsed as %+v, which writes %q", s, b, b.String())
		}
	})
}
