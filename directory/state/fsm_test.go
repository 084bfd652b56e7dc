package state

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory/placement"
)

func applyCmd(t *testing.T, f *FSM, idx uint64, c Command) any {
	t.Helper()
	enc, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: enc})
}

func TestFSMApply(t *testing.T) {
	f := testFSM(t)
	steps := []struct {
		cmd  Command
		want error
	}{
		{CreateUser{Name: "a", Hash: "h1", Email: "a@x", Created: 10, Node: "http://n/"}, nil},
		{CreateUser{Name: "a", Hash: "h2"}, api.ErrUserExists},
		{CreateUser{Name: "", Hash: "h2"}, ErrMalformedCommand},
		{SetEmail{Name: "nobody", Email: "x"}, api.ErrUserNotFound},
		{SetEmail{Name: "a", Email: "b@x"}, nil},
		{SetResetCode{Name: "a", CodeHash: "c1", Expires: 100}, nil},
		{ResetPassword{Name: "a", CodeHash: "wrong", Hash: "h3", Now: 50}, api.ErrBadResetCode},
		{ResetPassword{Name: "a", CodeHash: "c1", Hash: "h3", Now: 100}, api.ErrBadResetCode}, // expired
		{ResetPassword{Name: "a", CodeHash: "c1", Hash: "h3", Now: 99}, nil},
		{ResetPassword{Name: "a", CodeHash: "c1", Hash: "h4", Now: 99}, api.ErrBadResetCode}, // used up
		{SetResetCode{Name: "a", CodeHash: "c2", Expires: 200}, nil},
		{SetPassword{Name: "a", Hash: "h5"}, nil}, // clears the code
		{ResetPassword{Name: "a", CodeHash: "c2", Hash: "h6", Now: 1}, api.ErrBadResetCode},
		{SetResetCode{Name: "a", CodeHash: "c3", Expires: 200}, nil},
		{ClearResetCode{Name: "a"}, nil},
		{ResetPassword{Name: "a", CodeHash: "c3", Hash: "h6", Now: 1}, api.ErrBadResetCode},
		{DeleteUser{Name: "b"}, api.ErrUserNotFound},
	}
	for i, s := range steps {
		res := applyCmd(t, f, uint64(i+1), s.cmd)
		err, _ := res.(error)
		if !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Fatalf("step %d %#v: got %v, want %v", i, s.cmd, err, s.want)
		}
	}
	got, ok := f.Account("a")
	// The reset at Now 99 set CredsAt; the SetPassword without a time
	// (version 1) moves it one second on and records its own index (step
	// 11: index 12).
	want := Account{Name: "a", Hash: "h5", Email: "b@x", Created: 10, Node: "http://n/", CredsAt: 100, CredsIndex: 12}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("account = %+v, want %+v", got, want)
	}
	if res := applyCmd(t, f, 100, DeleteUser{Name: "a"}); res != nil {
		t.Fatalf("delete: %v", res)
	}
	if f.Accounts() != 0 {
		t.Fatalf("count = %d after delete", f.Accounts())
	}
}

func TestFSMApplyBatch(t *testing.T) {
	f := testFSM(t)
	res := applyCmd(t, f, 1, Batch{Commands: []Command{
		CreateUser{Name: "x", Hash: "h"},
		CreateUser{Name: "x", Hash: "h"},
		CreateUser{Name: "y", Hash: "h"},
		DeleteUser{Name: "z"},
	}})
	errs, ok := res.([]error)
	if !ok || len(errs) != 4 {
		t.Fatalf("batch result %#v", res)
	}
	for i, want := range []error{nil, api.ErrUserExists, nil, api.ErrUserNotFound} {
		if !errors.Is(errs[i], want) || (want == nil && errs[i] != nil) {
			t.Errorf("result %d = %v, want %v", i, errs[i], want)
		}
	}
	if f.Accounts() != 2 {
		t.Fatalf("count = %d, want 2", f.Accounts())
	}
}

