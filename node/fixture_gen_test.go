package node

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node/revtree"
)

// The format fixture: node/testdata/format3 holds a store written by the
// code of commit 324b7b5 (document version 3: recent revision hashes in
// the document, older ones in one history key per document), and what
// that code read back from it (expected.json). TestReadsFormat3 opens a
// copy with the current code. TestWriteFormatFixture made it; it uses
// only the exported API, so it builds against either version:
//
//	git archive 324b7b5 | tar -x -C /tmp/old
//	cp node/fixture_gen_test.go /tmp/old/node/
//	cd /tmp/old && HCE_WRITE_FIXTURE=$PWD/../fixture go test -run TestWriteFormatFixture ./node/
//
// then copy /tmp/fixture into node/testdata/format3. node/testdata/format4
// (document version 4: the leaf alone in the document, every older hash
// in ancestor keys; TestReadsFormat4) was written the same way by the code
// of commit 3e426c6.

// fixtureUser is the user the fixture's documents belong to.
const fixtureUser = "fx"

// fixtureLeaf is one leaf of a document as the writing code read it.
type fixtureLeaf struct {
	Rev     string   `json:"rev"`
	Deleted bool     `json:"deleted"`
	Path    []string `json:"path"` // hashes, newest first
	Body    Body     `json:"body"`
}

// fixtureDoc is one document as the writing code read it.
type fixtureDoc struct {
	Coll   string        `json:"coll"`
	ID     string        `json:"id"`
	Seq    uint64        `json:"seq"`
	Leaves []fixtureLeaf `json:"leaves"` // winner first
}

// fixtureRecord is one Weave record as the writing code served it.
type fixtureRecord struct {
	ID        string `json:"id"`
	Payload   string `json:"payload"`
	SortIndex int64  `json:"sortindex"`
	Modified  int64  `json:"modified"`
	Has       int    `json:"has"`
}

// fixture is expected.json.
type fixture struct {
	Docs    []fixtureDoc               `json:"docs"`
	Records map[string][]fixtureRecord `json:"records"` // by collection
	Seq     uint64                     `json:"seq"`
}

// fixtureRevs returns a peer's revisions: a single path of n revisions of
// coll/id (hashes that verify), and a branch of k conflicting leaves off
// its second revision.
func fixtureRevs(coll, id string, n, k int) []Revision {
	var revs []Revision
	var path revtree.Path
	parent := revtree.Rev{}
	for i := range n {
		x := Body{Has: api.FieldPayload, Payload: fmt.Sprintf("peer %s %d", id, i), Origin: "peer-node", OriginTime: 1700000000 + int64(i)}
		h := RevisionHash(coll, id, parent, false, &x)
		path = revtree.Path{Start: parent.Pos + 1, IDs: append([][revtree.HashLen]byte{h}, path.IDs...)}
		revs = append(revs, Revision{Coll: coll, ID: id, Path: path, Body: x})
		parent = path.Leaf()
	}
	base := revs[1].Path
	for j := range k {
		x := Body{Has: api.FieldPayload, Payload: fmt.Sprintf("branch %s %d", id, j), Origin: "peer-node", OriginTime: 1700000100 + int64(j)}
		h := RevisionHash(coll, id, base.Leaf(), false, &x)
		p := revtree.Path{Start: base.Start + 1, IDs: append([][revtree.HashLen]byte{h}, base.IDs...)}
		revs = append(revs, Revision{Coll: coll, ID: id, Path: p, Body: x})
	}
	return revs
}

