package replication

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node"
)

// poller follows one collection of one store with newer=<last timestamp>,
// as a Weave client does, and remembers every id it saw.
type poller struct {
	s          *node.Store
	user, coll string
	mu         sync.Mutex
	since      api.Stamp
	seen       map[string]bool
	stop, done chan struct{}
	err        error
}

func startPoller(s *node.Store, user, coll string) *poller {
	p := &poller{s: s, user: user, coll: coll, seen: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			if err := p.poll(); err != nil {
				p.err = err
				return
			}
			select {
			case <-p.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *poller) poll() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws, now, err := api.ReadCollection(bg, p.s, p.user, p.coll, &api.Query{HasNewer: true, Newer: p.since})
	if err != nil {
		return err
	}
	for _, w := range ws {
		p.seen[w.ID] = true
	}
	p.since = now
	return nil
}

// finish stops the poller, polls once more and checks that every live
// record of the collection was seen.
func (p *poller) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	<-p.done
	if p.err != nil {
		t.Fatal(p.err)
	}
	if err := p.poll(); err != nil {
		t.Fatal(err)
	}
	live, _, err := api.ReadCollection(bg, p.s, p.user, p.coll, &api.Query{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range live {
		if !p.seen[w.ID] {
			t.Errorf("newer= poller never saw %s/%s", p.coll, w.ID)
		}
	}
}

func TestConvergence(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) { testConvergence(t, n) })
	}
}

