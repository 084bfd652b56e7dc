package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node"
)

// members returns a replica set of the nodes idx of c, all current.
func (c *cluster) members(idx ...int) ReplicaSet {
	var s ReplicaSet
	for _, i := range idx {
		s.Members = append(s.Members, Member{Peer: c.nodes[i].id})
	}
	return s
}

// TestWriteWaitsForEveryMember: with the replicator as the store's replica
// waiter, a write returns only once every other member holds it, so the
// record is on B and C the moment PutItem returns on A; a node outside
// the set is never asked.
func TestWriteWaitsForEveryMember(t *testing.T) {
	c := newCluster(t, 4, clusterOpts{dir: true})
	c.dir.set("u", c.members(0, 1, 2))
	a := c.nodes[0]
	a.store.SetReplicaWaiter(a.repl)
	for i := range 10 {
		id := string(rune('a' + i))
		if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO(id, "p"+id), api.Precondition{}); err != nil {
			t.Fatal(err)
		}
		for _, o := range c.nodes[1:3] {
			got, _, err := o.store.GetItem(bg, "u", "c", id)
			if err != nil || got.Payload != "p"+id {
				t.Fatalf("record %s not on a member when the write returned: %+v %v", id, got, err)
			}
		}
	}
	if _, err := a.store.PostItems(bg, "u", "c", []api.WBO{testkit.WBO("x", "1"), testkit.WBO("y", "2")}, api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.store.DeleteItem(bg, "u", "c", "x", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	for _, o := range c.nodes[1:3] {
		if _, _, err := o.store.GetItem(bg, "u", "c", "x"); err == nil {
			t.Fatalf("delete not on a member when it returned")
		}
		if got, _, err := o.store.GetItem(bg, "u", "c", "y"); err != nil || got.Payload != "2" {
			t.Fatalf("batch not on a member: %+v %v", got, err)
		}
	}
	if n := a.store.UnconfirmedWrites(); n != 0 {
		t.Fatalf("%d unconfirmed writes", n)
	}
	if log := c.dir.log(); len(log) != 0 {
		t.Fatalf("reports while every member confirmed: %v", log)
	}
	if s := c.nodes[3].repl.Stats(); s.SyncsServed != 0 {
		t.Fatalf("node outside the set served %d syncs", s.SyncsServed)
	}
}

// TestUnconfirmedReportedBeforeAck: a member cut off from the writer does
// not confirm; the write is acknowledged only after the directory
// committed Unconfirmed{u, [the member that did confirm]} (the cut-off
// member is then filling, at a new epoch). After the heal, the filling
// member pulls from a current one, reports Filled and is current again,
// holding the write.
func TestUnconfirmedReportedBeforeAck(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{dir: true, replicaWait: 300 * time.Millisecond})
	c.dir.set("u", c.members(0, 1, 2))
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	a.store.SetReplicaWaiter(a.repl)
	c.partition(0, 2)
	var acked time.Time
	var ackedMu sync.Mutex
	reportedAt := time.Time{}
	c.dir.onReport = func(from peer.ID, req dirproto.ReportRequest) {
		if len(req.Unconfirmed) > 0 && reportedAt.IsZero() {
			reportedAt = time.Now()
			ackedMu.Lock()
			if !acked.IsZero() {
				t.Errorf("write acknowledged before its report")
			}
			ackedMu.Unlock()
		}
	}
	start := time.Now()
	if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO("w", "written alone"), api.Precondition{}); err != nil {
		t.Fatalf("write with a member cut off: %v", err)
	}
	ackedMu.Lock()
	acked = time.Now()
	ackedMu.Unlock()
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("write returned after %v, before the replica wait", d)
	}
	want := fmt.Sprintf("unconfirmed u by %s confirmed [%s]", a.id, b.id)
	if log := c.dir.log(); !slices.Contains(log, want) {
		t.Fatalf("directory log %v lacks %q", log, want)
	}
	set := c.dir.get("u")
	if m, _ := set.Member(cc.id); !m.Filling || m.Epoch != 1 {
		t.Fatalf("cut-off member %+v, want filling at epoch 1", m)
	}
	if !set.IsCurrent(a.id) || !set.IsCurrent(b.id) {
		t.Fatalf("set %+v", set)
	}
	if n := a.store.UnconfirmedWrites(); n != 1 {
		t.Fatalf("UnconfirmedWrites = %d, want 1", n)
	}
	if got, _, err := b.store.GetItem(bg, "u", "c", "w"); err != nil || got.Payload != "written alone" {
		t.Fatalf("confirming member lacks the write: %+v %v", got, err)
	}
	// Heal: the filling member backfills and becomes current.
	c.heal(0, 2)
	testkit.WaitFor(t, 15*time.Second, "filled", func() bool { return c.dir.get("u").IsCurrent(cc.id) })
	if got, _, err := cc.store.GetItem(bg, "u", "c", "w"); err != nil || got.Payload != "written alone" {
		t.Fatalf("member current again without the write: %+v %v", got, err)
	}
	found := false
	for _, l := range c.dir.log() {
		found = found || strings.HasPrefix(l, fmt.Sprintf("filled u by %s epoch 1 from ", cc.id))
	}
	if !found {
		t.Fatalf("no Filled report: %v", c.dir.log())
	}
}

