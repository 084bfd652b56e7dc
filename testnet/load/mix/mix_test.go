package mix

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestWeaveMixV1MatchesModel draws 200,000 syncs of weave-mix-v1 with a
// fixed seed and checks the realised request mix and size distributions
// against the load model (docs/mix-format.md, "weave-mix-v1"). Stated
// tolerances: every op's share of requests within 0.25 percentage points
// of its weight, and within 5 % of it for ops of 2 % or more; payload
// means within 2 %, Pareto percentiles within 5 %; the mean time between
// syncs within 3 %.
func TestWeaveMixV1MatchesModel(t *testing.T) {
	m, err := Builtin("weave-mix-v1")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGenerator(m, 1)
	r := rand.New(rand.NewPCG(1, 2))
	const syncs = 200_000
	count := map[string]int{}
	sizes := map[string][]float64{}
	wbos := map[string][]float64{}
	total := 0
	think := 0.0
	for range syncs {
		s := g.Sync(r)
		if s.Device < 0 || s.Device >= m.Devices {
			t.Fatalf("device %d", s.Device)
		}
		if s.Requests[0].Op.Name != "info" {
			t.Fatalf("a sync starts with %s, want info", s.Requests[0].Op.Name)
		}
		for _, q := range s.Requests {
			count[q.Op.Name]++
			total++
			if q.Op.Body == WBOBody {
				wbos[q.Op.Name] = append(wbos[q.Op.Name], float64(len(q.WBOs)))
				for _, w := range q.WBOs {
					sizes[q.Op.Name] = append(sizes[q.Op.Name], float64(w.Size))
					if len(w.ID) == 0 || len(w.ID) > 64 {
						t.Fatalf("%s: id %q", q.Op.Name, w.ID)
					}
				}
			}
		}
		think += g.Think(r)
	}
	weights := 0.0
	for _, o := range m.Ops {
		weights += o.Weight
	}
	for _, o := range m.Ops {
		want := 100 * o.Weight / weights
		got := 100 * float64(count[o.Name]) / float64(total)
		if math.Abs(got-want) > 0.25 || want >= 2 && math.Abs(got-want) > 0.05*want {
			t.Errorf("%s: %.3f %% of requests, model %.3f %%", o.Name, got, want)
		}
	}
	if got, want := float64(total)/syncs, g.RequestsPerSync(); math.Abs(got-want) > 0.02*want {
		t.Errorf("requests per sync %.3f, want %.3f", got, want)
	}
	if got := think / syncs; math.Abs(got-451.25) > 0.03*451.25 {
		t.Errorf("mean think time %.1f s, want 451.25 s", got)
	}

	// Payload sizes of the Pareto(3)*300 ops: min 300, mean 449.5,
	// median 300*2^(1/3) = 378, p99 300*100^(1/3) = 1392.
	var pareto []float64
	for _, name := range []string{"history-post", "passwords-post", "forms-post", "other-post"} {
		pareto = append(pareto, sizes[name]...)
	}
	checkDist(t, "pareto(3,300) payload", pareto, 300, 449.5, 378, 1392)
	checkDist(t, "tabs payload", sizes["tabs-post"], 2000, 11000, 11000, 19820)
	if got := slices.Max(sizes["tabs-post"]); got > 20000 {
		t.Errorf("tabs payload max %v > 20000", got)
	}
	checkMean(t, "history WBOs per POST", wbos["history-post"], 20)
	if lo, hi := slices.Min(wbos["history-post"]), slices.Max(wbos["history-post"]); lo < 1 || hi > 100 {
		t.Errorf("history WBOs per POST in [%v, %v], want within [1, 100]", lo, hi)
	}
	checkMean(t, "passwords WBOs per POST", wbos["passwords-post"], 5.5)
	checkMean(t, "forms WBOs per POST", wbos["forms-post"], 10.5)
	checkMean(t, "bookmarks/prefs WBOs per POST", wbos["other-post"], 50.5)
	for _, name := range []string{"tabs-post", "clients-post"} {
		checkMean(t, name+" WBOs per POST", wbos[name], 1)
	}

	// Background ops: shares of their per-user-hour rates.
	bg := map[string]int{}
	for range 100_000 {
		bg[g.Background(r).Op.Name]++
	}
	if got := float64(bg["token"]) / 100_000; math.Abs(got-1/1.751) > 0.01 {
		t.Errorf("token share of background ops %.3f, want %.3f", got, 1/1.751)
	}
	if got, want := g.RatePerUser(), 2.9412/451.25+1.751/3600; math.Abs(got-want) > 1e-6 {
		t.Errorf("RatePerUser %v, want %v", got, want)
	}

	// Prefill: records per collection and their sizes.
	recs, bytes := g.PrefillTotal()
	if recs != 5000+1000+100+500+1+3+3+1+1 {
		t.Errorf("prefill records %d", recs)
	}
	if bytes < 2.9e6 || bytes > 2.92e6 { // 5,000 x 449.5 + 1,000 x 449.5 + ... = 2.91 MB
		t.Errorf("prefill payload bytes %.0f, want about 2.91 MB", bytes)
	}
	for _, p := range m.Prefill {
		if p.Coll != "history" {
			continue
		}
		ws := g.PrefillRecords(rand.New(rand.NewPCG(3, 4)), p)
		var s []float64
		for i, w := range ws {
			if w.ID != PrefillID(i) || w.TTL != 60*86400 {
				t.Fatalf("history prefill record %d: %+v", i, w)
			}
			s = append(s, float64(w.Size))
		}
		checkMean(t, "history prefill payload", s, 449.5)
	}
}

