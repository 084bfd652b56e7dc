package report

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// WriteHTML writes r as one self-contained HTML page: inline SVG charts,
// inline CSS and a small inline script that checks the charts rendered
// (it sets data-check on <body>); nothing is loaded from elsewhere.
func WriteHTML(w io.Writer, r *Result) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	v := view{R: r, JSON: template.JS(data)}
	v.build()
	return page.Execute(w, v)
}

type view struct {
	R        *Result
	JSON     template.JS
	Charts   []template.HTML
	ProcCh   []template.HTML
	Errors   template.HTML
	OpStep   *Step
	Headline string
}

func (v *view) build() {
	r := v.R
	var bands []Band
	for _, s := range r.Steps {
		label := s.Label
		if s.Loop == "open" {
			label = fmt.Sprintf("%s · %s req/s", s.Label, fmtNum(s.Offered, ""))
		}
		bands = append(bands, Band{X0: s.Start, X1: s.Start + s.Duration, Label: label})
	}
	// Time charts start with the first step (registration and prefill
	// come before it; the disk chart shows them).
	first := 0.0
	if len(r.Steps) > 0 {
		first = r.Steps[0].Start
	}
	var t, p50, p90, p99, mx, sent, ach, off, errs []float64
	for _, p := range r.Series {
		t = append(t, p.T)
		p50, p90, p99, mx = append(p50, p.P50), append(p90, p.P90), append(p99, p.P99), append(mx, p.Max)
		sent, ach, off, errs = append(sent, p.Sent), append(ach, p.Achieved), append(off, p.Offered), append(errs, float64(p.Errors))
	}
	slo := []HLine{}
	if r.SLO.P99 > 0 {
		slo = append(slo, HLine{Y: r.SLO.P99, Label: fmt.Sprintf("p99 objective %s", fmtNum(r.SLO.P99, "ms"))})
	}
	v.Charts = append(v.Charts, Chart{ID: "latency-time", Title: "Latency over time (answers received each second)", XLabel: "seconds since start",
		YLabel: "latency", YUnit: "ms", LogY: true, Bands: bands, HLines: slo, Expect: len(t) > 0,
		Series: []Series{{Name: "p50", X: t, Y: p50, Line: true}, {Name: "p90", X: t, Y: p90, Line: true},
			{Name: "p99", X: t, Y: p99, Line: true}, {Name: "max", X: t, Y: mx, Line: true, Dash: true}}}.SVG())
	thr := []Series{{Name: "sent/s", X: t, Y: sent, Line: true}, {Name: "answered/s", X: t, Y: ach, Line: true},
		{Name: "errors/s", X: t, Y: errs, Line: true, Color: "#d62728"}}
	if slices.ContainsFunc(off, func(x float64) bool { return x > 0 }) {
		thr = append([]Series{{Name: "offered", X: t, Y: off, Line: true, Dash: true, Color: "#7f7f7f"}}, thr...)
	}
	v.Charts = append(v.Charts, Chart{ID: "throughput-time", Title: "Throughput over time", XLabel: "seconds since start",
		YLabel: "requests/s", Bands: bands, Series: thr, Expect: len(t) > 0}.SVG())
	// Latency against offered load: one point per open-loop step.
	var ox, oy50, oy99, oyMax []float64
	steps := slices.Clone(r.Steps)
	slices.SortFunc(steps, func(a, b Step) int {
		if a.Offered < b.Offered {
			return -1
		}
		if a.Offered > b.Offered {
			return 1
		}
		return 0
	})
	for _, s := range steps {
		if s.Loop != "open" {
			continue
		}
		ox, oy50, oy99, oyMax = append(ox, s.Offered), append(oy50, s.Latency.P50), append(oy99, s.Latency.P99), append(oyMax, s.Latency.Max)
	}
	if len(ox) > 0 {
		title := "Latency against offered load (one point per step)"
		if r.Capacity != nil && r.Capacity.Step >= 0 {
			title += fmt.Sprintf(" — capacity %s req/s", fmtNum(r.Capacity.RPS, ""))
		}
		v.Charts = append(v.Charts, Chart{ID: "latency-load", Title: title, XLabel: "offered load, requests/s", YLabel: "latency",
			YUnit: "ms", LogY: true, XFromZero: true, HLines: slo, Expect: true,
			Series: []Series{{Name: "p50", X: ox, Y: oy50, Line: true, Markers: true}, {Name: "p99", X: ox, Y: oy99, Line: true, Markers: true},
				{Name: "max", X: ox, Y: oyMax, Markers: true, Line: true, Dash: true}}}.SVG())
	}
	// Errors by kind over the run.
	kinds := map[string]int64{}
	for _, s := range r.Steps {
		for k, n := range s.ErrorKinds {
			kinds[k] += n
		}
		if s.Dropped > 0 {
			kinds["dropped by the generator"] += s.Dropped
		}
	}
	var bars []Bar
	for k, n := range kinds {
		bars = append(bars, Bar{Label: k, Value: float64(n)})
	}
	slices.SortFunc(bars, func(a, b Bar) int { return int(b.Value - a.Value) })
	v.Errors = BarChart("errors", "Errors by kind (all steps)", bars, len(bars) > 0)
	// Processes.
	if len(r.Procs) > 0 {
		var cpu, rss, disk []Series
		for i, p := range r.Procs {
			var x, c, m, xd, d []float64
			for _, s := range p.Samples {
				xd, d = append(xd, s.T), append(d, float64(s.Disk))
				if s.T >= first-2 {
					x, c, m = append(x, s.T), append(c, s.CPU), append(m, float64(s.RSS))
				}
			}
			col := Palette[i%len(Palette)]
			cpu = append(cpu, Series{Name: p.Name, X: x, Y: c, Line: true, Color: col})
			rss = append(rss, Series{Name: p.Name, X: x, Y: m, Line: true, Color: col})
			if p.Name != GeneratorProc {
				disk = append(disk, Series{Name: p.Name, X: xd, Y: d, Line: true, Color: col})
			}
		}
		note := ""
		if r.Target.InProcess {
			note = " (server in the generator's process: includes the generator)"
		}
		v.ProcCh = append(v.ProcCh,
			Chart{ID: "proc-cpu", Title: "CPU use, cores (server processes and the load generator)" + note, XLabel: "seconds since start", YLabel: "cores", Bands: bands, Series: cpu, Expect: true, H: 260}.SVG(),
			Chart{ID: "proc-rss", Title: "Resident memory (server processes and the load generator)" + note, XLabel: "seconds since start", YLabel: "RSS", YUnit: "B", Bands: bands, Series: rss, Expect: true, H: 260}.SVG(),
			Chart{ID: "proc-disk", Title: "Data folder size on disk (from the start: registration and prefill, then the steps)", XLabel: "seconds since start", YLabel: "disk", YUnit: "B", XFromZero: true, Bands: bands, Series: disk, Expect: true, H: 260}.SVG())
	}
	// The step whose ops are tabled first: the capacity step, else the
	// last one.
	if len(r.Steps) > 0 {
		v.OpStep = &r.Steps[len(r.Steps)-1]
		if r.Capacity != nil && r.Capacity.Step >= 0 {
			for i := range r.Steps {
				if r.Steps[i].Index == r.Capacity.Step {
					v.OpStep = &r.Steps[i]
				}
			}
		}
	}
	switch {
	case r.Capacity != nil && r.Capacity.Step >= 0:
		v.Headline = fmt.Sprintf("Capacity: %s requests/s = %s active users at p99 ≤ %s; next failure mode: %s",
			fmtNum(r.Capacity.RPS, ""), fmtNum(r.Capacity.Users, ""), fmtNum(r.SLO.P99, "ms"), r.Capacity.Failure)
	case r.Capacity != nil:
		v.Headline = "Capacity: no step was healthy; failure mode: " + r.Capacity.Failure
	case len(r.Steps) > 0:
		s := r.Steps[len(r.Steps)-1]
		v.Headline = fmt.Sprintf("%s: %s answers/s, p50 %s, p99 %s, %d errors of %d requests",
			s.Label, fmtNum(s.Achieved, ""), fmtNum(s.Latency.P50, "ms"), fmtNum(s.Latency.P99, "ms"), s.Errors, s.Requests)
	}
}

