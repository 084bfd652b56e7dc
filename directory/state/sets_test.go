package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hce-sync/hce/directory/placement"
)

// fsmRun applies commands to an FSM at increasing raft indexes.
type fsmRun struct {
	t   *testing.T
	f   *FSM
	idx uint64
}

// do applies c and returns its error.
func (r *fsmRun) do(c Command) error {
	r.t.Helper()
	r.idx++
	err, _ := applyCmd(r.t, r.f, r.idx, c).(error)
	return err
}

// must applies c and fails the test on an error.
func (r *fsmRun) must(c Command) {
	r.t.Helper()
	if err := r.do(c); err != nil {
		r.t.Fatalf("%v: %v", c.Type(), err)
	}
}

// set returns user's set in the notation "n0 n1~5 | leaving [n2]"
// (filling members with their epoch, "^" for a member marked Leave).
func (r *fsmRun) set(user string) string {
	r.t.Helper()
	reps, _, ok := r.f.Replicas(user)
	if !ok {
		r.t.Fatalf("no user %s", user)
	}
	var parts []string
	for _, m := range reps.Members {
		s := m.ID
		if m.Filling {
			s += fmt.Sprintf("~%d", m.Epoch)
		}
		if m.Leave {
			s += "^"
		}
		parts = append(parts, s)
	}
	out := strings.Join(parts, " ")
	if len(reps.Leaving) > 0 {
		var ids []string
		for _, n := range reps.Leaving {
			ids = append(ids, n.ID)
		}
		out += fmt.Sprintf(" | leaving %v", ids)
	}
	return out
}

func (r *fsmRun) wantSet(user, want string) {
	r.t.Helper()
	if got := r.set(user); got != want {
		r.t.Fatalf("set of %s = %q, want %q", user, got, want)
	}
}

// newSetsRun registers n active nodes n0..n{n-1} on distinct operators
// (capacity 100) with R=2.
func newSetsRun(t *testing.T, n int, hooks Hooks) *fsmRun {
	logs := &strings.Builder{}
	r := &fsmRun{t: t, f: New(slog.New(slog.NewTextHandler(logs, nil)), placement.Policy{NewNodeWindow: 1}, hooks)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	r.must(SetSettings{Settings: Settings{Replicas: 2}})
	for i := range n {
		r.must(RegisterNode{ID: fmt.Sprintf("n%d", i), Operator: fmt.Sprintf("op%d", i), BaseURL: "http://n/",
			Capacity: 100, PublicKey: []byte{byte(i)}, Approve: true})
	}
	return r
}

// TestFSMReplicaSetLifecycle walks one user through a failover, a
// backfill, a handoff, an unconfirmed write, an outage of its only current
// member and back, checking the set after each committed entry.
func TestFSMReplicaSetLifecycle(t *testing.T) {
	var changes []SetChange
	r := newSetsRun(t, 3, Hooks{SetsChanged: func(cs []SetChange) { changes = append(changes, cs...) }})
	r.must(CreateUser{Name: "u", Hash: "h"})
	r.wantSet("u", "n0 n1")
	if len(changes) != 1 || changes[0].User != "u" || !slices.Equal(changes[0].Nodes, []string{"n0", "n1"}) {
		t.Fatalf("changes = %+v", changes)
	}

	// n0 dies: n1, current and alive, serves; n2 joins filling; n0 owes
	// a handoff.
	r.must(SetNodeState{ID: "n0", State: placement.Down})
	r.wantSet("u", "n1 n2~1 | leaving [n0]")
	if got := changes[len(changes)-1].Nodes; !slices.Equal(got, []string{"n0", "n1", "n2"}) {
		t.Fatalf("change nodes %v", got)
	}
	// The users index lists u for the leaving node too.
	if page, _, _, _ := r.f.UsersPage("n0", "", 10); len(page) != 1 || page[0].User != "u" {
		t.Fatalf("n0's page %+v", page)
	}
	if n, _ := r.f.Node("n0"); n.Load != 0 || n.Leaving != 1 {
		t.Fatalf("n0 load %d leaving %d", n.Load, n.Leaving)
	}

	// Backfill reports: wrong epoch, filling source, then the right one.
	r.must(NodeReport{Node: "n2", Filled: []ReportFilled{{User: "u", Epoch: 9, Source: "n1"}}})
	r.must(NodeReport{Node: "n2", Filled: []ReportFilled{{User: "u", Epoch: 1, Source: "n0"}}})
	r.wantSet("u", "n1 n2~1 | leaving [n0]")
	r.must(NodeReport{Node: "n2", Filled: []ReportFilled{{User: "u", Epoch: 1, Source: "n1"}}})
	r.wantSet("u", "n1 n2 | leaving [n0]")

	// Handoff: only a current member's report counts.
	r.must(NodeReport{Node: "n2", HandedOff: []ReportHandedOff{{User: "u", Source: "n0"}}})
	r.wantSet("u", "n1 n2")

	// n0 returns: nothing to do for u (it has R members).
	r.must(SetNodeState{ID: "n0", State: placement.Active})
	r.wantSet("u", "n1 n2")

	// n2 acknowledges a write n1 did not confirm: n1 becomes filling and
	// n2 primary.
	r.must(NodeReport{Node: "n2", Unconfirmed: []ReportUnconfirmed{{User: "u"}}})
	r.wantSet("u", "n2 n1~2")
	// A filling member may not acknowledge; nor may a stranger.
	if err := r.do(NodeReport{Node: "n1", Unconfirmed: []ReportUnconfirmed{{User: "u"}}}); !errors.Is(err, ErrNotCurrentMember) {
		t.Fatalf("filling member's unconfirmed write: %v", err)
	}
	if err := r.do(NodeReport{Node: "n0", Unconfirmed: []ReportUnconfirmed{{User: "u"}, {User: "nobody"}}}); !errors.Is(err, ErrNotCurrentMember) {
		t.Fatalf("non-member's unconfirmed write: %v", err)
	}
	if err := r.do(NodeReport{Node: "ghost"}); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("unknown node's report: %v", err)
	}
	r.wantSet("u", "n2 n1~2")

	// n2, the only current member, dies: nothing moves, the user waits.
	r.must(SetNodeState{ID: "n2", State: placement.Down})
	r.wantSet("u", "n2 n1~2")
	reps, _, _ := r.f.Replicas("u")
	if _, ok := reps.Serving(); ok || !reps.Members[0].Down() {
		t.Fatalf("serving member while the only current one is down: %+v", reps.Members)
	}
	// n1 backfilled from n2 before it died: it becomes current and serves;
	// n2 then leaves and n0 joins.
	r.must(NodeReport{Node: "n1", Filled: []ReportFilled{{User: "u", Epoch: 2, Source: "n2"}}})
	r.wantSet("u", "n1 n0~3 | leaving [n2]")
	if m, ok := mustReplicas(t, r.f, "u").Serving(); !ok || m.ID != "n1" {
		t.Fatalf("serving %+v %v", m, ok)
	}
}

