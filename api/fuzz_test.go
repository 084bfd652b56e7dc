package api

import (
	"encoding/json"
	"errors"
	"math/big"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func FuzzDecodeWBO(f *testing.F) {
	for _, s := range []string{
		`{"id":"abc","payload":"p","sortindex":5,"parentid":"x","predecessorid":"y","ttl":10}`,
		`{"id":12,"sortindex":"5.5","ttl":"60"}`,
		`{"id":"a\"b\\c\u00e9\ud83d\ude00\ud800","payload":""}`,
		`{"id":["1"],"payload":"x"}`, `"notawbo"`, `42`, `[{"id":"a"},5]`, `{"id":`, `{"payload":{"a":[1,{}]}}`,
		`{"sortindex":1234567890123}`, `{"sortindex":-1e400}`, `{"ttl":31536001}`, "{\"id\":\"\xff\"}",
		`{"id":"a","id":null}`, ` { } `, `[]`, `[[[]]]`, `{"a":[[[[{"b":{}}]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		valid := json.Valid(raw)
		w, err := DecodeWBO(raw)
		if errors.Is(err, ErrMalformedJSON) == valid {
			t.Fatalf("json.Valid = %v but err = %v for %q", valid, err, raw)
		}
		_, berr := DecodeBatch(raw)
		if errors.Is(berr, ErrMalformedJSON) == valid {
			t.Fatalf("json.Valid = %v but batch err = %v for %q", valid, berr, raw)
		}
		if err != nil {
			var we WBOError
			if !errors.Is(err, ErrMalformedJSON) && !errors.As(err, &we) {
				t.Fatalf("unexpected error type %T %v", err, err)
			}
			return
		}
		if len(w.ID) > MaxIDBytes || len(w.ParentID) > MaxIDBytes || len(w.PredecessorID) > MaxIDBytes ||
			len(w.Payload) > MaxPayloadBytes || w.SortIndex < MinSortIndex || w.SortIndex > MaxSortIndex ||
			w.TTL < 0 || w.TTL > MaxTTLSeconds {
			t.Fatalf("limits broken: %+v", w)
		}
		enc := AppendWBOJSON(nil, w)
		if !json.Valid(enc) {
			t.Fatalf("invalid output %q", enc)
		}
		// The encoding/json view of our output has the same fields.
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(string(enc)))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if m["id"] != w.ID {
			t.Fatalf("id %q vs %q", m["id"], w.ID)
		}
		if w.Has&FieldPayload != 0 && m["payload"] != w.Payload {
			t.Fatalf("payload %q vs %q", m["payload"], w.Payload)
		}
		// Decoding our output again gives the same record (ttl is not output).
		w2, err := DecodeWBO(enc)
		if err != nil {
			t.Fatalf("re-decode %q: %v", enc, err)
		}
		w.TTL, w.Has = 0, w.Has&^FieldTTL
		if w2 != w {
			t.Fatalf("round trip %+v != %+v", w2, w)
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"", "ids=a,b&full=1", "newer=1.5&older=2", "limit=3&offset=2", "limit=-1&offset=5", "sort=index",
		"index_above=1e3&index_below=x", "limit=99999999999999999999", "newer=", "ids=&parentid=1&predecessorid=",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, forDelete bool) {
		v, _ := url.ParseQuery(raw)
		q, err := ParseQuery(v, forDelete)
		if err != nil {
			if !errors.Is(err, ErrBadQuery) || q != nil {
				t.Fatalf("err %v q %v", err, q)
			}
			return
		}
		if q.Limit < 0 || q.Offset < 0 || (q.Offset > 0 && q.Limit == 0) {
			t.Fatalf("limit %d offset %d", q.Limit, q.Offset)
		}
		if forDelete && q.Full {
			t.Fatal("full on delete")
		}
		if q.Sort > SortIndex {
			t.Fatalf("sort %d", q.Sort)
		}
		for _, id := range q.IDs {
			if id == "" || strings.Contains(id, ",") {
				t.Fatalf("id %q", id)
			}
		}
	})
}

var plainDecimal = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$`)

func FuzzParseStamp(f *testing.F) {
	for _, s := range []string{"12", "12.5", "1278109839.123456", "-3.2", "1e3", "0.125", "0.135", ".5", "", "abc", "1e999", "+.01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseStamp(s)
		if err != nil {
			if !errors.Is(err, ErrBadStamp) {
				t.Fatalf("err %v", err)
			}
			return
		}
		back, err := ParseStamp(st.String())
		if err != nil || back != st {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, int64(st), st.String(), int64(back), err)
		}
		// Compare with exact decimal arithmetic, half to even.
		text := strings.TrimSpace(s)
		if !plainDecimal.MatchString(text) {
			return
		}
		r, ok := new(big.Rat).SetString(strings.TrimPrefix(text, "+"))
		if !ok {
			return
		}
		r.Mul(r, big.NewRat(100, 1))
		want := roundHalfEven(r)
		if !want.IsInt64() || want.Int64() != int64(st) {
			t.Fatalf("%q: got %d, want %s", s, int64(st), want)
		}
	})
}

func roundHalfEven(r *big.Rat) *big.Int {
	num, den := new(big.Int).Set(r.Num()), r.Denom()
	neg := num.Sign() < 0
	num.Abs(num)
	q, m := new(big.Int).QuoRem(num, den, new(big.Int))
	twice := new(big.Int).Mul(m, big.NewInt(2))
	switch c := twice.Cmp(den); {
	case c > 0, c == 0 && q.Bit(0) == 1:
		q.Add(q, big.NewInt(1))
	}
	if neg {
		q.Neg(q)
	}
	return q
}
