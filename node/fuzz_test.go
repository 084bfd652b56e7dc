package node

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node/revtree"
)

var (
	fuzzStoreOnce sync.Once
	fuzzStore     *Store
	fuzzUser      atomic.Int64
)

// FuzzApplyRevisions feeds revisions built from the fuzzer's bytes — paths
// over a tiny hash alphabet, so hashes repeat, tombstones, stemmed and
// contradicting paths — to ApplyRevisions, as a peer could, then reads
// every document back (GetDocs, RevsDiff, the changes feed) and makes a
// local edit of each: nothing may panic, and every stored document must
// read back with a winner that is one of its leaves.
func FuzzApplyRevisions(f *testing.F) {
	f.Add([]byte{3, 1, 2, 3, 0, 2, 2, 1, 1, 4, 3, 1, 2, 1, 0})
	f.Add([]byte{2, 7, 7, 0, 3, 1, 7, 1, 1, 2, 7, 0, 0, 5, 1, 2, 3, 4, 5, 1})
	dir := f.TempDir()
	f.Cleanup(func() {
		if fuzzStore != nil {
			fuzzStore.Close()
		}
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzStoreOnce.Do(func() {
			var err error
			cfg := DefaultConfig()
			cfg.Dir = dir
			cfg.RevsLimit = 4
			cfg.CacheBytes = 8 << 20
			cfg.MemTableBytes = 2 << 20
			if fuzzStore, err = Open(cfg); err != nil {
				panic(err)
			}
		})
		s := fuzzStore
		user := fmt.Sprintf("f%d", fuzzUser.Add(1))
		src := &fuzzBytes{b: data}
		var revs []Revision
		for len(src.b) > 0 && len(revs) < 16 {
			n := 1 + src.next()%5
			p := revtree.Path{Start: uint64(src.next() % 8), Deleted: src.next()%3 == 0}
			for range n {
				p.IDs = append(p.IDs, [revtree.HashLen]byte{byte(src.next() % 3)})
			}
			r := Revision{Coll: "c", ID: []string{"a", "b"}[src.next()%2], Path: p}
			if !p.Deleted {
				r.Body = Body{Has: api.FieldPayload, Payload: fmt.Sprint(src.next())}
			}
			revs = append(revs, r)
		}
		for i := 0; i < len(revs); i += 3 {
			if _, err := s.ApplyRevisions(ctx, user, revs[i:min(i+3, len(revs))], "peer", nil); err != nil {
				t.Fatal(err)
			}
		}
		docs, err := s.GetDocs(ctx, user, []DocRef{{"c", "a"}, {"c", "b"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			if d == nil {
				continue
			}
			w, ok := d.Tree.Winner()
			if !ok || !d.Tree.IsLeaf(w.Rev) {
				t.Fatalf("%s: winner %v %v", d.ID, w, ok)
			}
			if _, err := s.RevsDiff(ctx, user, []DocRevs{{Coll: "c", ID: d.ID, Revs: []revtree.Rev{w.Rev}}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.Changes(ctx, user, 0, 0); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"a", "b"} {
			if _, err := s.PutItem(ctx, user, "c", testkit.WBO(id, "local"), api.Precondition{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.GetDocs(ctx, user, []DocRef{{"c", "a"}, {"c", "b"}}); err != nil {
			t.Fatal(err)
		}
	})
}

type fuzzBytes struct{ b []byte }

func (f *fuzzBytes) next() int {
	if len(f.b) == 0 {
		return 0
	}
	v := int(f.b[0])
	f.b = f.b[1:]
	return v
}
