package testnet

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node"
)

// storeDigest describes every document a store holds for user: per
// collection/id, each leaf revision (sorted) with its deleted flag,
// full path and body (the Weave fields, the expiry and the origin);
// nothing local (sequence numbers, modified) is in it, so two replicas
// holding the same revisions give the same digest.
func storeDigest(ctx context.Context, s *node.Store, user string) (map[string]string, error) {
	out := make(map[string]string)
	var since uint64
	for {
		rows, last, err := s.Changes(ctx, user, since, 500)
		if err != nil {
			return nil, err
		}
		var refs []node.DocRef
		for _, r := range rows {
			refs = append(refs, node.DocRef{Coll: r.Coll, ID: r.ID})
		}
		docs, err := s.GetDocs(ctx, user, refs)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			if d == nil {
				continue
			}
			var leaves []string
			for _, l := range d.Tree.Leaves() {
				rev, _ := d.Revision(l.Rev, 0)
				b := d.Bodies[l.Rev]
				leaves = append(leaves, fmt.Sprintf("%v del=%v path=%d:%x body=%d|%q|%d|%q|%q|exp%d|%s",
					l.Rev, l.Deleted, rev.Path.Start, rev.Path.IDs, b.Has, b.Payload, b.SortIndex, b.ParentID, b.PredecessorID, b.Expiry, b.Origin))
			}
			sort.Strings(leaves)
			out[d.Coll+"/"+d.ID] = strings.Join(leaves, "; ")
		}
		if len(rows) < 500 {
			break
		}
		since = last
	}
	return out, nil
}