func TestFSMApplyUnknownEntry(t *testing.T) {
	var logs bytes.Buffer
	f := New(slog.New(slog.NewTextHandler(&logs, nil)), placement.Policy{}, Hooks{})
	res := f.Apply(&raft.Log{Index: 7, Term: 2, Type: raft.LogCommand, Data: []byte{250, 1, '{', '}'}})
	err, _ := res.(error)
	var ue *UnknownCommandError
	if !errors.As(err, &ue) || ue.Type != 250 || ue.Version != 1 {
		t.Fatalf("result = %#v, want UnknownCommandError{250, 1}", res)
	}
	if f.Undecodable() != 1 {
		t.Fatalf("unknown counter = %d", f.Undecodable())
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "index=7") {
		t.Fatalf("not logged loudly: %q", logs.String())
	}
	// Non-command entries (barriers, no-ops) are ignored quietly.
	if res := f.Apply(&raft.Log{Type: raft.LogBarrier}); res != nil {
		t.Fatalf("barrier result %v", res)
	}
}

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string { return "mem" }

func (s *memSink) Close() error { s.closed = true; return nil }

func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	f := testFSM(t)
	for i, name := range []string{"zed", "amy", "ünï"} {
		applyCmd(t, f, uint64(i+1), CreateUser{Name: name, Hash: "h-" + name, Email: name + "@x", Created: int64(i), Node: "http://n/"})
	}
	applyCmd(t, f, 4, SetResetCode{Name: "amy", CodeHash: "c", Expires: 9})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after Snapshot must not leak into it.
	applyCmd(t, f, 5, DeleteUser{Name: "zed"})
	applyCmd(t, f, 6, SetEmail{Name: "amy", Email: "new@x"})
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v closed=%v", err, sink.closed)
	}
	snap.Release()
	lines := strings.Split(strings.TrimSpace(sink.String()), "\n")
	// header, three accounts, the cluster section
	if len(lines) != 5 || !strings.Contains(lines[1], `"amy"`) || !strings.Contains(lines[2], `"zed"`) {
		t.Fatalf("snapshot lines not header + sorted accounts:\n%s", sink.String())
	}

	g := testFSM(t)
	applyCmd(t, g, 1, CreateUser{Name: "other", Hash: "h"})
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.Account("other"); ok {
		t.Fatal("restore did not replace the state")
	}
	amy, _ := g.Account("amy")
	if want := (Account{Name: "amy", Hash: "h-amy", Email: "amy@x", Created: 1, Node: "http://n/", ResetCodeHash: "c", ResetExpires: 9,
		CredsAt: 1, CredsIndex: 2}); !reflect.DeepEqual(amy, want) {
		t.Fatalf("amy = %+v, want %+v", amy, want)
	}
	if g.Accounts() != 3 {
		t.Fatalf("count = %d, want 3", g.Accounts())
	}
	// Snapshots of equal states are byte-identical.
	s2, _ := g.Snapshot()
	var sink2 memSink
	_ = s2.Persist(&sink2)
	if !bytes.Equal(sink.Bytes(), sink2.Bytes()) {
		t.Fatal("snapshot of restored state differs")
	}
}

