package replication

import (
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// TestWriteWaitsForAReplica: with the replicator as the store's replica
// waiter, a write returns only once another replica holds it, so the
// record is on B the moment PutItem returns on A; with B cut off, the
// write is still acknowledged after the timeout and counted.
func TestWriteWaitsForAReplica(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	c.share("u", 0, 1)
	a, b := c.nodes[0], c.nodes[1]
	a.store.SetReplicaWaiter(a.repl, 2*time.Second)
	for i := range 20 {
		id := string(rune('a' + i))
		if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO(id, "p"+id), api.Precondition{}); err != nil {
			t.Fatal(err)
		}
		got, _, err := b.store.GetItem(bg, "u", "c", id)
		if err != nil || got.Payload != "p"+id {
			t.Fatalf("record %s not on the replica when the write returned: %+v %v", id, got, err)
		}
	}
	if _, err := a.store.PostItems(bg, "u", "c", []api.WBO{testkit.WBO("x", "1"), testkit.WBO("y", "2")}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.store.DeleteItem(bg, "u", "c", "x", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.store.GetItem(bg, "u", "c", "x"); err == nil {
		t.Fatalf("delete not on the replica when it returned")
	}
	if got, _, err := b.store.GetItem(bg, "u", "c", "y"); err != nil || got.Payload != "2" {
		t.Fatalf("batch not on the replica: %+v %v", got, err)
	}
	if n := a.store.UnconfirmedWrites(); n != 0 {
		t.Fatalf("%d unconfirmed writes", n)
	}
	// The third node is not in the set: it never served a sync.
	if s := c.nodes[2].repl.Stats(); s.SyncsServed != 0 {
		t.Fatalf("node outside the set served %d syncs", s.SyncsServed)
	}
	// B cut off: the write waits for the timeout, then is acknowledged.
	a.store.SetReplicaWaiter(a.repl, 300*time.Millisecond)
	c.partition(0, 1)
	start := time.Now()
	if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO("alone", "p"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("write with no reachable replica returned after %v", d)
	}
	if n := a.store.UnconfirmedWrites(); n != 1 {
		t.Fatalf("unconfirmed writes %d, want 1", n)
	}
	c.heal(0, 1)
	if err := b.repl.Sync(bg, "u"); err != nil {
		t.Fatal(err)
	}
	if got, _, err := b.store.GetItem(bg, "u", "c", "alone"); err != nil || got.Payload != "p" {
		t.Fatalf("the unconfirmed write did not replicate after the heal: %+v %v", got, err)
	}
}

// TestStaleViewRetried: a new replica whose peer still has the old replica
// set (its membership cache has not expired yet) is refused at first; the
// pull is retried and succeeds once the peer's view catches up, without
// waiting for a sweep (the cluster's sweeps are an hour apart).
func TestStaleViewRetried(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{})
	a, b := c.nodes[0], c.nodes[1]
	a.mem.Set("u", a.id)
	if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO("r", "p"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	// b learns it is a replica; a does not know yet.
	b.mem.Set("u", a.id, b.id)
	done := make(chan error, 1)
	go func() { done <- b.repl.Sync(bg, "u") }()
	testkit.Eventually(t, 5*time.Second, func() string {
		if a.repl.Stats().RequestsRefused == 0 {
			return "a has not refused b yet"
		}
		return ""
	})
	a.mem.Set("u", a.id, b.id)
	testkit.Eventually(t, 10*time.Second, func() string { return diff("u", a.store, b.store) })
	<-done // the first attempt's answer (refused): Sync reports it
}