func checkMean(t *testing.T, what string, xs []float64, want float64) {
	t.Helper()
	if len(xs) == 0 {
		t.Errorf("%s: no samples", what)
		return
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	if got := s / float64(len(xs)); math.Abs(got-want) > 0.02*want {
		t.Errorf("%s: mean %.2f over %d samples, want %.2f ± 2 %%", what, got, len(xs), want)
	}
}

func checkDist(t *testing.T, what string, xs []float64, wantMin, wantMean, wantP50, wantP99 float64) {
	t.Helper()
	checkMean(t, what, xs, wantMean)
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return
	}
	if s[0] < wantMin {
		t.Errorf("%s: min %v < %v", what, s[0], wantMin)
	}
	p50, p99 := s[len(s)/2], s[len(s)*99/100]
	if math.Abs(p50-wantP50) > 0.05*wantP50 || math.Abs(p99-wantP99) > 0.05*wantP99 {
		t.Errorf("%s: p50 %v p99 %v, want %v and %v ± 5 %%", what, p50, p99, wantP50, wantP99)
	}
}

// TestSeedFixesSequence: the same seed draws the same syncs; another seed
// draws others.
func TestSeedFixesSequence(t *testing.T) {
	m, err := Builtin("weave-mix-v1")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGenerator(m, 1)
	draw := func(seed uint64) []Sync {
		r := rand.New(rand.NewPCG(seed, 0))
		var out []Sync
		for range 1000 {
			out = append(out, g.Sync(r))
		}
		return out
	}
	if a, b := draw(7), draw(7); !reflect.DeepEqual(a, b) {
		t.Fatal("seed 7 drew two different sequences")
	}
	if a, b := draw(7), draw(8); reflect.DeepEqual(a, b) {
		t.Fatal("seeds 7 and 8 drew the same sequence")
	}
}