func mustReplicas(t *testing.T, f *FSM, user string) Replicas {
	t.Helper()
	reps, _, ok := f.Replicas(user)
	if !ok {
		t.Fatalf("no user %s", user)
	}
	return reps
}

// TestFSMOutageOfBothReplicas is finding 4 of issue 10: both nodes of a
// set go down; the user stays where its data is, and nothing is moved to
// nodes lacking it.
func TestFSMOutageOfBothReplicas(t *testing.T) {
	r := newSetsRun(t, 4, Hooks{})
	r.must(CreateUser{Name: "u", Hash: "h"})
	r.wantSet("u", "n0 n1")
	r.must(SetNodeState{ID: "n0", State: placement.Down})
	r.must(SetNodeState{ID: "n1", State: placement.Down})
	// n0's departure was possible while n1 was alive; n1 is the only
	// current copy and stays.
	r.wantSet("u", "n1 n2~1 | leaving [n0]")
	r.must(SetNodeState{ID: "n0", State: placement.Active})
	r.must(SetNodeState{ID: "n1", State: placement.Active})
	r.wantSet("u", "n1 n2~1 | leaving [n0]")

	// The replica dies first, then the primary.
	r.must(CreateUser{Name: "v", Hash: "h"})
	reps := mustReplicas(t, r.f, "v")
	p, q := reps.Members[0].ID, reps.Members[1].ID
	r.must(SetNodeState{ID: q, State: placement.Down})
	r.must(SetNodeState{ID: p, State: placement.Down})
	reps = mustReplicas(t, r.f, "v")
	if reps.Members[0].ID != p || !reps.Members[1].Filling || len(reps.Leaving) != 1 || reps.Leaving[0].ID != q {
		t.Fatalf("v after %s then %s died: %s", q, p, r.set("v"))
	}
}

