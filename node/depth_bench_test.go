package node

import (
	"crypto/sha1"
	"encoding/base32"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
)

// depthWriters is how many users (one writer goroutine each) the depth
// benchmark drives: the 16 connections of hce load's closed loop.
const depthWriters = 16

// BenchmarkPostDepth POSTs 100 records per request from 16 writers (one
// user each) over ids that already have depth-1 revisions: depth=1 writes
// new ids every time, depth=100 and depth=1000 update the same 100 ids of
// each user, prefilled (untimed) to that depth; the timed requests take
// them b.N/16 revisions further. It reports, per POST: the process's CPU
// (user+system, Pebble's flushes and compactions included), the bytes the
// batches carried (Pebble's WAL input) and the bytes flushes and
// compactions wrote; per record: the key and value bytes a user's data
// holds at the end (state-B/record); and Pebble's level-0 sublevels and
// compaction debt at the end. Flat CPU and bytes across depths mean the
// write path does not pay for history. Run it with a fixed count, e.g.
//
//	go test -run '^$' -bench PostDepth -benchtime 320x ./node/
func BenchmarkPostDepth(b *testing.B) {
	for _, depth := range []int{1, 2, 100, 1000} {
		b.Run("depth="+strconv.Itoa(depth), func(b *testing.B) { benchPostDepth(b, depth) })
	}
}

// BenchmarkPostSizing runs BenchmarkPostDepth's depth-1 (new records)
// and depth-100 POSTs with Pebble sized in several ways
// (memtable/block cache in MiB, most compactions at once), to choose
// node.Config's defaults: CPU per POST, level 0 and stalls at the end.
//
//	go test -run '^$' -bench PostSizing -benchtime 1280x ./node/
func BenchmarkPostSizing(b *testing.B) {
	for _, sz := range []struct{ mem, cache, comp int }{{8, 64, 1}, {8, 64, 2}, {16, 64, 2}, {32, 128, 2}, {64, 256, 2}} {
		for _, depth := range []int{1, 100} {
			name := fmt.Sprintf("mem=%d/cache=%d/comp=%d/depth=%d", sz.mem, sz.cache, sz.comp, depth)
			b.Run(name, func(b *testing.B) {
				benchPostDepthWith(b, depth, func(c *Config) {
					c.MemTableBytes, c.CacheBytes, c.MaxCompactions = int64(sz.mem)<<20, int64(sz.cache)<<20, sz.comp
				})
			})
		}
	}
}

func benchPostDepth(b *testing.B, depth int) { benchPostDepthWith(b, depth, nil) }

func benchPostDepthWith(b *testing.B, depth int, adjust func(*Config)) {
	s, _ := benchStoreWith(b, adjust)
	// Names as Weave's: 32 characters of base32 of a SHA-1.
	user := func(u int) string {
		h := sha1.Sum([]byte("user" + strconv.Itoa(u)))
		return strings.ToLower(base32.StdEncoding.EncodeToString(h[:]))
	}
	// Prefill: depth-1 POSTs of the same 100 ids per user.
	var wg sync.WaitGroup
	for u := range depthWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i < depth; i++ {
				if _, err := s.PostItems(ctx, user(u), "history", batch100("id", 0), api.Precondition{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	settle(b, s)
	var next atomic.Int32
	var n atomic.Int64
	m0 := s.db.Metrics()
	cpu0 := processCPU()
	b.ReportAllocs()
	b.SetParallelism(max(1, depthWriters/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		u := int(next.Add(1)-1) % depthWriters
		for i := 1; pb.Next(); i++ {
			ws := batch100("id", 0)
			if depth == 1 {
				ws = batch100("id", i)
			}
			if _, err := s.PostItems(ctx, user(u), "history", ws, api.Precondition{}); err != nil {
				b.Error(err)
				return
			}
			n.Add(1)
		}
	})
	b.StopTimer()
	cpu := processCPU() - cpu0
	m1 := s.db.Metrics()
	posts := float64(n.Load())
	b.ReportMetric(float64(cpu.Microseconds())/1000/posts, "cpu-ms/op")
	b.ReportMetric(float64(m1.WAL.BytesIn-m0.WAL.BytesIn)/posts, "batch-B/op")
	written := func(m *pebble.Metrics) (n uint64) {
		for _, l := range m.Levels {
			n += l.TableBytesFlushed + l.TableBytesCompacted
		}
		return n
	}
	b.ReportMetric(float64(written(m1)-written(m0))/posts, "flush+compact-B/op")
	keys, bytes := userBytes(b, s, user(0))
	count := collectionCount(b, s, user(0), "history")
	b.ReportMetric(float64(bytes)/float64(count), "state-B/record")
	b.ReportMetric(float64(keys)/float64(count), "keys/record")
	b.ReportMetric(float64(m1.Levels[0].Sublevels), "L0-sublevels")
	b.ReportMetric(float64(m1.Compact.EstimatedDebt)/(1<<20), "debt-MiB")
	stalls, _ := s.WriteStalls()
	b.ReportMetric(float64(stalls), "stalls")
}

// settle flushes the memtables and waits (up to a minute) until Pebble
// runs no compaction, so that a timed phase does not pay for the
// compaction of its prefill.
func settle(b *testing.B, s *Store) {
	b.Helper()
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		m := s.db.Metrics()
		if m.Compact.NumInProgress == 0 && m.Compact.EstimatedDebt == 0 {
			return
		}
		runtime.Gosched()
		time.Sleep(50 * time.Millisecond)
	}
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// userBytes sums the keys and values of user's data in Pebble.
func userBytes(b *testing.B, s *Store, user string) (keys, bytes int) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: userStart(nil, keyOf(b, s, user)), UpperBound: userEnd(nil, keyOf(b, s, user))})
	if err != nil {
		b.Fatal(err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		keys++
		bytes += len(it.Key()) + len(it.Value())
	}
	return keys, bytes
}

// collectionCount returns the record count of user's collection coll.
func collectionCount(b *testing.B, s *Store, user, coll string) int {
	counts, _, err := s.CollectionCounts(ctx, user)
	if err != nil {
		b.Fatal(err)
	}
	if counts[coll] == 0 {
		b.Fatalf("no records in %s/%s", user, coll)
	}
	return int(counts[coll])
}
