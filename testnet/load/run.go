package load

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/testnet/load/mix"
	"github.com/hce-sync/hce/testnet/load/report"
	"github.com/hce-sync/hce/testnet/load/stats"
)

// Arrival is how an open loop spaces the syncs it starts.
type Arrival string

// Arrival processes.
const (
	// ArrivalUsers gives each active user its own sequence of syncs
	// separated by the mix's think time (the default).
	ArrivalUsers Arrival = "users"
	// ArrivalPoisson starts syncs at exponentially distributed gaps (the
	// limit of many independent users), each for a random user.
	ArrivalPoisson Arrival = "poisson"
	// ArrivalUniform starts syncs at equal gaps (for tests: no burst).
	ArrivalUniform Arrival = "uniform"
)

// ParseArrival checks an arrival name.
func ParseArrival(s string) (Arrival, error) {
	switch a := Arrival(s); a {
	case ArrivalUsers, ArrivalPoisson, ArrivalUniform:
		return a, nil
	}
	return "", fmt.Errorf("%w: arrival %q (want users, poisson or uniform)", ErrConfig, s)
}

// Phase is one measured stretch of load.
type Phase struct {
	// Label names the phase in results and the progress line.
	Label string
	// Rate, when positive, runs an open loop at that many requests/s:
	// syncs start at their intended times whatever the answers, and each
	// request's latency counts from its intended send time (a sync's
	// first request: the sync's start; the next ones: the previous
	// answer). The rate covers sync and background requests.
	Rate float64
	// Arrival spaces an open loop's syncs (default ArrivalUsers).
	Arrival Arrival
	// Concurrency, when Rate is 0, runs a closed loop: that many
	// connections (default 16) each send a request as soon as the
	// previous one is answered; latency counts from each send.
	Concurrency int
	// Duration of the phase (default 10 s).
	Duration time.Duration
	// Requests, when positive, ends a closed loop after that many
	// requests instead of after Duration.
	Requests int64
}

// opRec accumulates one op's figures.
type opRec struct {
	h                                  stats.Histogram
	n, errs, notFound                  int64
	wbosOut, wbosIn, bytesOut, bytesIn int64
	kinds                              map[string]int64
}

// recorder accumulates a phase's figures; safe for concurrent use.
type recorder struct {
	mu       sync.Mutex
	ops      map[string]*opRec
	all, lag stats.Histogram
	win      stats.Histogram
	kinds    map[string]int64

	sent, requests, errs, timeouts, dropped int64
	winN, winErr, winSent                   int64
	achieved                                int64 // answers while the phase window is open
	open                                    bool
	inFlight                                atomic.Int64
}

func newRecorder() *recorder {
	return &recorder{ops: map[string]*opRec{}, kinds: map[string]int64{}, open: true}
}

func (r *recorder) sentOne() {
	r.mu.Lock()
	r.sent++
	r.winSent++
	r.mu.Unlock()
	r.inFlight.Add(1)
}

func (r *recorder) sendLag(d time.Duration) {
	r.mu.Lock()
	r.lag.Record(d)
	r.mu.Unlock()
}

func (r *recorder) drop(n int) {
	r.mu.Lock()
	r.dropped += int64(n)
	r.mu.Unlock()
}

// done records one finished request.
func (r *recorder) done(op string, lat time.Duration, o outcome, wbosOut int) {
	r.inFlight.Add(-1)
	r.mu.Lock()
	defer r.mu.Unlock()
	or := r.ops[op]
	if or == nil {
		or = &opRec{kinds: map[string]int64{}}
		r.ops[op] = or
	}
	or.n++
	or.h.Record(lat)
	or.bytesOut += o.bytesOut
	or.bytesIn += o.bytesIn
	or.wbosIn += o.wbosIn
	r.requests++
	r.all.Record(lat)
	r.win.Record(lat)
	r.winN++
	if r.open {
		r.achieved++
	}
	if o.notFound {
		or.notFound++
	}
	if o.kind != "" {
		or.errs++
		or.kinds[o.kind]++
		r.errs++
		r.winErr++
		r.kinds[o.kind]++
		if o.timeout {
			r.timeouts++
		}
		return
	}
	or.wbosOut += int64(wbosOut)
}