// TestReportFailureIs503: when the report of an unconfirmed write cannot
// be committed, the write is not acknowledged (ErrNotAcknowledged, a 503)
// but stays committed, and replicates once the member is back.
func TestReportFailureIs503(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{dir: true, replicaWait: 200 * time.Millisecond})
	c.dir.set("u", c.members(0, 1))
	a, b := c.nodes[0], c.nodes[1]
	a.store.SetReplicaWaiter(a.repl)
	c.partition(0, 1)
	c.dir.setFail(errors.New("no quorum"))
	_, err := a.store.PutItem(bg, "u", "c", testkit.WBO("w", "p"), api.Precondition{})
	if !errors.Is(err, node.ErrNotAcknowledged) || !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("write whose report failed: %v", err)
	}
	if got, _, err := a.store.GetItem(bg, "u", "c", "w"); err != nil || got.Payload != "p" {
		t.Fatalf("unacknowledged write not committed: %+v %v", got, err)
	}
	if !c.dir.get("u").IsCurrent(b.id) {
		t.Fatal("the directory changed the set after a failed report")
	}
	if s := a.repl.Stats(); s.UnconfirmedFailed != 1 || s.UnconfirmedReported != 0 {
		t.Fatalf("stats %+v", s)
	}
	if a.store.UnacknowledgedWrites() != 1 || a.store.UnconfirmedWrites() != 0 {
		t.Fatalf("store counters %d %d", a.store.UnacknowledgedWrites(), a.store.UnconfirmedWrites())
	}
	// No reporter at all: the same.
	c2 := newCluster(t, 2, clusterOpts{replicaWait: 100 * time.Millisecond})
	c2.share("u", 0, 1)
	c2.nodes[0].store.SetReplicaWaiter(c2.nodes[0].repl)
	c2.partition(0, 1)
	if _, err := c2.nodes[0].store.PutItem(bg, "u", "c", testkit.WBO("w", "p"), api.Precondition{}); !errors.Is(err, ErrNoReporter) {
		t.Fatalf("no reporter: %v", err)
	}
	c.heal(0, 1)
	c.dir.setFail(nil)
	if err := b.repl.Sync(bg, "u"); err != nil {
		t.Fatal(err)
	}
	if got, _, err := b.store.GetItem(bg, "u", "c", "w"); err != nil || got.Payload != "p" {
		t.Fatalf("the unacknowledged write did not replicate after the heal: %+v %v", got, err)
	}
}