// TestStoryNodeBackupRestore: a node is backed up over its admin socket
// while clients write, writes go on, the node dies; its backup is
// restored into a new folder and started: the directory makes it filling
// where it may lack writes, it backfills by replication, and then every
// document and revision on it matches its replicas', every acknowledged
// write included, nothing twice.
func TestStoryNodeBackupRestore(t *testing.T) {
	ctx := storyContext(t, 120*time.Second)
	// Nodes are not marked down during the test: the restored node stays
	// a member of its sets and must backfill in place.
	tn := storyNet(t, ctx, 3, func(c *Config) { c.DownAfter = time.Minute })
	var clients []*client.Client
	for range 6 {
		clients = append(clients, storyUser(t, ctx, tn))
	}
	victim, vname := tn.inProcess(t, "n1")
	var held []*client.Client
	for _, c := range clients {
		if set, _ := tn.ReplicaSet(ctx, c.User()); slices.Contains(set, victim.URL()) {
			held = append(held, c)
		}
	}
	if len(held) == 0 {
		t.Fatal("n1 holds nobody")
	}
	// Writers: each client posts batches of records; what is
	// acknowledged is remembered.
	var (
		mu    sync.Mutex
		acked = map[string]map[string]string{} // user -> id -> payload
	)
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; wctx.Err() == nil; b++ {
				rs := storyBatch(fmt.Sprintf("w%d-b%d", i, b), 10)
				res, _, err := c.Post(wctx, "history", rs, 0)
				if err != nil {
					continue
				}
				mu.Lock()
				m := acked[c.User()]
				if m == nil {
					m = map[string]string{}
					acked[c.User()] = m
				}
				for _, id := range res.Success {
					for _, r := range rs {
						if r.ID == id {
							m[id] = *r.Payload
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, m := range acked {
			n += len(m)
		}
		return n
	}
	testkit.WaitFor(t, 20*time.Second, "writes before the backup", func() bool { return count() >= 300 })
	data, err := tn.DataDir(vname)
	if err != nil {
		t.Fatal(err)
	}
	backupDir := filepath.Join(t.TempDir(), "n1-backup")
	begin := time.Now()
	b, err := RequestBackup(ctx, data, backupDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup of %s under write load: %d bytes, checkpoint %d ms, call %v", vname, b.Bytes, b.TookMS, time.Since(begin))
	atBackup := count()
	testkit.WaitFor(t, 20*time.Second, "writes after the backup", func() bool { return count() >= atBackup+300 })
	if err := tn.Kill(vname); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, "writes while the node is dead", func() bool { return count() >= atBackup+600 })

	// Restore into a new folder and start the node there.
	newData := filepath.Join(t.TempDir(), "n1-restored")
	r, err := RestoreNode(backupDir, newData)
	if err != nil {
		t.Fatal(err)
	}
	if r.NewStore == r.OldStore || r.OldStore != b.Store {
		t.Fatalf("restore kept the store's UUID: %+v", r)
	}
	if err := tn.SetDataDir(vname, newData); err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	if err := tn.Restart(ctx, vname); err != nil {
		t.Fatal(err)
	}
	serving := time.Since(begin)
	restored, _ := tn.inProcess(t, vname)
	if restored.ID() != victim.ID() || restored.Store().UUID() != r.NewStore {
		t.Fatalf("restored node %s (store %s), want %s (store %s)", restored.ID(), restored.Store().UUID(), victim.ID(), r.NewStore)
	}
	testkit.WaitFor(t, 20*time.Second, "writes after the restore", func() bool { return count() >= atBackup+900 })
	stopWriters()
	wg.Wait()

	// Every user of the restored node: current again on it, converged,
	// and document for document equal on every replica.
	dir := tn.voters[0].v.Directory()
	for _, c := range held {
		user := c.User()
		testkit.Eventually(t, 30*time.Second, func() string {
			reps, err := dir.Replicas(user)
			if err != nil {
				return err.Error()
			}
			for _, m := range reps.Members {
				if m.Filling {
					return fmt.Sprintf("user %s: %s still filling", user, m.ID)
				}
			}
			return ""
		})
		if err := tn.WaitConverged(ctx, user, storyPassword); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("restored node serving %v after its start, every user of it current again %v after", serving, time.Since(begin))
	for _, c := range held {
		user := c.User()
		set, err := tn.ReplicaSet(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		var digests []map[string]string
		for _, u := range set {
			n, _ := tn.inProcess(t, u)
			d, err := storeDigest(ctx, n.Store(), user)
			if err != nil {
				t.Fatal(err)
			}
			digests = append(digests, d)
		}
		for i := 1; i < len(digests); i++ {
			if !maps.Equal(digests[0], digests[i]) {
				t.Fatalf("user %s: replicas differ (%d vs %d documents)", user, len(digests[0]), len(digests[i]))
			}
		}
		mu.Lock()
		want := maps.Clone(acked[user])
		mu.Unlock()
		got, _, err := storyListing(ctx, restored.URL(), user, storyPassword, "history", "")
		if err != nil {
			t.Fatal(err)
		}
		for id, p := range want {
			if got[id].Payload != p {
				t.Fatalf("user %s: acknowledged %s missing on the restored node", user, id)
			}
		}
		for _, leaves := range digests[0] {
			if strings.Count(leaves, ";") != 0 {
				t.Fatalf("user %s: a document with several leaves (a duplicate?): %s", user, leaves)
			}
		}
		t.Logf("user %s: %d documents equal on %d replicas, %d acknowledged writes on the restored node",
			user, len(digests[0]), len(digests), len(want))
	}
}

// TestStoryDeletedWhileDown: an account is deleted while one node of
// its replica set is dead, so the node hears nothing of it; when the node
// comes back, its sweep wipes the account's data (the directory lists
// the user for it no more), without any event.
func TestStoryDeletedWhileDown(t *testing.T) {
	ctx := storyContext(t, 60*time.Second)
	tn, c, user, set := storyUserOn(t, ctx, 3)
	storyPost(t, ctx, c, "tabs", storyBatch("t", 20))
	if err := tn.WaitConverged(ctx, user, storyPassword); err != nil {
		t.Fatal(err)
	}
	n, name := tn.inProcess(t, set[1])
	if d, err := storeDigest(ctx, n.Store(), user); err != nil || len(d) != 20 {
		t.Fatalf("%s holds %d documents of the user before: %v", name, len(d), err)
	}
	if err := tn.Kill(name); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteAccount(ctx); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := tn.Restart(ctx, name); err != nil {
		t.Fatal(err)
	}
	back, _ := tn.inProcess(t, name)
	testkit.Eventually(t, 20*time.Second, func() string {
		users, err := back.Store().Users(ctx, "", 1000)
		if err != nil {
			return err.Error()
		}
		if slices.Contains(users, user) {
			return fmt.Sprintf("%s still holds the deleted user %v after its restart", name, time.Since(begin))
		}
		return ""
	})
	wiped := time.Since(begin)
	if d, err := storeDigest(ctx, back.Store(), user); err != nil || len(d) != 0 {
		t.Fatalf("%s holds %d documents of the deleted user: %v", name, len(d), err)
	}
	t.Logf("deleted account gone from %s %v after its restart (sweep %v)", name, wiped.Round(time.Millisecond), DefaultSweep)
}

// TestStoryWipeWhilePartitioned: a collection wipe and a storage wipe
// made while one replica is partitioned away reach it after the heal:
// tombstones replicate, so no record comes back.
func TestStoryWipeWhilePartitioned(t *testing.T) {
	ctx := storyContext(t, 90*time.Second)
	tn := storyNet(t, ctx, 2, nil)
	c1 := storyUser(t, ctx, tn)
	c2 := storyUser(t, ctx, tn)
	for _, c := range []*client.Client{c1, c2} {
		storyPost(t, ctx, c, "tabs", storyBatch("t", 15))
		storyPost(t, ctx, c, "history", storyBatch("h", 15))
		if err := tn.WaitConverged(ctx, c.User(), storyPassword); err != nil {
			t.Fatal(err)
		}
	}
	// Both users live on both nodes (R = 2 of 2). Cut n1 and n2 off from
	// each other (both still reach the directory, so both stay members:
	// the wipes reach the other replica by replication, not by a wipe of
	// users it no longer holds). Each client wipes on its primary; the
	// other node of its set ("away") must get the wipe after the heal.
	if err := tn.Partition([]string{"n2"}, []string{"n1"}); err != nil {
		t.Fatal(err)
	}
	n1, _ := tn.inProcess(t, "n1")
	n2, _ := tn.inProcess(t, "n2")
	testkit.Eventually(t, 5*time.Second, func() string {
		if len(n1.Host().Network().ConnsToPeer(n2.PeerID())) != 0 {
			return "n1 still connected to n2"
		}
		return ""
	})
	away := map[string]*Node{}
	for _, c := range []*client.Client{c1, c2} {
		set, err := tn.ReplicaSet(ctx, c.User())
		if err != nil || len(set) != 2 {
			t.Fatalf("replica set of %s: %v %v", c.User(), set, err)
		}
		away[c.User()] = n1
		if set[0] == n1.URL() {
			away[c.User()] = n2
		}
	}
	wipe := func(what string, do func() (client.Meta, error)) {
		t.Helper()
		testkit.Eventually(t, 20*time.Second, func() string {
			if _, err := do(); err != nil {
				return what + ": " + err.Error()
			}
			return ""
		})
	}
	wipe("collection wipe", func() (client.Meta, error) { return c1.DeleteCollection(ctx, "tabs", client.Options{}) })
	wipe("storage wipe", func() (client.Meta, error) { return c2.DeleteStorage(ctx) })
	live := func(n *Node, user, coll string) int {
		d, err := storeDigest(ctx, n.Store(), user)
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for id, leaves := range d {
			if strings.HasPrefix(id, coll+"/") && !strings.Contains(leaves, "del=true") {
				k++
			}
		}
		return k
	}
	// The away replicas still hold everything while they are cut off.
	if live(away[c1.User()], c1.User(), "tabs") != 15 || live(away[c2.User()], c2.User(), "history") != 15 {
		t.Fatal("an away replica lost records before the heal")
	}
	healed := time.Now()
	if err := tn.Heal(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() string {
		for _, x := range []struct {
			user, coll string
		}{{c1.User(), "tabs"}, {c2.User(), "tabs"}, {c2.User(), "history"}} {
			for _, n := range []*Node{n1, n2} {
				if k := live(n, x.user, x.coll); k != 0 {
					return fmt.Sprintf("%s/%s: %d live records on %s %v after the heal", x.user, x.coll, k, n.URL(), time.Since(healed))
				}
			}
		}
		return ""
	})
	for _, n := range []*Node{n1, n2} {
		if k := live(n, c1.User(), "history"); k != 15 {
			t.Fatalf("the untouched collection has %d records on %s", k, n.URL())
		}
	}
	for _, c := range []*client.Client{c1, c2} {
		if err := tn.WaitConverged(ctx, c.User(), storyPassword); err != nil {
			t.Fatal(err)
		}
		if set, err := tn.ReplicaSet(ctx, c.User()); err != nil || len(set) != 2 {
			t.Fatalf("a node left the set of %s: %v %v", c.User(), set, err)
		}
	}
	t.Logf("wipes made during the partition applied on the away replicas %v after the heal", time.Since(healed).Round(time.Millisecond))
}
