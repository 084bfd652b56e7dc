package state

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/api/tokenserver"
	"github.com/hce-sync/hce/directory/placement"
)

func TestSyncCommandsRoundTrip(t *testing.T) {
	for _, c := range []Command{
		SetNodeHawkKey{ID: "n1", Key: bytes.Repeat([]byte{7}, HawkKeySize)},
		SyncLogin{FxA: "0123abcd", Generation: 5, KeysChangedAt: 4, ClientState: "aabb", At: 99, Node: "http://n/"},
		SyncLogin{FxA: "x", At: 1},
	} {
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if CommandType(enc[0]) != c.Type() || enc[1] != commandV1 {
			t.Fatalf("%v: envelope %x %x", c.Type(), enc[0], enc[1])
		}
		got, err := DecodeCommand(enc)
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("%v: round trip %#v, %v", c.Type(), got, err)
		}
	}
	if CmdSyncLogin.String() != "SyncLogin" || CmdSetNodeHawkKey.String() != "SetNodeHawkKey" {
		t.Fatal("names")
	}
	// Strict bodies.
	if _, err := DecodeCommand(append([]byte{byte(CmdSyncLogin), 1}, `{"fxa":"a","at":1,"x":2}`...)); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := DecodeCommand(append([]byte{byte(CmdSyncLogin), 2}, `{"fxa":"a","at":1}`...)); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("version 2: %v", err)
	}
}

// TestSyncLogin walks one Firefox account through the tokenserver's rules
// as the state machine applies them: creation, the same login again, a
// generation change (which revokes earlier credentials), a key change
// (new uid and account, the old account deleted), and refusals.
func TestSyncLogin(t *testing.T) {
	var revoked []string
	f := New(testkit.Logger(t, slog.LevelWarn), placement.Policy{}, Hooks{Revoked: func(u string) { revoked = append(revoked, u) }})
	idx := uint64(0)
	apply := func(c Command) error {
		t.Helper()
		idx++
		res := applyCmd(t, f, idx, c)
		err, _ := res.(error)
		return err
	}
	cs1, cs2, cs3 := "aa01", "bb02", "cc03"
	steps := []struct {
		name    string
		cmd     SyncLogin
		want    error
		uid     uint64
		revoked string
	}{
		{"create", SyncLogin{FxA: "fxa1", Generation: 100, KeysChangedAt: 100, ClientState: cs1, At: 1000}, nil, 1, ""},
		{"keep", SyncLogin{FxA: "fxa1", Generation: 100, KeysChangedAt: 100, ClientState: cs1, At: 1001}, nil, 1, ""},
		{"newer generation revokes", SyncLogin{FxA: "fxa1", Generation: 200, KeysChangedAt: 100, ClientState: cs1, At: 1002}, nil, 1, "sync-1"},
		{"older generation", SyncLogin{FxA: "fxa1", Generation: 150, KeysChangedAt: 100, ClientState: cs1, At: 1003}, ErrSyncRefused, 1, ""},
		{"older keys_changed_at", SyncLogin{FxA: "fxa1", Generation: 200, KeysChangedAt: 50, ClientState: cs1, At: 1003}, ErrSyncRefused, 1, ""},
		{"new keys without kca change", SyncLogin{FxA: "fxa1", Generation: 300, KeysChangedAt: 100, ClientState: cs2, At: 1003}, ErrSyncRefused, 1, ""},
		{"key rotation replaces", SyncLogin{FxA: "fxa1", Generation: 300, KeysChangedAt: 300, ClientState: cs2, At: 1004}, nil, 2, "sync-1"},
		{"back to an old client state", SyncLogin{FxA: "fxa1", Generation: 400, KeysChangedAt: 400, ClientState: cs1, At: 1005}, ErrSyncRefused, 2, ""},
		{"second rotation", SyncLogin{FxA: "fxa1", Generation: 400, KeysChangedAt: 400, ClientState: cs3, At: 1006}, nil, 3, "sync-2"},
		{"another account", SyncLogin{FxA: "fxa2", ClientState: cs1, At: 1007}, nil, 4, ""},
	}
	for _, s := range steps {
		revoked = nil
		err := apply(s.cmd)
		if !errors.Is(err, s.want) || (s.want == nil && err != nil) {
			t.Fatalf("%s: %v, want %v", s.name, err, s.want)
		}
		u, ok := f.SyncUser(s.cmd.FxA)
		if !ok || u.UID != s.uid || u.Account != SyncAccountName(s.uid) {
			t.Fatalf("%s: record %+v %v, want uid %d", s.name, u, ok, s.uid)
		}
		if s.revoked == "" && len(revoked) > 0 || s.revoked != "" && !slices.Contains(revoked, s.revoked) {
			t.Fatalf("%s: revoked %v, want %q", s.name, revoked, s.revoked)
		}
		if s.want != nil {
			var te *tokenserver.Error
			if !errors.As(err, &te) {
				t.Fatalf("%s: %v does not carry the tokenserver's error", s.name, err)
			}
		}
	}
	u, _ := f.SyncUser("fxa1")
	if u.Generation != 400 || u.KeysChangedAt != 400 || u.ClientState != cs3 || !slices.Equal(u.OldStates, []string{cs1, cs2}) {
		t.Fatalf("record %+v", u)
	}
	// The replaced accounts are gone, with tombstones; the current one has
	// no password and names its FxA uid.
	for _, old := range []string{"sync-1", "sync-2"} {
		if _, ok := f.Account(old); ok {
			t.Fatalf("%s still exists", old)
		}
		if _, ok := f.Tombstone(old); !ok {
			t.Fatalf("%s has no tombstone", old)
		}
	}
	a, ok := f.Account("sync-3")
	if !ok || a.Hash != "" || a.FxA != "fxa1" || !a.SyncAccount() || a.CredsAt != 1006 {
		t.Fatalf("account %+v", a)
	}
	// The generation change moved the credential time of sync-1 past the
	// credentials issued before it.
	if f.SyncUsers() != 2 {
		t.Fatalf("%d records", f.SyncUsers())
	}
	// An account deleted behind the record's back (admin) is replaced at
	// the next login, whatever the record said.
	if err := apply(DeleteUser{Name: "sync-4", At: 1100}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.SyncUser("fxa2"); ok {
		t.Fatal("record of a deleted account still served")
	}
	if err := apply(SyncLogin{FxA: "fxa2", ClientState: cs1, At: 1101}); err != nil {
		t.Fatal(err)
	}
	if u, _ := f.SyncUser("fxa2"); u.UID != 5 {
		t.Fatalf("fxa2 after its account's deletion: %+v", u)
	}
	if err := apply(SyncLogin{At: 1}); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("no fxa uid: %v", err)
	}
}

