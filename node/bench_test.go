package node

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/hce-sync/hce/api"
)

// syncCountingFS counts fsyncs of files opened for writing.
type syncCountingFS struct {
	vfs.FS
	syncs atomic.Int64
}

type syncCountingFile struct {
	vfs.File
	n *atomic.Int64
}

func (f syncCountingFile) Sync() error     { f.n.Add(1); return f.File.Sync() }
func (f syncCountingFile) SyncData() error { f.n.Add(1); return f.File.SyncData() }

func (fs *syncCountingFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return syncCountingFile{File: f, n: &fs.syncs}, nil
}

func (fs *syncCountingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs *syncCountingFS) ReuseForWrite(o, n string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(o, n, c))
}

func (fs *syncCountingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, c, opts...))
}

func benchStore(b *testing.B) (*Store, *syncCountingFS) {
	b.Helper()
	return benchStoreWith(b, nil)
}

// benchStoreWith is benchStore with adjust (if set) applied to the
// configuration.
func benchStoreWith(b *testing.B, adjust func(*Config)) (*Store, *syncCountingFS) {
	b.Helper()
	fs := &syncCountingFS{FS: vfs.Default}
	cfg := DefaultConfig()
	cfg.Dir = b.TempDir()
	cfg.fs = fs
	if adjust != nil {
		adjust(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, fs
}

var benchPayload = strings.Repeat("x", 300)

func batch100(prefix string, n int) []api.WBO {
	ws := make([]api.WBO, 100)
	for i := range ws {
		ws[i] = api.WBO{ID: prefix + strconv.Itoa(n*100+i), Has: api.FieldPayload | api.FieldSortIndex, Payload: benchPayload, SortIndex: int64(i)}
	}
	return ws
}

func reportSyncs(b *testing.B, fs *syncCountingFS, start int64) {
	b.ReportMetric(float64(fs.syncs.Load()-start)/float64(b.N), "fsyncs/op")
	b.ReportMetric(float64(b.N)*100/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkPost100Serial posts 100 records per request from one goroutine:
// every request waits for its own fsync.
func BenchmarkPost100Serial(b *testing.B) {
	s, fs := benchStore(b)
	var ws [][]api.WBO
	for i := 0; i < 64; i++ {
		ws = append(ws, batch100("id", i))
	}
	b.ReportAllocs()
	start := fs.syncs.Load()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.PostItems(ctx, "user"+strconv.Itoa(i%16), "history", ws[i%64], api.Precondition{}); err != nil {
			b.Fatal(err)
		}
	}
	reportSyncs(b, fs, start)
	logMetrics(b, s)
}

// BenchmarkPost100New posts 100 new records per request from 16
// goroutines (no record is ever overwritten).
func BenchmarkPost100New(b *testing.B) {
	s, fs := benchStore(b)
	var users atomic.Int32
	b.ReportAllocs()
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	start := fs.syncs.Load()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		user := "user" + strconv.Itoa(int(users.Add(1)))
		i := 0
		for pb.Next() {
			if _, err := s.PostItems(ctx, user, "history", batch100("id", i), api.Precondition{}); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	reportSyncs(b, fs, start)
	logMetrics(b, s)
}

// BenchmarkPost100 posts 100 records per request from 16 goroutines, one
// user each: Pebble's commit pipeline groups their synced commits, so
// fsyncs/op falls well below 1.
func BenchmarkPost100(b *testing.B) {
	s, fs := benchStore(b)
	var ws [][]api.WBO
	for i := 0; i < 64; i++ {
		ws = append(ws, batch100("id", i))
	}
	var users atomic.Int32
	b.ReportAllocs()
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	start := fs.syncs.Load()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		user := "user" + strconv.Itoa(int(users.Add(1)))
		i := 0
		for pb.Next() {
			if _, err := s.PostItems(ctx, user, "history", ws[i%64], api.Precondition{}); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	reportSyncs(b, fs, start)
	logMetrics(b, s)
}

func seedBench(b *testing.B, s *Store, users, batches int) {
	b.Helper()
	var wg sync.WaitGroup
	for u := 0; u < users; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < batches; i++ {
				for _, c := range []string{"history", "bookmarks"} {
					if _, err := s.PostItems(ctx, "user"+strconv.Itoa(u), c, batch100("id", i), api.Precondition{}); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkGetFull100 is GET storage/history?full=1&limit=100 over a
// collection of 1000 records.
func BenchmarkGetFull100(b *testing.B) {
	s, _ := benchStore(b)
	seedBench(b, s, 4, 10)
	var users atomic.Int32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		user := "user" + strconv.Itoa(int(users.Add(1))%4)
		q := &api.Query{Full: true, Limit: 100}
		for pb.Next() {
			ws, _, err := api.ReadCollection(ctx, s, user, "history", q)
			if err != nil || len(ws) != 100 {
				b.Errorf("got %d, %v", len(ws), err)
				return
			}
		}
	})
}

// BenchmarkAppendFull100 is BenchmarkGetFull100 the storage handler's
// way: records are streamed from Pebble's memory and encoded (with their
// plain hints) into a reused response buffer.
func BenchmarkAppendFull100(b *testing.B) {
	s, _ := benchStore(b)
	seedBench(b, s, 4, 10)
	var users atomic.Int32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		user := "user" + strconv.Itoa(int(users.Add(1))%4)
		q := &api.Query{Full: true, Limit: 100}
		var buf []byte
		for pb.Next() {
			n := 0
			buf = api.AppendListStart(buf[:0], api.FormatJSON)
			err := s.GetCollection(ctx, user, "history", q, func(int, api.Stamp) error { return nil }, func(w *api.WBO) error {
				buf = api.AppendListElem(buf, api.FormatJSON, n == 0, func(b []byte) []byte { return api.AppendWBOJSON(b, *w) })
				n++
				return nil
			})
			buf = api.AppendListEnd(buf, api.FormatJSON)
			if err != nil || n != 100 {
				b.Errorf("got %d, %v", n, err)
				return
			}
		}
	})
}

// BenchmarkGetNewer100 is GET ...?full=1&newer=<middle>&limit=100.
func BenchmarkGetNewer100(b *testing.B) {
	s, _ := benchStore(b)
	seedBench(b, s, 1, 10)
	all := mustGet(b, s, "user0", "history", api.Query{Full: true, Sort: api.SortOldest})
	since := all[len(all)/2].Modified - 1
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		q := &api.Query{Full: true, Limit: 100, HasNewer: true, Newer: since}
		for pb.Next() {
			if ws, _, err := api.ReadCollection(ctx, s, "user0", "history", q); err != nil || len(ws) != 100 {
				b.Errorf("got %d, %v", len(ws), err)
				return
			}
		}
	})
}

// BenchmarkInfoCollections is GET info/collections (memory only).
func BenchmarkInfoCollections(b *testing.B) {
	s, _ := benchStore(b)
	seedBench(b, s, 4, 1)
	var users atomic.Int32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		user := "user" + strconv.Itoa(int(users.Add(1))%4)
		for pb.Next() {
			m, _, err := s.CollectionTimestamps(ctx, user)
			if err != nil || len(m) != 2 {
				b.Errorf("got %v, %v", m, err)
				return
			}
		}
	})
}