// TestUnconfirmedWaitsWhenNotNotified: when the directory could not push
// the change to the members (Notified false), the write waits the
// membership TTL plus the directory's view lag more before it is
// acknowledged (a member may have read its view from a voter that much
// behind); a directory that states no view lag gets the default one.
func TestUnconfirmedWaitsWhenNotNotified(t *testing.T) {
	ttl, wait := 600*time.Millisecond, 100*time.Millisecond
	for _, tc := range []struct {
		lagMs int64
		want  time.Duration
	}{
		{lagMs: 400, want: 400 * time.Millisecond},
		{lagMs: 0, want: dirproto.DefaultViewLag},
	} {
		c := newCluster(t, 2, clusterOpts{dir: true, replicaWait: wait, ttl: ttl})
		c.dir.set("u", c.members(0, 1))
		c.dir.notify, c.dir.viewLagMs = false, tc.lagMs
		a := c.nodes[0]
		a.store.SetReplicaWaiter(a.repl)
		c.partition(0, 1)
		start := time.Now()
		if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO("w", "p"), api.Precondition{}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < wait+ttl+tc.want {
			t.Fatalf("view lag %d ms: acknowledged after %v, want at least %v", tc.lagMs, d, wait+ttl+tc.want)
		}
	}
}

// TestWriterNoLongerCurrent: a writer whose own view is stale (another
// writer's report made it filling) reports, the directory refuses the
// item, and the write is not acknowledged: the client is told the node
// does not serve the user (401, ask the directory), not to retry here
// (503); a node that knows it is not current refuses at once.
func TestWriterNoLongerCurrent(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{dir: true, replicaWait: 100 * time.Millisecond})
	a, b := c.nodes[0], c.nodes[1]
	c.dir.set("u", c.members(0, 1))
	// The directory makes a filling; a's own view still says current.
	s := c.members(0, 1)
	s.Members[0].Filling, s.Members[0].Epoch = true, 1
	c.dir.mu.Lock()
	c.dir.sets["u"] = s
	c.dir.mu.Unlock()
	b.mem.SetReplicaSet("u", s)
	a.store.SetReplicaWaiter(a.repl)
	c.partition(0, 1)
	_, err := a.store.PutItem(bg, "u", "c", testkit.WBO("w", "p"), api.Precondition{})
	if !errors.Is(err, ErrNotCurrent) || !errors.Is(err, node.ErrNotServing) || !errors.Is(err, api.ErrUnauthorized) ||
		errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("write of a writer made filling: %v", err)
	}
	if !c.dir.get("u").IsCurrent(b.id) {
		t.Fatal("a refused report changed the set")
	}
	// a's view is now the directory's: refused before any sync.
	before := b.repl.Stats().SyncsServed
	c.heal(0, 1)
	if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO("w2", "p"), api.Precondition{}); !errors.Is(err, ErrNotCurrent) ||
		!errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("write of a filling member: %v", err)
	}
	if b.repl.Stats().SyncsServed != before {
		t.Fatal("a filling writer asked for confirmations")
	}
}

