package load

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hce-sync/hce/testnet/load/report"
)

// Defaults of SLO and CapacityConfig.
const (
	DefaultSLOP99      = 100 * time.Millisecond
	DefaultMaxErrors   = 0.01
	DefaultMaxTimeouts = 0.001
	DefaultStartRate   = 50
	DefaultGrowth      = 1.5
	DefaultPrecision   = 0.05
	DefaultMaxSteps    = 20
	DefaultStep        = 30 * time.Second
	DefaultCooldown    = 3 * time.Second
	DefaultMinRequests = 1000
)

// SLO is what a healthy step meets. A zero field takes its default; a
// negative budget or ratio turns that check off.
type SLO struct {
	// P99 bounds the 99th percentile latency (default 100 ms).
	P99 time.Duration
	// MaxErrors bounds the fraction of failed requests, timeouts and
	// refused connections included (default 0.01).
	MaxErrors float64
	// MaxTimeouts bounds the fraction of timed-out requests (default
	// 0.001).
	MaxTimeouts float64
	// DiskBudget bounds any target process's data folder and RSSBudget
	// its resident memory, in bytes (0: no bound).
	DiskBudget int64
	RSSBudget  int64
	// MaxSendLag bounds the generator's own lateness (p99 of the delay
	// between a sync's intended and actual start; default P99/2). Beyond
	// it the machine's CPU, not only the server, limits the step.
	MaxSendLag time.Duration
}

// DefaultSLO returns the default objective: p99 at most 100 ms, at most
// 1 % errors and 0.1 % timeouts, no disk or memory budget.
func DefaultSLO() SLO {
	return SLO{P99: DefaultSLOP99, MaxErrors: DefaultMaxErrors, MaxTimeouts: DefaultMaxTimeouts, MaxSendLag: DefaultSLOP99 / 2}
}

// Validate reports an objective Check cannot apply.
func (s SLO) Validate() error {
	if s.P99 < 0 || s.MaxSendLag < 0 || s.DiskBudget < 0 || s.RSSBudget < 0 || s.MaxErrors > 1 || s.MaxTimeouts > 1 {
		return fmt.Errorf("%w: SLO %+v", ErrConfig, s)
	}
	return nil
}

func (s SLO) withDefaults() SLO {
	if s.P99 == 0 {
		s.P99 = DefaultSLOP99
	}
	if s.MaxErrors == 0 {
		s.MaxErrors = DefaultMaxErrors
	}
	if s.MaxTimeouts == 0 {
		s.MaxTimeouts = DefaultMaxTimeouts
	}
	if s.MaxSendLag == 0 {
		s.MaxSendLag = s.P99 / 2
	}
	return s
}

// Report returns the SLO as recorded in results.
func (s SLO) Report(timeout time.Duration) report.SLO {
	s = s.withDefaults()
	return report.SLO{P99: float64(s.P99) / 1e6, MaxErrors: s.MaxErrors, MaxTimeouts: s.MaxTimeouts,
		DiskBudget: s.DiskBudget, RSSBudget: s.RSSBudget, Timeout: float64(timeout) / 1e6}
}

// Failure modes, in the order Check names the first of several.
const (
	FailDisk      = "disk"
	FailMemory    = "memory"
	FailErrors    = "errors"
	FailTimeouts  = "timeouts"
	FailLatency   = "latency"
	FailGenerator = "generator"
)

