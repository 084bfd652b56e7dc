package report

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// focus is the step a comparison reads: the capacity step of a capacity
// search, else the last step.
func (r *Result) focus() *Step {
	if len(r.Steps) == 0 {
		return nil
	}
	if r.Capacity != nil && r.Capacity.Step >= 0 {
		for i := range r.Steps {
			if r.Steps[i].Index == r.Capacity.Step {
				return &r.Steps[i]
			}
		}
	}
	return &r.Steps[len(r.Steps)-1]
}

// Compare writes a and b side by side: the capacity (when both searched),
// the figures of each one's focus step (the capacity step, else the last
// step) and per op, with B's change against A in percent.
func Compare(w io.Writer, a, b *Result, nameA, nameB string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(label, va, vb, change string) { fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", label, va, vb, change) }
	row("", nameA, nameB, "change")
	row("mix", a.Mix.Name, b.Mix.Name, "")
	row("target", a.Target.Kind, b.Target.Kind, "")
	row("started", a.Started.Format("2006-01-02 15:04"), b.Started.Format("2006-01-02 15:04"), "")
	row("load average at start", fmt.Sprintf("%.2f", a.Host.LoadStart[0]), fmt.Sprintf("%.2f", b.Host.LoadStart[0]), "")
	if a.Capacity != nil && b.Capacity != nil {
		row("capacity req/s", num(a.Capacity.RPS), num(b.Capacity.RPS), change(a.Capacity.RPS, b.Capacity.RPS))
		row("capacity active users", num(a.Capacity.Users), num(b.Capacity.Users), change(a.Capacity.Users, b.Capacity.Users))
		row("failure mode", a.Capacity.Failure, b.Capacity.Failure, "")
		row("disk per profile", bytesOr(a.Capacity.DiskPerUser), bytesOr(b.Capacity.DiskPerUser), change(a.Capacity.DiskPerUser, b.Capacity.DiskPerUser))
		row("RSS per active user", bytesOr(a.Capacity.RSSPerUser), bytesOr(b.Capacity.RSSPerUser), change(a.Capacity.RSSPerUser, b.Capacity.RSSPerUser))
	}
	if a.Baseline != nil && b.Baseline != nil && a.Reference != nil && b.Reference != nil {
		ra, rb := 100*a.Reference.Achieved/a.Baseline.Achieved, 100*b.Reference.Achieved/b.Baseline.Achieved
		row("closed loop, % of minimal handler", fmt.Sprintf("%.1f %%", ra), fmt.Sprintf("%.1f %%", rb), change(ra, rb))
	}
	fa, fb := a.focus(), b.focus()
	if fa == nil || fb == nil {
		return tw.Flush()
	}
	row("step compared", fa.Label, fb.Label, "")
	row("offered req/s", num(fa.Offered), num(fb.Offered), change(fa.Offered, fb.Offered))
	row("answered req/s", num(fa.Achieved), num(fb.Achieved), change(fa.Achieved, fb.Achieved))
	row("p50 ms", num(fa.Latency.P50), num(fb.Latency.P50), change(fa.Latency.P50, fb.Latency.P50))
	row("p99 ms", num(fa.Latency.P99), num(fb.Latency.P99), change(fa.Latency.P99, fb.Latency.P99))
	ea, eb := errRate(fa), errRate(fb)
	row("errors %", fmt.Sprintf("%.3f", ea), fmt.Sprintf("%.3f", eb), "")
	cpu := func(s *Step) float64 {
		t := 0.0
		for _, p := range s.Procs {
			if p.Name != GeneratorProc {
				t += p.CPU
			}
		}
		return t
	}
	if len(fa.Procs) > 0 && len(fb.Procs) > 0 {
		row("server CPU, cores", fmt.Sprintf("%.2f", cpu(fa)), fmt.Sprintf("%.2f", cpu(fb)), change(cpu(fa), cpu(fb)))
	}
	if ca, cb := fa.CPUPerRequest(), fb.CPUPerRequest(); ca > 0 && cb > 0 {
		row("CPU per request, ms", fmt.Sprintf("%.3f", ca), fmt.Sprintf("%.3f", cb), change(ca, cb))
	}
	opsB := map[string]OpStats{}
	for _, o := range fb.Ops {
		opsB[o.Name] = o
	}
	for _, oa := range fa.Ops {
		ob, ok := opsB[oa.Name]
		if !ok {
			continue
		}
		row(oa.Name+" p50 ms", num(oa.Latency.P50), num(ob.Latency.P50), change(oa.Latency.P50, ob.Latency.P50))
		row(oa.Name+" p99 ms", num(oa.Latency.P99), num(ob.Latency.P99), change(oa.Latency.P99, ob.Latency.P99))
	}
	return tw.Flush()
}

func errRate(s *Step) float64 {
	if s.Requests == 0 {
		return 0
	}
	return 100 * float64(s.Errors) / float64(s.Requests)
}

func num(v float64) string {
	if v == 0 {
		return "0"
	}
	if math.Abs(v) >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

func bytesOr(v float64) string {
	if v == 0 {
		return "-"
	}
	return bytesHuman(v)
}

// change is b against a in percent ("" when a is 0).
func change(a, b float64) string {
	if a == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return ""
	}
	return fmt.Sprintf("%+.1f %%", 100*(b-a)/a)
}