// window returns the figures since the last call and starts a new window.
func (r *recorder) window() (n, errs, sent int64, p report.Percentiles) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, errs, sent, p = r.winN, r.winErr, r.winSent, report.FromHistogram(&r.win)
	r.winN, r.winErr, r.winSent = 0, 0, 0
	r.win.Reset()
	return n, errs, sent, p
}

func (r *recorder) close() {
	r.mu.Lock()
	r.open = false
	r.mu.Unlock()
}

// Run measures one phase and returns its figures (also kept for Result).
// Between phases it refills what wipes removed. It returns an error when
// ctx ends (with the figures so far) or nothing could be sent.
func (e *Engine) Run(ctx context.Context, ph Phase) (report.Step, error) {
	if ph.Duration <= 0 {
		ph.Duration = 10 * time.Second
	}
	if ph.Rate < 0 || math.IsNaN(ph.Rate) || math.IsInf(ph.Rate, 0) {
		return report.Step{}, fmt.Errorf("%w: rate %v", ErrConfig, ph.Rate)
	}
	if ph.Arrival == "" {
		ph.Arrival = ArrivalUsers
	}
	if ph.Rate == 0 && ph.Concurrency <= 0 {
		ph.Concurrency = 16
	}
	if err := e.repair(ctx); err != nil {
		return report.Step{}, err
	}
	e.mu.Lock()
	idx := e.phases
	e.phases++
	e.mu.Unlock()
	rec := newRecorder()
	cpu0 := readCPU(e.cfg.Target.Procs)
	start := time.Now()
	st := report.Step{Index: idx, Label: ph.Label, Start: e.since(start)}
	if ph.Rate > 0 {
		st.Loop, st.Arrival, st.Offered = "open", string(ph.Arrival), ph.Rate
		st.OfferedUsers = ph.Rate / e.gen.RatePerUser()
		e.checkCompression(st.OfferedUsers)
	} else {
		st.Loop, st.Concurrency = "closed", ph.Concurrency
	}

	// Per-second series and the progress line.
	tickDone := make(chan struct{})
	var tickWG sync.WaitGroup
	tickWG.Go(func() { e.tick(ph, idx, start, rec, tickDone) })

	var lagWG sync.WaitGroup
	lagCtx, stopLag := context.WithCancel(ctx)
	if e.cfg.Target.AdminToken != "" && !e.cfg.Target.NoAccounts && e.cfg.API != API15 {
		lagWG.Go(func() { e.probeLag(lagCtx) })
	}

	// In-flight requests get Timeout after the phase's end to finish,
	// then are cancelled.
	reqCtx, cancelReqs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelReqs()
	stopOnCancel := context.AfterFunc(ctx, cancelReqs)
	defer stopOnCancel()
	var wg sync.WaitGroup
	if ph.Rate > 0 {
		e.runOpen(ctx, reqCtx, ph, idx, start, rec, &wg)
	} else {
		e.runClosed(ctx, reqCtx, ph, idx, start, rec, &wg)
	}
	end := time.Now()
	cpu1 := readCPU(e.cfg.Target.Procs)
	rec.close()
	stopLag()
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(e.cfg.Timeout + 5*time.Second):
		cancelReqs()
		<-waited
	}
	lagWG.Wait()
	close(tickDone)
	tickWG.Wait()
	e.endProgress()

	rec.mu.Lock()
	st.Duration = end.Sub(start).Seconds()
	st.Sent, st.Requests, st.Errors, st.Timeouts, st.Dropped = rec.sent, rec.requests, rec.errs, rec.timeouts, rec.dropped
	st.Achieved = float64(rec.achieved) / st.Duration
	st.Latency = report.FromHistogram(&rec.all)
	st.SendLag = report.FromHistogram(&rec.lag)
	if len(rec.kinds) > 0 {
		st.ErrorKinds = map[string]int64{}
		for k, v := range rec.kinds {
			st.ErrorKinds[k] = v
		}
	}
	for _, o := range append(append([]mix.Op{}, e.cfg.Mix.Ops...), e.cfg.Mix.Background...) {
		or := rec.ops[o.Name]
		if or == nil {
			continue
		}
		os := report.OpStats{Name: o.Name, Requests: or.n, Errors: or.errs, NotFound: or.notFound,
			Latency: report.FromHistogram(&or.h), WBOsOut: or.wbosOut, WBOsIn: or.wbosIn, BytesOut: or.bytesOut, BytesIn: or.bytesIn}
		if len(or.kinds) > 0 {
			os.Kinds = or.kinds
		}
		st.Ops = append(st.Ops, os)
	}
	rec.mu.Unlock()
	st.Procs = e.sampler.summary(st.Start, st.Start+st.Duration)
	st.CPU = cpuBetween(cpu0, cpu1).Seconds()
	e.mu.Lock()
	e.res.Steps = append(e.res.Steps, st)
	e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return st, err
	}
	if st.Requests == 0 {
		return st, errors.New("load: no request was answered or failed in the phase")
	}
	return st, nil
}

