package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/bincode"
	"github.com/hce-sync/hce/api/testkit"
)

// encodeList encodes ws as the storage handler does.
func encodeList(f api.Format, ws []api.WBO, full bool) []byte {
	b := api.AppendListStart(nil, f)
	for i := range ws {
		b = api.AppendListElem(b, f, i == 0, func(b []byte) []byte {
			if full {
				return api.AppendWBOJSON(b, ws[i])
			}
			return api.AppendJSONString(b, ws[i].ID)
		})
	}
	return api.AppendListEnd(b, f)
}

// TestPlainHintsMatchEscaping checks that the records a collection GET
// streams, encoded with the plain hints the store sets, give byte for byte
// what encoding them without hints (scanning every string) gives, for
// records that need escaping and records that do not.
func TestPlainHintsMatchEscaping(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	tricky := []string{"plain", `q"uote`, `back\slash`, "tab\there", "ctl\x01", "é-utf8", "sep\u2028", "bad\xffutf8", "del\x7f", "<html>&", ""}
	var ws []api.WBO
	for i, p := range tricky {
		w := testkit.WBO("id"+strconv.Itoa(i), p)
		if i%2 == 0 {
			w.Has |= api.FieldSortIndex
			w.SortIndex = int64(i*7 - 20)
		}
		if i%3 == 0 {
			w.Has |= api.FieldParentID | api.FieldPredecessorID
			w.ParentID, w.PredecessorID = tricky[(i+1)%len(tricky)], "pred"+strconv.Itoa(i)
		}
		ws = append(ws, w)
	}
	ws = append(ws, api.WBO{ID: `odd"id\`, Has: api.FieldPayload, Payload: "x"})
	mustPost(t, s, "u", "c", ws...)
	mustPut(t, s, "u", "c", api.WBO{ID: "nopayload", Has: api.FieldSortIndex, SortIndex: 3})
	queries := []*api.Query{
		{Full: true},
		{},
		nil,
		{Full: true, Limit: 3, Offset: 2},
		{Full: true, Sort: api.SortIndex},
		{Full: true, HasIDs: true, IDs: []string{"id3", `odd"id\`, "missing"}},
	}
	hinted := 0
	for _, q := range queries {
		var got []api.WBO
		err := s.GetCollection(ctx, "u", "c", q, func(int, api.Stamp) error { return nil }, func(w *api.WBO) error {
			c := *w
			c.ID, c.Payload, c.ParentID, c.PredecessorID = strings.Clone(w.ID), strings.Clone(w.Payload), strings.Clone(w.ParentID), strings.Clone(w.PredecessorID)
			got = append(got, c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		plain := make([]api.WBO, len(got))
		for i, w := range got {
			if w.Plain != 0 {
				hinted++
			}
			w.Plain = 0
			plain[i] = w
		}
		full := q != nil && q.Full
		for _, f := range []api.Format{api.FormatJSON, api.FormatNewlines, api.FormatWhoisi} {
			if a, b := encodeList(f, got, full), encodeList(f, plain, full); !bytes.Equal(a, b) {
				t.Errorf("%+v format %d:\n%q\nwithout hints:\n%q", q, f, a, b)
			}
		}
	}
	if hinted == 0 {
		t.Error("no record carried a plain hint")
	}
	err := s.GetCollection(ctx, "u", "", &api.Query{}, func(int, api.Stamp) error { return nil }, func(*api.WBO) error { return nil })
	if !errors.Is(err, ErrBadName) {
		t.Errorf("empty collection name: %v, want ErrBadName", err)
	}
}

func TestRecordCodecVersions(t *testing.T) {
	r := record{seq: 7, mod: 170000000012, exp: 0, si: -3, has: api.FieldPayload | api.FieldSortIndex | api.FieldParentID,
		id: "abc", payload: "pay\"load", parent: "p"}
	v := appendRecord(nil, &r)
	if v[0] != verRecord {
		t.Fatalf("version byte %d, want %d", v[0], verRecord)
	}
	var got record
	if err := decodeRecord(v, &got); err != nil {
		t.Fatal(err)
	}
	want := r
	want.plain = plainID | plainParent | plainPred
	if got != want {
		t.Fatalf("round trip: got %+v, want %+v", got, want)
	}
	// A version-1 record (no plain flags) is still read.
	v1 := []byte{verRecord1, byte(r.has)}
	v1 = binary.AppendUvarint(v1, r.seq)
	v1 = binary.AppendVarint(v1, r.mod)
	v1 = binary.AppendVarint(v1, r.exp)
	v1 = binary.AppendVarint(v1, r.si)
	for _, s := range []string{r.id, r.payload, r.parent, r.pred} {
		v1 = bincode.AppendString(v1, s)
	}
	var old record
	if err := decodeRecord(v1, &old); err != nil {
		t.Fatal(err)
	}
	if old != r {
		t.Fatalf("version 1: got %+v, want %+v", old, r)
	}
	for _, rec := range []*record{&got, &old} {
		w := viewWBO(rec, true)
		hinted := api.AppendWBOJSON(nil, w)
		w.Plain = 0
		if scanned := api.AppendWBOJSON(nil, w); !bytes.Equal(hinted, scanned) {
			t.Errorf("with plain hints %s, without %s", hinted, scanned)
		}
	}
	for _, bad := range [][]byte{nil, {verRecord}, {verRecord, 1}, {9, 1, 0}, v[:len(v)-1]} {
		if err := decodeRecord(bad, &got); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeRecord(%v) = %v, want errCorrupt", bad, err)
		}
	}
}

func TestJSONPlain(t *testing.T) {
	for _, s := range []string{"", "a", "abcdefgh", "abcdefghi", strings.Repeat("Zz09+/=~ !#", 40), "\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f"} {
		if !jsonPlain(s) {
			t.Errorf("jsonPlain(%q) = false", s)
		}
		if got := string(api.AppendJSONString(nil, s)); got != `"`+s+`"` {
			t.Errorf("plain %q is escaped as %s", s, got)
		}
	}
	for _, bad := range []string{"\"", "\\", "\x00", "\x1f", "\x80", "é", "\u2028"} {
		for _, pos := range []int{0, 3, 7, 8, 15, 16, 21} {
			s := strings.Repeat("a", pos) + bad + strings.Repeat("b", 9)
			if jsonPlain(s) {
				t.Errorf("jsonPlain(%q) = true", s)
			}
		}
	}
}

// decodeRecordRef is the straightforward decoding decodeRecord unrolls:
// one bincode.Decoder read per field.
func decodeRecordRef(v []byte, r *record) error {
	if len(v) < 2 {
		return errCorrupt
	}
	r.has = api.Field(v[1])
	var d bincode.Decoder
	switch v[0] {
	case verRecord:
		if len(v) < 3 {
			return errCorrupt
		}
		r.plain = v[2]
		d = newDecoder(v[3:])
	case verRecord1:
		r.plain = 0
		d = newDecoder(v[2:])
	default:
		return errCorrupt
	}
	r.seq = d.Uvarint()
	r.mod = d.Varint()
	r.exp = d.Varint()
	r.si = d.Varint()
	r.id = alias(d.Bytes(noMax))
	r.payload = alias(d.Bytes(noMax))
	r.parent = alias(d.Bytes(noMax))
	r.pred = alias(d.Bytes(noMax))
	return d.Err()
}

// FuzzDecodeRecord checks that decodeRecord accepts exactly what the
// bincode reading accepts (stored values are read back after a disk or a
// peer could have damaged them) and reads the same record.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []record{
		{seq: 7, mod: 170000000012, si: -3, has: api.FieldPayload | api.FieldSortIndex, id: "abc", payload: "pay\"load", parent: "p"},
		{seq: 1 << 40, mod: -1, exp: 1 << 62, si: 999999999, id: "x", pred: "q"},
		{},
	} {
		v := appendRecord(nil, &r)
		f.Add(v)
		f.Add(v[:len(v)-1])
		v1 := append([]byte{verRecord1}, v[1:2]...)
		f.Add(append(v1, v[3:]...))
	}
	f.Add([]byte{verRecord, 0, 0, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0}) // non-minimal varint
	f.Add([]byte{verRecord, 0, 0, 1, 0, 0, 0, 5, 'a'})              // length past the end
	f.Fuzz(func(t *testing.T, v []byte) {
		var got, want record
		err := decodeRecord(v, &got)
		werr := decodeRecordRef(v, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("decodeRecord(%x): error %v, reference %v", v, err, werr)
		}
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("decodeRecord(%x): %v, want errCorrupt", v, err)
			}
			return
		}
		if got != want {
			t.Fatalf("decodeRecord(%x) = %+v, reference %+v", v, got, want)
		}
	})
}