// writeFixtureStore writes the fixture's documents into s: single paths
// short (embedded, all hashes in the document) and long (embedded, older
// hashes in the history key), 1005 revisions (stemmed at 1000), a
// tombstone with history, records with a ttl, metadata-only updates, a
// replicated path and a replicated tree with conflicts.
func writeFixtureStore(t testing.TB, s *Store) {
	u := fixtureUser
	put := func(coll string, w api.WBO) {
		t.Helper()
		if _, err := s.PutItem(ctx, u, coll, w, api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		put("c", api.WBO{ID: "short", Has: api.FieldPayload, Payload: "short " + strconv.Itoa(i)})
	}
	for i := range 50 {
		put("c", api.WBO{ID: "long", Has: api.FieldPayload | api.FieldSortIndex, Payload: "long " + strconv.Itoa(i), SortIndex: int64(i)})
	}
	for i := range 40 {
		put("c", api.WBO{ID: "gone", Has: api.FieldPayload, Payload: "gone " + strconv.Itoa(i)})
	}
	if _, err := s.DeleteItem(ctx, u, "c", "gone", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		put("c", api.WBO{ID: "ttl", Has: api.FieldPayload | api.FieldTTL, Payload: "ttl " + strconv.Itoa(i), TTL: 10 * 365 * 86400})
	}
	put("d", api.WBO{ID: "meta", Has: api.FieldPayload, Payload: "meta"})
	for i := range 35 {
		put("d", api.WBO{ID: "meta", Has: api.FieldSortIndex | api.FieldParentID, SortIndex: int64(i), ParentID: "p" + strconv.Itoa(i)})
	}
	ws := make([]api.WBO, 2)
	for round := range 1005 {
		for i := range ws {
			ws[i] = api.WBO{ID: "deep" + strconv.Itoa(i), Has: api.FieldPayload, Payload: fmt.Sprintf("deep %d %d", i, round)}
		}
		if _, err := s.PostItems(ctx, u, "d", ws, api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, revs := range [][]Revision{fixtureRevs("e", "peerpath", 40, 0), fixtureRevs("e", "peertree", 3, 3)} {
		errs, err := s.ApplyRevisions(ctx, u, revs, "peer-node", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range errs {
			if e != nil {
				t.Fatal(e)
			}
		}
	}
}

// readFixture reads back what the fixture's documents and records are in
// s, as expected.json holds them.
func readFixture(t testing.TB, s *Store) fixture {
	t.Helper()
	rows, last, err := s.Changes(ctx, fixtureUser, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{Records: map[string][]fixtureRecord{}, Seq: last}
	for _, r := range rows {
		d, err := s.GetDoc(ctx, fixtureUser, r.Coll, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		fd := fixtureDoc{Coll: r.Coll, ID: r.ID, Seq: d.Seq}
		for _, l := range d.Tree.Leaves() {
			rv, ok := d.Revision(l.Rev, 0)
			if !ok {
				t.Fatalf("%s/%s: leaf %s without its revision", r.Coll, r.ID, l.Rev)
			}
			fl := fixtureLeaf{Rev: l.Rev.String(), Deleted: l.Deleted, Body: rv.Body}
			for _, h := range rv.Path.IDs {
				fl.Path = append(fl.Path, hex.EncodeToString(h[:]))
			}
			fd.Leaves = append(fd.Leaves, fl)
		}
		f.Docs = append(f.Docs, fd)
	}
	slices.SortFunc(f.Docs, func(a, b fixtureDoc) int {
		if a.Coll != b.Coll {
			return strings.Compare(a.Coll, b.Coll)
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, coll := range []string{"c", "d", "e"} {
		ws, _, err := api.ReadCollection(ctx, s, fixtureUser, coll, &api.Query{Full: true, Sort: api.SortOldest})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			f.Records[coll] = append(f.Records[coll], fixtureRecord{ID: w.ID, Payload: w.Payload, SortIndex: w.SortIndex, Modified: int64(w.Modified), Has: int(w.Has)})
		}
	}
	return f
}

// TestWriteFormatFixture writes the fixture into $HCE_WRITE_FIXTURE
// (skipped when it is not set): the store, compacted, under db/ (a Pebble
// checkpoint: the live files only), what this code reads back from it in
// expected.json.
func TestWriteFormatFixture(t *testing.T) {
	out := os.Getenv("HCE_WRITE_FIXTURE")
	if out == "" {
		t.Skip("set HCE_WRITE_FIXTURE to a folder to write the format fixture")
	}
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.NodeID = "fixture-node"
	cfg.MinFreeBytes = -1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeFixtureStore(t, s)
	f := readFixture(t, s)
	if err := s.db.Compact(ctx, []byte{0}, []byte{0xff}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Checkpoint(filepath.Join(out, "db"), pebble.WithFlushedWAL()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "expected.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