func TestFSMRestoreRejectsBadSnapshots(t *testing.T) {
	header := `{"format":"hce-directory","version":1,"accounts":2}` + "\n"
	acct := `{"name":"a","hash":"h","created":1}` + "\n"
	for name, data := range map[string]string{
		"empty":         "",
		"wrong format":  `{"format":"x","version":1,"accounts":0}`,
		"wrong version": `{"format":"hce-directory","version":9,"accounts":0}`,
		"truncated":     header + acct,
		"duplicate":     header + acct + acct,
		"trailing":      header + acct + `{"name":"b","hash":"h","created":1}` + "\n{}",
		"unknown field": header + acct + `{"name":"b","x":1}`,
		"no name":       header + acct + `{"hash":"h"}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := testFSM(t)
			applyCmd(t, f, 1, CreateUser{Name: "keep", Hash: "h"})
			if err := f.Restore(io.NopCloser(strings.NewReader(data))); err == nil {
				t.Fatal("restore succeeded")
			}
			if _, ok := f.Account("keep"); !ok || f.Accounts() != 1 {
				t.Fatal("failed restore changed the state")
			}
		})
	}
}

func TestFSMSnapshotIsolation(t *testing.T) {
	// Values in the map are immutable: a snapshot taken before an update
	// still sees the old record.
	f := testFSM(t)
	applyCmd(t, f, 1, CreateUser{Name: "a", Hash: "h1"})
	snap, _ := f.Snapshot()
	applyCmd(t, f, 2, SetPassword{Name: "a", Hash: "h2"})
	accts := snap.(*fsmSnapshot).accounts
	if !reflect.DeepEqual(*accts[0], Account{Name: "a", Hash: "h1", CredsIndex: 1}) {
		t.Fatalf("snapshot saw a later update: %+v", *accts[0])
	}
}

func TestFSMKeys(t *testing.T) {
	f := testFSM(t)
	good := publishOf(seedKey(1), "dir1")
	badKid := good
	badKid.Kid = "0000000000000000"
	short := good
	short.PublicKey = good.PublicKey[:10]
	noOwner := good
	noOwner.Owner = ""
	tests := []struct {
		name string
		cmd  Command
		want error
	}{
		{"publish", good, nil},
		{"again", good, nil},
		{"bad kid", badKid, ErrBadKey},
		{"short key", short, ErrBadKey},
		{"no owner", noOwner, ErrBadKey},
		{"publish 2", publishOf(seedKey(2), "dir2"), nil},
		{"retire 2", RetireKey{Kid: publishOf(seedKey(2), "").Kid}, nil},
		{"retire unknown", RetireKey{Kid: "nope"}, nil},
	}
	for i, tt := range tests {
		enc, err := EncodeCommand(tt.cmd)
		if err != nil {
			t.Fatal(err)
		}
		res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: enc})
		err, _ = res.(error)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Fatalf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if ks := f.SigningKeys(); len(ks) != 1 || ks[0].Kid != good.Kid {
		t.Fatalf("keys %+v", ks)
	}

	// Snapshot and restore keep the keys.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatalf("restore: %v\n%s", err, buf.String())
	}
	if k, ok := g.SigningKey(good.Kid); !ok || !bytes.Equal(k.PublicKey, good.PublicKey) || k.Owner != "dir1" {
		t.Fatalf("restored key %+v %v", k, ok)
	}

	// A snapshot without keys (version 1) restores, with no keys.
	old := `{"format":"hce-directory","version":1,"accounts":1}` + "\n" +
		`{"name":"alice","hash":"h","created":1}` + "\n"
	if err := g.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatalf("restore v1: %v", err)
	}
	if len(g.SigningKeys()) != 0 {
		t.Fatal("v1 restore kept keys")
	}
	// Version 1 cannot carry keys; a bad key in a snapshot is refused.
	for _, bad := range []string{
		`{"format":"hce-directory","version":1,"accounts":0,"keys":1}` + "\n",
		`{"format":"hce-directory","version":2,"accounts":0,"keys":1}` + "\n" + `{"kid":"x","pk":"AAAA","owner":"d","created":1}` + "\n",
	} {
		if err := g.Restore(io.NopCloser(strings.NewReader(bad))); err == nil {
			t.Fatalf("restored %q", bad)
		}
	}
}

// testFSM returns an empty FSM with the default placement policy that
// logs warnings to the test log.
func testFSM(t testing.TB) *FSM {
	return New(testkit.Logger(t, slog.LevelWarn), placement.Policy{}, Hooks{})
}
