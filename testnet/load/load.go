// This file holds Runner, the closed-loop micro-benchmark of issue 2
// that the Go benchmarks in package testnet drive (see doc.go).

package load

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hce-sync/hce/api"
)

// Scenario names one request pattern.
type Scenario string

// The scenarios of issue 2's benchmark.
const (
	// Post100 POSTs 100 WBOs with PayloadBytes-byte payloads to
	// storage/history (durable writes).
	Post100 Scenario = "post100"
	// Get100 GETs storage/bookmarks?full=1&limit=100 (prefilled with 100
	// records per user).
	Get100 Scenario = "get100"
	// Info GETs info/collections.
	Info Scenario = "info"
	// NodeWeave GETs user/1.0/{user}/node/weave from the user API (the
	// directory's lookup; no authentication).
	NodeWeave Scenario = "nodeweave"
)

// Scenarios lists every scenario in report order.
var Scenarios = []Scenario{Post100, Get100, Info, NodeWeave}

// ParseScenario checks a scenario name.
func ParseScenario(s string) (Scenario, error) {
	for _, sc := range Scenarios {
		if string(sc) == s {
			return sc, nil
		}
	}
	return "", fmt.Errorf("load: unknown scenario %q (want one of post100, get100, info, nodeweave)", s)
}

// Config configures a run. A zero field takes its default.
type Config struct {
	// URL is the server's base URL, ending in "/" (user API and storage
	// API on the same host, as `hce serve` runs them).
	URL string
	// Users is the number of concurrent users, one connection each
	// (default 16).
	Users int
	// Duration of the measured phase (default 10 s).
	Duration time.Duration
	// PayloadBytes is the payload size of written WBOs (default 300).
	PayloadBytes int
	// Seed makes payloads and user names reproducible (default 1).
	Seed uint64
	// Password used for every generated account.
	Password string
	// Requests, when positive, ends a run after that many requests in
	// total instead of after Duration (used by go test -bench).
	Requests int64
}

func (c *Config) fill() {
	if c.Users <= 0 {
		c.Users = 16
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.PayloadBytes <= 0 {
		c.PayloadBytes = 300
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Password == "" {
		c.Password = "load-test-password"
	}
	if !strings.HasSuffix(c.URL, "/") {
		c.URL += "/"
	}
}

// Result is the outcome of one measured run.
type Result struct {
	Scenario Scenario
	Requests int64
	Errors   int64
	WBOs     int64
	Elapsed  time.Duration
	P50, P99 time.Duration
	// FirstError describes the first failed request, if any.
	FirstError string

	lat []time.Duration // sorted latencies, for Merge
}

// Merge combines the results of several windows of the same scenario:
// counts and elapsed time add up, percentiles are recomputed over all
// latencies.
func Merge(rs ...Result) Result {
	var out Result
	for _, r := range rs {
		out.Scenario = r.Scenario
		out.Requests += r.Requests
		out.Errors += r.Errors
		out.WBOs += r.WBOs
		out.Elapsed += r.Elapsed
		out.lat = append(out.lat, r.lat...)
		if out.FirstError == "" {
			out.FirstError = r.FirstError
		}
	}
	slices.Sort(out.lat)
	out.P50, out.P99 = percentiles(out.lat)
	return out
}

func percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	return lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)]
}

// RPS is requests per second.
func (r Result) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// WBOps is WBOs moved per second.
func (r Result) WBOps() float64 { return float64(r.WBOs) / r.Elapsed.Seconds() }

// Runner holds the prepared users of a target server.
type Runner struct {
	cfg    Config
	client *http.Client
	users  []user
}

type user struct {
	name string
	auth string // Authorization header value
}