var funcs = template.FuncMap{
	"num":   func(v float64) string { return fmtNum(v, "") },
	"ms":    func(v float64) string { return fmtNum(v, "ms") },
	"bytes": func(v int64) string { return bytesHuman(float64(v)) },
	"bytesf": func(v float64) string {
		if v == 0 {
			return "—"
		}
		return bytesHuman(v)
	},
	"pct": func(a, b int64) string {
		if b == 0 {
			return "0 %"
		}
		return fmt.Sprintf("%.2f %%", 100*float64(a)/float64(b))
	},
	"ratio": func(a, b float64) string {
		if b == 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f %%", 100*a/b)
	},
	"rate": func(n int64, secs float64) string {
		if secs <= 0 {
			return "—"
		}
		return fmtNum(float64(n)/secs, "")
	},
	"time": func(t time.Time) string { return t.Format("2006-01-02 15:04:05 MST") },
	"dur":  func(a, b time.Time) string { return b.Sub(a).Round(time.Second).String() },
	"join": strings.Join,
	"load": func(l [3]float64) string { return fmt.Sprintf("%.2f, %.2f, %.2f", l[0], l[1], l[2]) },
	"kinds": func(k map[string]int64) string {
		var parts []string
		for kind, n := range k {
			parts = append(parts, fmt.Sprintf("%s: %d", kind, n))
		}
		slices.Sort(parts)
		return strings.Join(parts, ", ")
	},
	"perUser": func(total int64, users int) string {
		if users == 0 || total == 0 {
			return "—"
		}
		return bytesHuman(float64(total) / float64(users))
	},
	"diskPer": func(u Users) string {
		if u.Prefilled == 0 || u.DiskAfter <= u.DiskBefore {
			return "—"
		}
		return bytesHuman(float64(u.DiskAfter-u.DiskBefore) / float64(u.Prefilled))
	},
	"finite": func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) },
}

