package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/testkit"
)

// nopReporter accepts every report.
type nopReporter struct{}

func (nopReporter) Report(context.Context, dirproto.ReportRequest) (dirproto.ReportResponse, error) {
	return dirproto.ReportResponse{Notified: true}, nil
}

// TestPulledReports: which report a complete pull earns, by this node's
// and the source's state when the pull started, the time it started and
// the source's final flag. A Filled needs the pull to start at least the
// membership TTL plus the directory's view lag after the epoch was learnt.
func TestPulledReports(t *testing.T) {
	self, src, other := peer.ID("self"), peer.ID("src"), peer.ID("other")
	ttl, lag := time.Second, 300*time.Millisecond
	settle := ttl + lag
	learnt := time.Unix(1_700_000_000, 0)
	set := func(selfFilling bool, selfEpoch uint64, srcFilling, srcLeaving bool) ReplicaSet {
		s := ReplicaSet{Members: []Member{{Peer: other}, {Peer: self, Filling: selfFilling, Epoch: selfEpoch}}}
		if srcLeaving {
			s.Leaving = []peer.ID{src}
		} else {
			s.Members = append(s.Members, Member{Peer: src, Filling: srcFilling})
		}
		return s
	}
	for _, tc := range []struct {
		name       string
		set        ReplicaSet
		fillEpoch  uint64 // the epoch this node learnt at learnt (0: none)
		started    time.Time
		final      bool
		wantFilled bool
		wantHanded bool
	}{
		{"filled", set(true, 3, false, false), 3, learnt.Add(settle), false, true, false},
		{"filled, final ignored", set(true, 3, false, false), 3, learnt.Add(2 * settle), true, true, false},
		{"started too early", set(true, 3, false, false), 3, learnt.Add(settle - time.Millisecond), false, false, false},
		{"started after the TTL, within the view lag", set(true, 3, false, false), 3, learnt.Add(ttl), false, false, false},
		{"source filling", set(true, 3, true, false), 3, learnt.Add(settle), false, false, false},
		{"epoch learnt is another", set(true, 4, false, false), 3, learnt.Add(settle), false, false, false},
		{"epoch never learnt", set(true, 3, false, false), 0, learnt.Add(settle), false, false, false},
		{"filling pulls from leaving", set(true, 3, false, true), 3, learnt.Add(settle), true, false, false},
		{"handed off", set(false, 0, false, true), 0, learnt, true, false, true},
		{"leaving, not final", set(false, 0, false, true), 0, learnt, false, false, false},
		{"current from member, final", set(false, 0, false, false), 0, learnt, true, false, false},
		{"not a member", ReplicaSet{Members: []Member{{Peer: src}}, Leaving: []peer.ID{self}}, 0, learnt, true, false, false},
	} {
		r := &Replicator{self: self, cfg: Config{MembershipTTL: ttl, ViewLag: lag, Reporter: nopReporter{}}, reports: newReportQueue(), fills: map[string]*fillState{}}
		if tc.fillEpoch != 0 {
			r.fills["u"] = &fillState{epoch: tc.fillEpoch, learnt: learnt}
		}
		r.pulled("u", src, tc.set, tc.started, tc.final)
		f, gotFilled := r.reports.filled["u"]
		_, gotHanded := r.reports.handed[dirproto.HandedOff{User: "u", Source: src.String()}]
		if gotFilled != tc.wantFilled || gotHanded != tc.wantHanded {
			t.Errorf("%s: filled %v (%+v), handed off %v", tc.name, gotFilled, f, gotHanded)
			continue
		}
		if gotFilled && (f.Epoch != 3 || f.Source != src.String()) {
			t.Errorf("%s: Filled %+v", tc.name, f)
		}
	}
}

