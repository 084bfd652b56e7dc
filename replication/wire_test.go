package replication

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

func testRev(pos uint64, b byte) revtree.Rev {
	r := revtree.Rev{Pos: pos}
	for i := range r.Hash {
		r.Hash[i] = b + byte(i)
	}
	return r
}

func sampleMessages() []Message {
	r1, r2 := testRev(1, 1), testRev(2, 7)
	return []Message{
		&ChangesRequest{User: "alice", Since: 12345, Limit: 500},
		&ChangesRequest{User: "u", Since: 0, Limit: 0},
		&ChangesResponse{Source: "uuid-1", Last: 99, More: true, Rows: []ChangeRow{
			{Coll: "bookmarks", ID: "abc", Leaves: []revtree.Rev{r2, r1}, Deleted: true},
			{Coll: "tabs", ID: "x_y-z", Leaves: []revtree.Rev{r1}},
		}},
		&ChangesResponse{Source: "s"},
		&ChangesResponse{Source: "s", Last: 7, Final: true},
		&SeqsRequest{Users: []string{"a", "b", "ccc"}},
		&SeqsResponse{Source: "s", Seqs: []uint64{0, 1, 1 << 40}},
		&FetchRequest{User: "alice", Docs: []FetchDoc{{Coll: "c", ID: "i", Revs: []revtree.Rev{r1, r2}}}},
		&FetchResponse{Done: 1, Revisions: []node.Revision{
			{Coll: "c", ID: "i", Path: revtree.Path{Start: 2, IDs: [][revtree.HashLen]byte{r2.Hash, r1.Hash}},
				Body: node.Body{Has: api.FieldPayload | api.FieldSortIndex, Payload: "héllo", SortIndex: -5, Expiry: 1700000000, Origin: "node0", OriginTime: 170000000000}},
			{Coll: "c", ID: "j", Path: revtree.Path{Start: 1, IDs: [][revtree.HashLen]byte{r1.Hash}, Deleted: true}, Body: node.Body{Origin: "o"}},
		}},
		&Notice{Users: []UserSeq{{User: "alice", Seq: 3}, {User: "bob", Seq: 0}}},
		&NoticeAck{},
		&SyncRequest{User: "alice", Seq: 42},
		&SyncResponse{},
	}
}

func TestWireRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b := Encode(m)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%T: round trip\n got %+v\nwant %+v", m, got, m)
		}
		for i := range len(b) - 1 {
			if _, err := Decode(b[:i]); err == nil && i != len(b) {
				// A prefix may be a valid shorter message only by chance;
				// messages here all end with a field that makes it fail.
				if _, ok := m.(*NoticeAck); !ok {
					t.Errorf("%T: prefix of %d bytes decoded", m, i)
				}
			}
		}
	}
}

func TestWireStrict(t *testing.T) {
	valid := Encode(&ChangesRequest{User: "u", Since: 1, Limit: 2})
	uv := func(x uint64) []byte { return binary.AppendUvarint(nil, x) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	hash := bytes.Repeat([]byte{9}, revtree.HashLen)
	cases := map[string][]byte{
		"empty":            nil,
		"version 1":        append([]byte{1}, valid[1:]...),
		"version 3":        append([]byte{3}, valid[1:]...),
		"type":             {WireVersion, 99},
		"trailing":         append(append([]byte(nil), valid...), 0),
		"non-minimal":      cat([]byte{WireVersion, typeChangesReq}, uv(1), []byte("u"), []byte{0x81, 0x00}, uv(2)),
		"limit over":       Encode(&ChangesRequest{User: "u", Limit: MaxRows + 1}),
		"empty user":       cat([]byte{WireVersion, typeChangesReq}, uv(0), uv(0), uv(0)),
		"NUL in user":      Encode(&ChangesRequest{User: "a\x00b"}),
		"bad utf8 user":    Encode(&ChangesRequest{User: "\xff"}),
		"huge row count":   cat([]byte{WireVersion, typeChangesResp}, uv(1), []byte("s"), uv(1<<40)),
		"rows beyond data": cat([]byte{WireVersion, typeChangesResp}, uv(1), []byte("s"), uv(5), uv(0), uv(0)),
		"bad bool":         cat([]byte{WireVersion, typeChangesResp}, uv(1), []byte("s"), uv(0), uv(0), []byte{2}),
		"bad final":        cat([]byte{WireVersion, typeChangesResp}, uv(1), []byte("s"), uv(0), uv(0), []byte{0, 2}, uv(0)),
		"row no leaves":    cat([]byte{WireVersion, typeChangesResp}, uv(1), []byte("s"), uv(1), uv(1), []byte("c"), uv(1), []byte("i"), []byte{0}, uv(0), hash, uv(0), []byte{0}),
		"bad coll":         Encode(&FetchRequest{User: "u", Docs: []FetchDoc{{Coll: "a/b", ID: "i", Revs: []revtree.Rev{testRev(1, 0)}}}}),
		"long id":          Encode(&FetchRequest{User: "u", Docs: []FetchDoc{{Coll: "c", ID: strings.Repeat("x", 65), Revs: []revtree.Rev{testRev(1, 0)}}}}),
		"rev pos 0":        Encode(&FetchRequest{User: "u", Docs: []FetchDoc{{Coll: "c", ID: "i", Revs: []revtree.Rev{testRev(0, 0)}}}}),
		"empty path":       Encode(&FetchResponse{Done: 1, Revisions: []node.Revision{{Coll: "c", ID: "i"}}}),
		"start below ids":  Encode(&FetchResponse{Done: 1, Revisions: []node.Revision{{Coll: "c", ID: "i", Path: revtree.Path{Start: 1, IDs: make([][16]byte, 2)}}}}),
		"body bits":        Encode(&FetchResponse{Done: 1, Revisions: []node.Revision{{Coll: "c", ID: "i", Path: revtree.Path{Start: 1, IDs: make([][16]byte, 1)}, Body: node.Body{Has: api.FieldTTL}}}}),
		"big payload":      Encode(&FetchResponse{Done: 1, Revisions: []node.Revision{{Coll: "c", ID: "i", Path: revtree.Path{Start: 1, IDs: make([][16]byte, 1)}, Body: node.Body{Has: api.FieldPayload, Payload: strings.Repeat("p", api.MaxPayloadBytes+1)}}}}),
		"too many users":   Encode(&SeqsRequest{Users: strings.Split(strings.Repeat("u,", MaxUsers)+"u", ",")}),
	}
	for name, b := range cases {
		if m, err := Decode(b); err == nil {
			t.Errorf("%s: decoded %+v", name, m)
		} else if !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: error %v does not wrap ErrBadMessage", name, err)
		}
	}
}

// FuzzDecode checks that Decode never panics, and that what it accepts is
// canonical: encoding the decoded message gives back the input.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(Encode(m))
	}
	f.Add([]byte{WireVersion, typeChangesResp, 1, 's', 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Decode(in)
		if err != nil {
			return
		}
		if out := Encode(m); !bytes.Equal(out, in) {
			t.Fatalf("not canonical: %x re-encodes as %x", in, out)
		}
	})
}
