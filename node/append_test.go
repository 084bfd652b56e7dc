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

// encodeList encodes ws as the storage handler's GetCollection path does.
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

// TestAppendCollectionMatchesGetCollection checks that the direct encoding
// gives byte for byte what encoding GetCollection's answer gives, for
// records that need escaping and records that do not.
func TestAppendCollectionMatchesGetCollection(t *testing.T) {
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
	queries := []struct {
		coll string
		q    *api.Query
	}{
		{"c", &api.Query{Full: true}},
		{"c", &api.Query{}},
		{"c", nil},
		{"c", &api.Query{Full: true, Limit: 3, Offset: 2}},
		{"c", &api.Query{Full: true, Sort: api.SortIndex}},
		{"c", &api.Query{Full: true, HasIDs: true, IDs: []string{"id3", `odd"id\`, "missing"}}},
		{"missing", &api.Query{Full: true}},
	}
	for _, tc := range queries {
		for _, f := range []api.Format{api.FormatJSON, api.FormatNewlines, api.FormatWhoisi} {
			want, wantNow, err := s.GetCollection(ctx, "u", tc.coll, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			full := tc.q != nil && tc.q.Full
			got, n, now, err := s.AppendCollection(ctx, "u", tc.coll, tc.q, f, []byte("prefix"))
			if err != nil {
				t.Fatal(err)
			}
			wantB := append([]byte("prefix"), encodeList(f, want, full)...)
			if !bytes.Equal(got, wantB) || n != len(want) || now != wantNow {
				t.Errorf("%s %+v format %d: got %d records at %v\n%q\nwant %d at %v\n%q", tc.coll, tc.q, f, n, now, got, len(want), wantNow, wantB)
			}
		}
	}
	if _, _, _, err := s.AppendCollection(ctx, "u", "", &api.Query{}, api.FormatJSON, nil); !errors.Is(err, ErrBadName) {
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
		if a, b := appendRecordJSON(nil, rec), api.AppendWBOJSON(nil, viewWBO(rec)); !bytes.Equal(a, b) {
			t.Errorf("appendRecordJSON = %s, want %s", a, b)
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