// checkCompression remembers the most active users a phase offered, for
// the time-compression note of Result.
func (e *Engine) checkCompression(users float64) {
	e.mu.Lock()
	e.maxUsers = max(e.maxUsers, users)
	e.mu.Unlock()
}

// compressionNote says when fewer profiles than active users made each
// profile sync more often than a real user would; e.mu held.
func (e *Engine) compressionNote() string {
	p := float64(len(e.profiles))
	if e.cfg.Target.NoAccounts || e.maxUsers <= p {
		return ""
	}
	gap := e.cfg.Mix.Think.Mean() * p / e.maxUsers
	return fmt.Sprintf("time compression: up to %.0f active users ran on %d profiles, so each profile synced every %.1f s on average instead of every %.0f s: per-user caches (the node's 60 s password cache) hit more often, and one user's requests overlap more often, than with real users.",
		e.maxUsers, len(e.profiles), gap, e.cfg.Mix.Think.Mean())
}

// tick appends a point to the series every second and prints progress.
func (e *Engine) tick(ph Phase, idx int, start time.Time, rec *recorder, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := start
	for {
		var now time.Time
		select {
		case <-done:
			now = time.Now()
			if now.Sub(last) < 200*time.Millisecond {
				return
			}
		case now = <-t.C:
		}
		dt := now.Sub(last).Seconds()
		last = now
		n, errs, sent, p := rec.window()
		pt := report.Point{T: e.since(now), Step: idx, Offered: ph.Rate, Sent: float64(sent) / dt, Achieved: float64(n) / dt,
			Errors: errs, InFlight: rec.inFlight.Load(), P50: p.P50, P90: p.P90, P99: p.P99, Max: p.Max}
		e.mu.Lock()
		e.res.Series = append(e.res.Series, pt)
		e.mu.Unlock()
		if e.cfg.Progress != nil {
			elapsed := now.Sub(start).Truncate(time.Second)
			label := ph.Label
			if label == "" {
				label = "run"
			}
			load := fmt.Sprintf("closed loop, %d conns", ph.Concurrency)
			if ph.Rate > 0 {
				load = fmt.Sprintf("offered %.0f req/s (%s users)", ph.Rate, humanCount(ph.Rate/e.gen.RatePerUser()))
			}
			errPct := 0.0
			if n > 0 {
				errPct = 100 * float64(errs) / float64(n)
			}
			e.progress(fmt.Sprintf("[%s] %s | sent %.0f/s answered %.0f/s | p50 %s p99 %s | errors %.2f%% | in flight %d | %s/%s",
				label, load, pt.Sent, pt.Achieved, ms(p.P50), ms(p.P99), errPct, pt.InFlight, elapsed, ph.Duration))
		}
		select {
		case <-done:
			return
		default:
		}
	}
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0fms", v)
	}
	return fmt.Sprintf("%.1fms", v)
}