// Check returns "" when st meets the SLO, else the failure mode (the first
// of disk, memory, errors, timeouts, latency, generator that fails) and a
// detail naming every failed check with its figures.
func (s SLO) Check(st report.Step) (mode, detail string) {
	s = s.withDefaults()
	var modes, details []string
	fail := func(m, format string, args ...any) {
		modes = append(modes, m)
		details = append(details, m+": "+fmt.Sprintf(format, args...))
	}
	for _, p := range st.Procs {
		if p.Name == GeneratorProc {
			continue
		}
		if s.DiskBudget > 0 && p.Disk > s.DiskBudget {
			fail(FailDisk, "%s holds %s on disk, budget %s", p.Name, bytesStr(p.Disk), bytesStr(s.DiskBudget))
		}
	}
	for _, p := range st.Procs {
		if p.Name == GeneratorProc {
			continue
		}
		if s.RSSBudget > 0 && p.RSS > s.RSSBudget {
			fail(FailMemory, "%s resident %s, budget %s", p.Name, bytesStr(p.RSS), bytesStr(s.RSSBudget))
		}
	}
	total := max(st.Requests, 1)
	if s.MaxErrors > 0 && float64(st.Errors)/float64(total) > s.MaxErrors {
		fail(FailErrors, "%.2f %% of requests failed (%s), bound %.2f %%", 100*float64(st.Errors)/float64(total), kindsStr(st.ErrorKinds), 100*s.MaxErrors)
	}
	if s.MaxTimeouts > 0 && float64(st.Timeouts)/float64(total) > s.MaxTimeouts {
		fail(FailTimeouts, "%.2f %% of requests timed out, bound %.2f %%", 100*float64(st.Timeouts)/float64(total), 100*s.MaxTimeouts)
	}
	if p99 := st.Latency.P99; p99 > float64(s.P99)/1e6 {
		fail(FailLatency, "p99 %.1f ms over the %.0f ms objective%s", p99, float64(s.P99)/1e6, slowOps(st, float64(s.P99)/1e6))
	}
	if st.Dropped > 0 {
		fail(FailGenerator, "the generator dropped %d requests (its backlog limit)", st.Dropped)
	} else if lag := st.SendLag.P99; lag > float64(s.MaxSendLag)/1e6 {
		fail(FailGenerator, "the generator sent syncs late (p99 %.1f ms, bound %.0f ms): this machine's CPU is saturated", lag, float64(s.MaxSendLag)/1e6)
	}
	if len(modes) == 0 {
		return "", ""
	}
	order := []string{FailDisk, FailMemory, FailErrors, FailTimeouts, FailLatency, FailGenerator}
	for _, m := range order {
		for _, got := range modes {
			if got == m {
				return m, strings.Join(details, "; ")
			}
		}
	}
	return modes[0], strings.Join(details, "; ")
}

// slowOps names the ops whose own p90 is over the objective (those that
// fill the tail), the most frequent first.
func slowOps(st report.Step, objective float64) string {
	var slow []report.OpStats
	for _, o := range st.Ops {
		if o.Latency.P90 > objective {
			slow = append(slow, o)
		}
	}
	if len(slow) == 0 {
		return ""
	}
	slices.SortFunc(slow, func(a, b report.OpStats) int { return int(b.Requests - a.Requests) })
	var parts []string
	for _, o := range slow[:min(len(slow), 3)] {
		parts = append(parts, fmt.Sprintf("%s p90 %.0f ms, %.0f %% of requests", o.Name, o.Latency.P90, 100*float64(o.Requests)/float64(max(st.Requests, 1))))
	}
	return " (slowest: " + strings.Join(parts, "; ") + ")"
}

