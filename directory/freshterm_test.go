package directory

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api/testkit"
)

// TestFirstOfTerm: the first index of a term in a log whose terms grow
// along it, including a term that began before the log's first entry
// (compacted) and terms the log does not hold yet.
func TestFirstOfTerm(t *testing.T) {
	s := raft.NewInmemStore()
	terms := []uint64{1, 1, 2, 2, 2, 3, 5, 5}
	var logs []*raft.Log
	for i, term := range terms {
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: term, Type: raft.LogNoop})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		term, want uint64
		ok         bool
	}{{1, 1, true}, {2, 3, true}, {3, 6, true}, {4, 0, false}, {5, 7, true}, {6, 0, false}} {
		if got, ok := firstOfTerm(s, tc.term); got != tc.want || ok != tc.ok {
			t.Errorf("term %d: %d %v, want %d %v", tc.term, got, ok, tc.want, tc.ok)
		}
	}
	// Compaction took the first four entries: term 2 began before the
	// log's first entry, which is where its (committed) start is taken.
	if err := s.DeleteRange(1, 4); err != nil {
		t.Fatal(err)
	}
	if got, ok := firstOfTerm(s, 2); got != 5 || !ok {
		t.Errorf("term 2 after compaction: %d %v, want 5 true", got, ok)
	}
	if got, ok := firstOfTerm(s, 1); ok {
		t.Errorf("term 1, wholly compacted: %d %v, want not found", got, ok)
	}
	if got, ok := firstOfTerm(raft.NewInmemStore(), 1); ok {
		t.Errorf("empty log: %d %v", got, ok)
	}
}

// TestCatchingUpFollowerIsNotFresh: a follower that comes back behind the
// leader (cut off while writes went on) hears from the leader at once
// and, raft capping its commit index at the last entry it holds, looks
// current by its own indexes while it catches up. It must not answer who
// serves a user before it has applied what the leader had committed
// (chaos seed 71: a voter back from a partition told a node it was still
// a member of a set it had left). Every answer it would give during the
// catch-up is checked against the writes it missed; once caught up it
// answers.
func TestCatchingUpFollowerIsNotFresh(t *testing.T) {
	cut := &cutFaults{}
	const lagging = "v3"
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.Raft.MaxBatch = 1 // one raft entry per registration: a long catch-up
		if cfg.ID == lagging {
			cfg.Faults = cut
		}
	})
	l := c.leader()
	f := c.voters[2]
	if f.id != lagging || f == l {
		t.Skipf("the cut voter %q is not a follower", lagging)
	}
	testkit.WaitFor(t, 10*time.Second, "the follower is fresh", func() bool { return f.d.fresh() == nil })
	cut.on.Store(true)
	testkit.WaitFor(t, 10*time.Second, "the cut follower is not fresh", func() bool { return f.d.fresh() != nil })

	// Writes the follower misses: enough entries that catching up takes
	// many AppendEntries rounds.
	const n = 3000
	var wg sync.WaitGroup
	var failed atomic.Int64
	names := make([]string, n)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				names[i] = fmt.Sprintf("missed%04d", i)
				if err := l.d.CreateUser(context.Background(), names[i], "password", ""); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d registrations failed", failed.Load())
	}
	committed := l.d.raft.CommitIndex()

	cut.on.Store(false)
	polls, checks, stale := 0, 0, 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not become fresh after catching up (%d polls)", polls)
		}
		polls++
		if f.d.fresh() != nil {
			continue
		}
		checks++
		// Fresh: its state must hold every write the leader had committed
		// before the heal.
		missing := 0
		for _, u := range names {
			if _, ok := f.d.state.Account(u); !ok {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		stale++
		t.Errorf("answered as fresh at raft applied index %d (leader had committed %d) lacking %d of %d registrations",
			f.d.raft.AppliedIndex(), committed, missing, n)
		if stale >= 3 {
			t.FailNow()
		}
	}
	t.Logf("fresh after catching up (%d polls)", polls)
}
