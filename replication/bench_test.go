package replication

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// BenchmarkLag measures the time from PutItem's return on node A to the
// record's arrival in node B's changes feed, with A writing one record
// every 5 ms, over libp2p on loopback. Reports p50 and p99 in ms.
func BenchmarkLag(b *testing.B) {
	c := newCluster(b, 2, clusterOpts{})
	c.share("u", 0, 1)
	a, bb := c.nodes[0].store, c.nodes[1].store
	arrived := make([]time.Time, b.N)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	done := make(chan struct{})
	go func() {
		defer wg.Done()
		var since uint64
		seen := 0
		for seen < b.N {
			if err := bb.WaitChanges(ctx, "u", since); err != nil {
				return
			}
			rows, last, err := bb.Changes(ctx, "u", since, 0)
			if err != nil {
				b.Error(err)
				return
			}
			now := time.Now()
			for _, r := range rows {
				i, _ := strconv.Atoi(r.ID)
				if arrived[i].IsZero() {
					arrived[i] = now
					seen++
				}
			}
			since = last
		}
		close(done)
	}()
	written := make([]time.Time, b.N)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		if _, err := a.PutItem(bg, "u", "c", testkit.WBO(strconv.Itoa(i), "payload"), api.Precondition{}); err != nil {
			b.Fatal(err)
		}
		written[i] = time.Now()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatal("records did not all arrive")
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	lags := make([]float64, b.N)
	for i := range lags {
		lags[i] = max(0, float64(arrived[i].Sub(written[i]))/1e6)
	}
	slices.Sort(lags)
	b.ReportMetric(lags[len(lags)/2], "p50-ms")
	b.ReportMetric(lags[len(lags)*99/100], "p99-ms")
}

// backfillUser is BenchmarkBackfill's user: a name as Weave's (32
// characters).
const backfillUser = "ahivs333sst5oekjm7xx6oxtqu7acucs"

// BenchmarkBackfill measures how fast a new replica pulls a user of
// 20,000 records over libp2p (Sync from its only peer). Reports WBO/s.
func BenchmarkBackfill(b *testing.B) {
	const records = 20000
	var elapsed, cpu time.Duration
	for range b.N {
		b.StopTimer()
		c := newCluster(b, 2, clusterOpts{})
		c.share(backfillUser, 0)
		for k := 0; k < records; k += 1000 {
			batch := make([]api.WBO, 1000)
			for j := range batch {
				batch[j] = testkit.WBO(fmt.Sprintf("r%06d", k+j), fmt.Sprintf(`{"ciphertext":"%064d","IV":"x","hmac":"y"}`, k+j))
			}
			if _, err := c.nodes[0].store.PostItems(bg, backfillUser, "c", batch, api.Precondition{}); err != nil {
				b.Fatal(err)
			}
		}
		c.share(backfillUser, 0, 1)
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		if err := c.nodes[1].repl.Sync(bg, backfillUser); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		cpu += cpuTime() - cpu0
		b.StopTimer()
		ws, _, err := api.ReadCollection(bg, c.nodes[1].store, backfillUser, "c", nil)
		if err != nil || len(ws) != records {
			b.Fatalf("replica has %d records, %v", len(ws), err)
		}
	}
	b.ReportMetric(float64(records*b.N)/elapsed.Seconds(), "wbo/s")
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCPU50 measures the process CPU time over a 3 s window in which
// node A takes 50 writes/s: with replication stopped, with replication to
// one live peer (push notices), and with replication as hce node runs it
// (each write waits for the peer to hold it); reports them in cores and
// the differences (the cost of replication, both ends, as both nodes live
// in this process).
func BenchmarkCPU50(b *testing.B) {
	const window = 3 * time.Second
	run := func(replicate, acked bool) float64 {
		c := newCluster(b, 2, clusterOpts{})
		c.share("u", 0, 1)
		if !replicate {
			for _, tn := range c.nodes {
				tn.repl.Close()
			}
		}
		if acked {
			// As hce node runs: a write returns once the replica has it.
			c.nodes[0].store.SetReplicaWaiter(c.nodes[0].repl)
		}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		start, cpu0 := time.Now(), cpuTime()
		for i := 0; time.Since(start) < window; i++ {
			<-tick.C
			if _, err := c.nodes[0].store.PutItem(bg, "u", "c", testkit.WBO(strconv.Itoa(i%500), fmt.Sprintf("payload %d", i)), api.Precondition{}); err != nil {
				b.Fatal(err)
			}
		}
		cores := float64(cpuTime()-cpu0) / float64(time.Since(start))
		if replicate {
			testkit.Eventually(b, 10*time.Second, func() string { return diff("u", c.nodes[0].store, c.nodes[1].store) })
		}
		return cores
	}
	var with, acked, without float64
	for range b.N {
		without += run(false, false)
		with += run(true, false)
		acked += run(true, true)
	}
	b.ReportMetric(with/float64(b.N), "cores-with-repl")
	b.ReportMetric(without/float64(b.N), "cores-writes-only")
	b.ReportMetric((with-without)/float64(b.N), "cores-repl")
	b.ReportMetric((acked-without)/float64(b.N), "cores-repl-acked")
}

// BenchmarkAckedWrites measures client writes that wait for the replica
// (as hce node runs them) when many users write at once: 32 users shared
// by two nodes over libp2p, one writer each POSTing 10 records at a time
// to node 0 for b.N POSTs in all. Each write returns once node 1 pulled
// it, so its latency is the replication path's: it reports the POSTs'
// p50 and p99 and POST/s.
//
//	go test -run '^$' -bench AckedWrites -benchtime 4000x ./replication/
func BenchmarkAckedWrites(b *testing.B) {
	const users = 32
	c := newCluster(b, 2, clusterOpts{})
	for u := range users {
		c.share("u"+strconv.Itoa(u), 0, 1)
	}
	a := c.nodes[0].store
	a.SetReplicaWaiter(c.nodes[0].repl)
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for u := range users {
		wg.Go(func() {
			user := "u" + strconv.Itoa(u)
			for k := 0; ; k++ {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				batch := make([]api.WBO, 10)
				for j := range batch {
					batch[j] = testkit.WBO(strconv.Itoa((k*10+j)%200), fmt.Sprintf("payload %d %d", k, j))
				}
				t0 := time.Now()
				if _, err := a.PostItems(bg, user, "c", batch, api.Precondition{}); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "POST/s")
}

// BenchmarkWriteCPU measures the process CPU time per client write of one
// record, writes made one after another: "alone" with replication
// stopped, "replicated" with one live peer and each write waiting for the
// peer to hold it (as hce node runs). The difference is what replicating
// one write costs, both ends, as both nodes live in this process; it is
// BenchmarkCPU50's cores-repl-acked divided by 50 writes/s, measured over
// many more writes.
//
//	go test -run '^$' -bench WriteCPU -benchtime 2000x ./replication/
func BenchmarkWriteCPU(b *testing.B) {
	for _, replicate := range []bool{false, true} {
		name := "alone"
		if replicate {
			name = "replicated"
		}
		b.Run(name, func(b *testing.B) {
			c := newCluster(b, 2, clusterOpts{})
			c.share("u", 0, 1)
			if replicate {
				c.nodes[0].store.SetReplicaWaiter(c.nodes[0].repl)
			} else {
				for _, tn := range c.nodes {
					tn.repl.Close()
				}
			}
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := range b.N {
				if _, err := c.nodes[0].store.PutItem(bg, "u", "c", testkit.WBO(strconv.Itoa(i%500), fmt.Sprintf("payload %d", i)), api.Precondition{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/write")
		})
	}
}