// TestRefusedReportFailsOnlyItsWrite: unconfirmed writes of several users
// share one report; when the directory refuses it because this node is no
// longer current for one of them (without saying which), each item is
// sent again alone: the write of the user the node still serves is
// acknowledged, only the other fails (as not serving, 401).
func TestRefusedReportFailsOnlyItsWrite(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{dir: true, replicaWait: 100 * time.Millisecond})
	a := c.nodes[0]
	for _, u := range []string{"u0", "u1", "u2"} {
		c.dir.set(u, c.members(0, 1))
	}
	// The directory made a filling for u1; a's own view says current.
	s := c.members(0, 1)
	s.Members[0].Filling, s.Members[0].Epoch = true, 1
	c.dir.mu.Lock()
	c.dir.sets["u1"] = s
	c.dir.mu.Unlock()
	// The report of u0's write is held until the writes of u1 and u2
	// wait in the queue: they go together in the next request.
	entered, release := make(chan struct{}), make(chan struct{})
	var held sync.Once
	c.dir.before = func(_ peer.ID, req dirproto.ReportRequest) {
		if len(req.Unconfirmed) == 1 && req.Unconfirmed[0].User == "u0" {
			held.Do(func() {
				close(entered)
				<-release
			})
		}
	}
	a.store.SetReplicaWaiter(a.repl)
	c.partition(0, 1)
	errs := make(map[string]chan error)
	for _, u := range []string{"u0", "u1", "u2"} {
		errs[u] = make(chan error, 1)
	}
	put := func(u string) {
		_, err := a.store.PutItem(bg, u, "c", testkit.WBO("w", "p"), api.Precondition{})
		errs[u] <- err
	}
	go put("u0")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("u0's report never reached the directory")
	}
	go put("u1")
	go put("u2")
	testkit.Eventually(t, 5*time.Second, func() string {
		a.repl.reports.mu.Lock()
		defer a.repl.reports.mu.Unlock()
		if len(a.repl.reports.unconfirmed) < 2 {
			return "u1 and u2 not queued"
		}
		return ""
	})
	close(release)
	if err := <-errs["u0"]; err != nil {
		t.Fatalf("u0: %v", err)
	}
	if err := <-errs["u2"]; err != nil {
		t.Fatalf("u2, reported beside a refused item: %v", err)
	}
	if err := <-errs["u1"]; !errors.Is(err, ErrNotCurrent) || !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("u1, not current: %v", err)
	}
	var u1, u2 int
	for _, l := range c.dir.log() {
		switch {
		case strings.HasPrefix(l, "unconfirmed u1 "):
			u1++
		case strings.HasPrefix(l, "unconfirmed u2 "):
			u2++
		}
	}
	if u1 != 2 || u2 != 2 {
		t.Fatalf("u1 reported %d times, u2 %d, want 2 each (together, then alone): %q", u1, u2, c.dir.log())
	}
	if c.dir.get("u2").IsCurrent(c.nodes[1].id) || !c.dir.get("u1").IsCurrent(c.nodes[1].id) {
		t.Fatal("sets after the reports")
	}
}