func kindsStr(k map[string]int64) string {
	var parts []string
	for kind, n := range k {
		parts = append(parts, fmt.Sprintf("%s: %d", kind, n))
	}
	if len(parts) == 0 {
		return "none"
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func bytesStr(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// CapacityConfig configures a capacity search. A zero field takes its
// default.
type CapacityConfig struct {
	// Start is the first step's offered rate in requests/s (default 50).
	Start float64
	// Growth multiplies the rate after each healthy step until one fails
	// (default 1.5).
	Growth float64
	// Max is the highest rate tried (default: no bound but MaxSteps).
	Max float64
	// Precision ends the search once the lowest failed rate is within
	// this fraction above the highest healthy one (default 0.05); until
	// then the steps bisect (geometric mean).
	Precision float64
	// MaxSteps bounds the number of steps (default 20).
	MaxSteps int
	// Step is each step's duration (default 30 s); Cooldown the pause
	// between steps so the server drains (default 3 s).
	Step     time.Duration
	Cooldown time.Duration
	// MinRequests lengthens a step at a low rate until it offers this
	// many requests (at most five times Step), so that its p99 rests on
	// enough answers (default 1000).
	MinRequests int
	// Arrival is the steps' arrival process (default ArrivalUsers).
	Arrival Arrival
	// SLO is what a healthy step meets.
	SLO SLO
	// OnStep, when set, is called after every step with its figures.
	OnStep func(report.Step)
}

// DefaultCapacityConfig returns the defaults of a capacity search.
func DefaultCapacityConfig() CapacityConfig {
	return CapacityConfig{Start: DefaultStartRate, Growth: DefaultGrowth, Precision: DefaultPrecision,
		MaxSteps: DefaultMaxSteps, Step: DefaultStep, Cooldown: DefaultCooldown, MinRequests: DefaultMinRequests,
		Arrival: ArrivalUsers, SLO: DefaultSLO()}
}

// Validate reports a search Capacity cannot run.
func (c CapacityConfig) Validate() error {
	if c.Start < 0 || c.Max < 0 || c.Precision < 0 || c.MaxSteps < 0 || c.Step < 0 || c.Cooldown < 0 || c.MinRequests < 0 ||
		c.Growth != 0 && c.Growth <= 1 || math.IsNaN(c.Start) || math.IsInf(c.Start, 0) {
		return fmt.Errorf("%w: capacity search %+v", ErrConfig, c)
	}
	if c.Arrival != "" {
		if _, err := ParseArrival(string(c.Arrival)); err != nil {
			return err
		}
	}
	return c.SLO.Validate()
}

func (c CapacityConfig) withDefaults() CapacityConfig {
	if c.Start <= 0 {
		c.Start = DefaultStartRate
	}
	if c.Growth <= 1 {
		c.Growth = DefaultGrowth
	}
	if c.Precision <= 0 {
		c.Precision = DefaultPrecision
	}
	if c.MaxSteps <= 0 {
		c.MaxSteps = DefaultMaxSteps
	}
	if c.Step <= 0 {
		c.Step = DefaultStep
	}
	if c.Cooldown == 0 {
		c.Cooldown = DefaultCooldown
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	c.SLO = c.SLO.withDefaults()
	return c
}

// Capacity raises the offered load step by step (open loop) until a step
// fails the SLO, then bisects between the highest healthy and the lowest
// failed rate to the configured precision. The capacity is the highest
// healthy step's rate, in requests/s and in active users, with the
// failure mode of the lowest failed step above it. A first step that
// fails makes the search go down instead.
func (e *Engine) Capacity(ctx context.Context, cfg CapacityConfig) (*report.Capacity, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	capy := &report.Capacity{Step: -1, FailedStep: -1}
	var okRate, failRate float64
	failRate = math.Inf(1)
	rate := cfg.Start
	for n := 0; n < cfg.MaxSteps; n++ {
		if n > 0 && cfg.Cooldown > 0 {
			select {
			case <-time.After(cfg.Cooldown):
			case <-ctx.Done():
				return capy, ctx.Err()
			}
		}
		dur := cfg.Step
		if need := time.Duration(float64(cfg.MinRequests) / rate * float64(time.Second)); need > dur {
			dur = min(need, 5*cfg.Step)
		}
		st, err := e.Run(ctx, Phase{Label: fmt.Sprintf("step %d", n+1), Rate: rate, Arrival: cfg.Arrival, Duration: dur})
		mode, detail := cfg.SLO.Check(st)
		e.setFailure(st.Index, mode, detail)
		st.Failure, st.FailureDetail = mode, detail
		if cfg.OnStep != nil {
			cfg.OnStep(st)
		}
		if err != nil {
			return capy, err
		}
		if mode == "" {
			if rate > okRate {
				okRate = rate
				capy.RPS, capy.Users, capy.Step = st.Offered, st.OfferedUsers, st.Index
				var rss int64
				for _, p := range st.Procs {
					if p.Name != GeneratorProc {
						rss += p.RSS
					}
				}
				if st.OfferedUsers > 0 && rss > 0 {
					capy.RSSPerUser = float64(rss) / st.OfferedUsers
				}
			}
		} else if rate < failRate {
			failRate = rate
			capy.Failure, capy.FailureDetail, capy.FailedRPS, capy.FailedStep = mode, detail, rate, st.Index
		}
		switch {
		case math.IsInf(failRate, 1):
			rate *= cfg.Growth
			if cfg.Max > 0 && rate > cfg.Max {
				if okRate >= cfg.Max {
					e.note("capacity search: reached the maximum rate %.0f req/s without a failure", cfg.Max)
					return e.finishCapacity(capy), nil
				}
				rate = cfg.Max
			}
		case okRate == 0:
			rate /= cfg.Growth * cfg.Growth
			if rate < 0.01 {
				return e.finishCapacity(capy), nil
			}
		case failRate/okRate <= 1+cfg.Precision:
			return e.finishCapacity(capy), nil
		default:
			rate = math.Sqrt(okRate * failRate)
		}
	}
	e.note("capacity search: stopped after %d steps before reaching %.0f %% precision", cfg.MaxSteps, 100*cfg.Precision)
	return e.finishCapacity(capy), nil
}

// setFailure records a step's failure mode in the kept results.
func (e *Engine) setFailure(idx int, mode, detail string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.res.Steps {
		if e.res.Steps[i].Index == idx {
			e.res.Steps[i].Failure, e.res.Steps[i].FailureDetail = mode, detail
		}
	}
}

// finishCapacity adds the per-user disk figure and keeps the answer.
func (e *Engine) finishCapacity(c *report.Capacity) *report.Capacity {
	e.mu.Lock()
	defer e.mu.Unlock()
	u := e.res.Users
	if u.Prefilled > 0 && u.DiskAfter > u.DiskBefore {
		c.DiskPerUser = float64(u.DiskAfter-u.DiskBefore) / float64(u.Prefilled)
	}
	if c.Failure == "" {
		c.Failure = "none"
	}
	e.res.Capacity = c
	return c
}
