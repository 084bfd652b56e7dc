package state

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hce-sync/hce/directory/placement"
)

func TestLifecycleCommandsRoundTrip(t *testing.T) {
	for _, c := range []Command{RemoveVoter{ID: "d3"}, MarkRestored{Node: "n1"}, UndrainNode{ID: "n2"}, RetireDrained{ID: "n3"}} {
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if enc[0] < 50 || enc[0] > 59 || enc[1] != 1 {
			t.Fatalf("%v encoded as type %d version %d", c.Type(), enc[0], enc[1])
		}
		got, err := DecodeCommand(enc)
		if err != nil || got != c {
			t.Fatalf("%v: decoded %#v, %v", c.Type(), got, err)
		}
		if !Understands(c.Type(), 1) || Baseline(c.Type(), 1) {
			t.Fatalf("%v: understood %v, baseline %v", c.Type(), Understands(c.Type(), 1), Baseline(c.Type(), 1))
		}
	}
}

// TestBaselineIsKnown: every baseline command is decoded by this build,
// and Known lists at least the baseline.
func TestBaselineIsKnown(t *testing.T) {
	known := Known()
	for typ, vs := range baseline {
		for _, v := range vs {
			if !Understands(typ, v) || !slices.Contains(known[typ], v) {
				t.Errorf("baseline %v v%d not decoded", typ, v)
			}
		}
	}
	if Understands(CmdCreateUser, 9) || Understands(CommandType(255), 1) {
		t.Fatal("unknown commands understood")
	}
}

func TestFSMRemoveVoter(t *testing.T) {
	r := newSetsRun(t, 1, Hooks{})
	r.must(SetVoter{ID: "d1", HTTPURL: "http://d1", RaftAddr: "d1:1"})
	r.must(SetVoter{ID: "d2", HTTPURL: "http://d2", RaftAddr: "d2:1"})
	r.must(RemoveVoter{ID: "d2"})
	r.must(RemoveVoter{ID: "d9"})
	if v := r.f.Voters(); len(v) != 1 || v["d1"].HTTPURL != "http://d1" {
		t.Fatalf("voters %+v", v)
	}
	if err := r.do(RemoveVoter{}); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("empty id: %v", err)
	}
}

// TestFSMMarkRestored: a restored node becomes filling where another
// member is current, stays current (an ERROR) where it is the only one,
// and is primary nowhere while filling.
func TestFSMMarkRestored(t *testing.T) {
	var logs bytes.Buffer
	r := &fsmRun{t: t, f: New(slog.New(slog.NewTextHandler(&logs, nil)), placement.Policy{}, Hooks{})}
	r.must(SetSettings{Settings: Settings{Replicas: 2}})
	for i := range 3 {
		r.must(RegisterNode{ID: fmt.Sprintf("n%d", i), Operator: fmt.Sprintf("op%d", i), BaseURL: "http://n/",
			Capacity: 100, PublicKey: []byte{byte(i)}, Approve: true})
	}
	r.must(CreateUser{Name: "a", Hash: "h"})
	r.must(CreateUser{Name: "b", Hash: "h"})
	r.wantSet("a", "n0 n1")
	r.wantSet("b", "n2 n0")
	// b: n0 acknowledged a write n2 did not confirm: n0 is b's only
	// current member.
	r.must(NodeReport{Node: "n0", Unconfirmed: []ReportUnconfirmed{{User: "b"}}})
	r.wantSet("b", "n0 n2~1")
	r.must(MarkRestored{Node: "n0"})
	r.wantSet("a", "n1 n0~2")
	r.wantSet("b", "n0 n2~1")
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "node=n0") {
		t.Fatalf("loss not logged: %s", logs.String())
	}
	// The restored node backfills as any filling member does.
	r.must(NodeReport{Node: "n0", Filled: []ReportFilled{{User: "a", Epoch: 2, Source: "n1"}}})
	r.wantSet("a", "n1 n0")
	if err := r.do(MarkRestored{Node: "n9"}); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("unknown node: %v", err)
	}
}

