package report

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sample is a small capacity result with every section filled.
func sample() *Result {
	r := &Result{Version: Version, Mode: "capacity", Command: []string{"hce", "load", "capacity"},
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Seed: 7,
		Target: Target{Kind: "testnet", URL: "http://127.0.0.1:1/", Nodes: []string{"http://127.0.0.1:2/"}},
		Mix:    MixInfo{Name: "weave-mix-v1", RequestsPerSync: 2.94, Think: 451, RatePerUser: 0.007, Source: "hce-mix 1\nname weave-mix-v1\n</script><b>x</b>"},
		SLO:    SLO{P99: 100, MaxErrors: 0.01, MaxTimeouts: 0.001, Timeout: 10000}}
	for i, rate := range []float64{100, 150, 225} {
		st := Step{Index: i, Label: "step " + strconv.Itoa(i+1), Loop: "open", Offered: rate, OfferedUsers: rate / 0.007,
			Start: float64(i * 10), Duration: 10, Requests: int64(rate * 10), Achieved: rate,
			Latency: Percentiles{P50: 2 * float64(i+1), P90: 5, P99: 40 * float64(i+1) * float64(i+1), Max: 400},
			Ops:     []OpStats{{Name: "info", Requests: int64(rate * 3), Latency: Percentiles{P50: 1, P99: 9}}},
			Procs:   []ProcSummary{{Name: "n1", CPU: 0.5, RSS: 100 << 20, Disk: 1 << 30}}, CPU: 0.0017 * rate * 10}
		if i == 2 {
			st.Errors, st.ErrorKinds = 30, map[string]int64{"timeout": 10, "http 503": 20}
			st.Failure, st.FailureDetail = "latency", "latency: p99 360 ms over the 100 ms objective"
		}
		r.Steps = append(r.Steps, st)
		for k := range 10 {
			r.Series = append(r.Series, Point{T: float64(i*10 + k + 1), Step: i, Offered: rate, Sent: rate, Achieved: rate - 1,
				P50: 2, P90: 5, P99: 30 + float64(k), Max: 100})
		}
	}
	r.Procs = []ProcSeries{{Name: "n1", PID: 42, Samples: []ProcSample{{T: 1, CPU: 0.4, RSS: 90 << 20, Disk: 1 << 29}, {T: 20, CPU: 0.9, RSS: 100 << 20, Disk: 1 << 30}}}}
	r.Capacity = &Capacity{RPS: 150, Users: 150 / 0.007, Step: 1, Failure: "latency", FailedRPS: 225, FailedStep: 2}
	r.Replication = &Lag{Probes: 10, Seen: 10, Lag: Percentiles{P50: 0, P99: 3}}
	r.Baseline = &Step{Label: "minimal handler", Loop: "closed", Concurrency: 16, Achieved: 20000}
	r.Reference = &Step{Label: "closed loop", Loop: "closed", Concurrency: 16, Achieved: 400}
	return r
}

func TestWriteHTML(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, sample()); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{`id="latency-time"`, `id="throughput-time"`, `id="latency-load"`, `id="errors"`, `id="proc-cpu"`,
		`id="proc-rss"`, `id="proc-disk"`, "Capacity: 150 requests/s", "Replication lag", "2.0 % of the minimal handler",
		"CPU per request", "<td>1.7 ms</td>"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	// Every chart that expects data has points.
	for _, m := range regexp.MustCompile(`<svg class="chart" id="([^"]+)"[^>]*data-expect="1"`).FindAllStringSubmatch(page, -1) {
		chart := page[strings.Index(page, `id="`+m[1]+`"`):]
		chart = chart[:strings.Index(chart, "</svg>")]
		pts := 0
		for _, p := range regexp.MustCompile(`data-points="(\d+)"`).FindAllStringSubmatch(chart, -1) {
			n, _ := strconv.Atoi(p[1])
			pts += n
		}
		if pts == 0 {
			t.Errorf("chart %s has no points", m[1])
		}
	}
	if strings.Contains(page, "</script><b>x</b>") || strings.Contains(page, "<script src") {
		t.Error("the mix source was not escaped, or the page loads a script")
	}
	if strings.Contains(page, `src="http`) || strings.Contains(page, `href="http`) {
		t.Error("the page refers to an outside resource")
	}
}

func TestWriteReadCompare(t *testing.T) {
	a, b := sample(), sample()
	b.Capacity.RPS, b.Capacity.Users = 165, 165/0.007
	b.Steps[1].Latency.P99 = 80
	b.Steps[1].CPU *= 1.25
	dir := t.TempDir()
	if err := a.Write(filepath.Join(dir, "a.json")); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(filepath.Join(dir, "b.json")); err != nil {
		t.Fatal(err)
	}
	ra, err := Read(filepath.Join(dir, "a.json"))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Read(filepath.Join(dir, "b.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Compare(&out, ra, rb, "A", "B"); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"capacity req/s", "150", "165", "+10.0 %", "p99 ms", "-50.0 %", "info p99 ms",
		"CPU per request, ms", "1.700", "2.125", "+25.0 %"} {
		if !strings.Contains(s, want) {
			t.Errorf("compare output lacks %q:\n%s", want, s)
		}
	}
	a.Version = 99
	a.Write(filepath.Join(dir, "v.json"))
	if _, err := Read(filepath.Join(dir, "v.json")); err == nil {
		t.Error("Read accepted another format version")
	}
}

// TestCPUPerRequest: a step's CPU time over the requests it answered, and
// 0 when either is unknown.
func TestCPUPerRequest(t *testing.T) {
	for _, c := range []struct {
		name string
		st   Step
		want float64
	}{
		{"measured", Step{CPU: 3, Achieved: 500, Duration: 4}, 1.5},
		{"no CPU read", Step{Achieved: 500, Duration: 4}, 0},
		{"no answer", Step{CPU: 3, Duration: 4}, 0},
		{"less than one answer", Step{CPU: 3, Achieved: 0.1, Duration: 4}, 0},
	} {
		if got := c.st.CPUPerRequest(); got != c.want {
			t.Errorf("%s: %v ms, want %v", c.name, got, c.want)
		}
	}
}
