package replication

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

// clientConflicts returns n conflicting first revisions of coll/id, as a
// CouchDB client writes them.
func clientConflicts(coll, id string, n int) []node.Revision {
	revs := make([]node.Revision, n)
	for i := range revs {
		var h [revtree.HashLen]byte
		rand.Read(h[:])
		revs[i] = node.Revision{Coll: coll, ID: id, Path: revtree.Path{Start: 1, IDs: [][revtree.HashLen]byte{h}},
			Body: node.Body{Has: api.FieldPayload, Payload: fmt.Sprint("leaf ", i)}}
	}
	return revs
}

// TestLimitsDoNotStallReplication checks that revisions a node refuses
// because of its per-document limits (node.Config.MaxConflicts) are
// counted and do not stop replication: each node holds conflicts the
// other lacks; both pulls complete, the other documents replicate and the
// checkpoints move on.
func TestLimitsDoNotStallReplication(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{mem: true})
	a, b := c.nodes[0], c.nodes[1]
	for _, tn := range c.nodes {
		tn.store.SetReplicaWaiter(nil)
		tn.store.SetChangeNotifier(nil)
		// The sweep each replicator runs at start must not pull between
		// the applies below (b would take a's leaves before its own and
		// refuse its own 10th): it runs before u is shared, the next one
		// an hour later.
		testkit.WaitFor(t, 10*time.Second, "the first sweep", func() bool { return tn.repl.Stats().Sweeps > 0 })
	}
	c.share("u", 0, 1)
	apply := func(s *node.Store, revs []node.Revision) {
		t.Helper()
		errs, err := s.ApplyRevisions(bg, "u", revs, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range errs {
			if e != nil {
				t.Fatal(e)
			}
		}
	}
	apply(a.store, clientConflicts("c", "x", node.DefaultMaxConflicts+1))
	apply(b.store, clientConflicts("c", "x", 10))
	apply(a.store, clientConflicts("c", "ok-a", 1))
	apply(b.store, clientConflicts("c", "ok-b", 1))
	for _, tn := range []*tnode{a, b} {
		if err := tn.repl.Sync(bg, "u"); err != nil {
			t.Fatalf("sync: %v", err)
		}
		if got := tn.repl.Stats().RefusedRevisions; got != 10 {
			t.Errorf("%d revisions refused, want 10", got)
		}
	}
	for _, tn := range []*tnode{a, b} {
		for _, id := range []string{"ok-a", "ok-b"} {
			if _, err := tn.store.GetDoc(bg, "u", "c", id); err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}
		d, err := tn.store.GetDoc(bg, "u", "c", "x")
		if err != nil {
			t.Fatal(err)
		}
		if n := len(d.Tree.Conflicts()); n != node.DefaultMaxConflicts {
			t.Errorf("%d conflicts", n)
		}
	}
	// The pulls completed and moved the checkpoints on. b's x changed when
	// b took a's leaves, after a's pull, so a's next pull fetches it again
	// and refuses b's 10 leaves once more (unless a sweep already did);
	// then nothing is left to pull.
	if err := a.repl.Sync(bg, "u"); err != nil {
		t.Fatalf("second sync: %v", err)
	}
	before := a.repl.Stats().RefusedRevisions
	if err := a.repl.Sync(bg, "u"); err != nil || a.repl.Stats().RefusedRevisions != before {
		t.Errorf("third sync: %v, refused %d more", err, a.repl.Stats().RefusedRevisions-before)
	}
}
