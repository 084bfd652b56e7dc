package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDecodeWBO(t *testing.T) {
	long := strings.Repeat("a", 64)
	big := strings.Repeat("x", MaxPayloadBytes)
	tests := []struct {
		name string
		in   string
		want WBO
		err  error
	}{
		{"minimal", `{"id":"abc","payload":"p"}`, WBO{ID: "abc", Payload: "p", Has: FieldPayload}, nil},
		{"all fields", `{"id":"a","payload":"p","sortindex":5,"parentid":"pa","predecessorid":"pr","ttl":10,"modified":123.45}`,
			WBO{ID: "a", Payload: "p", SortIndex: 5, ParentID: "pa", PredecessorID: "pr", TTL: 10,
				Has: FieldPayload | FieldSortIndex | FieldParentID | FieldPredecessorID | FieldTTL}, nil},
		{"whitespace", " \n{ \"id\" : \"a\" }\t", WBO{ID: "a"}, nil},
		{"numeric id", `{"id":12}`, WBO{ID: "12"}, nil},
		{"float id kept exactly", `{"id":12345678901234567890.5}`, WBO{ID: "12345678901234567890.5"}, nil},
		{"id 64 bytes", `{"id":"` + long + `"}`, WBO{ID: long}, nil},
		{"id 65 bytes", `{"id":"` + long + `b"}`, WBO{}, ErrInvalidID},
		{"id bool", `{"id":true}`, WBO{}, ErrInvalidID},
		{"null id is absent", `{"id":null,"payload":"x"}`, WBO{Payload: "x", Has: FieldPayload}, nil},
		{"unknown fields dropped", `{"id":"a","foo":"bar","n":1,"b":false,"z":null}`, WBO{ID: "a"}, nil},
		{"sortindex int", `{"sortindex":-5}`, WBO{SortIndex: -5, Has: FieldSortIndex}, nil},
		{"sortindex string", `{"sortindex":"-5"}`, WBO{SortIndex: -5, Has: FieldSortIndex}, nil},
		{"sortindex float truncated", `{"sortindex":5.5}`, WBO{SortIndex: 5, Has: FieldSortIndex}, nil},
		{"sortindex negative float truncated", `{"sortindex":-5.9}`, WBO{SortIndex: -5, Has: FieldSortIndex}, nil},
		{"sortindex float string truncated", `{"sortindex":"5.5"}`, WBO{SortIndex: 5, Has: FieldSortIndex}, nil},
		{"sortindex exponent", `{"sortindex":1e3}`, WBO{SortIndex: 1000, Has: FieldSortIndex}, nil},
		{"sortindex max", `{"sortindex":999999999}`, WBO{SortIndex: 999999999, Has: FieldSortIndex}, nil},
		{"sortindex min", `{"sortindex":-999999999}`, WBO{SortIndex: -999999999, Has: FieldSortIndex}, nil},
		{"sortindex too big", `{"sortindex":1000000000}`, WBO{}, ErrInvalidSortIndex},
		{"sortindex too small", `{"sortindex":-1000000000}`, WBO{}, ErrInvalidSortIndex},
		{"sortindex too big string", `{"sortindex":"1234567890123"}`, WBO{}, ErrInvalidSortIndex},
		{"sortindex too small string", `{"sortindex":"-1234567890123"}`, WBO{}, ErrInvalidSortIndex},
		{"sortindex huge", `{"sortindex":123456789012345678901234567890}`, WBO{}, ErrInvalidSortIndex},
		{"sortindex non numeric", `{"sortindex":"abc"}`, WBO{}, ErrInvalidSortIndex},
		{"sortindex hex", `{"sortindex":"0x10"}`, WBO{}, ErrInvalidSortIndex},
		{"sortindex nan", `{"sortindex":"NaN"}`, WBO{}, ErrInvalidSortIndex},
		{"sortindex bool", `{"sortindex":true}`, WBO{}, ErrInvalidSortIndex},
		{"payload empty", `{"payload":""}`, WBO{Has: FieldPayload}, nil},
		{"payload max", `{"payload":"` + big + `"}`, WBO{Payload: big, Has: FieldPayload}, nil},
		{"payload too large", `{"payload":"` + big + `x"}`, WBO{}, ErrPayloadTooLarge},
		{"payload escapes count decoded bytes", `{"payload":"` + big[2:] + `\u00e9"}`, WBO{Payload: big[2:] + "é", Has: FieldPayload}, nil},
		{"payload number", `{"payload":42}`, WBO{}, ErrPayloadNotString},
		{"payload bool", `{"payload":false}`, WBO{}, ErrPayloadNotString},
		{"payload object", `{"payload":{"a":1}}`, WBO{}, ErrInvalidWBO},
		{"parentid number", `{"parentid":1}`, WBO{ParentID: "1", Has: FieldParentID}, nil},
		{"parentid too long", `{"parentid":"` + long + `b"}`, WBO{}, ErrInvalidParentID},
		{"predecessorid too long", `{"predecessorid":"` + long + `b"}`, WBO{}, ErrInvalidPredecessorID},
		{"predecessorid number", `{"predecessorid":7}`, WBO{PredecessorID: "7", Has: FieldPredecessorID}, nil},
		{"ttl zero", `{"ttl":0}`, WBO{Has: FieldTTL}, nil},
		{"ttl max", `{"ttl":31536000}`, WBO{TTL: 31536000, Has: FieldTTL}, nil},
		{"ttl string", `{"ttl":"60"}`, WBO{TTL: 60, Has: FieldTTL}, nil},
		{"ttl too big", `{"ttl":31536001}`, WBO{}, ErrInvalidTTL},
		{"ttl negative", `{"ttl":-1}`, WBO{}, ErrInvalidTTL},
		{"ttl text", `{"ttl":"soon"}`, WBO{}, ErrInvalidTTL},
		{"list value", `{"id":["1","2"],"payload":"x"}`, WBO{}, ErrInvalidWBO},
		{"nested unknown field", `{"id":"a","x":{"y":[1,2]}}`, WBO{}, ErrInvalidWBO},
		{"string body", `"notawbo"`, WBO{}, ErrInvalidWBO},
		{"number body", `42`, WBO{}, ErrInvalidWBO},
		{"array body", `[{"id":"a"}]`, WBO{}, ErrInvalidWBO},
		{"not json", `{"id":`, WBO{}, ErrMalformedJSON},
		{"trailing garbage", `{"id":"a"} x`, WBO{}, ErrMalformedJSON},
		{"empty", ``, WBO{}, ErrMalformedJSON},
		{"bad escape", `{"id":"\x"}`, WBO{}, ErrMalformedJSON},
		{"control char", "{\"id\":\"a\x01\"}", WBO{}, ErrMalformedJSON},
		{"bad number", `{"id":01}`, WBO{}, ErrMalformedJSON},
		{"single quotes", `{'id':'a'}`, WBO{}, ErrMalformedJSON},
		{"trailing comma", `{"id":"a",}`, WBO{}, ErrMalformedJSON},
		{"unclosed nested", `{"x":[1,2}`, WBO{}, ErrMalformedJSON},
		{"syntax error after invalid value", `{"x":[1],"y":}`, WBO{}, ErrMalformedJSON},
		{"escapes", `{"id":"a\"b\\c\/d\n\u00e9\ud83d\ude00"}`, WBO{ID: "a\"b\\c/d\né😀"}, nil},
		{"lone surrogate", `{"id":"\ud800x"}`, WBO{ID: "\uFFFDx"}, nil},
		{"invalid utf8 replaced", "{\"id\":\"a\xffb\"}", WBO{ID: "a\uFFFDb"}, nil},
		{"duplicate key last wins", `{"id":"a","id":"b"}`, WBO{ID: "b"}, nil},
		// Order of checks: parentid, id, predecessorid, ttl, sortindex, payload.
		{"order parentid before id", `{"id":"` + long + `x","parentid":"` + long + `x"}`, WBO{}, ErrInvalidParentID},
		{"order id before predecessorid", `{"id":"` + long + `x","predecessorid":"` + long + `x"}`, WBO{}, ErrInvalidID},
		{"order predecessorid before ttl", `{"predecessorid":"` + long + `x","ttl":-1}`, WBO{}, ErrInvalidPredecessorID},
		{"order ttl before sortindex", `{"ttl":-1,"sortindex":"x"}`, WBO{}, ErrInvalidTTL},
		{"order sortindex before payload", `{"sortindex":"x","payload":1}`, WBO{}, ErrInvalidSortIndex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeWBO([]byte(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWBOErrorStrings(t *testing.T) {
	want := map[error]string{
		ErrInvalidWBO: "invalid wbo", ErrInvalidID: "invalid id", ErrInvalidParentID: "invalid parentid",
		ErrInvalidPredecessorID: "invalid predecessorid", ErrInvalidTTL: "invalid ttl",
		ErrInvalidSortIndex: "invalid sortindex", ErrPayloadNotString: "payload not a string",
		ErrPayloadTooLarge: "payload too large", ErrRetryWBO: "retry wbo", ErrRetryBytes: "retry bytes",
	}
	for err, s := range want {
		if err.Error() != s {
			t.Errorf("%q != %q", err.Error(), s)
		}
	}
}

func TestDecodeBatch(t *testing.T) {
	in := `[{"id":"a","payload":"x"}, 5, {"payload":"y"}, {"id":"b","sortindex":"q"}, {"id":"c","x":[]}, {"id":7}]`
	got, err := DecodeBatch([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []BatchEntry{
		{WBO: WBO{ID: "a", Payload: "x", Has: FieldPayload}},
		{Err: ErrInvalidWBO},
		{Err: ErrInvalidID},
		{WBO: WBO{ID: "b"}, Err: ErrInvalidSortIndex},
		{Err: ErrInvalidWBO},
		{WBO: WBO{ID: "7"}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, tt := range []struct {
		in  string
		err error
	}{
		{`[]`, nil}, {` [ ] `, nil}, {`[`, ErrMalformedJSON}, {`[1,]`, ErrMalformedJSON},
		{`[{"id":"a"}`, ErrMalformedJSON}, {`{"id":"a"}`, ErrNotArray}, {`"x"`, ErrNotArray},
		{`{"id":"a"`, ErrMalformedJSON}, {`[{"id":"a"}] [`, ErrMalformedJSON}, {``, ErrMalformedJSON},
	} {
		if _, err := DecodeBatch([]byte(tt.in)); !errors.Is(err, tt.err) {
			t.Errorf("DecodeBatch(%q) err = %v, want %v", tt.in, err, tt.err)
		}
	}
}

func TestAppendWBOJSON(t *testing.T) {
	tests := []struct {
		w    WBO
		want string
	}{
		{WBO{ID: "a", Modified: 127810983990, Payload: "p", Has: FieldPayload}, `{"id":"a","modified":1278109839.90,"payload":"p"}`},
		{WBO{ID: "a"}, `{"id":"a"}`},
		{WBO{ID: "a", Modified: 5, SortIndex: -3, ParentID: "x", PredecessorID: "y", TTL: 9,
			Has: FieldSortIndex | FieldParentID | FieldPredecessorID | FieldTTL},
			`{"id":"a","modified":0.05,"sortindex":-3,"parentid":"x","predecessorid":"y"}`},
		{WBO{ID: "q\"\\\n\r\t\x01\x1f<>&é\u2028\u2029😀\xff", Payload: "", Has: FieldPayload},
			`{"id":"q\"\\\n\r\t\u0001\u001f<>&é\u2028\u2029😀\ufffd","payload":""}`},
	}
	for _, tt := range tests {
		got := string(AppendWBOJSON(nil, tt.w))
		if got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("invalid JSON %s", got)
		}
	}
}

// TestAppendJSONStringMatchesEncodingJSON compares the escaper with
// encoding/json (without HTML escaping) on awkward inputs.
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	inputs := []string{"", "plain", "\x00\x07\x08\x0c\x7f", "a\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "日本語", "\u2028x\u2029"}
	for c := 0; c < 256; c++ {
		inputs = append(inputs, string([]byte{byte(c)}))
		// The byte at every offset of a longer plain run (word-at-a-time path).
		for at := 0; at < 20; at++ {
			b := []byte(strings.Repeat("abcdefgh", 3))
			b[at] = byte(c)
			inputs = append(inputs, string(b))
		}
	}
	for _, s := range inputs {
		var sb strings.Builder
		enc := json.NewEncoder(&sb)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(sb.String(), "\n")
		var back1, back2 string
		got := string(AppendJSONString(nil, s))
		if got != want {
			t.Errorf("%q: got %s, encoding/json gives %s", s, got, want)
		}
		if err := json.Unmarshal([]byte(got), &back1); err != nil {
			t.Fatalf("%q: %v", got, err)
		}
		_ = json.Unmarshal([]byte(want), &back2)
		if back1 != back2 {
			t.Errorf("%q: decoded %q, encoding/json gives %q", s, back1, back2)
		}
	}
}

func batchBody(n, payload int) []byte {
	var b strings.Builder
	b.WriteByte('[')
	p := strings.Repeat("A", payload)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"rec%09d","payload":"{\"ciphertext\":\"%s\",\"IV\":\"abc\"}","sortindex":%d,"ttl":5184000}`, i, p, i)
	}
	b.WriteByte(']')
	return []byte(b.String())
}

func BenchmarkDecodeBatch100(b *testing.B) {
	body := batchBody(100, 300)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		entries, err := DecodeBatch(body)
		if err != nil || len(entries) != 100 || entries[99].Err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendWBOJSON(b *testing.B) {
	w := WBO{ID: "abcdefghijkl", Modified: 127810983990, SortIndex: 100,
		Payload: `{"ciphertext":"` + strings.Repeat("Zm9vYmFy", 50) + `","IV":"aXY=","hmac":"0123456789abcdef"}`,
		Has:     FieldPayload | FieldSortIndex}
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	b.SetBytes(100 * int64(len(AppendWBOJSON(nil, w))))
	for b.Loop() {
		buf = buf[:0]
		for range 100 {
			buf = AppendWBOJSON(buf, w)
		}
	}
}