func testConvergence(t *testing.T, n int) {
	c := newCluster(t, n, clusterOpts{})
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	c.share("alice", idx...)
	c.share("bob", idx...)
	stores := make([]*node.Store, n)
	for i, tn := range c.nodes {
		stores[i] = tn.store
	}
	pollers := make([]*poller, n)
	for i := range pollers {
		pollers[i] = startPoller(stores[i], "alice", "c")
	}

	// Phase 1: concurrent writes to the same records and to own records,
	// single PUTs and batches, on every node at once.
	acks := make([]ackLog, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i]
			for k := range 30 {
				acks[i].put(t, s, "alice", "c", fmt.Sprintf("shared%d", k%5), fmt.Sprintf("n%d-w%d", i, k))
				acks[i].put(t, s, "alice", "c", fmt.Sprintf("own%d-%d", i, k), fmt.Sprintf("own n%d-w%d", i, k))
				if k%10 == 0 {
					var batch []api.WBO
					for j := range 20 {
						batch = append(batch, testkit.WBO(fmt.Sprintf("batch%d-%d-%d", i, k, j), fmt.Sprintf("b n%d %d %d", i, k, j)))
					}
					if _, err := s.PostItems(bg, "bob", "tabs", batch, api.Precondition{}); err != nil {
						t.Error(err)
						return
					}
				}
			}
			// A TTL record and a deleted record.
			ttl := api.WBO{ID: fmt.Sprintf("ttl%d", i), Has: api.FieldPayload | api.FieldTTL, Payload: "ttl", TTL: 3600}
			if _, err := s.PutItem(bg, "alice", "c", ttl, api.Precondition{}); err != nil {
				t.Error(err)
			}
			if _, err := s.DeleteItem(bg, "alice", "c", fmt.Sprintf("own%d-0", i), api.Precondition{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	converge := func() {
		t.Helper()
		testkit.Eventually(t, 30*time.Second, func() string {
			for _, u := range []string{"alice", "bob"} {
				if d := diff(u, stores...); d != "" {
					return d
				}
			}
			return ""
		})
	}
	converge()
	for i := range acks {
		acks[i].check(t, stores...)
	}
	// Deleted records are gone everywhere; TTL travels as an absolute
	// expiry.
	for i := range n {
		for j := range n {
			if _, _, err := stores[j].GetItem(bg, "alice", "c", fmt.Sprintf("own%d-0", i)); err != api.ErrNotFound {
				t.Errorf("store %d: deleted own%d-0: %v", j, i, err)
			}
		}
		d0, err := stores[i].GetDoc(bg, "alice", "c", fmt.Sprintf("ttl%d", i))
		if err != nil {
			t.Fatal(err)
		}
		_, b0 := d0.Winner()
		if b0.Expiry == 0 {
			t.Fatalf("ttl%d has no expiry", i)
		}
		for j := range n {
			d, err := stores[j].GetDoc(bg, "alice", "c", fmt.Sprintf("ttl%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if _, b := d.Winner(); b.Expiry != b0.Expiry {
				t.Errorf("store %d: ttl%d expiry %d, origin has %d", j, i, b.Expiry, b0.Expiry)
			}
		}
	}

	// Phase 2: collection and storage wipes replicate as tombstones.
	if _, err := stores[0].DeleteCollection(bg, "bob", "tabs", nil, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[n-1].PutItem(bg, "bob", "keep", testkit.WBO("k", "kept"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	converge()
	for j := range n {
		if ws, _, err := api.ReadCollection(bg, stores[j], "bob", "tabs", nil); err != nil || len(ws) != 0 {
			t.Errorf("store %d: bob/tabs after DeleteCollection: %d records, %v", j, len(ws), err)
		}
	}
	if _, err := stores[n-1].DeleteStorage(bg, "bob"); err != nil {
		t.Fatal(err)
	}
	converge()
	for j := range n {
		if ws, _, err := api.ReadCollection(bg, stores[j], "bob", "keep", nil); err != nil || len(ws) != 0 {
			t.Errorf("store %d: bob/keep after DeleteStorage: %d records, %v", j, len(ws), err)
		}
	}

	// Phase 3: a partition; both sides write; the heal converges (the
	// sweep finds what the lost notices did not carry).
	last := n - 1
	for i := range last {
		c.partition(i, last)
	}
	for k := range 10 {
		acks[0].put(t, stores[0], "alice", "c", "shared0", fmt.Sprintf("left %d", k))
		acks[last].put(t, stores[last], "alice", "c", "shared0", fmt.Sprintf("right %d", k))
		acks[last].put(t, stores[last], "alice", "c", fmt.Sprintf("island%d", k), "island")
	}
	for i := range last {
		c.heal(i, last)
	}
	for _, tn := range c.nodes {
		if err := tn.repl.Sweep(bg); err != nil {
			t.Fatal(err)
		}
	}
	converge()
	for i := range acks {
		acks[i].check(t, stores...)
	}
	for _, p := range pollers {
		p.finish(t)
	}
	d, err := stores[0].GetDoc(bg, "alice", "c", "shared0")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Tree.Leaves()) < 2 {
		t.Errorf("shared0 has %d leaves; concurrent writes should leave a conflict", len(d.Tree.Leaves()))
	}
	for i, tn := range c.nodes {
		st := tn.repl.Stats()
		t.Logf("node %d: %+v", i, st)
		if st.RefusedRevisions != 0 {
			t.Errorf("node %d refused %d revisions from honest peers", i, st.RefusedRevisions)
		}
	}
}

// TestBackfillNewReplica adds a node to a user's replica set: its first
// sweep pulls everything.
func TestBackfillNewReplica(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{sweepInterval: 100 * time.Millisecond, changesBatch: 50, fetchBatch: 20})
	c.share("carol", 0, 1)
	var batch []api.WBO
	for i := range 300 {
		batch = append(batch, testkit.WBO(fmt.Sprintf("r%03d", i), fmt.Sprintf("p%d", i)))
	}
	if _, err := c.nodes[0].store.PostItems(bg, "carol", "c", batch, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() string { return diff("carol", c.nodes[0].store, c.nodes[1].store) })
	if n, _ := docs(c.nodes[2].store, "carol"); len(n) != 0 {
		t.Fatalf("node 2 holds %d documents of a user it does not replicate", len(n))
	}
	c.share("carol", 0, 1, 2)
	testkit.Eventually(t, 20*time.Second, func() string {
		return diff("carol", c.nodes[0].store, c.nodes[1].store, c.nodes[2].store)
	})
	ws, _, err := api.ReadCollection(bg, c.nodes[2].store, "carol", "c", nil)
	if err != nil || len(ws) != 300 {
		t.Fatalf("new replica has %d records, %v", len(ws), err)
	}
	// Sync pulls at once from every peer.
	if _, err := c.nodes[1].store.PutItem(bg, "carol", "c", testkit.WBO("late", "x"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[2].repl.Sync(bg, "carol"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.nodes[2].store.GetItem(bg, "carol", "c", "late"); err != nil {
		t.Fatalf("after Sync: %v", err)
	}
}

// TestOneRequestPeers: a node of a build before SessionProtocolID (one
// request per stream over ProtocolID) and two of this one replicate with
// each other both ways: backfill, writes on every node, acknowledged
// writes that wait for the replicas.
func TestOneRequestPeers(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{oneRequest: []int{1}, changesBatch: 50, fetchBatch: 20})
	var batch []api.WBO
	for i := range 200 {
		batch = append(batch, testkit.WBO(fmt.Sprintf("r%03d", i), fmt.Sprintf("p%d", i)))
	}
	c.share("dave", 0)
	if _, err := c.nodes[0].store.PostItems(bg, "dave", "c", batch, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	c.share("dave", 0, 1, 2)
	for _, i := range []int{1, 2} {
		if err := c.nodes[i].repl.Sync(bg, "dave"); err != nil {
			t.Fatalf("node %d backfill: %v", i, err)
		}
	}
	for i, tn := range c.nodes {
		tn.store.SetReplicaWaiter(tn.repl)
		for k := range 5 {
			if _, err := tn.store.PutItem(bg, "dave", "c", testkit.WBO(fmt.Sprintf("n%d-%d", i, k), "x"), api.Precondition{}); err != nil {
				t.Fatalf("node %d write %d: %v", i, k, err)
			}
		}
	}
	testkit.Eventually(t, 20*time.Second, func() string {
		return diff("dave", c.nodes[0].store, c.nodes[1].store, c.nodes[2].store)
	})
	ws, _, err := api.ReadCollection(bg, c.nodes[1].store, "dave", "c", nil)
	if err != nil || len(ws) != 215 {
		t.Fatalf("the one-request node has %d records, %v", len(ws), err)
	}
}

// TestCloseIdempotent closes replicators with work in flight, twice each,
// and checks that Sync fails after Close.
func TestCloseIdempotent(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{mem: true})
	c.share("u", 0, 1)
	for i := range 50 {
		if _, err := c.nodes[0].store.PutItem(bg, "u", "c", testkit.WBO(fmt.Sprint(i), "x"), api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tn := range c.nodes {
		if err := tn.repl.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tn.repl.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tn.repl.Sync(bg, "u"); err == nil {
			t.Fatal("Sync after Close succeeded")
		}
	}
}