// TestFSMDrainWaitsForBackfill drains a node: its users gain filling
// replacements at once, and leave it one by one as those report their
// backfill (FinishLeave, as the leader's loop proposes it).
func TestFSMDrainWaitsForBackfill(t *testing.T) {
	r := newSetsRun(t, 3, Hooks{})
	for i := range 4 {
		r.must(CreateUser{Name: fmt.Sprintf("u%d", i), Hash: "h"})
	}
	users := r.f.usersOf("n1", true)
	if len(users) == 0 {
		t.Fatal("n1 holds nobody")
	}
	r.must(SetNodeState{ID: "n1", State: placement.Draining})
	if got := r.f.LeavesReady(100); len(got) != 0 {
		t.Fatalf("leaves ready before any backfill: %v", got)
	}
	var items []LeaveItem
	for _, u := range users {
		reps := mustReplicas(t, r.f, u)
		last := reps.Members[len(reps.Members)-1]
		if !last.Filling || !slices.ContainsFunc(reps.Members, func(m MemberInfo) bool { return m.ID == "n1" }) {
			t.Fatalf("%s after the drain began: %s", u, r.set(u))
		}
		src := reps.Members[0].ID
		r.must(NodeReport{Node: last.ID, Filled: []ReportFilled{{User: u, Epoch: last.Epoch, Source: src}}})
		items = append(items, LeaveItem{User: u, Node: "n1"})
	}
	if got := r.f.LeavesReady(100); !slices.Equal(got, items) {
		t.Fatalf("leaves ready %v, want %v", got, items)
	}
	r.must(FinishLeave{Items: items})
	for _, u := range users {
		if s := r.set(u); !strings.HasSuffix(s, "| leaving [n1]") || strings.Contains(s, "~") {
			t.Fatalf("%s after the drain: %s", u, s)
		}
	}
	if n, _ := r.f.Node("n1"); n.Load != 0 || n.Leaving != len(users) {
		t.Fatalf("drained node: load %d leaving %d", n.Load, n.Leaving)
	}
	// The old two-step command keeps working on older logs.
	r.must(FinishDrain{ID: "n1"})
}

// TestFSMRetireOnlyCurrentCopy: retiring the node that holds a user's
// only current copy makes the filling members current (a loss the
// operator accepted), logged at ERROR.
func TestFSMRetireOnlyCurrentCopy(t *testing.T) {
	var logs bytes.Buffer
	r := &fsmRun{t: t, f: New(slog.New(slog.NewTextHandler(&logs, nil)), placement.Policy{}, Hooks{})}
	r.must(SetSettings{Settings: Settings{Replicas: 2}})
	for i := range 3 {
		r.must(RegisterNode{ID: fmt.Sprintf("n%d", i), Operator: fmt.Sprintf("op%d", i), BaseURL: "http://n/",
			Capacity: 100, PublicKey: []byte{byte(i)}, Approve: true})
	}
	r.must(CreateUser{Name: "u", Hash: "h"})
	r.must(NodeReport{Node: "n0", Unconfirmed: []ReportUnconfirmed{{User: "u"}}})
	r.wantSet("u", "n0 n1~1")
	r.must(SetNodeState{ID: "n0", State: placement.Down})
	r.must(RetireNode{ID: "n0"})
	r.wantSet("u", "n1 n2~2")
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "user=u") {
		t.Fatalf("loss not logged at ERROR: %s", logs.String())
	}
}

