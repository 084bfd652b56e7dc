package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMembers(t *testing.T) {
	d := Scanner{S: ` { "a" : 1 , "b\u0041":"x", "c": [ ] } `}
	d.WS()
	if d.Peek() != '{' || d.Open('}') {
		t.Fatal("no object")
	}
	var got []string
	for {
		k, v, ok := d.Member()
		if !ok {
			t.Fatalf("member at %d", d.I)
		}
		got = append(got, k+"="+v.S)
		more, ok := d.Next('}')
		if !ok {
			t.Fatalf("next at %d", d.I)
		}
		if !more {
			break
		}
	}
	if strings.Join(got, ",") != "a=1,bA=x,c=" || !d.End() {
		t.Fatalf("got %v, end %v", got, d.End())
	}
	for _, in := range []string{`{"a" 1}`, `{a:1}`, `{"a":1,}`, `{"a":1 "b":2}`, `{"a":}`} {
		d := Scanner{S: in}
		if d.Open('}') {
			continue
		}
		ok := true
		for ok {
			var more bool
			if _, _, ok = d.Member(); ok {
				if more, ok = d.Next('}'); !more {
					break
				}
			}
		}
		if ok {
			t.Errorf("%q scanned", in)
		}
	}
}

func TestValue(t *testing.T) {
	for _, tc := range []struct {
		in          string
		kind        Kind
		want        string // decoded text in both modes
		lax, strict bool   // accepted in that mode
		laxText     string // decoded text when only lax accepts (else want)
	}{
		{in: `"abc"`, kind: String, want: "abc", lax: true, strict: true},
		{in: `""`, kind: String, want: "", lax: true, strict: true},
		{in: `"a\"b\\c\/d\b\f\n\r\t"`, kind: String, want: "a\"b\\c/d\b\f\n\r\t", lax: true, strict: true},
		{in: `"\u00e9\ud83d\ude00é"`, kind: String, want: "é😀é", lax: true, strict: true},
		{in: `"\uD83D\uDE00"`, kind: String, want: "😀", lax: true, strict: true},
		{in: `"\ud800"`, kind: String, lax: true, laxText: "\uFFFD"},
		{in: `"\ud800x"`, kind: String, lax: true, laxText: "\uFFFDx"},
		{in: `"\udc00\ud800"`, kind: String, lax: true, laxText: "\uFFFD\uFFFD"},
		{in: `"\ud800\ud800\udc00"`, kind: String, lax: true, laxText: "\uFFFD𐀀"},
		{in: `"\ud800\u0041"`, kind: String, lax: true, laxText: "\uFFFDA"},
		{in: "\"a\xffb\"", kind: String, lax: true, laxText: "a\uFFFDb"},
		{in: "\"\\n\xff\"", kind: String, lax: true, laxText: "\n\uFFFD"},
		{in: "\"\xed\xa0\x80\"", kind: String, lax: true, laxText: "\uFFFD\uFFFD\uFFFD"},
		{in: `"\x"`, kind: String},
		{in: `"\u12"`, kind: String},
		{in: `"\u12g4"`, kind: String},
		{in: `"\ud800\u12g4"`, kind: String},
		{in: "\"a\x01\"", kind: String},
		{in: "\"a\\n\x1f\"", kind: String},
		{in: `"abc`, kind: String},
		{in: `"ab\"`, kind: String},
		{in: `"ab\`, kind: String},
		{in: `0`, kind: Number, want: "0", lax: true, strict: true},
		{in: `-12.5e+3`, kind: Number, want: "-12.5e+3", lax: true, strict: true},
		{in: `1E9`, kind: Number, want: "1E9", lax: true, strict: true},
		{in: `01`, kind: Number, want: "0", lax: true, strict: true}, // the 1 is left for the caller
		{in: `-`, kind: Number},
		{in: `1.`, kind: Number},
		{in: `1e`, kind: Number},
		{in: `true`, kind: Bool, lax: true, strict: true},
		{in: `false`, kind: Bool, lax: true, strict: true},
		{in: `tru`, kind: Bool},
		{in: `null`, kind: Null, lax: true, strict: true},
		{in: `nul`, kind: Null},
		{in: `{"a":[1,{"b":null}],"c":"\ud800"}`, kind: Complex, lax: true},
		{in: `[1,2,[]]`, kind: Complex, lax: true, strict: true},
		{in: `[1,]`, kind: Complex},
		{in: `x`},
		{in: ``},
	} {
		for _, strict := range []bool{false, true} {
			d := Scanner{S: tc.in, Strict: strict}
			v, ok := d.Value()
			wantOK, want := tc.lax, tc.want
			if strict {
				wantOK = tc.strict
			} else if !tc.strict {
				want = tc.laxText
			}
			if ok != wantOK {
				t.Errorf("Value(%q) strict=%v: ok %v, want %v", tc.in, strict, ok, wantOK)
				continue
			}
			if !ok {
				continue
			}
			if v.Kind != tc.kind || v.S != want {
				t.Errorf("Value(%q) strict=%v = %d %q, want %d %q", tc.in, strict, v.Kind, v.S, tc.kind, want)
			}
		}
	}
}

func TestSkipDepth(t *testing.T) {
	for _, tc := range []struct {
		in    string
		depth int
		ok    bool
	}{
		{`[1]`, 1, true}, {`[[]]`, 1, true}, {`{"a":{}}`, 1, true}, {`[[1]]`, 1, false}, {`{"a":[1]}`, 1, false},
		{`[[1]]`, 2, true}, {strings.Repeat("[", 600) + strings.Repeat("]", 600), 0, true},
		{strings.Repeat("[", 600) + strings.Repeat("]", 600), 512, false},
		{strings.Repeat("[", 512) + strings.Repeat("]", 512), 512, true},
	} {
		d := Scanner{S: tc.in, MaxDepth: tc.depth}
		if ok := d.Skip() && d.End(); ok != tc.ok {
			t.Errorf("Skip(%.20q) MaxDepth %d = %v, want %v", tc.in, tc.depth, ok, tc.ok)
		}
	}
}

// TestMatchesEncodingJSON checks the lax scanner against encoding/json
// (what is valid, how strings decode) and that the strict one only refuses
// more. (The decoders' fuzz targets, FuzzDecodeWBO and FuzzDecodeBSO, fuzz
// the scanner through them.)
func TestMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{`{"a":[1,"\u00e9\ud800",{"b":null}]}`, "\"a\xffb\"", `"\ud83d\ude00"`, `-0.5e-3`, `[[[]]]`,
		`"\ud800\ud800\udc00"`, `"\ud800\u0041"`, `"\udc00"`, `"\ud800\udbff\udfff"`, "\"\xed\xa0\x80\"", "\"\xf0\x9f\x98\"",
		"\"\\t\xc3\"", `{"a":1,}`, `tru`, ` "x" `, `"\u00zz"`, `"\ud800\u00zz"`, `[1 2]`, `{"a" 1}`, `{"a":1 }x`, `01`,
		`"` + strings.Repeat(`\"`, 40) + `"`, `""`, ``, ` `, `[`, `{"":""}`, `1.5E+10`, `-`, `"\/"`, "\"\x7f\"",
	} {
		checkScanner(t, s)
	}
}

func checkScanner(t *testing.T, s string) {
	t.Helper()
	valid := json.Valid([]byte(s))
	lax := Scanner{S: s}
	if ok := lax.Skip() && lax.End(); ok != valid {
		t.Fatalf("Skip(%q) = %v, json.Valid = %v", s, ok, valid)
	}
	strict := Scanner{S: s, Strict: true}
	if ok := strict.Skip() && strict.End(); ok && !valid {
		t.Fatalf("strict Skip(%q) accepts invalid JSON", s)
	}
	lax, strict = Scanner{S: s}, Scanner{S: s, Strict: true}
	lax.WS()
	strict.WS()
	v, ok := lax.Value()
	sv, sok := strict.Value()
	if sok && (!ok || sv != v || strict.I != lax.I) {
		t.Fatalf("%q: strict %v %+v at %d, lax %v %+v at %d", s, sok, sv, strict.I, ok, v, lax.I)
	}
	if !ok || v.Kind != String || !lax.End() {
		return
	}
	var want string
	if err := json.Unmarshal([]byte(s), &want); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	if v.S != want {
		t.Fatalf("%q decodes to %q, encoding/json gives %q", s, v.S, want)
	}
	if sok && !utf8.ValidString(sv.S) {
		t.Fatalf("strict %q decodes to invalid UTF-8 %q", s, sv.S)
	}
}