// NewRunner returns a runner for cfg; call Prepare before Run unless the
// target is a Baseline handler.
func NewRunner(cfg Config) *Runner {
	cfg.fill()
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        cfg.Users * 2,
		MaxIdleConnsPerHost: cfg.Users * 2,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	r := &Runner{cfg: cfg, client: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
	for i := 0; i < cfg.Users; i++ {
		email := fmt.Sprintf("load-%d-%d@hce.invalid", cfg.Seed, i)
		name := api.AccountName(email)
		cred := base64.StdEncoding.EncodeToString([]byte(name + ":" + cfg.Password))
		r.users = append(r.users, user{name: name, auth: "Basic " + cred})
	}
	return r
}

// Close releases idle connections.
func (r *Runner) Close() { r.client.CloseIdleConnections() }

// Prepare registers the users (an existing account is reused) and prefills
// storage/bookmarks with 100 records each for the Get100 scenario.
func (r *Runner) Prepare(ctx context.Context) error {
	for i, u := range r.users {
		email := fmt.Sprintf("load-%d-%d@hce.invalid", r.cfg.Seed, i)
		body, _ := json.Marshal(map[string]string{"password": r.cfg.Password, "email": email})
		code, resp, err := r.do(ctx, http.MethodPut, "user/1.0/"+u.name, "", body)
		if err != nil {
			return err
		}
		if code != http.StatusOK && !(code == http.StatusBadRequest && strings.TrimSpace(string(resp)) == "4") {
			return fmt.Errorf("load: register %s: %d %s", u.name, code, resp)
		}
		batch := r.batch(rand.New(rand.NewPCG(r.cfg.Seed, uint64(i))), "bm", 0)
		code, resp, err = r.do(ctx, http.MethodPost, "1.1/"+u.name+"/storage/bookmarks", u.auth, batch)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("load: prefill %s: %d %s", u.name, code, resp)
		}
	}
	return nil
}

// batch builds a JSON array of 100 WBOs with ids prefix0..prefix99+base.
func (r *Runner) batch(rng *rand.Rand, prefix string, base int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	pay := make([]byte, r.cfg.PayloadBytes)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < 100; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		for j := range pay {
			pay[j] = alphabet[rng.IntN(len(alphabet))]
		}
		fmt.Fprintf(&b, `{"id":"%s%d","sortindex":%d,"payload":"%s"}`, prefix, base+i, i, pay)
	}
	b.WriteByte(']')
	return b.Bytes()
}

func (r *Runner) do(ctx context.Context, method, path, auth string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// measure sends one measured request. The body of a 200 answer is read
// and discarded without allocating (io.Discard's pooled buffer), so the
// generator's own garbage does not slow a server sharing its process;
// only an error answer's first bytes are kept.
func (r *Runner) measure(ctx context.Context, method, path, auth string, body []byte) (code int, errBody []byte, records int64, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.cfg.URL+path, rd)
	if err != nil {
		return 0, nil, 0, err
	}
	if auth != "" {
		req.Header["Authorization"] = []string{auth}
	}
	if body != nil {
		req.Header["Content-Type"] = []string{"application/json"}
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, b, 0, nil
	}
	records, _ = strconv.ParseInt(resp.Header.Get("X-Weave-Records"), 10, 64)
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil, records, err
}