// TestStaleWriterFailsFast: a write on a node whose cached view is stale
// (the user moved off it) is refused by the member it asks to confirm; the
// writer then asks the directory once, learns it is no longer a current
// member, and fails at once with a 401 (ErrNotServing), not after
// ReplicaWait. When the stale view is the member's instead, the writer
// asks once, finds itself current, and the write is acknowledged as soon
// as the member's view catches up: no report, no demotion.
func TestStaleWriterFailsFast(t *testing.T) {
	wait := 5 * time.Second
	c := newCluster(t, 2, clusterOpts{dir: true, fresh: true, replicaWait: wait})
	a, b := c.nodes[0], c.nodes[1]
	a.store.SetReplicaWaiter(a.repl)
	fm := a.repl.mem.(*freshMem)

	// The user moved off a: b's view and the directory know, a's does not.
	c.dir.set("u", c.members(0, 1))
	c.dir.mu.Lock()
	c.dir.sets["u"] = c.members(1)
	c.dir.mu.Unlock()
	b.mem.SetReplicaSet("u", c.members(1))
	t0 := time.Now()
	_, err := a.store.PutItem(bg, "u", "c", testkit.WBO("w", "p"), api.Precondition{})
	if !errors.Is(err, ErrNotCurrent) || !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("write on a node the user moved off: %v", err)
	}
	if d := time.Since(t0); d > wait/2 {
		t.Fatalf("refused after %v; the directory said so at the first refusal", d)
	}
	if n := fm.asked.Load(); n != 1 {
		t.Fatalf("asked the directory %d times, want 1", n)
	}

	// b's view is the stale one: a is current; b learns 300 ms later.
	c.dir.set("v", c.members(0, 1))
	b.mem.SetReplicaSet("v", c.members(1))
	go func() {
		time.Sleep(300 * time.Millisecond)
		b.mem.SetReplicaSet("v", c.members(0, 1))
	}()
	before := len(c.dir.log())
	if _, err := a.store.PutItem(bg, "v", "c", testkit.WBO("w", "p"), api.Precondition{}); err != nil {
		t.Fatalf("write of a current member: %v", err)
	}
	if n := fm.asked.Load(); n != 2 {
		t.Fatalf("asked the directory %d times in all, want 2 (once per write)", n)
	}
	if l := c.dir.log(); len(l) != before {
		t.Fatalf("reports %q: the member that confirmed late was reported", l[before:])
	}
	if !c.dir.get("v").IsCurrent(b.id) {
		t.Fatal("b demoted")
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

// TestSyncRequestEndsBackoff: a replica whose pulls from a peer failed
// (a partition) waits out a backoff before it pulls from that peer again;
// a SyncRequest from the peer (a write there waiting for this replica)
// ends that backoff at once, so the first write after the heal is
// acknowledged without waiting for it. The backoff here is 10 s, longer
// than the write's 2 s ReplicaWait: before, that write failed.
func TestSyncRequestEndsBackoff(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{retryMin: 10 * time.Second, retryMax: 10 * time.Second})
	c.share("u", 0, 1)
	a, b := c.nodes[0], c.nodes[1]
	a.store.SetReplicaWaiter(a.repl)
	if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO("x", "1"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	c.partition(0, 1)
	// b's pull from a fails: its loop for a backs off for 10 s.
	if err := b.repl.Sync(bg, "u"); err == nil {
		t.Fatal("a pull across the partition succeeded")
	}
	c.heal(0, 1)
	t0 := time.Now()
	if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO("y", "2"), api.Precondition{}); err != nil {
		t.Fatalf("first write after the heal, %v after it: %v", time.Since(t0), err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("first write after the heal took %v", d)
	}
	if got, _, err := b.store.GetItem(bg, "u", "c", "y"); err != nil || got.Payload != "2" {
		t.Fatalf("the write is not on the replica when acknowledged: %+v %v", got, err)
	}
}

// TestWriteAsksLeavers: a node that has just left a user's set may still
// serve the user from its cached view (the push telling it was lost), so
// for MembershipTTL + ViewLag after the writer first sees it leaving, the
// writer's writes ask it too: one that answers "not a member" (its view
// has caught up) lets the write go at once; one that still believes it is
// a member, or cannot be reached, is waited out to the window's end; after
// the window it is not asked.
func TestWriteAsksLeavers(t *testing.T) {
	ttl := 800 * time.Millisecond
	c := newCluster(t, 3, clusterOpts{dir: true, ttl: ttl, replicaWait: 200 * time.Millisecond})
	a, b, x := c.nodes[0], c.nodes[1], c.nodes[2]
	old := ReplicaSet{Members: []Member{{Peer: a.id}, {Peer: x.id}}}
	moved := ReplicaSet{Members: []Member{{Peer: a.id}, {Peer: b.id}}, Leaving: []peer.ID{x.id}}
	a.store.SetReplicaWaiter(a.repl)
	write := func(id string) {
		t.Helper()
		if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO(id, "p"), api.Precondition{}); err != nil {
			t.Fatalf("write %s: %v", id, err)
		}
	}
	// leave moves x out of u's set; x's view keeps the old set (the push
	// telling it was lost). It returns when a may first have seen it.
	leave := func() time.Time {
		c.dir.set("u", old)
		a.repl.MembershipChanged([]string{"u"})
		write("before")
		opened := time.Now()
		c.dir.set("u", moved)
		x.mem.SetReplicaSet("u", old)
		a.repl.MembershipChanged([]string{"u"})
		return opened
	}

	// x believes it is a member but cannot confirm (a no longer serves it
	// as one): the write waits the window out.
	opened := leave()
	write("w1")
	if d := time.Since(opened); d < ttl {
		t.Fatalf("write acknowledged %v after the leave while the node that left may still serve the user; want at least %v", d, ttl)
	}
	if a.repl.Stats().LeaverWrites == 0 {
		t.Fatal("no leaver write counted")
	}
	// The window is over: x is not asked any more.
	start := time.Now()
	write("w2")
	if d := time.Since(start); d >= ttl/2 {
		t.Fatalf("write after the window took %v", d)
	}

	// Again; x's view has caught up and it says so: the write goes at once.
	leave()
	x.mem.SetReplicaSet("u", moved)
	start = time.Now()
	write("w3")
	if d := time.Since(start); d >= ttl/2 {
		t.Fatalf("write took %v although the node that left says it is not a member", d)
	}

	// Again, with x unreachable: waited out.
	c.partition(0, 2)
	opened = leave()
	write("w4")
	if d := time.Since(opened); d < ttl {
		t.Fatalf("write acknowledged %v after the leave with the node that left unreachable; want at least %v", d, ttl)
	}
}

