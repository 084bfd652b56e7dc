package node

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
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
		r := mustPut(t, s, "u", "c", wbo(fmt.Sprint(i), "x"))
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
		last = mustPut(t, s, "u", "c", wbo(fmt.Sprint(i), "x")).Timestamp
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
	r := mustPut(t, s2, "u", "c", wbo("after", "x"))
	if r.Timestamp <= last {
		t.Fatalf("write after restart stamped %v <= %v", r.Timestamp, last)
	}
	sameIDs(t, "newer=last", mustGet(t, s2, "u", "c", api.Query{HasNewer: true, Newer: last}), "after")
}

func TestDurabilityAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	s := openTest(t, dir, clk, 0)
	mustPost(t, s, "u", "c", wbo("a", "1"), api.WBO{ID: "b", Has: api.FieldPayload | api.FieldSortIndex, Payload: "22", SortIndex: 3})
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
	mustPut(t, s2, "u", "c", wbo("0", "x"))
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
				ws, now, err := s.GetCollection(ctx, u, "c", &api.Query{HasNewer: true, Newer: since})
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
						r, err := s.PutItem(ctx, u, "c", wbo(id, "p"), api.Precondition{})
						if err != nil {
							t.Error(err)
							return
						}
						ts = r.Timestamp
					} else {
						r, err := s.PostItems(ctx, u, "c", []api.WBO{wbo(id, "p"), wbo(id+"b", "q")}, api.Precondition{})
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
