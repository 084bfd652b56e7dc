package sync15

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api"
)

func TestDecodeBSO(t *testing.T) {
	const max = 10
	for _, tc := range []struct {
		name string
		in   string
		want BSO
		err  error
	}{
		{"all fields", `{"id":"a","payload":"p","sortindex":5,"ttl":60,"modified":1.5,"collection":"x"}`,
			BSO{ID: "a", Payload: "p", SortIndex: 5, TTL: 60, Has: FieldPayload | FieldSortIndex | FieldTTL}, nil},
		{"empty object", ` { } `, BSO{}, nil},
		{"nulls are absent", `{"id":null,"payload":null,"sortindex":null,"ttl":null}`, BSO{}, nil},
		{"empty payload", `{"payload":""}`, BSO{Has: FieldPayload}, nil},
		{"negative zero and bounds", `{"sortindex":-0,"ttl":999999999}`, BSO{Has: FieldSortIndex | FieldTTL, TTL: MaxTTL}, nil},
		{"sortindex bounds", `{"sortindex":-999999999}`, BSO{Has: FieldSortIndex, SortIndex: MinSortIndex}, nil},
		{"escapes", `{"id":"a\"b\\c\/d","payload":"\u00e9\ud83d\ude00\n"}`, BSO{ID: `a"b\c/d`, Payload: "é😀\n", Has: FieldPayload}, nil},
		{"space in id", `{"id":" x~"}`, BSO{ID: " x~"}, nil},
		{"payload at the limit", `{"payload":"0123456789"}`, BSO{Payload: "0123456789", Has: FieldPayload}, nil},
		{"unknown field", `{"id":"a","parentid":"b"}`, BSO{}, InvalidBSO(`unknown field "parentid"`)},
		{"duplicate field", `{"id":"a","id":"b"}`, BSO{}, InvalidBSO(`duplicate field "id"`)},
		{"duplicate ignored field", `{"modified":1,"modified":2}`, BSO{}, InvalidBSO(`duplicate field "modified"`)},
		{"numeric id", `{"id":5}`, BSO{}, ErrInvalidID},
		{"empty id", `{"id":""}`, BSO{}, ErrInvalidID},
		{"long id", `{"id":"` + strings.Repeat("a", 65) + `"}`, BSO{}, ErrInvalidID},
		{"non-ASCII id", `{"id":"é"}`, BSO{}, ErrInvalidID},
		{"control in id", `{"id":"a\tb"}`, BSO{}, ErrInvalidID},
		{"negative ttl", `{"ttl":-1}`, BSO{}, ErrInvalidTTL},
		{"huge ttl", `{"ttl":1000000000}`, BSO{}, ErrInvalidTTL},
		{"float ttl", `{"ttl":5.0}`, BSO{}, ErrInvalidTTL},
		{"string ttl", `{"ttl":"5"}`, BSO{}, ErrInvalidTTL},
		{"sortindex too big", `{"sortindex":1000000000}`, BSO{}, ErrInvalidSortIndex},
		{"sortindex too small", `{"sortindex":-1000000000}`, BSO{}, ErrInvalidSortIndex},
		{"sortindex exponent", `{"sortindex":1e3}`, BSO{}, ErrInvalidSortIndex},
		{"sortindex string", `{"sortindex":"5"}`, BSO{}, ErrInvalidSortIndex},
		{"sortindex object", `{"sortindex":{}}`, BSO{}, ErrInvalidSortIndex},
		{"payload number", `{"payload":5}`, BSO{}, ErrPayloadNotString},
		{"payload object", `{"payload":{"a":[1]}}`, BSO{}, ErrPayloadNotString},
		{"payload too large", `{"payload":"01234567890"}`, BSO{}, ErrPayloadTooLarge},
		{"ttl checked before sortindex", `{"ttl":-1,"sortindex":"x"}`, BSO{}, ErrInvalidTTL},
		{"array", `[]`, BSO{}, ErrNotAnObject},
		{"string", `"notabso"`, BSO{}, ErrNotAnObject},
		{"number", `42`, BSO{}, ErrNotAnObject},
		{"empty", ``, BSO{}, ErrMalformedJSON},
		{"truncated", `{"id":`, BSO{}, ErrMalformedJSON},
		{"trailing data", `{} {}`, BSO{}, ErrMalformedJSON},
		{"trailing comma", `{"id":"a",}`, BSO{}, ErrMalformedJSON},
		{"single quotes", `{'id':'a'}`, BSO{}, ErrMalformedJSON},
		{"raw newline in string", "{\"payload\":\"a\nb\"}", BSO{}, ErrMalformedJSON},
		{"invalid UTF-8", "{\"payload\":\"\xff\"}", BSO{}, ErrMalformedJSON},
		{"lone surrogate", `{"payload":"\ud800"}`, BSO{}, ErrMalformedJSON},
		{"reversed surrogates", `{"payload":"\udc00\ud800"}`, BSO{}, ErrMalformedJSON},
		{"bad escape", `{"payload":"\x"}`, BSO{}, ErrMalformedJSON},
		{"leading zero", `{"ttl":01}`, BSO{}, ErrMalformedJSON},
		{"deep nesting", `{"x":` + strings.Repeat("[", maxDepth+2) + strings.Repeat("]", maxDepth+2) + `}`, BSO{}, ErrMalformedJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBSO(tc.in, max)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("DecodeBSO = %+v, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DecodeBSO = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestDecodeBSOs(t *testing.T) {
	const max = 10
	type item struct {
		id  string
		err error
	}
	for _, tc := range []struct {
		name     string
		in       string
		newlines bool
		want     []item
		err      error
	}{
		{"array", `[{"id":"a","payload":"x"},{"id":"b","ttl":-1},{"id":"c","foo":1}]`, false,
			[]item{{"a", nil}, {"b", ErrInvalidTTL}, {"c", InvalidBSO(`unknown field "foo"`)}}, nil},
		{"empty array", ` [ ] `, false, []item{}, nil},
		{"invalid id is per record", `[{"id":"` + strings.Repeat("x", 65) + `"}]`, false, []item{{strings.Repeat("x", 65), ErrInvalidID}}, nil},
		{"newlines", "{\"id\":\"a\"}\n{\"id\":\"b\",\"payload\":\"p\"}\r\n", true, []item{{"a", nil}, {"b", nil}}, nil},
		{"newlines without final newline", "{\"id\":\"a\"}\n{\"id\":\"b\"}", true, []item{{"a", nil}, {"b", nil}}, nil},
		{"newlines empty body", "", true, []item{}, nil},
		{"newlines empty line", "{\"id\":\"a\"}\n\n{\"id\":\"b\"}\n", true, nil, ErrMalformedJSON},
		{"newlines bad line", "{\"id\":\"a\"}\n{\"id\":\n", true, nil, ErrMalformedJSON},
		{"newlines non-object", "{\"id\":\"a\"}\n[]\n", true, nil, ErrInvalidBSOs},
		{"newlines duplicate id", "{\"id\":\"a\"}\n{\"id\":\"a\"}\n", true, nil, ErrInvalidBSOs},
		{"not an array", `{"id":"a"}`, false, nil, ErrInvalidBSOs},
		{"string", `"x"`, false, nil, ErrInvalidBSOs},
		{"element not an object", `[{"id":"a"},5]`, false, nil, ErrInvalidBSOs},
		{"no id", `[{"payload":"x"}]`, false, nil, ErrInvalidBSOs},
		{"null id", `[{"id":null}]`, false, nil, ErrInvalidBSOs},
		{"numeric id", `[{"id":5}]`, false, nil, ErrInvalidBSOs},
		{"duplicate id", `[{"id":"a"},{"id":"a","payload":"x"}]`, false, nil, ErrInvalidBSOs},
		{"malformed after a bad element", `[5,{]`, false, nil, ErrMalformedJSON},
		{"malformed after a missing id", `[{},{]`, false, nil, ErrMalformedJSON},
		{"empty body", ``, false, nil, ErrMalformedJSON},
		{"trailing data", `[] x`, false, nil, ErrMalformedJSON},
		{"unclosed", `[{"id":"a"}`, false, nil, ErrMalformedJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBSOs(tc.in, tc.newlines, max)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("DecodeBSOs = %+v, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("DecodeBSOs = %+v, %v", got, err)
			}
			for i, w := range tc.want {
				if got[i].BSO.ID != w.id || !errors.Is(got[i].Err, w.err) && !(w.err == nil && got[i].Err == nil) {
					t.Fatalf("entry %d = %+v, want %+v", i, got[i], w)
				}
			}
		})
	}
}

func TestAppendBSOJSON(t *testing.T) {
	b := BSO{ID: "a\"b", Modified: 123456, Payload: "p\n", Has: FieldPayload}
	if got := string(AppendBSOJSON(nil, &b)); got != `{"id":"a\"b","modified":1234.56,"payload":"p\n"}` {
		t.Fatalf("got %s", got)
	}
	b.Has |= FieldSortIndex
	b.SortIndex = -5
	b.TTL = 10
	if got := string(AppendBSOJSON(nil, &b)); got != `{"id":"a\"b","modified":1234.56,"payload":"p\n","sortindex":-5}` {
		t.Fatalf("got %s", got)
	}
	// A store's plain hint copies the strings it marks unscanned: the
	// same JSON for strings that need no escape.
	p := BSO{ID: "k-1", Modified: 100, Payload: `{x:1}`, Has: FieldPayload}
	want := string(AppendBSOJSON(nil, &p))
	p.Plain = api.PlainID | api.PlainPayload
	if got := string(AppendBSOJSON(nil, &p)); got != want || want != `{"id":"k-1","modified":1.00,"payload":"{x:1}"}` {
		t.Fatalf("plain hint: got %s, want %s", got, want)
	}
}

func TestValidNames(t *testing.T) {
	for s, want := range map[string]bool{"bookmarks": true, "a.b_c-D9": true, "": false, "a/b": false, "é": false,
		strings.Repeat("c", 32): true, strings.Repeat("c", 33): false} {
		if ValidCollection(s) != want {
			t.Errorf("ValidCollection(%q) != %v", s, want)
		}
	}
	for s, want := range map[string]bool{"-F_Szdjg3GzX": true, " ": true, "{guid}": true, "a/b": true, "": false, "\x7f": false} {
		if ValidID(s) != want {
			t.Errorf("ValidID(%q) != %v", s, want)
		}
	}
}

// bsoBody is a POST body of n records shaped as Firefox writes them: an
// encrypted payload (a JSON object as a string, so with escaped quotes) of
// about payload bytes, a sortindex and a ttl.
func bsoBody(n, payload int) string {
	var b strings.Builder
	b.WriteByte('[')
	p := strings.Repeat("A", payload)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"rec%09d","payload":"{\"ciphertext\":\"%s\",\"IV\":\"abc\"}","sortindex":%d,"ttl":5184000}`, i, p, i)
	}
	b.WriteByte(']')
	return b.String()
}

func BenchmarkDecodeBSOs100(b *testing.B) {
	body := bsoBody(100, 300)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		entries, err := DecodeBSOs(body, false, 1<<20)
		if err != nil || len(entries) != 100 || entries[99].Err != nil {
			b.Fatal(err)
		}
	}
}
