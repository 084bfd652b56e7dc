package node

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node/revtree"
)

// openFixture opens a copy of the format fixture in testdata/name (see
// fixture_gen_test.go) with node id id, and returns it with what its
// writer read back.
func openFixture(t *testing.T, name, id string) (*Store, Config, fixture) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name + "/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var want fixture
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/"+name+"/db")); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.NodeID = id
	cfg.MinFreeBytes = -1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, cfg, want
}

// TestReadsFormat3 opens stores written by the code before ancestor keys
// (documents of version 3, older hashes in history keys) and checks that
// the current code reads every document, record and changes row as that
// code did; that client writes on one copy and their replication to
// another carry the documents over to the current layout (no history key
// left, one ancestor key per older revision of a single path) without
// losing a revision; that the copies then stay identical through
// conflicting writes and a restart; and that a new replica pulling from
// the old layout ends identical.
func TestReadsFormat3(t *testing.T) {
	testReadsFormat(t, "format3", tagHist)
}

// TestReadsFormat4 does the same with stores written by the code before
// documents kept a tail (documents of version 4: the leaf alone, every
// older hash in ancestor keys).
func TestReadsFormat4(t *testing.T) {
	testReadsFormat(t, "format4", tagAnc)
}

// testReadsFormat runs TestReadsFormat3's checks on fixture name, whose
// documents must have keys with tag old (the layout it tests).
func testReadsFormat(t *testing.T, name string, old byte) {
	s, cfg, want := openFixture(t, name, "fixture-node")
	if got := readFixture(t, s); !reflect.DeepEqual(got, want) {
		gb, _ := json.MarshalIndent(got, "", " ")
		t.Fatalf("the current code reads the fixture differently:\n%.3000s", gb)
	}
	u := fixtureUser
	if n := rawPrefixKeys(t, s, userTag(nil, keyOf(t, s, u), old)); n == 0 {
		t.Fatalf("the fixture holds no key with tag %q: it does not test the old layout", old)
	}
	// A new replica pulls everything from the old layout.
	ncfg := cfg
	ncfg.Dir = t.TempDir()
	ncfg.NodeID = "new-node"
	n, err := Open(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	pull(t, s, n, u)
	sameDocs(t, u, s, n)

	// A client write on every document of one copy, replicated to another
	// copy of the old layout.
	r, _, _ := openFixture(t, name, "replica-node")
	for _, d := range want.Docs {
		mustPut(t, s, u, d.Coll, testkit.WBO(d.ID, "new "+d.ID))
	}
	pull(t, s, r, u)
	sameDocs(t, u, s, r)
	// Every old revision is still on its path, and the ancestor keys are
	// one per older revision of a single path.
	check := func(st *Store, what string) {
		t.Helper()
		if n := rawPrefixKeys(t, st, userTag(nil, keyOf(t, st, u), tagHist)); n != 0 {
			t.Fatalf("%s: %d history keys left after every document changed", what, n)
		}
		anc := 0
		for _, d := range want.Docs {
			doc, err := st.GetDoc(ctx, u, d.Coll, d.ID)
			if err != nil {
				t.Fatalf("%s: %s/%s: %v", what, d.Coll, d.ID, err)
			}
			win, _ := doc.Tree.Winner()
			for _, l := range d.Leaves {
				rev, err := revtree.ParseRev(l.Rev)
				if err != nil {
					t.Fatal(err)
				}
				oldest := rev.Pos - uint64(len(l.Path)) + 1
				if win.Rev.Pos-oldest >= uint64(cfg.withDefaults().RevsLimit) {
					continue // stemmed past the limit since
				}
				var h [revtree.HashLen]byte
				hex.Decode(h[:], []byte(l.Path[len(l.Path)-1]))
				if !doc.Tree.Contains(revtree.Rev{Pos: oldest, Hash: h}) {
					t.Fatalf("%s: %s/%s lost revision %d of leaf %s", what, d.Coll, d.ID, oldest, l.Rev)
				}
			}
			if p, _ := doc.Tree.PathTo(win.Rev, 0); len(doc.Tree.Leaves()) == 1 && len(p.IDs) == doc.Tree.Len() {
				// A single path: one ancestor key per chunk of the
				// positions before the leaf and its tail.
				anc += ancestorChunks(t, st, u, d.Coll, d.ID, win.Rev.Pos, doc.Tree.Len())
			}
		}
		if n := rawPrefixKeys(t, st, userTag(nil, keyOf(t, st, u), tagAnc)); n != anc {
			t.Fatalf("%s: %d ancestor keys, want %d", what, n, anc)
		}
		t.Logf("%s: %d ancestor keys", what, anc)
	}
	check(s, "written copy")
	check(r, "replicated copy")
	// Conflicting writes on both copies, pulled both ways.
	for _, d := range want.Docs {
		mustPut(t, s, u, d.Coll, testkit.WBO(d.ID, "again "+d.ID))
		mustPut(t, r, u, d.Coll, testkit.WBO(d.ID, "replica "+d.ID))
	}
	pull(t, r, s, u)
	pull(t, s, r, u)
	sameDocs(t, u, s, r)
	check(s, "after conflicts")
	// And after a restart.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s, "after a restart")
	sameDocs(t, u, s, r)
	pull(t, s, n, u)
	sameDocs(t, u, s, n)
	if got := mustGet(t, s, u, "d", api.Query{HasIDs: true, IDs: []string{"deep0"}, Full: true}); len(got) != 1 || got[0].Payload != "again deep0" && got[0].Payload != "replica deep0" {
		t.Fatalf("deep0 after the writes: %+v", got)
	}
}

// ancestorChunks returns how many ancestor keys single-path document
// coll/id (leaf at position pos, n revisions) should have, after checking
// that its stored document keeps a tail of at most ancTail ancestors above
// them and that the keys' range starts at its oldest revision.
func ancestorChunks(t *testing.T, s *Store, user, coll, id string, pos uint64, n int) int {
	t.Helper()
	states, _, err := s.loadStates(user, keyOf(t, s, user), []DocRef{{Coll: coll, ID: id}})
	if err != nil || states[0] == nil {
		t.Fatalf("%s/%s: %v", coll, id, err)
	}
	ds := states[0]
	if ds.lin.n != n || ds.lin.start != pos {
		t.Fatalf("%s/%s: stored path %d of %d revisions, want %d of %d", coll, id, ds.lin.start, ds.lin.n, pos, n)
	}
	tail, h := ds.tail(), ds.hist
	if tail < 0 || tail > ancTail || ds.lin.known() != 1+tail {
		t.Fatalf("%s/%s: tail of %d ancestors, %d hashes in the document", coll, id, tail, ds.lin.known())
	}
	if h.hi == 0 {
		if tail != n-1 {
			t.Fatalf("%s/%s: no ancestor keys, but a tail of %d of %d revisions", coll, id, tail, n)
		}
		return 0
	}
	if h.lo != pos-uint64(n)+1 || h.hi != pos-1-uint64(tail) {
		t.Fatalf("%s/%s: ancestor keys for %d-%d, path %d of %d, tail %d", coll, id, h.lo, h.hi, pos, n, tail)
	}
	return int(h.hi/ancChunk - h.lo/ancChunk + 1)
}