func TestBuiltinsParseAndRoundTrip(t *testing.T) {
	for _, name := range Builtins() {
		m, err := Builtin(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.Name != name {
			t.Errorf("%s: name line says %q", name, m.Name)
		}
		m2, err := Parse(m.String())
		if err != nil {
			t.Fatalf("%s: String() does not parse: %v\n%s", name, err, m)
		}
		if m2.String() != m.String() {
			t.Errorf("%s: round trip changed the mix:\n%s\n---\n%s", name, m, m2)
		}
	}
	for _, name := range []string{"post100", "get100", "info", "nodeweave"} {
		m, _ := Builtin(name)
		if len(m.Ops) != 1 {
			t.Errorf("%s has %d ops, want 1", name, len(m.Ops))
		}
	}
}

func TestParseErrors(t *testing.T) {
	ok := "hce-mix 1\nname x\nop a 1 GET /1.1/{user}/info/collections\n"
	if _, err := Parse(ok); err != nil {
		t.Fatalf("minimal mix: %v", err)
	}
	for _, tc := range []struct{ text, want string }{
		{"", "empty file"},
		{"hce-mix 2\n", "first line"},
		{"hce-mix 1\nop a 1 GET /x\n", "no name"},
		{"hce-mix 1\nname x\n", "no op line"},
		{"hce-mix 1\nname x\nop a 0 GET /x\n", "no op line"},
		{"hce-mix 1\nname x\nname y\nop a 1 GET /x\n", "given twice"},
		{"hce-mix 1\nname x\nop a 1 GET /x\nop a 1 GET /y\n", "defined twice"},
		{"hce-mix 1\nname x\nop a 1 FETCH /x\n", "method"},
		{"hce-mix 1\nname x\nop a 1 GET x\n", "must start with /"},
		{"hce-mix 1\nname x\nop a 1 GET /{bad}\n", "unknown placeholder"},
		{"hce-mix 1\nname x\nop a 1 GET /{coll}\n", "needs coll="},
		{"hce-mix 1\nname x\nop a 1 POST /1.1/{user}/info\n", "/storage/"},
		{"hce-mix 1\nname x\nop a 1 POST /1.1/{user}/storage/h wbos=uniform(5,1)\n", "lo <= hi"},
		{"hce-mix 1\nname x\nop a 1 POST /1.1/{user}/storage/h size=pareto(0,300)\n", "positive"},
		{"hce-mix 1\nname x\nop a 1 POST /1.1/{user}/storage/h wbos=geometric(1,10,20)\n", "min <= mean <= max"},
		{"hce-mix 1\nname x\nop a 1 POST /1.1/{user}/storage/h ids=reuse(2)\n", "probability"},
		{"hce-mix 1\nname x\nop a 1 GET /x frob=1\n", "unknown key"},
		{"hce-mix 1\nname x\nsync first=b\nop a 1 GET /x\n", "names no op"},
		{"hce-mix 1\nname x\nthink exp(0s)\nop a 1 GET /x\n", "positive"},
		{"hce-mix 1\nname x\nthink 0.5*exp(1s) + exp(2s)\nop a 1 GET /x\n", "no weight"},
		{"hce-mix 1\nname x\nop a 1 GET /x\nprefill h 10 ids=fixed(a)\n", "one record"},
		{"hce-mix 1\nname x\nop a 1 GET /x\nprefill h 10 size=12XB\n", "size"},
		{"hce-mix 1\nname x\nop a 1 GET /x\nfrob\n", "unknown directive"},
		{"hce-mix 1\nname x\nop a 1 GET /x header=Bad Header:1\n", "header"},
		{"hce-mix 1\nname x\nop a 1 PUT /user/1.0/x body=register\n", "{new}"},
	} {
		_, err := Parse(tc.text)
		if err == nil || !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an ErrSyntax naming %q", tc.text, err, tc.want)
		}
	}
}

func TestDistributions(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		text string
		unit Unit
		mean float64
	}{
		{"42", Count, 42},
		{"2KiB", Bytes, 2048},
		{"1.5MB", Bytes, 1.5e6},
		{"uniform(1,10)", Count, 5.5},
		{"geometric(1,100,20)", Count, 20},
		{"geometric(0,1000000,3)", Count, 3},
		{"exp(10m)", Seconds, 600},
		{"0.75*exp(10m) + 0.25*exp(5s)", Seconds, 451.25},
		{"pareto(3,300)", Bytes, 449.5},
	} {
		d, err := ParseDist(tc.text, tc.unit)
		if err != nil {
			t.Fatalf("%s: %v", tc.text, err)
		}
		if math.Abs(d.Mean()-tc.mean) > 1e-6*tc.mean {
			t.Errorf("%s: Mean %v, want %v", tc.text, d.Mean(), tc.mean)
		}
		var xs []float64
		for range 200_000 {
			xs = append(xs, d.Sample(r))
		}
		checkMean(t, tc.text, xs, tc.mean)
		if tc.unit != Seconds {
			for _, x := range xs {
				if x != math.Floor(x) || x < 0 {
					t.Fatalf("%s drew %v, want whole numbers", tc.text, x)
				}
			}
		}
	}
}