// Run drives scenario sc with every user concurrently for the configured
// duration and returns the measured figures. A warm-up of one request per
// user precedes the measurement.
func (r *Runner) Run(ctx context.Context, sc Scenario) (Result, error) {
	type worker struct {
		lat    []time.Duration
		reqs   int64
		errs   int64
		wbos   int64
		first  string
		bodies [][]byte
	}
	workers := make([]*worker, len(r.users))
	for i := range workers {
		w := &worker{lat: make([]time.Duration, 0, 4096)}
		if sc == Post100 {
			rng := rand.New(rand.NewPCG(r.cfg.Seed+7, uint64(i)))
			for k := 0; k < 8; k++ {
				w.bodies = append(w.bodies, r.batch(rng, "h"+strconv.Itoa(k)+"-", 0))
			}
		}
		workers[i] = w
	}
	var stop atomic.Bool
	var remaining atomic.Int64
	remaining.Store(r.cfg.Requests)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range workers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w, u := workers[i], r.users[i]
			method, path, wbos := http.MethodGet, "1.1/"+u.name+"/info/collections", int64(0)
			switch sc {
			case Post100:
				method, path, wbos = http.MethodPost, "1.1/"+u.name+"/storage/history", 100
			case Get100:
				path, wbos = "1.1/"+u.name+"/storage/bookmarks?full=1&limit=100", 100
			case NodeWeave:
				path = "user/1.0/" + u.name + "/node/weave"
			}
			// warm-up
			var body []byte
			if sc == Post100 {
				body = w.bodies[0]
			}
			r.do(ctx, method, path, u.auth, body)
			<-start
			for n := 0; !stop.Load() && ctx.Err() == nil; n++ {
				if r.cfg.Requests > 0 && remaining.Add(-1) < 0 {
					break
				}
				if sc == Post100 {
					body = w.bodies[n%len(w.bodies)]
				}
				t0 := time.Now()
				code, resp, records, err := r.measure(ctx, method, path, u.auth, body)
				d := time.Since(t0)
				if stop.Load() {
					break // a request straddling the end is not counted
				}
				w.reqs++
				w.lat = append(w.lat, d)
				if err != nil || code != http.StatusOK {
					w.errs++
					if w.first == "" {
						w.first = fmt.Sprintf("%s %s: %d %v %.200s", method, path, code, err, resp)
					}
					continue
				}
				if sc == Get100 {
					w.wbos += records // what the server says it returned
				} else {
					w.wbos += wbos
				}
			}
		}(i)
	}
	t0 := time.Now()
	close(start)
	var elapsed time.Duration
	if r.cfg.Requests > 0 {
		wg.Wait()
		elapsed = time.Since(t0)
	} else {
		timer := time.NewTimer(r.cfg.Duration)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
		stop.Store(true)
		elapsed = time.Since(t0)
		wg.Wait()
	}
	res := Result{Scenario: sc, Elapsed: elapsed}
	var lat []time.Duration
	for _, w := range workers {
		res.Requests += w.reqs
		res.Errors += w.errs
		res.WBOs += w.wbos
		lat = append(lat, w.lat...)
		if res.FirstError == "" {
			res.FirstError = w.first
		}
	}
	if len(lat) == 0 {
		return res, errors.New("load: no request completed")
	}
	slices.Sort(lat)
	res.lat = lat
	res.P50, res.P99 = percentiles(lat)
	return res, ctx.Err()
}

// Baseline is the minimal net/http handler the figures are compared with:
// it drains the request body and answers 200 with a two-byte JSON body.
func Baseline() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	})
}

// MedianRatio returns the median over paired windows of target req/s
// divided by baseline req/s (windows paired by index), in percent.
func MedianRatio(targets, baselines []Result) float64 {
	var rs []float64
	for i := range min(len(targets), len(baselines)) {
		if b := baselines[i].RPS(); b > 0 {
			rs = append(rs, 100*targets[i].RPS()/b)
		}
	}
	if len(rs) == 0 {
		return 0
	}
	slices.Sort(rs)
	if len(rs)%2 == 1 {
		return rs[len(rs)/2]
	}
	return (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
}

// FormatTable renders results beside their baselines: one line per
// scenario with req/s, WBO/s, p50, p99 and the ratio to the baseline's
// req/s for the same scenario. When ratios has an entry for a scenario
// (the median of interleaved windows), it is printed instead of the ratio
// of the totals.
func FormatTable(results, baselines map[Scenario]Result, ratios map[Scenario]float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %12s %12s %10s %10s %12s %8s %7s\n", "scenario", "req/s", "WBO/s", "p50", "p99", "base req/s", "ratio", "errors")
	for _, sc := range Scenarios {
		r, ok := results[sc]
		if !ok {
			continue
		}
		base, ratio := "-", "-"
		if bl, ok := baselines[sc]; ok && bl.RPS() > 0 {
			base = fmt.Sprintf("%.0f", bl.RPS())
			ratio = fmt.Sprintf("%.1f%%", 100*r.RPS()/bl.RPS())
			if m, ok := ratios[sc]; ok {
				ratio = fmt.Sprintf("%.1f%%", m)
			}
		}
		fmt.Fprintf(&b, "%-10s %12.0f %12.0f %10s %10s %12s %8s %7d\n", sc, r.RPS(), r.WBOps(),
			r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), base, ratio, r.Errors)
	}
	return b.String()
}
