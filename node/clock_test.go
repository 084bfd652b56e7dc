package node

import (
	"encoding/binary"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

func TestClockMonotonic(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	var last api.Stamp
	steps := []time.Duration{0, 0, time.Millisecond, -time.Hour, 0, 2 * time.Hour, -30 * time.Second, 20 * time.Second}
	for i, d := range steps {
		clk.Add(d)
		_, now, err := s.CollectionTimestamps(ctx, "u")
		if err != nil {
			t.Fatal(err)
		}
		if now < last {
			t.Fatalf("step %d: Now %v went below %v", i, now, last)
		}
		r := mustPut(t, s, "u", "c", testkit.WBO(fmt.Sprint(i), "x"))
		if r.Timestamp <= now || r.Timestamp <= last {
			t.Fatalf("step %d: write %v not above read %v / last %v", i, r.Timestamp, now, last)
		}
		last = r.Timestamp
	}
}

func TestClockSurvivesRestartWithClockSetBack(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.Dir, cfg.Clock = dir, clk.Now
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var last api.Stamp
	for i := 0; i < 3; i++ {
		clk.Add(7 * time.Second) // crosses the persisted bound more than once
		last = mustPut(t, s, "u", "c", testkit.WBO(fmt.Sprint(i), "x")).Timestamp
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != ErrClosed {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := s.CollectionTimestamps(ctx, "u"); err != ErrClosed {
		t.Fatalf("use after Close: %v", err)
	}
	clk.Add(-24 * time.Hour)
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ts, now, err := s2.CollectionTimestamps(ctx, "u")
	if err != nil || now < last || ts["c"] != last {
		t.Fatalf("after restart: now %v (last write %v), collections %v, err %v", now, last, ts, err)
	}
	r := mustPut(t, s2, "u", "c", testkit.WBO("after", "x"))
	if r.Timestamp <= last {
		t.Fatalf("write after restart stamped %v <= %v", r.Timestamp, last)
	}
	sameIDs(t, "newer=last", mustGet(t, s2, "u", "c", api.Query{HasNewer: true, Newer: last}), "after")
}

func TestDurabilityAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	s := openTest(t, dir, clk, 0)
	mustPost(t, s, "u", "c", testkit.WBO("a", "1"), api.WBO{ID: "b", Has: api.FieldPayload | api.FieldSortIndex, Payload: "22", SortIndex: 3})
	mustPost(t, s, "u", "d", api.WBO{ID: "t", Has: api.FieldPayload | api.FieldTTL, Payload: "333", TTL: 100})
	wantTS, _, _ := s.CollectionTimestamps(ctx, "u")
	wantCounts, _, _ := s.CollectionCounts(ctx, "u")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, dir, clk, 0)
	gotTS, _, _ := s2.CollectionTimestamps(ctx, "u")
	gotCounts, _, _ := s2.CollectionCounts(ctx, "u")
	used, _, _, _ := s2.Quota(ctx, "u")
	if !maps.Equal(gotTS, wantTS) || !maps.Equal(gotCounts, wantCounts) || used != 6 {
		t.Fatalf("after reopen: %v %v used %d; want %v %v", gotTS, gotCounts, used, wantTS, wantCounts)
	}
	mustPut(t, s2, "u", "c", testkit.WBO("0", "x"))
	sameIDs(t, "insertion order continues", mustGet(t, s2, "u", "c", api.Query{}), "a", "b", "0")
	sameIDs(t, "index survives", mustGet(t, s2, "u", "c", api.Query{HasIndexAbove: true, IndexAbove: 2}), "b")
	clk.Add(101 * time.Second)
	if n, err := s2.PurgeExpired(ctx); err != nil || n != 1 {
		t.Fatalf("purge after reopen: %d %v", n, err)
	}
}

// TestConcurrentWritersAndPoller runs writers and newer= pollers on a few
// users with a tiny metadata cache; every write timestamp must be unique
// per user and a poller following X-Weave-Timestamp must see every record.
func TestConcurrentWritersAndPoller(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.CacheUsers = 2
	cfg.CacheBytes = 8 << 20
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	users := []string{"u0", "u1", "u2"}
	const writers, perWriter = 4, 25
	var (
		mu      sync.Mutex
		stamps  = map[string]map[api.Stamp]bool{}
		written = map[string]map[string]bool{}
	)
	for _, u := range users {
		stamps[u], written[u] = map[api.Stamp]bool{}, map[string]bool{}
	}
	var wg, pollers sync.WaitGroup
	done := make(chan struct{})
	seen := make([]map[string]bool, len(users))
	for ui, u := range users {
		seen[ui] = map[string]bool{}
		pollers.Add(1)
		go func() {
			defer pollers.Done()
			var since api.Stamp
			poll := func() {
				ws, now, err := api.ReadCollection(ctx, s, u, "c", &api.Query{HasNewer: true, Newer: since})
				if err != nil {
					t.Error(err)
					return
				}
				for _, w := range ws {
					seen[ui][w.ID] = true
				}
				since = now
			}
			for {
				select {
				case <-done:
					poll()
					return
				default:
					poll()
				}
			}
		}()
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var prev api.Stamp
				for i := 0; i < perWriter; i++ {
					id := fmt.Sprintf("w%d-%d", w, i)
					var ts api.Stamp
					if i%2 == 0 {
						r, err := s.PutItem(ctx, u, "c", testkit.WBO(id, "p"), api.Precondition{})
						if err != nil {
							t.Error(err)
							return
						}
						ts = r.Timestamp
					} else {
						r, err := s.PostItems(ctx, u, "c", []api.WBO{testkit.WBO(id, "p"), testkit.WBO(id+"b", "q")}, api.Precondition{})
						if err != nil {
							t.Error(err)
							return
						}
						ts = r.Timestamp
					}
					if ts <= prev {
						t.Errorf("%s: writer %d stamp %v after %v", u, w, ts, prev)
					}
					prev = ts
					mu.Lock()
					if stamps[u][ts] {
						t.Errorf("%s: timestamp %v issued twice", u, ts)
					}
					stamps[u][ts] = true
					written[u][id] = true
					if i%2 == 1 {
						written[u][id+"b"] = true
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(done)
	pollers.Wait()
	for ui, u := range users {
		for id := range written[u] {
			if !seen[ui][id] {
				t.Errorf("%s: poller missed %s", u, id)
			}
		}
		counts, _, _ := s.CollectionCounts(ctx, u)
		if counts["c"] != int64(len(written[u])) {
			t.Errorf("%s: count %d, want %d", u, counts["c"], len(written[u]))
		}
	}
}

// wallCS is the fake clock's reading in centiseconds.
func wallCS(clk *testkit.Clock) api.Stamp { return api.Stamp(wallStamp(clk.Now())) }

func persistedBound(t *testing.T, s *Store) int64 {
	t.Helper()
	b, err := s.readClock()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClockHotUserDoesNotMoveOthers is the regression of Mozilla's
// test_x_weave_timestamp: one user writing far more than 100 times a second
// must not move the other users' time ahead of the wall clock, nor the
// persisted bound.
func TestClockHotUserDoesNotMoveOthers(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	var lastA api.Stamp
	for i := 0; i < 500; i++ {
		if i%100 == 0 {
			clk.Add(time.Millisecond) // a few writes per fake millisecond: all in 1 cs
		}
		r := mustPut(t, s, "a", "c", testkit.WBO(fmt.Sprint(i), "x"))
		if r.Timestamp <= lastA {
			t.Fatalf("write %d of a stamped %v after %v", i, r.Timestamp, lastA)
		}
		lastA = r.Timestamp
	}
	wall := wallCS(clk)
	if lastA < wall+499 {
		t.Fatalf("500 writes in one centisecond ended at %v, wall %v", lastA, wall)
	}
	if r := mustPut(t, s, "b", "c", testkit.WBO("x", "y")); r.Timestamp != wall {
		t.Fatalf("b's write stamped %v, want the wall clock %v", r.Timestamp, wall)
	}
	if _, now, err := s.CollectionTimestamps(ctx, "b"); err != nil || now != wall {
		t.Fatalf("b's read at %v (%v), want the wall clock %v", now, err, wall)
	}
	if _, now, err := api.ReadCollection(ctx, s, "c", "c", nil); err != nil || now != wall {
		t.Fatalf("c's read at %v (%v), want the wall clock %v", now, err, wall)
	}
	if _, now, err := s.CollectionTimestamps(ctx, "a"); err != nil || now != lastA {
		t.Fatalf("a's read at %v (%v), want its last write %v", now, err, lastA)
	}
	if b := persistedBound(t, s); b > int64(wall)+clockLease {
		t.Fatalf("persisted bound %d drifted above mono %d + lease", b, wall)
	}
	clk.Add(6 * time.Second) // past a's 500 ticks (5 s)
	wall = wallCS(clk)
	if r := mustPut(t, s, "a", "c", testkit.WBO("late", "x")); r.Timestamp != wall {
		t.Fatalf("a's write 6 s later stamped %v, want the wall clock %v", r.Timestamp, wall)
	}
	if b := persistedBound(t, s); b > int64(wall)+clockLease {
		t.Fatalf("persisted bound %d drifted above mono %d + lease", b, wall)
	}
}

// TestClockUserStampsIncrease interleaves reads, writes and no-op writes of
// one user within few centiseconds: every write is above every stamp the
// user was given, every read at least the last one.
func TestClockUserStampsIncrease(t *testing.T) {
	clk := newFakeClock()
	s := openTest(t, t.TempDir(), clk, 0)
	var given api.Stamp
	for i := 0; i < 300; i++ {
		if i%50 == 0 {
			clk.Add(10 * time.Millisecond)
		}
		var ts api.Stamp
		var err error
		write := true
		switch i % 5 {
		case 0:
			ts = mustPut(t, s, "u", "c", testkit.WBO(fmt.Sprint(i), "x")).Timestamp
		case 1:
			_, ts, err = api.ReadCollection(ctx, s, "u", "c", &api.Query{})
			write = false
		case 2:
			var r api.WriteResult
			r, err = s.DeleteItem(ctx, "u", "c", "missing", api.Precondition{}) // no-op write
			ts = r.Timestamp
		case 3:
			var its api.Stamp
			if _, its, err = s.GetItem(ctx, "u", "c", "0"); err != nil || its < given {
				t.Fatalf("GetItem at %v (%v) after %v", its, err, given)
			}
			_, _, ts, err = s.Quota(ctx, "u")
			write = false
		case 4:
			ts = mustPost(t, s, "u", "d", testkit.WBO(fmt.Sprint(i), "x")).Timestamp
		}
		if err != nil {
			t.Fatal(err)
		}
		if (write && ts <= given) || ts < given {
			t.Fatalf("op %d (write %v) stamped %v after %v", i, write, ts, given)
		}
		given = max(given, ts)
	}
}

// sameShardUsers returns n user names whose cache entries share one shard.
func sameShardUsers(s *Store, n int) []string {
	byShard := map[uint64][]string{}
	for i := 0; ; i++ {
		u := fmt.Sprintf("user%d", i)
		sh := (s.hash(u) / numStripes) % numShards
		byShard[sh] = append(byShard[sh], u)
		if len(byShard[sh]) == n {
			return byShard[sh]
		}
	}
}

// TestClockEvictionKeepsUserStamps evicts users from a one-entry cache
// shard between their reads and writes at a frozen wall clock: a reloaded
// user still never gets a write stamp <= one given before.
func TestClockEvictionKeepsUserStamps(t *testing.T) {
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.Dir, cfg.Clock, cfg.CacheUsers = t.TempDir(), clk.Now, 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	us := sameShardUsers(s, 3)
	u, v, w := us[0], us[1], us[2]
	wall := wallCS(clk)

	// A read's time, then u is evicted, then u writes in the same centisecond.
	_, now, err := s.CollectionTimestamps(ctx, u)
	if err != nil || now != wall {
		t.Fatalf("read: %v %v", now, err)
	}
	mustPut(t, s, v, "c", testkit.WBO("x", "y")) // evicts u
	if r := mustPut(t, s, u, "c", testkit.WBO("a", "x")); r.Timestamp <= now {
		t.Fatalf("write after eviction stamped %v <= the read's %v", r.Timestamp, now)
	}

	// Hot writes above mono, evicted, reloaded.
	var last api.Stamp
	for i := 0; i < 50; i++ {
		last = mustPut(t, s, u, "c", testkit.WBO(fmt.Sprint(i), "x")).Timestamp
	}
	mustGet(t, s, w, "c", api.Query{}) // evicts u
	if _, now, err := s.CollectionTimestamps(ctx, u); err != nil || now < last {
		t.Fatalf("read after reload at %v (%v), last write %v", now, err, last)
	}
	mustGet(t, s, v, "c", api.Query{}) // evicts u
	if r := mustPut(t, s, u, "c", testkit.WBO("b", "x")); r.Timestamp <= last {
		t.Fatalf("write after reload stamped %v <= %v", r.Timestamp, last)
	}

	// A no-op write's stamp (not persisted) survives an eviction.
	clk.Add(time.Second)
	r, err := s.DeleteItem(ctx, v, "c", "missing", api.Precondition{})
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, w, "c", api.Query{}) // evicts v
	if r2 := mustPut(t, s, v, "c", testkit.WBO("z", "x")); r2.Timestamp <= r.Timestamp {
		t.Fatalf("write after a no-op write and eviction stamped %v <= %v", r2.Timestamp, r.Timestamp)
	}
}

// TestClockEvictionConcurrent runs readers and writers of users sharing a
// one-entry cache shard at a frozen wall clock (every stamp in one
// centisecond or above it): each write must be above every stamp the user
// was given before the write started, and each read at least as high.
func TestClockEvictionConcurrent(t *testing.T) {
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.Dir, cfg.Clock, cfg.CacheUsers = t.TempDir(), clk.Now, 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	users := sameShardUsers(s, 3)
	var mu sync.Mutex
	given := map[string]api.Stamp{}
	var wg sync.WaitGroup
	for _, u := range users {
		for g := 0; g < 3; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 30; i++ {
					mu.Lock()
					before := given[u]
					mu.Unlock()
					var ts api.Stamp
					var err error
					write := g == 0 || (g == 1 && i%3 == 0)
					switch {
					case write && i%4 == 1:
						var r api.WriteResult
						r, err = s.DeleteItem(ctx, u, "c", "missing", api.Precondition{})
						ts = r.Timestamp
					case write:
						var r api.WriteResult
						r, err = s.PutItem(ctx, u, "c", testkit.WBO(fmt.Sprint(g, i), "x"), api.Precondition{})
						ts = r.Timestamp
					default:
						_, ts, err = api.ReadCollection(ctx, s, u, "c", &api.Query{})
					}
					if err != nil {
						t.Error(err)
						return
					}
					if (write && ts <= before) || ts < before {
						t.Errorf("%s: stamp %v (write %v) after %v was given", u, ts, write, before)
					}
					mu.Lock()
					given[u] = max(given[u], ts)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
}

// TestClockRestartSetBackPerUser restarts with the wall clock an hour back
// after a hot user ran ahead of it: every user's new writes are above
// everything given to them before, reads at least as high (and above every
// stamp that was at most mono), and the hot user's ticks did not move the
// persisted bound.
func TestClockRestartSetBackPerUser(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.Dir, cfg.Clock = dir, clk.Now
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	given := map[string]api.Stamp{}
	for i := 0; i < 300; i++ {
		given["hot"] = mustPut(t, s, "hot", "c", testkit.WBO(fmt.Sprint(i), "x")).Timestamp
	}
	_, given["reader"], _ = s.CollectionTimestamps(ctx, "reader")
	given["writer"] = mustPut(t, s, "writer", "c", testkit.WBO("a", "x")).Timestamp
	_, now, _ := s.CollectionTimestamps(ctx, "writer")
	given["writer"] = max(given["writer"], now)
	r, err := s.DeleteItem(ctx, "noop", "c", "missing", api.Precondition{})
	if err != nil {
		t.Fatal(err)
	}
	given["noop"] = r.Timestamp
	wall := wallCS(clk)
	if b := persistedBound(t, s); b > int64(wall)+clockLease {
		t.Fatalf("bound %d above mono %d + lease", b, wall)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Add(-time.Hour)
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, u := range []string{"hot", "reader", "writer", "noop"} {
		_, now, err := s2.CollectionTimestamps(ctx, u)
		if err != nil || now < given[u] || (u != "hot" && now <= given[u]) {
			t.Errorf("%s: read after restart at %v (%v), given before %v", u, now, err, given[u])
		}
		if r := mustPut(t, s2, u, "c", testkit.WBO("after", "x")); r.Timestamp <= given[u] || r.Timestamp <= now {
			t.Errorf("%s: write after restart stamped %v, given before %v", u, r.Timestamp, given[u])
		}
	}
}

func TestUserMetaVersions(t *testing.T) {
	want := userMeta{nextSeq: 42, last: 170000000012, chg: 9, conf: 300, local: 70, nlocal: 2}
	if m, err := decodeUserMeta(appendUserMeta(nil, &want)); err != nil || m != want {
		t.Fatalf("v4: %+v %v", m, err)
	}
	v3 := binary.AppendUvarint(binary.AppendVarint(binary.AppendUvarint([]byte{verUserMeta3}, 8), 5), 9)
	if m, err := decodeUserMeta(v3); err != nil || m != (userMeta{nextSeq: 8, last: 5, chg: 9}) {
		t.Fatalf("v3: %+v %v", m, err)
	}
	v2 := binary.AppendVarint(binary.AppendUvarint([]byte{verUserMeta2}, 8), 5)
	if m, err := decodeUserMeta(v2); err != nil || m != (userMeta{nextSeq: 8, last: 5}) {
		t.Fatalf("v2: %+v %v", m, err)
	}
	v1 := binary.AppendUvarint([]byte{verUserMeta1}, 7)
	if m, err := decodeUserMeta(v1); err != nil || m != (userMeta{nextSeq: 7}) {
		t.Fatalf("v1: %+v %v", m, err)
	}
	if _, err := decodeUserMeta([]byte{9, 1}); err != errCorrupt {
		t.Fatalf("unknown version: %v", err)
	}
}
