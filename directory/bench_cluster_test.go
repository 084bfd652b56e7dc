package directory

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkClusterRegistrations measures account registrations per second
// committed through raft on 3 voters over mutual TLS on loopback, with
// fsync on (raft-boltdb), 64 concurrent callers on the leader. The
// directory's group commit puts many registrations into one raft entry.
// Password hashing uses the tests' cheap argon2 parameters so that the
// figure is raft's, not argon2's (with the production parameters, m=19 MiB
// t=2, hashing costs ~30 ms of one core per registration and bounds
// registrations at roughly 60/s on 2 cores whatever raft does).
//
//	go test -run '^$' -bench ClusterRegistrations -benchtime 20000x ./directory/
func BenchmarkClusterRegistrations(b *testing.B) {
	c := newTestCluster(b, 3, nil)
	l := c.leader()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := l.d.CreateUser(ctx, fmt.Sprintf("bench-user-%d", i), "bench-password", ""); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "registrations/s")
	st := l.d.Stats()
	b.Logf("%+v", st)
}
