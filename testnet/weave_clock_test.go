package testnet

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/node"
)

// TestTTLBoundary checks 1.1's exact expiry rule with an injected node
// clock: expiry = int(now) + ttl, visible while expiry > int(now).
func TestTTLBoundary(t *testing.T) {
	t.Parallel()
	start := time.Unix(1800000000, 500_000_000) // x.5 s
	clk := testkit.NewClock(start)
	s := startServer(t, func(c *StandaloneConfig) {
		c.Node = func(n *node.Config) { n.Clock = clk.Now }
	})
	a := s.newAccount(t)
	a.put(t, "ttl", "r", map[string]any{"payload": "x", "ttl": 100})
	a.put(t, "ttl", "forever", map[string]any{"payload": "x"})

	clk.Set(time.Unix(1800000000+99, 990_000_000)) // int(now) = t0 + 99
	want(t, a.do(t, "GET", "storage/ttl/r", nil), 200)
	eq(t, "ids at t0+99", a.ids(t, "storage/ttl"), []string{"r", "forever"})

	clk.Set(time.Unix(1800000000+100, 0)) // int(now) = t0 + 100 = expiry
	want(t, a.do(t, "GET", "storage/ttl/r", nil), 404)
	eq(t, "ids at t0+100", a.ids(t, "storage/ttl"), []string{"forever"})
	eq(t, "count", string(decodeObject(t, a.do(t, "GET", "info/collection_counts", nil))["ttl"]), "1")

	// No ttl never expires (stored as year 2036+).
	clk.Add(5 * 365 * 24 * time.Hour)
	want(t, a.do(t, "GET", "storage/ttl/forever", nil), 200)
}

// TestClockStepBack checks the 1.2 refinement against a wall clock that
// steps backwards: each write's timestamp stays strictly greater than the
// last, including across a restart.
func TestClockStepBack(t *testing.T) {
	t.Parallel()
	clk := testkit.NewClock(time.Unix(1800000000, 0))
	s := startServer(t, func(c *StandaloneConfig) {
		c.Node = func(n *node.Config) { n.Clock = clk.Now }
	})
	a := s.newAccount(t)
	t1 := a.put(t, "c", "a", map[string]any{"payload": "1"})
	eq(t, "first stamp", t1, "1800000000.00")
	clk.Add(-time.Hour)
	t2 := a.put(t, "c", "b", map[string]any{"payload": "2"})
	if stampCS(t, t2) <= stampCS(t, t1) {
		t.Fatalf("after a clock step back: %s not after %s", t2, t1)
	}
	eq(t, "newer=t1", a.ids(t, "storage/c?newer="+t1), []string{"b"})

	s.stop()
	cfg := s.cfg
	cfg.Addr = "127.0.0.1:0"
	clk.Add(-time.Hour)
	s2 := startServerConfig(t, cfg)
	a.s = s2
	t3 := a.put(t, "c", "c", map[string]any{"payload": "3"})
	if stampCS(t, t3) <= stampCS(t, t2) {
		t.Fatalf("after restart with the clock further back: %s not after %s", t3, t2)
	}
	r := a.do(t, "GET", "info/collections", nil)
	want(t, r, 200)
	if h := stampCS(t, wantTimestampHeader(t, r)); h < stampCS(t, t3) {
		t.Fatalf("X-Weave-Timestamp %s before the last write %s", csStamp(h), t3)
	}
}

// TestConcurrentWrites: concurrent writes of one user never share a
// timestamp, none is lost (1.2 refinement, design "strictly greater").
func TestConcurrentWrites(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := s.newAccount(t)
	const workers, each = 6, 8
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan string, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := strconv.Itoa(w) + "-" + strconv.Itoa(i)
				// tryDo, not a.do: t.Fatal must not run off the test goroutine.
				r, err := s.tryDo("PUT", a.path("storage/conc/"+id), strings.NewReader(`{"payload": "`+id+`"}`),
					"Authorization", testkit.BasicAuth(a.Name, a.Password))
				if err != nil {
					errs <- err.Error()
					return
				}
				if r.Status != 200 || !stampRE.MatchString(r.body()) {
					errs <- r.String()
					return
				}
				mu.Lock()
				if other, dup := seen[r.body()]; dup {
					errs <- "timestamp " + r.body() + " given to both " + other + " and " + id
				}
				seen[r.body()] = id
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	eq(t, "records", len(a.ids(t, "storage/conc")), workers*each)
	eq(t, "count", string(decodeObject(t, a.do(t, "GET", "info/collection_counts", nil))["conc"]), strconv.Itoa(workers*each))
}