// TestFilledAfterCompletePullStartedAfterTTL: a new member is filling; a
// pull it completes within the membership TTL of learning its epoch earns
// no Filled; the fill loop's pull, started after the TTL, does, and only
// once the member has all of the source's data (the feed is read in pages
// of 5).
func TestFilledAfterCompletePullStartedAfterTTL(t *testing.T) {
	ttl := 800 * time.Millisecond
	c := newCluster(t, 2, clusterOpts{dir: true, ttl: ttl, changesBatch: 5, fetchBatch: 3})
	a, b := c.nodes[0], c.nodes[1]
	c.dir.set("u", c.members(0))
	for i := range 40 {
		if _, err := a.store.PutItem(bg, "u", "c", testkit.WBO(fmt.Sprintf("r%02d", i), "p"), api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var filledAt time.Time
	c.dir.onReport = func(from peer.ID, req dirproto.ReportRequest) {
		if from != b.id || len(req.Filled) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if filledAt.IsZero() {
			filledAt = time.Now()
		}
		if d := diff("u", a.store, b.store); d != "" {
			t.Errorf("Filled reported before the pull completed: %s", d)
		}
	}
	s := c.members(0, 1)
	s.Members[1].Filling, s.Members[1].Epoch = true, 1
	pushed := time.Now()
	c.dir.set("u", s)
	if err := b.repl.Sync(bg, "u"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	early := !filledAt.IsZero()
	mu.Unlock()
	if time.Since(pushed) < ttl && early {
		t.Fatal("Filled reported for a pull started within the TTL")
	}
	testkit.WaitFor(t, 15*time.Second, "member current", func() bool { return c.dir.get("u").IsCurrent(b.id) })
	mu.Lock()
	defer mu.Unlock()
	if d := filledAt.Sub(pushed); d < ttl {
		t.Fatalf("Filled reported %v after the epoch was set, before the TTL (%v)", d, ttl)
	}
	if d := diff("u", a.store, b.store); d != "" {
		t.Fatal(d)
	}
}

// TestHandoffFromLeavingNode: a node that left the set (still listed as
// leaving) holds writes the members lack. The members pull them; while
// the leaving node's own view still says it is a member, its answers are
// not final and no handoff is reported. Once its view says it left, a
// member's complete pull is final, HandedOff is committed, and the
// leaving node, seeing on the directory's answers that it no longer holds
// the user, wipes the user's data.
func TestHandoffFromLeavingNode(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{dir: true, sweepInterval: 200 * time.Millisecond})
	a, b, l := c.nodes[0], c.nodes[1], c.nodes[2]
	c.dir.set("u", c.members(0, 1, 2))
	c.partition(0, 2)
	c.partition(1, 2)
	var acks ackLog
	for i := range 20 {
		acks.put(t, l.store, "u", "c", fmt.Sprintf("r%02d", i), fmt.Sprintf("only on l %d", i))
	}
	// The directory moves l out of the set, into the leaving list; l's
	// own cached view still has it as a member.
	moved := c.members(0, 1)
	moved.Leaving = []peer.ID{l.id}
	c.dir.mu.Lock()
	c.dir.sets["u"] = moved
	c.dir.mu.Unlock()
	for _, tn := range []*tnode{a, b} {
		tn.mem.SetReplicaSet("u", moved)
	}
	c.heal(0, 2)
	c.heal(1, 2)
	a.repl.MembershipChanged([]string{"u"})
	b.repl.MembershipChanged([]string{"u"})
	testkit.Eventually(t, 15*time.Second, func() string { return diff("u", a.store, b.store, l.store) })
	acks.check(t, a.store, b.store)
	if log := c.dir.log(); len(log) != 0 {
		t.Fatalf("reports while the leaving node still thinks it is a member: %v", log)
	}
	if !slices.Equal(c.dir.get("u").Leaving, []peer.ID{l.id}) {
		t.Fatalf("leaving list %v", c.dir.get("u").Leaving)
	}
	// l learns it left: its answers become final.
	l.mem.SetReplicaSet("u", moved)
	testkit.WaitFor(t, 15*time.Second, "handoff", func() bool { return len(c.dir.get("u").Leaving) == 0 })
	// The store stops listing the user when the wipe commits; the
	// counter moves right after.
	testkit.WaitFor(t, 15*time.Second, "wipe", func() bool {
		us, err := l.store.Users(bg, "", 0)
		return err == nil && !slices.Contains(us, "u") && l.repl.Stats().UsersWiped >= 1
	})
	if n := l.repl.Stats().UsersWiped; n != 1 {
		t.Fatalf("UsersWiped = %d", n)
	}
	acks.check(t, a.store, b.store)
	for _, tn := range []*tnode{a, b} {
		if us, _ := tn.store.Users(bg, "", 0); !slices.Contains(us, "u") {
			t.Fatal("a member wiped the user")
		}
	}
}

// TestWipeOnlyOnPositiveAnswer: data of a user the directory does not
// list for this node is wiped only after complete sweeps (positive
// answers) found it unlisted, never while the directory cannot be
// reached; users it lists (as member or leaving) are kept.
func TestWipeOnlyOnPositiveAnswer(t *testing.T) {
	ttl := 100 * time.Millisecond
	c := newCluster(t, 2, clusterOpts{dir: true, ttl: ttl})
	a := c.nodes[0]
	c.partition(0, 1) // no handoff of "leaving" meanwhile
	kept := c.members(0, 1)
	c.dir.set("member", kept)
	gone := c.members(1)
	gone.Leaving = []peer.ID{a.id}
	c.dir.set("leaving", gone)
	// The sweep every replicator starts with must not see the users
	// below: it would make them wipe candidates before the test begins.
	testkit.WaitFor(t, 10*time.Second, "the first sweep", func() bool { return a.repl.Stats().Sweeps >= 1 })
	for _, u := range []string{"member", "leaving", "stray"} {
		if _, err := a.store.PutItem(bg, u, "c", testkit.WBO("r", "p"), api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	a.mem.SetError(errors.New("directory unreachable"))
	start := time.Now()
	testkit.WaitFor(t, 10*time.Second, "sweeps over several TTLs", func() bool {
		if err := a.repl.Sweep(bg); err == nil {
			t.Fatal("sweep succeeded without a directory")
		}
		return time.Since(start) > 5*ttl
	})
	if us, _ := a.store.Users(bg, "", 0); len(us) != 3 {
		t.Fatalf("users %v after sweeps without a directory", us)
	}
	a.mem.SetError(nil)
	if err := a.repl.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	if us, _ := a.store.Users(bg, "", 0); len(us) != 3 {
		t.Fatalf("users %v wiped after a single sweep", us)
	}
	testkit.WaitFor(t, 10*time.Second, "stray wiped", func() bool {
		if err := a.repl.Sweep(bg); err != nil {
			t.Fatal(err)
		}
		us, _ := a.store.Users(bg, "", 0)
		return !slices.Contains(us, "stray")
	})
	if us, _ := a.store.Users(bg, "", 0); !slices.Equal(us, []string{"leaving", "member"}) {
		t.Fatalf("users %v", us)
	}
	if n := a.repl.HandoffBacklog(); n != 1 {
		t.Fatalf("HandoffBacklog = %d, want 1", n)
	}
}

// TestRestartedNodeHandsOff: a node is down while the directory replaces
// it (it becomes a leaving member, a new member fills from the remaining
// current one). When it comes back, its first sweep finds it is leaving,
// tells the members, they pull what only it had, report the handoff, and
// it wipes the user: free for new users.
func TestRestartedNodeHandsOff(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{dir: true, sweepInterval: 300 * time.Millisecond})
	a, n, x := c.nodes[0], c.nodes[1], c.nodes[2]
	c.dir.set("u", c.members(0, 2))
	c.partition(0, 2)
	var acks ackLog
	acks.put(t, a.store, "u", "c", "shared", "on a")
	for i := range 10 {
		acks.put(t, x.store, "u", "c", fmt.Sprintf("x%d", i), "only on x")
	}
	c.stopRepl(2) // x goes down
	c.heal(0, 2)
	replaced := c.members(0, 1)
	replaced.Members[1].Filling, replaced.Members[1].Epoch = true, 1
	replaced.Leaving = []peer.ID{x.id}
	c.dir.set("u", replaced)
	testkit.WaitFor(t, 15*time.Second, "the new member filled", func() bool { return c.dir.get("u").IsCurrent(n.id) })
	c.startRepl(2, true) // x comes back
	testkit.WaitFor(t, 20*time.Second, "handoff", func() bool { return len(c.dir.get("u").Leaving) == 0 })
	acks.check(t, a.store, n.store)
	testkit.WaitFor(t, 15*time.Second, "x wiped the user", func() bool {
		us, err := x.store.Users(bg, "", 0)
		return err == nil && len(us) == 0
	})
	testkit.WaitFor(t, 5*time.Second, "backlog", func() bool { return x.repl.HandoffBacklog() == 0 })
}

// TestFillSource: a filling member pulls from the current members that
// are not down, primary first, then the others in turn.
func TestFillSource(t *testing.T) {
	self, a, b, c := peer.ID("self"), peer.ID("a"), peer.ID("b"), peer.ID("c")
	set := ReplicaSet{Members: []Member{{Peer: a}, {Peer: self, Filling: true}, {Peer: b, Down: true}, {Peer: c}, {Peer: "d", Filling: true}}}
	for try, want := range []peer.ID{a, c, a} {
		if got, ok := fillSource(set, self, try); !ok || got != want {
			t.Errorf("try %d: %s %v, want %s", try, got, ok, want)
		}
	}
	if _, ok := fillSource(ReplicaSet{Members: []Member{{Peer: self, Filling: true}, {Peer: b, Filling: true}}}, self, 0); ok {
		t.Error("a source among filling members")
	}
}