// TestSyncLoginRevokesOnGenerationChange checks the credential time after
// a generation change at the accounts server.
func TestSyncLoginRevokesOnGenerationChange(t *testing.T) {
	f := testFSM(t)
	applyCmd(t, f, 1, SyncLogin{FxA: "f", Generation: 10, ClientState: "aa", At: 500})
	before := f.Credentials("sync-1")
	if res := applyCmd(t, f, 2, SyncLogin{FxA: "f", Generation: 20, ClientState: "aa", At: 500}); res != nil {
		t.Fatal(res)
	}
	after := f.Credentials("sync-1")
	if before.ChangedAt != 500 || after.ChangedAt != 501 || after.Gen != 2 {
		t.Fatalf("credentials %+v -> %+v", before, after)
	}
	// A credential issued at 501 (the change's second) is revoked, one
	// issued after it is not.
	if !after.Revokes(api.TokenClaims{Iat: 501}) || after.Revokes(api.TokenClaims{Iat: 502}) {
		t.Fatal("revocation rule")
	}
}

func TestSyncPlacementAndHawkKey(t *testing.T) {
	f := testFSM(t)
	idx := uint64(0)
	apply := func(c Command) error {
		t.Helper()
		idx++
		err, _ := applyCmd(t, f, idx, c).(error)
		return err
	}
	for _, id := range []string{"n1", "n2"} {
		if err := apply(RegisterNode{ID: id, BaseURL: "http://" + id, PublicKey: []byte{1}, Capacity: 10, Approve: true}); err != nil {
			t.Fatal(err)
		}
	}
	key := bytes.Repeat([]byte{9}, HawkKeySize)
	if err := apply(SetNodeHawkKey{ID: "n1", Key: key}); err != nil {
		t.Fatal(err)
	}
	if err := apply(SetNodeHawkKey{ID: "n1", Key: key[:5]}); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("short key: %v", err)
	}
	if err := apply(SetNodeHawkKey{ID: "nope", Key: key}); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("unknown node: %v", err)
	}
	// A restart re-registers the node: the key stays.
	if err := apply(RegisterNode{ID: "n1", BaseURL: "http://n1", PublicKey: []byte{1}, Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.Node("n1"); !bytes.Equal(n.HawkKey, key) {
		t.Fatalf("hawk key after re-registration: %x", n.HawkKey)
	}
	// A Sync account gets a replica set like any user.
	if err := apply(SyncLogin{FxA: "f", ClientState: "aa", At: 5}); err != nil {
		t.Fatal(err)
	}
	r, _, ok := f.Replicas("sync-1")
	if !ok || len(r.Members) != 2 {
		t.Fatalf("replicas %+v %v", r, ok)
	}
	if err := apply(RetireNode{ID: "n2"}); err != nil {
		t.Fatal(err)
	}
	if err := apply(SetNodeHawkKey{ID: "n2", Key: key}); !errors.Is(err, ErrNodeRetired) {
		t.Fatalf("retired node: %v", err)
	}
}

func TestSyncSnapshot(t *testing.T) {
	f := testFSM(t)
	applyCmd(t, f, 1, RegisterNode{ID: "n1", BaseURL: "http://n1", PublicKey: []byte{1}, Capacity: 10, Approve: true})
	applyCmd(t, f, 2, SetNodeHawkKey{ID: "n1", Key: bytes.Repeat([]byte{3}, HawkKeySize)})
	applyCmd(t, f, 3, SyncLogin{FxA: "f1", Generation: 1, ClientState: "aa", At: 5})
	applyCmd(t, f, 4, SyncLogin{FxA: "f1", Generation: 2, KeysChangedAt: 2, ClientState: "bb", At: 6})
	applyCmd(t, f, 5, SyncLogin{FxA: "f2", ClientState: "cc", At: 7})
	snap, _ := f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	head := strings.SplitN(sink.String(), "\n", 2)[0]
	if !strings.Contains(head, `"version":5`) || !strings.Contains(head, `"sync":2,"sync_seq":3`) {
		t.Fatalf("header %s", head)
	}
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	snap2, _ := g.Snapshot()
	var sink2 memSink
	if err := snap2.Persist(&sink2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), sink2.Bytes()) {
		t.Fatalf("restored state differs:\n%s\n%s", sink.String(), sink2.String())
	}
	// The uid sequence survives: the next record takes uid 4.
	applyCmd(t, g, 6, SyncLogin{FxA: "f3", ClientState: "dd", At: 8})
	if u, _ := g.SyncUser("f3"); u.UID != 4 {
		t.Fatalf("uid after restore %+v", u)
	}
	if n, _ := g.Node("n1"); len(n.HawkKey) != HawkKeySize {
		t.Fatal("hawk key lost in the snapshot")
	}
	// Refusals: sync sections in an older version, a record past the
	// sequence, a duplicate.
	for _, bad := range []string{
		`{"format":"hce-directory","version":4,"accounts":0,"sync":1,"sync_seq":1}` + "\n" + `{"fxa":"f","uid":1,"account":"a","created":1}`,
		`{"format":"hce-directory","version":5,"accounts":0,"sync":1,"sync_seq":1}` + "\n" + `{"fxa":"f","uid":2,"account":"a","created":1}`,
		`{"format":"hce-directory","version":5,"accounts":0,"sync":2,"sync_seq":3}` + "\n" + `{"fxa":"f","uid":1,"account":"a","created":1}` + "\n" + `{"fxa":"f","uid":2,"account":"b","created":1}`,
		`{"format":"hce-directory","version":5,"accounts":0,"sync":1,"sync_seq":3}` + "\n" + `{"fxa":"f","uid":1,"account":"a","created":1,"extra":1}`,
	} {
		if err := testFSM(t).Restore(io.NopCloser(strings.NewReader(bad))); err == nil {
			t.Fatalf("accepted %s", bad)
		}
	}
}