var page = template.Must(template.New("report").Funcs(funcs).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hce load — {{.R.Mode}} — {{.R.Mix.Name}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.headline{font-size:17px;background:#eef5ee;border:1px solid #b7d7b7;padding:10px 14px;border-radius:6px;margin:14px 0}
.notes{background:#fff7e6;border:1px solid #f0d090;padding:8px 14px;border-radius:6px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:12px}.wide{overflow-x:auto}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 6px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f6f6f6}
td.fail,div.fail{color:#b00020;text-align:left;white-space:normal}div.fail{font-size:12px}
.chart{display:block;margin:8px 0 18px;max-width:100%;height:auto;background:#fff}
.chart .title{font-weight:600;font-size:13px}.chart .axis line{stroke:#888}.chart line.grid{stroke:#eee}
.chart .xt{font-size:11px;text-anchor:middle;fill:#555}.chart .yt{font-size:11px;text-anchor:end;fill:#555}
.chart .xl,.chart .yl{font-size:12px;text-anchor:middle;fill:#333}.chart .legend{font-size:12px;fill:#333}
.chart .band{font-size:10px;fill:#777}.chart .ref{font-size:11px;text-anchor:end}.chart .empty{fill:#888;font-size:13px}
pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}code{font-size:12px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0}dt{color:#555}dd{margin:0}
</style></head>
<body>
<h1>hce load — {{.R.Mode}} — {{.R.Mix.Name}}</h1>
<div>{{.R.Target.Kind}} target {{.R.Target.URL}}{{if .R.Target.Nodes}} ({{len .R.Target.Nodes}} storage nodes){{end}} · {{time .R.Started}} · {{dur .R.Started .R.Finished}} · seed {{.R.Seed}}</div>
<div><code>{{join .R.Command " "}}</code></div>
{{if .Headline}}<div class="headline" id="headline">{{.Headline}}</div>{{end}}
{{with .R.Capacity}}{{if ge .Step 0}}<dl>
<dt>capacity</dt><dd>{{num .RPS}} requests/s = {{num .Users}} active users (step {{.Step}})</dd>
<dt>what ended it</dt><dd>{{.Failure}}{{if .FailureDetail}} at {{num .FailedRPS}} requests/s: {{.FailureDetail}}{{end}}</dd>
<dt>disk per profile</dt><dd>{{bytesf .DiskPerUser}} (data folders after prefill, per prefilled profile)</dd>
<dt>RSS per active user</dt><dd>{{bytesf .RSSPerUser}} (server processes' resident memory at the capacity step / active users)</dd>
</dl>{{end}}{{end}}
{{if and .R.Baseline .R.Reference}}<dl>
<dt>minimal handler</dt><dd>{{num .R.Baseline.Achieved}} requests/s, p99 {{ms .R.Baseline.Latency.P99}} (closed loop, {{.R.Baseline.Concurrency}} connections, same mix and generator)</dd>
<dt>this target, same way</dt><dd>{{num .R.Reference.Achieved}} requests/s, p99 {{ms .R.Reference.Latency.P99}} = {{ratio .R.Reference.Achieved .R.Baseline.Achieved}} of the minimal handler</dd>
</dl>{{end}}
{{if .R.Notes}}<div class="notes"><b>Notes</b><ul>{{range .R.Notes}}<li>{{.}}</li>{{end}}</ul></div>{{end}}

<h2>Latency and throughput</h2>
{{range .Charts}}{{.}}{{end}}
<h2>Errors</h2>
{{.Errors}}
{{if .ProcCh}}<h2>Processes on this machine</h2>
{{range .ProcCh}}{{.}}{{end}}{{end}}

<h2>Steps</h2>
<div class="wide"><table id="steps"><tr><th>step</th><th>loop</th><th>offered req/s</th><th>active users</th><th>answered/s</th><th>requests</th><th>errors</th><th>timeouts</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>send lag p99</th><th title="CPU time of the target's processes on this machine per answered request (in process: with the generator)">CPU per request</th><th>verdict</th></tr>
{{range .R.Steps}}<tr><td>{{.Label}}</td><td>{{.Loop}}{{if .Concurrency}} ×{{.Concurrency}}{{end}}</td><td>{{if .Offered}}{{num .Offered}}{{else}}—{{end}}</td><td>{{if .OfferedUsers}}{{num .OfferedUsers}}{{else}}—{{end}}</td><td>{{num .Achieved}}</td><td>{{.Requests}}</td><td>{{.Errors}} ({{pct .Errors .Requests}})</td><td>{{.Timeouts}}</td><td>{{ms .Latency.P50}}</td><td>{{ms .Latency.P90}}</td><td>{{ms .Latency.P99}}</td><td>{{ms .Latency.Max}}</td><td>{{ms .SendLag.P99}}</td><td>{{if .CPU}}{{ms .CPUPerRequest}}{{else}}—{{end}}</td><td class="fail"{{if .Failure}} title="{{.FailureDetail}}"{{end}}>{{if .Failure}}{{.Failure}}{{else}}{{if eq .Loop "open"}}healthy{{end}}{{end}}</td></tr>
{{end}}</table></div>
{{range .R.Steps}}{{if .Failure}}<div class="fail">{{.Label}}: {{.FailureDetail}}</div>{{end}}{{end}}

{{with .OpStep}}<h2>Operations at {{.Label}}{{if .Offered}} ({{num .Offered}} req/s offered){{end}}</h2>
<div class="wide"><table id="ops"><tr><th>op</th><th>requests</th><th>req/s</th><th>errors</th><th>not found</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>WBOs out</th><th>WBOs in</th><th>bytes out</th><th>bytes in</th></tr>
{{$d := .Duration}}{{range .Ops}}<tr><td>{{.Name}}</td><td>{{.Requests}}</td><td>{{rate .Requests $d}}</td><td>{{.Errors}}{{if .Kinds}} ({{kinds .Kinds}}){{end}}</td><td>{{.NotFound}}</td><td>{{ms .Latency.P50}}</td><td>{{ms .Latency.P90}}</td><td>{{ms .Latency.P99}}</td><td>{{ms .Latency.Max}}</td><td>{{.WBOsOut}}</td><td>{{.WBOsIn}}</td><td>{{bytes .BytesOut}}</td><td>{{bytes .BytesIn}}</td></tr>
{{end}}</table></div>{{end}}
{{if gt (len .R.Steps) 1}}<details><summary>Operations at every step</summary>
{{range .R.Steps}}<h3>{{.Label}}</h3><table><tr><th>op</th><th>requests</th><th>errors</th><th>p50</th><th>p99</th><th>max</th></tr>
{{range .Ops}}<tr><td>{{.Name}}</td><td>{{.Requests}}</td><td>{{.Errors}}</td><td>{{ms .Latency.P50}}</td><td>{{ms .Latency.P99}}</td><td>{{ms .Latency.Max}}</td></tr>{{end}}</table>
{{end}}</details>{{end}}

{{with .R.Replication}}<h2>Replication lag</h2>
<p>A probe writes one record on a user's primary node and reads it back from another replica every few milliseconds.
A write is acknowledged once another replica has it (or its wait expired), so a lag of 0 means the record was already there at the first look.</p>
<table><tr><th></th><th>probes</th><th>seen</th><th>lost</th><th>failed</th><th>p50</th><th>p99</th><th>max</th></tr>
<tr><td>write on the primary</td><td>{{.Probes}}</td><td></td><td></td><td>{{.Failed}}</td><td>{{ms .Write.P50}}</td><td>{{ms .Write.P99}}</td><td>{{ms .Write.Max}}</td></tr>
<tr><td>seen on the replica after the answer</td><td></td><td>{{.Seen}}</td><td>{{.Lost}}</td><td></td><td>{{ms .Lag.P50}}</td><td>{{ms .Lag.P99}}</td><td>{{ms .Lag.Max}}</td></tr></table>{{end}}

<h2>Run</h2>
<dl>
<dt>mix</dt><dd>{{.R.Mix.Name}}: {{printf "%.2f" .R.Mix.RequestsPerSync}} requests per sync, a sync every {{printf "%.0f" .R.Mix.Think}} s on average; one active user = {{printf "%.5f" .R.Mix.RatePerUser}} requests/s</dd>
<dt>users</dt><dd>{{.R.Users.Profiles}} profiles (registered {{.R.Users.Registered}}, prefilled {{.R.Users.Prefilled}}, reused {{.R.Users.Reused}}, deleted afterwards {{.R.Users.Deleted}}); prefill scale {{.R.Users.PrefillScale}}: {{.R.Users.PrefillRecords}} records, {{bytesf .R.Users.PrefillPayload}} of payload per profile; prepared in {{printf "%.0f" .R.Users.PrepareSeconds}} s</dd>
<dt>data folders</dt><dd>{{bytes .R.Users.DiskBefore}} before, {{bytes .R.Users.DiskAfter}} after prefill ({{diskPer .R.Users}} per prefilled profile); RSS {{bytes .R.Users.RSSBefore}} → {{bytes .R.Users.RSSAfter}}</dd>
<dt>objective</dt><dd>p99 ≤ {{ms .R.SLO.P99}}, errors ≤ {{printf "%.2f" .R.SLO.MaxErrors}} (fraction), timeouts ≤ {{printf "%.3f" .R.SLO.MaxTimeouts}}, request timeout {{ms .R.SLO.Timeout}}{{if .R.SLO.DiskBudget}}, disk ≤ {{bytes .R.SLO.DiskBudget}}{{end}}{{if .R.SLO.RSSBudget}}, RSS ≤ {{bytes .R.SLO.RSSBudget}}{{end}}</dd>
<dt>machine</dt><dd>{{.R.Host.Cores}} cores (GOMAXPROCS {{.R.Host.GOMAXPROCS}}), {{bytes .R.Host.MemTotal}}, {{.R.Host.GoVersion}}; load average {{load .R.Host.LoadStart}} at the start, {{load .R.Host.LoadEnd}} at the end</dd>
{{range .R.Target.Procs}}<dt>process {{.Name}}</dt><dd>pid {{.PID}}{{if .Data}}, data {{.Data}}{{end}}</dd>{{end}}
</dl>
<details><summary>Mix file</summary><pre>{{.R.Mix.Source}}</pre></details>
<script type="application/json" id="result">{{.JSON}}</script>
<script>
(function () {
  var charts = document.querySelectorAll("svg[data-chart]");
  var report = [], bad = [];
  charts.forEach(function (svg) {
    var pts = 0;
    svg.querySelectorAll("[data-series]").forEach(function (g) { pts += parseInt(g.getAttribute("data-points"), 10) || 0; });
    var box = svg.getBBox();
    var drawn = svg.querySelectorAll("polyline,circle,rect").length;
    svg.setAttribute("data-rendered", pts + " points, " + Math.round(box.width) + "x" + Math.round(box.height));
    report.push(svg.id + "=" + pts);
    if (svg.getAttribute("data-expect") === "1" && (pts === 0 || drawn === 0 || box.width < 100 || box.height < 50)) { bad.push(svg.id); }
  });
  JSON.parse(document.getElementById("result").textContent);
  document.body.setAttribute("data-check", bad.length ? "empty: " + bad.join(",") : "ok " + charts.length + " charts: " + report.join(" "));
})();
</script>
</body></html>
`))