// TestFSMUndrain: undraining keeps the users that have not moved and
// sends the drain's unfinished replacements to the leaving list; users
// that moved stay moved.
func TestFSMUndrain(t *testing.T) {
	r := newSetsRun(t, 4, Hooks{})
	for i := range 6 {
		r.must(CreateUser{Name: fmt.Sprintf("u%d", i), Hash: "h"})
	}
	users := r.f.usersOf("n1", true)
	if len(users) < 2 {
		t.Fatalf("n1 holds %v", users)
	}
	if err := r.do(UndrainNode{ID: "n1"}); !errors.Is(err, ErrBadNodeState) {
		t.Fatalf("undrain an active node: %v", err)
	}
	r.must(SetNodeState{ID: "n1", State: placement.Draining})
	// The first user finishes moving; the others do not.
	moved := users[0]
	reps := mustReplicas(t, r.f, moved)
	last := reps.Members[len(reps.Members)-1]
	r.must(NodeReport{Node: last.ID, Filled: []ReportFilled{{User: moved, Epoch: last.Epoch, Source: reps.Members[0].ID}}})
	r.must(FinishLeave{Items: []LeaveItem{{User: moved, Node: "n1"}}})
	var added []string
	for _, u := range users[1:] {
		reps := mustReplicas(t, r.f, u)
		if len(reps.Members) != 3 {
			t.Fatalf("%s while draining: %s", u, r.set(u))
		}
		added = append(added, reps.Members[2].ID)
	}
	r.must(UndrainNode{ID: "n1"})
	if n, _ := r.f.Node("n1"); n.State != "active" {
		t.Fatalf("state %s", n.State)
	}
	for i, u := range users[1:] {
		s := r.set(u)
		if !strings.Contains(s, "n1") || strings.Contains(s, "~") || !strings.HasSuffix(s, fmt.Sprintf("| leaving [%s]", added[i])) {
			t.Fatalf("%s after undrain: %s", u, s)
		}
	}
	if s := r.set(moved); strings.Contains(strings.Split(s, "|")[0], "n1") {
		t.Fatalf("moved user came back: %s", s)
	}
}

// TestFSMRetireDrained: RetireDrained waits until no set names the node
// (members, then leaving lists); RetireNode stays the forced path.
func TestFSMRetireDrained(t *testing.T) {
	r := newSetsRun(t, 3, Hooks{})
	for i := range 3 {
		r.must(CreateUser{Name: fmt.Sprintf("u%d", i), Hash: "h"})
	}
	users := r.f.usersOf("n1", true)
	if err := r.do(RetireDrained{ID: "n1"}); !errors.Is(err, ErrNodeNotDrained) {
		t.Fatalf("retire a member: %v", err)
	}
	r.must(SetNodeState{ID: "n1", State: placement.Draining})
	for _, u := range users {
		reps := mustReplicas(t, r.f, u)
		last := reps.Members[len(reps.Members)-1]
		r.must(NodeReport{Node: last.ID, Filled: []ReportFilled{{User: u, Epoch: last.Epoch, Source: reps.Members[0].ID}}})
		r.must(FinishLeave{Items: []LeaveItem{{User: u, Node: "n1"}}})
	}
	if err := r.do(RetireDrained{ID: "n1"}); !errors.Is(err, ErrNodeNotDrained) {
		t.Fatalf("retire with handoffs owed: %v", err)
	}
	if n, _ := r.f.Node("n1"); n.State != "draining" {
		t.Fatalf("refused retire changed the state: %s", n.State)
	}
	for _, u := range users {
		cur := mustReplicas(t, r.f, u).Members[0].ID
		r.must(NodeReport{Node: cur, HandedOff: []ReportHandedOff{{User: u, Source: "n1"}}})
	}
	r.must(RetireDrained{ID: "n1"})
	if n, _ := r.f.Node("n1"); n.State != "retired" {
		t.Fatalf("state %s", n.State)
	}
	if err := r.do(RetireDrained{ID: "n1"}); !errors.Is(err, ErrNodeRetired) {
		t.Fatalf("retire twice: %v", err)
	}
}