// BenchmarkMemory1000Users loads HCE_MEM_USERS (default 1000) users with
// HCE_MEM_RECORDS (default 5000) records of 300 bytes each, reads a page of
// every user, and reports the process's peak and current RSS and the Go
// heap. Run it explicitly: go test -run XXX -bench Memory -benchtime 1x.
func BenchmarkMemory1000Users(b *testing.B) {
	if testing.Short() {
		b.Skip("loads 5 M records; run without -short")
	}
	users, records := envInt("HCE_MEM_USERS", 1000), envInt("HCE_MEM_RECORDS", 5000)
	s, _ := benchStore(b)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				u := int(next.Add(1) - 1)
				if u >= users {
					return
				}
				for i := 0; i < records/100; i++ {
					if _, err := s.PostItems(ctx, "user"+strconv.Itoa(u), "history", batch100("id", i), api.Precondition{}); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	b.Logf("loaded %d users x %d records in %v", users, records, time.Since(start))
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for u := 0; u < users; u++ {
			user := "user" + strconv.Itoa(u)
			if _, _, err := s.CollectionTimestamps(ctx, user); err != nil {
				b.Fatal(err)
			}
			if _, _, err := api.ReadCollection(ctx, s, user, "history", &api.Query{Full: true, Limit: 100, Offset: records / 2}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, hwm := procStatus("VmRSS:"), procStatus("VmHWM:")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(hwm)/(1<<20), "peak-rss-MiB")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.Logf("RSS %d MiB, peak RSS %d MiB, Go heap in use %d MiB, sys %d MiB",
		rss>>20, hwm>>20, ms.HeapInuse>>20, ms.Sys>>20)
	if users >= 1000 && records >= 5000 && hwm > 256<<20 {
		b.Errorf("peak RSS %d MiB above 256 MiB", hwm>>20)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// procStatus returns a kB field of /proc/self/status in bytes.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

// logMetrics logs the Pebble figures that explain write throughput.
func logMetrics(b *testing.B, s *Store) {
	m := s.db.Metrics()
	b.Logf("block cache hits %d misses %d; L0 files %d sublevels %d; flushes %d compactions %d",
		m.BlockCache.Hits, m.BlockCache.Misses, m.Levels[0].TablesCount, m.Levels[0].Sublevels, m.Flush.Count, m.Compact.Count)
}

// BenchmarkDeleteStall deletes a collection of 5,000 records (the Sync
// mix's largest delete) while another user writes one record at a time,
// and reports how long the delete took and the other user's slowest
// write during it: a large batch holds back every commit queued behind
// it until it is in the memtable.
func BenchmarkDeleteStall(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Dir = b.TempDir()
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	pl := strings.Repeat("x", 300)
	var delTotal, maxTotal time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for p := 0; p < 50; p++ {
			ws := make([]api.WBO, 100)
			for j := range ws {
				ws[j] = api.WBO{ID: fmt.Sprintf("r%05d", p*100+j), Has: api.FieldPayload | api.FieldSortIndex, Payload: pl, SortIndex: int64(j)}
			}
			mustPost(b, s, "alice", "history", ws...)
		}
		var slowest time.Duration
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				if _, err := s.PutItem(ctx, "bob", "tabs", api.WBO{ID: strconv.Itoa(n % 10), Has: api.FieldPayload, Payload: pl}, api.Precondition{}); err != nil {
					b.Error(err)
					return
				}
				slowest = max(slowest, time.Since(t0))
				time.Sleep(200 * time.Microsecond)
			}
		})
		time.Sleep(20 * time.Millisecond)
		b.StartTimer()
		t0 := time.Now()
		if _, err := s.DeleteCollection(ctx, "alice", "history", nil, api.Precondition{}); err != nil {
			b.Fatal(err)
		}
		delTotal += time.Since(t0)
		b.StopTimer()
		time.Sleep(5 * time.Millisecond)
		close(stop)
		wg.Wait()
		maxTotal += slowest
		b.StartTimer()
	}
	b.ReportMetric(float64(delTotal.Microseconds())/1000/float64(b.N), "delete-ms")
	b.ReportMetric(float64(maxTotal.Microseconds())/1000/float64(b.N), "other-max-ms")
}
