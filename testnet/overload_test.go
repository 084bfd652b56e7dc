package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/hce-sync/hce/api/testkit"
)

// TestOverloadSheds is issue 12's overload finding (200 concurrent POSTs
// by one user queued for a p50 of 20.7 s and never got a 503). With a
// bound of 4 requests in flight per user, a flood of 200 concurrent
// 50-record POSTs by one user every 200 ms, whatever the answers say,
// gets 503 with Retry-After and X-Weave-Backoff in seconds, the shedding
// shows in the metrics, and a steady client's p99 (a PUT and an
// info/collections, one after the other) stays within 2x of its p99
// without the flood. Both are measured here, in alternating windows (up
// to 3 pairs: a pair passes when the machine's other load spared it).
// With -v the same flood without the bound is measured for comparison.
// Under the race detector, which multiplies the cost of every request
// (the flood's too), the shedding is checked and the latency only logged.
func TestOverloadSheds(t *testing.T) {
	if testing.Short() {
		t.Skip("measures latencies under a flood")
	}
	attempts, samples := 3, 400
	if raceEnabled {
		attempts, samples = 1, 100
	}
	r := runFlood(t, 4, attempts, samples)
	if r.shed == 0 || r.badHint != 0 {
		t.Errorf("%d requests shed, %d of them without Retry-After and X-Weave-Backoff in seconds", r.shed, r.badHint)
	}
	if r.shedMetric < float64(r.shed) {
		t.Errorf("shed metric %v, want >= %d", r.shedMetric, r.shed)
	}
	if !r.within && !raceEnabled {
		t.Errorf("steady p99 during the flood more than 2x its p99 without, in every window pair: %v", r.pairs)
	}
	if testing.Verbose() {
		runFlood(t, -1, 1, samples)
	}
}

// floodResult is what runFlood measured: the steady client's p99 in
// each (unloaded, loaded) window pair, whether one pair kept within 2x
// (plus 1 ms for a scheduler's noise at millisecond scale), and the
// flood's answers.
type floodResult struct {
	pairs                 [][2]time.Duration
	within                bool
	served, shed, badHint int64
	shedMetric            float64
}

// runFlood starts a Standalone whose per-user in-flight bound is bound
// (-1: none) and measures a steady client's p99 over samples rounds
// without and with the flood, in up to attempts window pairs.
func runFlood(t *testing.T, bound, attempts, samples int) floodResult {
	s := startServer(t, func(c *StandaloneConfig) {
		c.HTTP.Server.MaxInFlightPerClient = bound
		c.HTTP.Server.MaxInFlight = 256
	})
	defer s.stop()
	steady, flood := s.newAccount(t), s.newAccount(t)
	steady.put(t, "prefs", "p0", map[string]string{"payload": "warm"})

	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	call := func(a *account, method, rel string, body []byte) (*http.Response, error) {
		req, err := http.NewRequest(method, s.base+a.path(rel), bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", testkit.BasicAuth(a.Name, a.Password))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, nil
	}
	// The steady client writes one record and reads the collection list,
	// one request after the other, as a syncing browser does.
	p99 := func(n int) time.Duration {
		var lat []time.Duration
		body := []byte(`{"payload":"` + string(bytes.Repeat([]byte("s"), 200)) + `"}`)
		for i := range n {
			for _, req := range []struct{ m, rel string }{{"PUT", "storage/prefs/p" + strconv.Itoa(i%20)}, {"GET", "info/collections"}} {
				begin := time.Now()
				resp, err := call(steady, req.m, req.rel, body)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("steady %s %s: %v %v", req.m, req.rel, resp, err)
				}
				lat = append(lat, time.Since(begin))
			}
		}
		slices.Sort(lat)
		return lat[len(lat)*99/100]
	}

	var recs []map[string]string
	for i := range 50 {
		recs = append(recs, map[string]string{"id": fmt.Sprintf("f%d", i), "payload": string(bytes.Repeat([]byte("f"), 300))})
	}
	batch, _ := json.Marshal(recs)
	ctx, stop := context.WithCancel(context.Background())
	var served, shed, badHint atomic.Int64
	var on, busy atomic.Bool
	done := make(chan struct{})
	// The flood: while on, every 200 ms, 200 POSTs of 50 records by one
	// user at once (issue 12's case), whatever the answers say.
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if !on.Load() {
				continue
			}
			busy.Store(true)
			var burst sync.WaitGroup
			for range 200 {
				burst.Add(1)
				go func() {
					defer burst.Done()
					resp, err := call(flood, "POST", "storage/history", batch)
					if err != nil {
						return
					}
					switch resp.StatusCode {
					case http.StatusOK:
						served.Add(1)
					case http.StatusServiceUnavailable:
						shed.Add(1)
						ra, e1 := strconv.Atoi(resp.Header.Get("Retry-After"))
						wb, e2 := strconv.Atoi(resp.Header.Get("X-Weave-Backoff"))
						if e1 != nil || e2 != nil || ra < 1 || wb < 1 {
							badHint.Add(1)
						}
					}
				}()
			}
			burst.Wait()
			busy.Store(false)
		}
	}()
	var res floodResult
	for range attempts {
		on.Store(false)
		testkit.WaitFor(t, 60*time.Second, "the flood to pause", func() bool { return !busy.Load() })
		unloaded := p99(samples)
		on.Store(true)
		before := served.Load() + shed.Load()
		testkit.WaitFor(t, 20*time.Second, "the flood to start", func() bool { return served.Load()+shed.Load() >= before+200 })
		loaded := p99(samples)
		res.pairs = append(res.pairs, [2]time.Duration{unloaded, loaded})
		t.Logf("bound %d per user: steady p99 %v without the flood, %v during it; flood so far: %d POSTs served, %d shed",
			bound, unloaded, loaded, served.Load(), shed.Load())
		if loaded <= 2*unloaded+time.Millisecond {
			res.within = true
			break
		}
	}
	stop()
	<-done
	res.served, res.shed, res.badHint = served.Load(), shed.Load(), badHint.Load()
	res.shedMetric = metricValue(t, s.s.HTTP().Registry(), "hce_http_requests_shed_total", "reason", "client")
	return res
}

// metricValue returns the counter or gauge of name whose label has
// value (0 when absent).
func metricValue(t *testing.T, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if m.Counter != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}