func humanCount(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// progress writes a progress line.
func (e *Engine) progress(line string) {
	if e.cfg.Progress == nil {
		return
	}
	if e.cfg.ProgressCR {
		fmt.Fprintf(e.cfg.Progress, "\r%-150s", line)
		return
	}
	fmt.Fprintln(e.cfg.Progress, line)
}

func (e *Engine) endProgress() {
	if e.cfg.Progress != nil && e.cfg.ProgressCR {
		fmt.Fprintln(e.cfg.Progress)
	}
}

// event is a virtual user's next sync.
type event struct {
	at float64 // seconds from the phase start
	vu int
}

type eventHeap []event

func (h eventHeap) Len() int           { return len(h) }
func (h eventHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h eventHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)        { *h = append(*h, x.(event)) }

// Pop is required by heap.Interface; the heap never shrinks.
func (h *eventHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// maxVirtualUsers bounds the users an open loop schedules individually;
// above it ArrivalUsers becomes ArrivalPoisson (the same process in the
// limit of many users).
const maxVirtualUsers = 5_000_000

// runOpen starts syncs and background requests at their intended times
// until the phase's duration has passed. ctx ends the dispatch; requests
// run under reqCtx.
func (e *Engine) runOpen(ctx, reqCtx context.Context, ph Phase, idx int, start time.Time, rec *recorder, wg *sync.WaitGroup) {
	users := ph.Rate / e.gen.RatePerUser()
	syncRate := users * e.gen.SyncRatePerUser()
	bgRate := users * e.gen.BackgroundRatePerUser()
	seedBase := uint64(idx+1) << 40
	sched := rand.New(rand.NewPCG(e.cfg.Seed, seedBase|1<<39))
	dur := ph.Duration.Seconds()
	arrival := ph.Arrival
	nvu := int(math.Round(users))
	if arrival == ArrivalUsers && nvu > maxVirtualUsers {
		arrival = ArrivalPoisson
		e.note("open loop: %.0f users are more than %d; their syncs were drawn as one Poisson process", users, maxVirtualUsers)
	}
	nvu = max(nvu, 1)
	// thinkScale makes nvu whole users send exactly the rate asked.
	thinkScale := float64(nvu) / users

	// Users keep their next sync in a heap; the Poisson and uniform
	// processes keep one next time.
	var h eventHeap
	var nextT float64
	switch arrival {
	case ArrivalUsers:
		h = make(eventHeap, 0, nvu)
		for vu := range nvu {
			h = append(h, event{at: e.firstSync(sched) * thinkScale, vu: vu})
		}
		heap.Init(&h)
	case ArrivalPoisson:
		nextT = sched.ExpFloat64() / syncRate
	case ArrivalUniform:
		nextT = 0.5 / syncRate
	}
	peek := func() float64 {
		if arrival == ArrivalUsers {
			return h[0].at
		}
		return nextT
	}
	// advance consumes the next sync and returns its virtual user.
	advance := func() int {
		switch arrival {
		case ArrivalUsers:
			ev := h[0]
			h[0].at += e.gen.Think(sched) * thinkScale
			heap.Fix(&h, 0)
			return ev.vu
		case ArrivalPoisson:
			nextT += sched.ExpFloat64() / syncRate
		default:
			nextT += 1 / syncRate
		}
		return sched.IntN(nvu)
	}
	bgNext := math.Inf(1)
	if bgRate > 0 && e.gen.HasBackground() {
		bgNext = sched.ExpFloat64() / bgRate
	}
	var pending atomic.Int64
	var n uint64
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		at := peek()
		isBG := bgNext < at
		if isBG {
			at = bgNext
		}
		if at >= dur {
			break
		}
		intended := start.Add(time.Duration(at * float64(time.Second)))
		if d := time.Until(intended); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		n++
		evSeed := seedBase | n
		var vu int
		if isBG {
			bgNext += sched.ExpFloat64() / bgRate
			vu = sched.IntN(nvu)
		} else {
			vu = advance()
		}
		p := e.profile(vu)
		if pending.Load() >= int64(e.cfg.MaxPending) {
			r := rand.New(rand.NewPCG(e.cfg.Seed, evSeed))
			if isBG {
				rec.drop(1)
			} else {
				rec.drop(len(e.gen.Sync(r).Requests))
			}
			continue
		}
		pending.Add(1)
		wg.Go(func() {
			defer pending.Add(-1)
			r := rand.New(rand.NewPCG(e.cfg.Seed, evSeed))
			rec.sendLag(time.Since(intended))
			if isBG {
				e.measure(reqCtx, p, e.gen.Background(r), intended, rec)
				return
			}
			e.runSync(reqCtx, p, e.gen.Sync(r), intended, rec)
		})
	}
}

// firstSync draws a user's first sync time so that the users' syncs are
// spread as in a system that has been running for a while: the user's
// syncs start ten mean think times before the phase, and the first one at
// or after its start is kept.
func (e *Engine) firstSync(r *rand.Rand) float64 {
	t := -10 * e.cfg.Mix.Think.Mean()
	for t < 0 {
		t += e.gen.Think(r)
	}
	return t
}

// profile returns the profile virtual user vu runs on.
func (e *Engine) profile(vu int) *profile {
	if len(e.profiles) == 0 {
		return nil
	}
	return e.profiles[vu%len(e.profiles)]
}

// runSync sends a sync's requests one after another. The first request's
// latency counts from the sync's intended start, each later one's from the
// answer before it (when the client sends it).
func (e *Engine) runSync(ctx context.Context, p *profile, s mix.Sync, intended time.Time, rec *recorder) {
	t := intended
	var first api.Stamp
	for i, q := range s.Requests {
		if ctx.Err() != nil {
			return
		}
		o := e.measure(ctx, p, q, t, rec)
		if i == 0 {
			first = o.stamp
		}
		t = time.Now()
	}
	if p != nil && first > 0 {
		p.mu.Lock()
		if first > p.last[s.Device] {
			p.last[s.Device] = first
		}
		p.mu.Unlock()
	}
}

// runClosed runs ph.Concurrency workers that each send the next request as
// soon as the previous is answered, until the duration or request budget
// is spent.
func (e *Engine) runClosed(ctx, reqCtx context.Context, ph Phase, idx int, start time.Time, rec *recorder, wg *sync.WaitGroup) {
	var stop atomic.Bool
	var budget atomic.Int64
	budget.Store(ph.Requests)
	bgShare := e.gen.BackgroundRatePerUser() / e.gen.RatePerUser()
	seedBase := uint64(idx+1) << 40
	take := func() bool {
		if stop.Load() || ctx.Err() != nil {
			return false
		}
		return ph.Requests <= 0 || budget.Add(-1) >= 0
	}
	for w := range ph.Concurrency {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(e.cfg.Seed, seedBase|uint64(w)))
			p := e.profile(w)
			for {
				if e.gen.HasBackground() && r.Float64() < bgShare {
					if !take() {
						return
					}
					e.measure(reqCtx, p, e.gen.Background(r), time.Now(), rec)
					continue
				}
				s := e.gen.Sync(r)
				var first api.Stamp
				for i, q := range s.Requests {
					if !take() {
						return
					}
					o := e.measure(reqCtx, p, q, time.Now(), rec)
					if i == 0 {
						first = o.stamp
					}
				}
				if p != nil && first > 0 {
					p.mu.Lock()
					p.last[s.Device] = max(p.last[s.Device], first)
					p.mu.Unlock()
				}
			}
		})
	}
	if ph.Requests > 0 {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			stop.Store(true)
			<-done
		}
		return
	}
	timer := time.NewTimer(ph.Duration)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	stop.Store(true)
}

