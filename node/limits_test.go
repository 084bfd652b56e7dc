package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node/revtree"
)

// conflictRevs returns n first revisions of coll/id with random hashes
// and payloads of size bytes, as a CouchDB client sends them with
// new_edits=false: each is a conflicting leaf of the others.
func conflictRevs(coll, id string, n, size int) []Revision {
	p := strings.Repeat("c", size)
	revs := make([]Revision, n)
	for i := range revs {
		var h [revtree.HashLen]byte
		rand.Read(h[:])
		revs[i] = Revision{Coll: coll, ID: id, Path: revtree.Path{Start: 1, IDs: [][revtree.HashLen]byte{h}},
			Body: Body{Has: api.FieldPayload, Payload: p}}
	}
	return revs
}

// openWith opens a store in dir with cfg's limits (and the test sizes).
func openWith(t testing.TB, dir string, mod func(*Config)) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.CacheBytes = 8 << 20
	cfg.MemTableBytes = 4 << 20
	if mod != nil {
		mod(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func leafCounts(t testing.TB, s *Store, user, coll, id string) (live, deleted int) {
	t.Helper()
	d, err := s.GetDoc(ctx, user, coll, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range d.Tree.Leaves() {
		if l.Deleted {
			deleted++
		} else {
			live++
		}
	}
	return live, deleted
}

// TestConflictLimits is issue #11's finding 2b: two batches of 200
// conflicting 250 KB revisions of one document were all stored. Now the
// document keeps at most MaxDocBytes (here about 16 such leaves) and
// MaxConflicts conflicts; the rest are refused one by one (replication
// counts them, the CouchDB endpoint answers them as forbidden), and the
// revisions of other documents in the same call are stored.
func TestConflictLimits(t *testing.T) {
	s := openWith(t, t.TempDir(), nil)
	for round := range 2 {
		revs := conflictRevs("c", "x", 200, 250<<10)
		revs = append(revs, conflictRevs("c", fmt.Sprintf("other%d", round), 1, 10)...)
		errs, err := s.ApplyRevisions(ctx, "u", revs, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		refused := 0
		for i, e := range errs {
			switch {
			case e == nil:
			case errors.Is(e, ErrDocTooLarge):
				refused++
			default:
				t.Fatalf("revision %d: %v", i, e)
			}
		}
		if errs[len(errs)-1] != nil || refused < 180 {
			t.Fatalf("round %d: %d refused, other document: %v", round, refused, errs[len(errs)-1])
		}
	}
	d, err := s.GetDoc(ctx, "u", "c", "x")
	if err != nil {
		t.Fatal(err)
	}
	ds := &docState{tree: d.Tree}
	for r, x := range d.Bodies {
		ds.setBody(r, x)
	}
	if size, conf := ds.size(); size > DefaultMaxDocBytes || conf > DefaultMaxConflicts {
		t.Fatalf("document of %d bytes with %d conflicts", size, conf)
	}
	// Small conflicts hit MaxConflicts first.
	errs, err := s.ApplyRevisions(ctx, "u", conflictRevs("c", "small", 40, 100), "peer", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if (i <= DefaultMaxConflicts) != (e == nil) || e != nil && !errors.Is(e, ErrTooManyConflicts) {
			t.Fatalf("small conflict %d: %v", i, e)
		}
	}
	if live, _ := leafCounts(t, s, "u", "c", "small"); live != DefaultMaxConflicts+1 {
		t.Fatalf("%d live leaves", live)
	}
}

// allocated returns the bytes allocated on the Go heap while fn ran.
func allocated(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestWriteOverConflictsIsCheap is the other half of finding 2b: with 200
// conflicting 250 KB leaves on a document (stored before the limits: the
// store is opened with them raised, then reopened with the defaults), each
// Weave PUT of it took 1.9-4.4 s and eight writers pushed RSS to 2.1 GB,
// decoding and re-encoding every leaf. The first client write now
// tombstones the conflicts without decoding their bodies, so it allocates
// far less than the document holds, and the next writes are ordinary.
func TestWriteOverConflictsIsCheap(t *testing.T) {
	dir := t.TempDir()
	leaves := 200
	if raceEnabled {
		leaves = 60
	}
	big := openWith(t, dir, func(c *Config) { c.MaxConflicts, c.MaxDocBytes = 1000, 1<<30 })
	for i := 0; i < leaves; i += 50 {
		if _, err := big.ApplyRevisions(ctx, "u", conflictRevs("c", "x", min(50, leaves-i), 250<<10), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if live, _ := leafCounts(t, big, "u", "c", "x"); live != leaves {
		t.Fatalf("%d live leaves, want %d", live, leaves)
	}
	if err := big.Close(); err != nil {
		t.Fatal(err)
	}
	s := openWith(t, dir, nil)
	put := func(i int) {
		t.Helper()
		if _, err := s.PutItem(ctx, "u", "c", api.WBO{ID: "x", Has: api.FieldPayload, Payload: fmt.Sprintf("edit %d", i)}, api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	first := allocated(func() { put(0) })
	took := time.Since(start)
	t.Logf("first PUT over %d conflicting leaves of 250 KB: %v, %d KB allocated", leaves, took, first>>10)
	// Under the race detector Pebble checks its invariants, and copies
	// every value it returns: the bound holds without it.
	if first > 4<<20 && !raceEnabled {
		t.Errorf("the first PUT allocated %d KB (the leaves hold %d MB)", first>>10, leaves/4)
	}
	if live, deleted := leafCounts(t, s, "u", "c", "x"); live != 1 || deleted != leaves-1 {
		t.Fatalf("after the PUT: %d live and %d deleted leaves", live, deleted)
	}
	// Eight writers of the document: each PUT is small.
	runtime.GC()
	var wg sync.WaitGroup
	var perPut uint64
	total := allocated(func() {
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 10 {
					put(100*w + i)
				}
			}()
		}
		wg.Wait()
	})
	perPut = total / 80
	t.Logf("then 8 writers x 10 PUTs: %d KB allocated per PUT", perPut>>10)
	if perPut > 1<<20 {
		t.Errorf("a PUT allocated %d KB", perPut>>10)
	}
	got, _, err := s.GetItem(ctx, "u", "c", "x")
	if err != nil || !strings.HasPrefix(got.Payload, "edit ") {
		t.Fatalf("record %+v, %v", got, err)
	}
}