// TestFSMRebalance packs users onto two nodes, adds two empty ones, and
// runs the leader's loop by hand (plan, start, backfill, leave) until the
// planner proposes nothing: it ends, with loads within one of each other.
func TestFSMRebalance(t *testing.T) {
	r := newSetsRun(t, 2, Hooks{})
	for i := range 20 {
		r.must(CreateUser{Name: fmt.Sprintf("u%02d", i), Hash: "h"})
	}
	for i := 2; i < 4; i++ {
		r.must(RegisterNode{ID: fmt.Sprintf("n%d", i), Operator: fmt.Sprintf("op%d", i), BaseURL: "http://n/",
			Capacity: 100, PublicKey: []byte{byte(i)}, Approve: true})
	}
	// No transfer while a node is down.
	r.must(SetNodeState{ID: "n3", State: placement.Down})
	if got := r.f.PlanTransfers(4, 100); len(got) != 0 {
		t.Fatalf("planned %v with a node down", got)
	}
	if err := r.do(StartTransfer{User: "u00", From: "n0", To: "n2"}); !errors.Is(err, ErrNoTransfer) {
		t.Fatalf("transfer with a node down: %v", err)
	}
	r.must(SetNodeState{ID: "n3", State: placement.Active})
	moves := 0
	for round := 0; ; round++ {
		if round > 100 {
			t.Fatal("rebalancing does not end")
		}
		plan := r.f.PlanTransfers(4, 100)
		if len(plan) == 0 {
			break
		}
		for _, st := range plan {
			r.must(st)
			moves++
			reps := mustReplicas(t, r.f, st.User)
			last := reps.Members[len(reps.Members)-1]
			r.must(NodeReport{Node: st.To, Filled: []ReportFilled{{User: st.User, Epoch: last.Epoch, Source: reps.Members[0].ID}}})
		}
		if got := r.f.Transfers(); got != len(plan) {
			t.Fatalf("%d transfers under way, want %d", got, len(plan))
		}
		r.must(FinishLeave{Items: r.f.LeavesReady(100)})
		if got := r.f.Transfers(); got != 0 {
			t.Fatalf("%d transfers still under way", got)
		}
	}
	var loads []int
	for _, n := range r.f.Nodes() {
		loads = append(loads, n.Load)
	}
	if slices.Max(loads)-slices.Min(loads) > 1 {
		t.Fatalf("loads after %d transfers: %v", moves, loads)
	}
	t.Logf("%d transfers, loads %v", moves, loads)
}

// TestFSMSnapshotV2Readable restores a version 2 snapshot (sets as lists
// of node IDs): every member is current, loads and the index are rebuilt,
// and the next snapshot is version 3 and restores to the same state.
func TestFSMSnapshotV2Readable(t *testing.T) {
	v2 := strings.Join([]string{
		`{"format":"hce-directory","version":2,"accounts":2,"cluster":true}`,
		`{"name":"a","hash":"h","created":1}`,
		`{"name":"b","hash":"h","created":2}`,
		`{"nodes":{"n0":{"id":"n0","operator":"x","url":"http://n0/","capacity":10,"state":1,"added":3,"pk":"AQ==","load":7},` +
			`"n1":{"id":"n1","operator":"y","url":"http://n1/","capacity":10,"state":3,"added":4,"pk":"Ag==","load":0}},` +
			`"assign":{"a":["n0","n1"],"b":["n1"]},"settings":{"replicas":2,"auto_approve":false},` +
			`"voters":{"v1":{"id":"v1","url":"http://v1","raft":"127.0.0.1:1"}}}`,
	}, "\n") + "\n"
	f := testFSM(t)
	if err := f.Restore(io.NopCloser(strings.NewReader(v2))); err != nil {
		t.Fatal(err)
	}
	reps := mustReplicas(t, f, "a")
	if len(reps.Members) != 2 || reps.Members[0].ID != "n0" || reps.Members[0].Filling || reps.Members[1].Filling {
		t.Fatalf("a: %+v", reps)
	}
	if n, _ := f.Node("n1"); n.Load != 2 || !n.Down() {
		t.Fatalf("n1 = %+v", n)
	}
	if page, _, _, _ := f.UsersPage("n1", "", 10); len(page) != 2 {
		t.Fatalf("n1 page %+v", page)
	}
	snap, _ := f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	// Nothing of version 5 (Sync 1.5) in this state: written as version
	// 4, which the previous build reads (rolling upgrades).
	if !strings.HasPrefix(sink.String(), `{"format":"hce-directory","version":4,`) {
		t.Fatalf("snapshot header %q", strings.SplitN(sink.String(), "\n", 2)[0])
	}
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	snap2, _ := g.Snapshot()
	var sink2 memSink
	_ = snap2.Persist(&sink2)
	if sink2.String() != sink.String() {
		t.Fatalf("v4 round trip differs:\n%s\n%s", sink.String(), sink2.String())
	}
	// A version 2 snapshot with version 3 sets, or a set naming an unknown
	// node, is refused.
	for _, bad := range []string{
		strings.Replace(v2, `"assign":{"a":["n0","n1"],"b":["n1"]}`, `"sets":{}`, 1),
		strings.Replace(v2, `"b":["n1"]`, `"b":["n9"]`, 1),
		strings.Replace(v2, `"b":["n1"]`, `"b":["n1","n1"]`, 1),
	} {
		if err := testFSM(t).Restore(io.NopCloser(strings.NewReader(bad))); err == nil {
			t.Fatalf("restored %q", bad)
		}
	}
}