// measure sends request q for p and records it with its latency from
// intended.
func (e *Engine) measure(ctx context.Context, p *profile, q mix.Request, intended time.Time, rec *recorder) outcome {
	rec.sentOne()
	o := e.do(ctx, p, q)
	if o.kind == "canceled" {
		o.timeout = true
	}
	rec.done(q.Op.Name, time.Since(intended), o, len(q.WBOs))
	return o
}

// do sends one generated request for profile p.
func (e *Engine) do(ctx context.Context, p *profile, q mix.Request) outcome {
	op := q.Op
	if p == nil {
		p = e.newProfile("nobody@hce.invalid", 0)
	}
	base := p.user
	if op.At == mix.Storage {
		base = p.storageURL()
		if base == "" {
			base = e.cfg.Target.UserURLs[0]
		}
	}
	path := op.Path
	var fresh *profile
	if strings.Contains(path, "{new}") {
		fresh = e.newAccount()
		path = strings.ReplaceAll(path, "{new}", fresh.name)
	}
	path = strings.ReplaceAll(path, "{user}", p.name)
	if q.Coll != "" {
		path = strings.ReplaceAll(path, "{coll}", q.Coll)
	}
	if strings.Contains(path, "{device}") {
		path = strings.ReplaceAll(path, "{device}", mix.DeviceID(q.Device))
	}
	if op.Newer {
		p.mu.Lock()
		since := p.last[q.Device]
		if since == 0 {
			since = p.filled
		}
		p.mu.Unlock()
		if since > 0 {
			sep := "?"
			if strings.Contains(path, "?") {
				sep = "&"
			}
			path += sep + "newer=" + since.String()
		}
	}
	url := base + strings.TrimPrefix(path, "/")
	var body []byte
	auth := p.auth
	if op.At == mix.Storage && e.cfg.API == API15 && !e.cfg.Target.NoAccounts {
		url, auth = e.storageRequest(ctx, p, op.Method, base, path)
	}
	if op.At == mix.UserAPI && e.cfg.API == API15 && strings.HasSuffix(path, "/token") && !e.cfg.Target.NoAccounts {
		// Sync 1.5 clients fetch credentials at the tokenserver.
		p.mu.Lock()
		fxa := p.s15.fxa
		p.mu.Unlock()
		o, _ := e.tokenserver(ctx, p, fxa)
		return o
	}
	switch op.Body {
	case mix.WBOBody:
		ws := q.WBOs
		if e.cfg.API == API15 {
			// Sync 1.5 refuses a body naming an id twice; Weave keeps
			// the last.
			ws = lastOfEachID(ws)
		}
		body = e.wboBody(ws, q.Seed)
	case mix.RegisterBody:
		body, _ = json.Marshal(map[string]string{"password": e.cfg.Password, "email": fresh.email})
		auth = ""
	}
	o := e.send(ctx, op.Method, url, auth, op.Headers, body, op.Body == mix.WBOBody)
	if op.Method != http.MethodGet || q.Collection() == "" {
		o.wbosIn = 0 // X-Weave-Records counts records only on collection reads
	}
	if op.At == mix.Storage {
		switch {
		case o.status == http.StatusNotFound && (op.Method == http.MethodGet || op.Method == http.MethodHead || op.Method == http.MethodDelete):
			// A record or collection a wipe removed: a valid answer.
			o.kind, o.notFound = "", true
			p.mu.Lock()
			p.dirty = true
			p.mu.Unlock()
		case o.status == http.StatusUnauthorized && (e.cfg.Target.StorageURL == "" || e.cfg.API == API15):
			// The Weave reassignment signal: read node/weave again.
			p.mu.Lock()
			p.resolve = true
			p.mu.Unlock()
		case o.kind == "" && op.Method == http.MethodDelete:
			p.mu.Lock()
			p.dirty = true
			p.mu.Unlock()
		}
	}
	return o
}
