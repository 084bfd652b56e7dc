package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// userKeyPrefixes returns, for every per-user key of s, the key prefix it
// starts with (up to the NUL after the user's part), counted.
func userKeyPrefixes(t *testing.T, s *Store, numbered bool) map[string]int {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := map[string]int{}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		var p string
		if numbered {
			if len(k) < 6 || k[0] != 1 || k[5] != 0 {
				t.Fatalf("key %q does not start with a user number", k)
			}
			p = string(k[:5])
		} else {
			i := bytes.IndexByte(k, 0)
			if i <= 0 {
				t.Fatalf("key %q does not start with a user name", k)
			}
			p = string(k[:i])
		}
		out[p]++
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

func hasNumber(t *testing.T, s *Store, user string) bool {
	t.Helper()
	_, closer, err := s.db.Get(userNameKey(nil, user))
	if errors.Is(err, pebble.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	closer.Close()
	return true
}

// TestUserNumbers checks the number layout of a new store: a user's keys
// start with its number, given at its first write (never by a read) and
// kept across restarts and WipeUser; numbers are never given twice; Users
// lists the names in order, leaving out users without data.
func TestUserNumbers(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	s := openTest(t, dir, clk, 0)
	if !s.nums.on {
		t.Fatal("a new store does not have the number layout")
	}
	mustPut(t, s, "bob", "c", testkit.WBO("r", "b"))
	mustPost(t, s, "alice", "c", testkit.WBO("r1", "a"), testkit.WBO("r2", "a"))
	// Reads of users that never wrote find nothing and give no number,
	// whatever they ask.
	if _, _, err := s.GetItem(ctx, "carol", "c", "r"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("GetItem of a user without data: %v", err)
	}
	if got := mustGet(t, s, "carol", "c", api.Query{}); len(got) != 0 {
		t.Fatalf("carol has %d records", len(got))
	}
	if ts, _, err := s.CollectionTimestamps(ctx, "carol"); err != nil || len(ts) != 0 {
		t.Fatalf("carol's collections: %v %v", ts, err)
	}
	if rows, _, err := s.Changes(ctx, "carol", 0, 0); err != nil || len(rows) != 0 {
		t.Fatalf("carol's changes: %v %v", rows, err)
	}
	if cp, err := s.GetCheckpoint(ctx, "carol", "peer"); err != nil || cp != (Checkpoint{}) {
		t.Fatalf("carol's checkpoint: %v %v", cp, err)
	}
	if hasNumber(t, s, "carol") {
		t.Fatal("a read gave carol a number")
	}
	prefixes := userKeyPrefixes(t, s, true)
	bob, alice := string(numKey(0)), string(numKey(1))
	if len(prefixes) != 2 || prefixes[bob] == 0 || prefixes[alice] == 0 {
		t.Fatalf("key prefixes %v, want bob's number 0 and alice's 1", prefixes)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir, clk, 0)
	if got, err := s.Users(ctx, "", 0); err != nil || !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("Users after a restart = %v %v", got, err)
	}
	sameIDs(t, "alice after a restart", mustGet(t, s, "alice", "c", api.Query{}), "r1", "r2")
	mustPut(t, s, "carol", "c", testkit.WBO("r", "c"))
	if kp := keyOf(t, s, "carol"); kp != numKey(2) {
		t.Fatalf("carol's prefix %q after a restart, want number 2", kp)
	}
	// WipeUser keeps the number; the user is listed again once it writes.
	if err := s.WipeUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Users(ctx, "", 0); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("Users after a wipe = %v", got)
	}
	if got, _ := s.Users(ctx, "bob", 1); !slices.Equal(got, []string{"carol"}) {
		t.Fatalf("Users after bob = %v", got)
	}
	mustPut(t, s, "alice", "d", testkit.WBO("x", "again"))
	if kp := keyOf(t, s, "alice"); kp != numKey(1) {
		t.Fatalf("alice's prefix %q after a wipe, want number 1", kp)
	}
	if got := mustGet(t, s, "alice", "c", api.Query{}); len(got) != 0 {
		t.Fatalf("alice's wiped collection has %d records", len(got))
	}
	// A first write that changes nothing (and has no stamp to persist:
	// the clock did not move) gives no number away: the next user gets
	// it.
	if _, err := s.DeleteItem(ctx, "dave", "c", "nope", api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if err := s.WipeUser(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	if hasNumber(t, s, "dave") {
		t.Fatal("a write that changed nothing, or a wipe, gave dave a number")
	}
	mustPut(t, s, "eve", "c", testkit.WBO("r", "e"))
	if kp := keyOf(t, s, "eve"); kp != numKey(3) {
		t.Fatalf("eve's prefix %q, want number 3", kp)
	}
	if got, _ := s.Users(ctx, "", 0); !slices.Equal(got, []string{"alice", "bob", "carol", "eve"}) {
		t.Fatalf("Users = %v", got)
	}
	prefixes = userKeyPrefixes(t, s, true)
	if _, ok := prefixes[string(noUserKey)]; ok {
		t.Fatal("a key under the prefix of users without a number")
	}
	if len(prefixes) != 4 {
		t.Fatalf("%d user prefixes for 4 users", len(prefixes))
	}
	// Every number key names its user back.
	for _, u := range []string{"alice", "bob", "carol", "eve"} {
		kp := keyOf(t, s, u)
		v, closer, err := s.db.Get(userNumKey(nil, binary.BigEndian.Uint32([]byte(kp[1:]))))
		if err != nil || string(v) != u {
			t.Fatalf("number of %s names %q (%v)", u, v, err)
		}
		closer.Close()
	}
}

// TestUserNumberWithFailedWrite checks that a first write whose staging
// fails leaves the user without a number and the store without its keys,
// gives the number back, and that the user's next write gets one.
func TestUserNumberWithFailedWrite(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	mustPut(t, s, "a", "c", testkit.WBO("r", "a"))
	failed := errors.New("staging failed")
	_, _, err := s.writeLocked("b", nil, func(st *userState, ts stamp, b *pebble.Batch, sc *scratch) (func(), error) {
		if st.kp != numKey(1) {
			t.Errorf("b stages with prefix %q, want number 1", st.kp)
		}
		if err := b.Set(recKey(nil, st.kp, "c", "x"), []byte{1}, nil); err != nil {
			return nil, err
		}
		return nil, failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("write: %v", err)
	}
	if hasNumber(t, s, "b") || keyOf(t, s, "b") != noUserKey {
		t.Fatal("a failed write gave b a number")
	}
	mustPut(t, s, "c", "c", testkit.WBO("r", "c"))
	mustPut(t, s, "b", "c", testkit.WBO("r", "b"))
	if kp := keyOf(t, s, "c"); kp != numKey(1) {
		t.Fatalf("c's prefix %q, want number 1 (given back by b's failed write)", kp)
	}
	if kp := keyOf(t, s, "b"); kp != numKey(2) {
		t.Fatalf("b's prefix %q, want number 2", kp)
	}
	if got := mustGet(t, s, "b", "c", api.Query{}); len(got) != 1 || got[0].ID != "r" {
		t.Fatalf("b's records: %v", got)
	}
}

// TestNameLayoutKept checks that a store written by the builds before the
// user numbers keeps its layout: its users and new ones are keyed by
// name, listed in order, across a restart.
func TestNameLayoutKept(t *testing.T) {
	s, cfg, want := openFixture(t, "format4", "fixture-node")
	if s.nums.on {
		t.Fatal("a store of the name layout was opened with the number layout")
	}
	mustPut(t, s, "zed", "c", testkit.WBO("r", "z"))
	mustPut(t, s, "abe", "c", testkit.WBO("r", "a"))
	if err := s.WipeUser(ctx, "abe"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.nums.on {
		t.Fatal("the name layout changed at a restart")
	}
	if got, err := s.Users(ctx, "", 0); err != nil || !slices.Equal(got, []string{fixtureUser, "zed"}) {
		t.Fatalf("Users = %v %v", got, err)
	}
	if got, _ := s.Users(ctx, fixtureUser, 1); !slices.Equal(got, []string{"zed"}) {
		t.Fatalf("Users after %s = %v", fixtureUser, got)
	}
	prefixes := userKeyPrefixes(t, s, false)
	if prefixes["zed"] == 0 || prefixes[fixtureUser] == 0 || prefixes["abe"] != 1 || len(prefixes) != 3 {
		t.Fatalf("key prefixes %v", prefixes)
	}
	if got := readFixture(t, s); len(got.Docs) != len(want.Docs) {
		t.Fatalf("%d documents read, want %d", len(got.Docs), len(want.Docs))
	}
}

// TestReadsOutsideTheLockDoNotWait checks that the reads that do not take
// the user's lock (the changes feed, checkpoints, _local documents) find
// the user's number while a write of the user holds its lock, and that a
// user without a number reads nothing and gets none. Before, they took
// the lock's shared side, so a replication pull waited for the user's
// write in progress, fsync included.
func TestReadsOutsideTheLockDoNotWait(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	mustPost(t, s, "u", "c", api.WBO{ID: "a", Has: api.FieldPayload, Payload: "x"})
	if err := s.SetCheckpoint(ctx, "u", "peer", Checkpoint{Source: "src", Seq: 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutLocal(ctx, "u", "l", []byte(`{"k":1}`), ""); err != nil {
		t.Fatal(err)
	}
	mu := s.lock("u")
	mu.Lock() // a write of u in progress
	done := make(chan error, 1)
	go func() {
		rows, _, err := s.Changes(ctx, "u", 0, 10)
		if err == nil && (len(rows) != 1 || rows[0].ID != "a") {
			err = fmt.Errorf("changes %+v, want the row of a", rows)
		}
		if err == nil {
			var cp Checkpoint
			cp, err = s.GetCheckpoint(ctx, "u", "peer")
			if err == nil && cp != (Checkpoint{Source: "src", Seq: 7}) {
				err = fmt.Errorf("checkpoint %+v", cp)
			}
		}
		if err == nil {
			_, err = s.GetLocal(ctx, "u", "l")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the reads waited for the user's lock")
	}
	mu.Unlock()
	if t.Failed() {
		<-done
		return
	}
	// A user who never wrote: nothing, and no number.
	rows, _, err := s.Changes(ctx, "nobody", 0, 10)
	if err != nil || len(rows) != 0 {
		t.Fatalf("changes of nobody: %v, %v", rows, err)
	}
	if cp, err := s.GetCheckpoint(ctx, "nobody", "peer"); err != nil || cp != (Checkpoint{}) {
		t.Fatalf("checkpoint of nobody: %+v, %v", cp, err)
	}
	if _, err := s.GetLocal(ctx, "nobody", "l"); !errors.Is(err, ErrDocNotFound) {
		t.Fatalf("local of nobody: %v", err)
	}
	if kp, err := s.lookupUserKey("nobody", nil); err != nil || kp != noUserKey {
		t.Fatalf("nobody has the prefix %q (%v)", kp, err)
	}
}
