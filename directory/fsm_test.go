package directory

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
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func applyCmd(t *testing.T, f *fsm, idx uint64, c Command) any {
	t.Helper()
	enc, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: enc})
}

func TestFSMApply(t *testing.T) {
	f := newFSM(testLogger(t), nil)
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
	got, ok := f.get("a")
	want := account{Name: "a", Hash: "h5", Email: "b@x", Created: 10, Node: "http://n/"}
	if !ok || got != want {
		t.Fatalf("account = %+v, want %+v", got, want)
	}
	if res := applyCmd(t, f, 100, DeleteUser{Name: "a"}); res != nil {
		t.Fatalf("delete: %v", res)
	}
	if f.count() != 0 {
		t.Fatalf("count = %d after delete", f.count())
	}
}

func TestFSMApplyBatch(t *testing.T) {
	f := newFSM(testLogger(t), nil)
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
	if f.count() != 2 {
		t.Fatalf("count = %d, want 2", f.count())
	}
}

func TestFSMApplyUnknownEntry(t *testing.T) {
	var logs bytes.Buffer
	f := newFSM(slog.New(slog.NewTextHandler(&logs, nil)), nil)
	res := f.Apply(&raft.Log{Index: 7, Term: 2, Type: raft.LogCommand, Data: []byte{250, 1, '{', '}'}})
	err, _ := res.(error)
	var ue *UnknownCommandError
	if !errors.As(err, &ue) || ue.Type != 250 || ue.Version != 1 {
		t.Fatalf("result = %#v, want UnknownCommandError{250, 1}", res)
	}
	if f.unknown.Load() != 1 {
		t.Fatalf("unknown counter = %d", f.unknown.Load())
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

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	f := newFSM(testLogger(t), nil)
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

	g := newFSM(testLogger(t), nil)
	applyCmd(t, g, 1, CreateUser{Name: "other", Hash: "h"})
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.get("other"); ok {
		t.Fatal("restore did not replace the state")
	}
	amy, _ := g.get("amy")
	if want := (account{Name: "amy", Hash: "h-amy", Email: "amy@x", Created: 1, Node: "http://n/", ResetCodeHash: "c", ResetExpires: 9}); amy != want {
		t.Fatalf("amy = %+v, want %+v", amy, want)
	}
	if g.count() != 3 {
		t.Fatalf("count = %d, want 3", g.count())
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
			f := newFSM(testLogger(t), nil)
			applyCmd(t, f, 1, CreateUser{Name: "keep", Hash: "h"})
			if err := f.Restore(io.NopCloser(strings.NewReader(data))); err == nil {
				t.Fatal("restore succeeded")
			}
			if _, ok := f.get("keep"); !ok || f.count() != 1 {
				t.Fatal("failed restore changed the state")
			}
		})
	}
}

func TestFSMSnapshotIsolation(t *testing.T) {
	// Values in the map are immutable: a snapshot taken before an update
	// still sees the old record.
	f := newFSM(testLogger(t), nil)
	applyCmd(t, f, 1, CreateUser{Name: "a", Hash: "h1"})
	snap, _ := f.Snapshot()
	applyCmd(t, f, 2, SetPassword{Name: "a", Hash: "h2"})
	accts := snap.(*fsmSnapshot).accounts
	if !reflect.DeepEqual(*accts[0], account{Name: "a", Hash: "h1"}) {
		t.Fatalf("snapshot saw a later update: %+v", *accts[0])
	}
}