// blockingHandler holds node's changes requests for user until release
// is closed, and signals held when the first arrives.
type blockingHandler struct {
	inner   Handler
	user    string
	held    chan struct{}
	once    sync.Once
	release chan struct{}
}

func (h *blockingHandler) Handle(ctx context.Context, from peer.ID, req []byte) ([]byte, error) {
	if m, err := Decode(req); err == nil {
		if cr, ok := m.(*ChangesRequest); ok && cr.User == h.user {
			h.once.Do(func() { close(h.held) })
			select {
			case <-h.release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return h.inner.Handle(ctx, from, req)
}

// TestSlowPullDoesNotHoldOthers: while one user's pull from a peer is
// held (a large pull: a collection delete's tombstones), other users'
// pulls from that peer start and end, and a write waiting for its replica
// is confirmed; the held user's pull completes once the peer answers.
// (Pulls started in batches made every user queued during a batch wait
// for the batch's slowest pull.)
func TestSlowPullDoesNotHoldOthers(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{mem: true})
	c.share("big", 0, 1)
	c.share("small", 0, 1)
	a, b := c.nodes[0], c.nodes[1]
	for _, u := range []string{"big", "small"} {
		if _, err := a.store.PutItem(bg, u, "c", testkit.WBO("first", "1"), api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		return diff("big", a.store, b.store) + diff("small", a.store, b.store)
	})
	bh := &blockingHandler{inner: a.repl, user: "big", held: make(chan struct{}), release: make(chan struct{})}
	a.tr.Listen(bh)
	if _, err := a.store.PutItem(bg, "big", "c", testkit.WBO("held", "2"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	bigDone := make(chan error, 1)
	go func() { bigDone <- b.repl.Sync(bg, "big") }()
	select {
	case <-bh.held:
	case <-time.After(10 * time.Second):
		t.Fatal("b never asked a for big's changes")
	}
	a.store.SetReplicaWaiter(a.repl)
	for i := range 5 {
		ctx, cancel := context.WithTimeout(bg, 5*time.Second)
		_, err := a.store.PutItem(ctx, "small", "c", testkit.WBO(fmt.Sprintf("w%d", i), "x"), api.Precondition{})
		cancel()
		if err != nil {
			t.Fatalf("write %d of small while big's pull is held: %v", i, err)
		}
		if _, _, err := b.store.GetItem(bg, "small", "c", fmt.Sprintf("w%d", i)); err != nil {
			t.Fatalf("write %d of small acknowledged but not on the replica: %v", i, err)
		}
	}
	select {
	case err := <-bigDone:
		t.Fatalf("big's held pull ended: %v", err)
	default:
	}
	close(bh.release)
	if err := <-bigDone; err != nil {
		t.Fatalf("big's pull after the release: %v", err)
	}
	if _, _, err := b.store.GetItem(bg, "big", "c", "held"); err != nil {
		t.Fatalf("big's record after its pull: %v", err)
	}
}
