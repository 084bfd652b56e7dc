package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

// allowAll authenticates every request (the memory tests measure the
// store and the handler, not authentication).
type allowAll struct{}

func (allowAll) Authenticate(context.Context, string, api.Credentials) error { return nil }

// heapSampler records the peak of the Go heap's object bytes and of the
// process's resident set while it runs.
type heapSampler struct {
	stop     chan struct{}
	done     chan struct{}
	peakHeap atomic.Uint64
	peakRSS  atomic.Uint64
}

func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// rssBytes reads VmRSS from /proc/self/status (0 where there is none).
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

func startSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if v := heapBytes(); v > h.peakHeap.Load() {
				h.peakHeap.Store(v)
			}
			if v := rssBytes(); v > h.peakRSS.Load() {
				h.peakRSS.Store(v)
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) end() (heap, rss uint64) {
	close(h.stop)
	<-h.done
	return h.peakHeap.Load(), h.peakRSS.Load()
}

// TestCollectionGetMemoryBounded is issue #11's finding 2a: a collection of
// 1,000 records of 250 KB (250 MB), read by six parallel GET ?full=1 over
// HTTP, must not be held in memory per request. Streaming keeps the Go
// heap's growth during the reads within 64 MiB (each request holds one
// record and a write buffer); building the answers took about 6 x 2 x 250
// MB. Under the race detector the collection is 200 records (the bound is
// the same).
func TestCollectionGetMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 250 MB")
	}
	records := 1000
	if raceEnabled {
		records = 200
	}
	const payloadLen = 250 << 10
	s := openTest(t, t.TempDir(), nil, 0)
	payload := strings.Repeat("p", payloadLen)
	for i := 0; i < records; i += 4 {
		var ws []api.WBO
		for j := i; j < i+4 && j < records; j++ {
			ws = append(ws, api.WBO{ID: fmt.Sprintf("r%04d", j), Has: api.FieldPayload, Payload: payload})
		}
		mustPost(t, s, "u", "big", ws...)
	}
	payload = ""
	cfg := api.DefaultStorageConfig()
	cfg.Store, cfg.Auth = s, allowAll{}
	h, err := api.NewStorageHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	runtime.GC()
	base, baseRSS := heapBytes(), rssBytes()
	smp := startSampler()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", srv.URL+"/1.1/u/storage/big?full=1", nil)
			req.Header.Set("Authorization", "Bearer x")
			resp, err := srv.Client().Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && (resp.StatusCode != 200 || n < int64(records*payloadLen) || resp.Header.Get("X-Weave-Records") != strconv.Itoa(records)) {
				err = fmt.Errorf("status %d, %d bytes, X-Weave-Records %q", resp.StatusCode, n, resp.Header.Get("X-Weave-Records"))
			}
			errs <- err
		}()
	}
	wg.Wait()
	peak, peakRSS := smp.end()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	grow := int64(peak) - int64(base)
	t.Logf("%d records of %d KB, 6 parallel GET ?full=1: Go heap %d MiB -> peak %d MiB (+%d MiB); RSS %d MiB -> peak %d MiB",
		records, payloadLen>>10, base>>20, peak>>20, grow>>20, baseRSS>>20, peakRSS>>20)
	if grow > 64<<20 {
		t.Errorf("the Go heap grew by %d MiB during the reads, want at most 64 MiB", grow>>20)
	}
	if baseRSS > 0 && peakRSS > baseRSS+128<<20 {
		t.Errorf("RSS grew by %d MiB during the reads, want at most 128 MiB", (peakRSS-baseRSS)>>20)
	}
}

// TestCollectionGetDoesNotBlockWriters checks that a client that stops
// reading a long collection answer does not hold up the user's writes:
// the answer streams from a snapshot, not under the user's lock.
func TestCollectionGetDoesNotBlockWriters(t *testing.T) {
	s := openTest(t, t.TempDir(), nil, 0)
	payload := strings.Repeat("p", 250<<10)
	for i := 0; i < 100; i += 4 {
		var ws []api.WBO
		for j := i; j < i+4; j++ {
			ws = append(ws, api.WBO{ID: fmt.Sprintf("r%04d", j), Has: api.FieldPayload, Payload: payload})
		}
		mustPost(t, s, "u", "big", ws...)
	}
	cfg := api.DefaultStorageConfig()
	cfg.Store, cfg.Auth = s, allowAll{}
	h, err := api.NewStorageHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /1.1/u/storage/big?full=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// The first bytes arrive: the answer is streaming, and then stalls on
	// the client's full receive window.
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.PutItem(ctx, "u", "big", api.WBO{ID: "new", Has: api.FieldPayload, Payload: "x"}, api.Precondition{})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write of the user waited for a stalled collection GET")
	}
}
