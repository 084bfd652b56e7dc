package report

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// Series is one line (or set of markers) of a chart.
type Series struct {
	Name  string
	Color string
	X, Y  []float64
	// Markers draws a dot at each point (with its value as a tooltip);
	// Line joins the points; Step draws a staircase (a value holds until
	// the next x).
	Markers, Line, Step bool
	// Dash draws a dashed line.
	Dash bool
}

// HLine is a horizontal reference line (an objective).
type HLine struct {
	Y     float64
	Label string
	Color string
}

// Band shades an x range (a step of the run).
type Band struct {
	X0, X1 float64
	Label  string
}

// Bar is one bar of a bar chart.
type Bar struct {
	Label string
	Value float64
	Color string
}

// Chart is a line chart drawn as inline SVG.
type Chart struct {
	ID, Title      string
	XLabel, YLabel string
	// W and H are the size in pixels (default 900 x 300).
	W, H int
	// LogY draws the y axis in decades; XFromZero starts the x axis at 0.
	LogY      bool
	XFromZero bool
	Series    []Series
	HLines    []HLine
	Bands     []Band
	// YUnit formats y tick labels ("ms", "B", "" for plain numbers).
	YUnit string
	// Expect says the chart must show data (the report's self-check
	// counts its points).
	Expect bool
}

const (
	padL, padR, padT, padB = 70, 20, 30, 45
)

// Palette is the series colours in order.
var Palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"}

// SVG renders the chart.
func (c Chart) SVG() template.HTML {
	if c.W == 0 {
		c.W = 900
	}
	if c.H == 0 {
		c.H = 300
	}
	var b strings.Builder
	expect := ""
	if c.Expect {
		expect = ` data-expect="1"`
	}
	fmt.Fprintf(&b, `<svg class="chart" id="%s" data-chart="%s"%s viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		esc(c.ID), esc(c.ID), expect, c.W, c.H, c.W, c.H, esc(c.Title))
	fmt.Fprintf(&b, `<text x="%d" y="18" class="title">%s</text>`, padL, esc(c.Title))
	x0, x1, y0, y1, ok := c.bounds()
	pw, ph := float64(c.W-padL-padR), float64(c.H-padT-padB)
	if !ok {
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="empty">no data</text></svg>`, c.W/2-30, c.H/2)
		return template.HTML(b.String())
	}
	sx := func(x float64) float64 { return float64(padL) + (x-x0)/(x1-x0)*pw }
	ty := func(y float64) float64 {
		if c.LogY {
			return math.Log10(math.Max(y, y0))
		}
		return y
	}
	sy := func(y float64) float64 {
		return float64(padT) + ph - (ty(y)-ty(y0))/(ty(y1)-ty(y0))*ph
	}
	// bands
	for i, bd := range c.Bands {
		fill := "#f3f3f3"
		if i%2 == 1 {
			fill = "#e9eef5"
		}
		a, z := math.Max(bd.X0, x0), math.Min(bd.X1, x1)
		if z <= a {
			continue
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.0f" fill="%s"><title>%s</title></rect>`, sx(a), padT, sx(z)-sx(a), ph, fill, esc(bd.Label))
		if sx(z)-sx(a) > 40 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="band">%s</text>`, sx(a)+3, padT+11, esc(bd.Label))
		}
	}
	// axes and ticks
	fmt.Fprintf(&b, `<g class="axis"><line x1="%d" y1="%.0f" x2="%d" y2="%.0f"/><line x1="%d" y1="%d" x2="%d" y2="%.0f"/>`,
		padL, float64(padT)+ph, c.W-padR, float64(padT)+ph, padL, padT, padL, float64(padT)+ph)
	for _, t := range niceTicks(x0, x1, 8) {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f"/><text x="%.1f" y="%.0f" class="xt">%s</text>`,
			sx(t), float64(padT)+ph, sx(t), float64(padT)+ph+5, sx(t), float64(padT)+ph+18, fmtNum(t, ""))
	}
	var yt []float64
	if c.LogY {
		yt = logTicks(y0, y1)
	} else {
		yt = niceTicks(y0, y1, 6)
	}
	for _, t := range yt {
		fmt.Fprintf(&b, `<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/><text x="%d" y="%.1f" class="yt">%s</text>`,
			padL, sy(t), c.W-padR, sy(t), padL-6, sy(t)+4, fmtNum(t, c.YUnit))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" class="xl">%s</text>`, float64(padL)+pw/2, c.H-6, esc(c.XLabel))
	fmt.Fprintf(&b, `<text transform="translate(14,%.0f) rotate(-90)" class="yl">%s</text></g>`, float64(padT)+ph/2, esc(c.YLabel))
	// reference lines
	for _, h := range c.HLines {
		if h.Y < y0 || h.Y > y1 {
			continue
		}
		col := h.Color
		if col == "" {
			col = "#d62728"
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/><text x="%d" y="%.1f" class="ref" fill="%s">%s</text>`,
			padL, sy(h.Y), c.W-padR, sy(h.Y), col, c.W-padR-4, sy(h.Y)-4, col, esc(h.Label))
	}
	// series
	for i, s := range c.Series {
		col := s.Color
		if col == "" {
			col = Palette[i%len(Palette)]
		}
		fmt.Fprintf(&b, `<g data-series="%s" data-points="%d">`, esc(s.Name), validPoints(s, c.LogY))
		if s.Line || s.Step {
			var pts []string
			for k := range s.X {
				if bad(s.X[k]) || bad(s.Y[k]) || c.LogY && s.Y[k] <= 0 {
					continue
				}
				if s.Step && k > 0 && len(pts) > 0 {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(s.X[k]), sy(s.Y[k-1])))
				}
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(s.X[k]), sy(s.Y[k])))
			}
			dash := ""
			if s.Dash {
				dash = ` stroke-dasharray="5 3"`
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.6"%s points="%s"/>`, col, dash, strings.Join(pts, " "))
		}
		if s.Markers {
			for k := range s.X {
				if bad(s.X[k]) || bad(s.Y[k]) || c.LogY && s.Y[k] <= 0 {
					continue
				}
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s at %s</title></circle>`,
					sx(s.X[k]), sy(s.Y[k]), col, esc(s.Name), fmtNum(s.Y[k], c.YUnit), fmtNum(s.X[k], ""))
			}
		}
		b.WriteString(`</g>`)
	}
	// legend
	lx := float64(padL + 8)
	for i, s := range c.Series {
		col := s.Color
		if col == "" {
			col = Palette[i%len(Palette)]
		}
		fmt.Fprintf(&b, `<rect x="%.0f" y="%d" width="10" height="10" fill="%s"/><text x="%.0f" y="%d" class="legend">%s</text>`,
			lx, c.H-padB+24, col, lx+14, c.H-padB+33, esc(s.Name))
		lx += 24 + 7*float64(len(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func bad(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }

func validPoints(s Series, logY bool) int {
	n := 0
	for k := range s.X {
		if !bad(s.X[k]) && !bad(s.Y[k]) && (!logY || s.Y[k] > 0) {
			n++
		}
	}
	return n
}

// bounds is the data range, padded; ok is false without data.
func (c Chart) bounds() (x0, x1, y0, y1 float64, ok bool) {
	x0, x1, y0, y1 = math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for k := range s.X {
			if bad(s.X[k]) || bad(s.Y[k]) || c.LogY && s.Y[k] <= 0 {
				continue
			}
			x0, x1 = math.Min(x0, s.X[k]), math.Max(x1, s.X[k])
			y0, y1 = math.Min(y0, s.Y[k]), math.Max(y1, s.Y[k])
			ok = true
		}
	}
	if !ok {
		return 0, 0, 0, 0, false
	}
	for _, h := range c.HLines {
		if !c.LogY || h.Y > 0 {
			y1 = math.Max(y1, h.Y*1.05)
		}
	}
	for _, bd := range c.Bands {
		x0, x1 = math.Min(x0, bd.X0), math.Max(x1, bd.X1)
	}
	if c.XFromZero {
		x0 = math.Min(x0, 0)
		x1 *= 1.05
	}
	if c.LogY {
		y0 = math.Pow(10, math.Floor(math.Log10(y0)))
		y1 = math.Pow(10, math.Ceil(math.Log10(y1)))
		if y1 <= y0 {
			y1 = y0 * 10
		}
	} else {
		y0 = math.Min(0, y0)
		if y1 <= y0 {
			y1 = y0 + 1
		}
		y1 *= 1.08
	}
	if x1 <= x0 {
		x0, x1 = x0-1, x1+1
	}
	return x0, x1, y0, y1, true
}

// niceTicks returns about n round values spanning [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	span := hi - lo
	if span <= 0 || n < 1 {
		return []float64{lo}
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for t := math.Ceil(lo/step) * step; t <= hi+step*1e-9; t += step {
		out = append(out, math.Round(t/step)*step)
	}
	return out
}

func logTicks(lo, hi float64) []float64 {
	var out []float64
	for d := lo; d <= hi*1.0001; d *= 10 {
		out = append(out, d)
		if hi/lo <= 1000 {
			for _, m := range []float64{2, 5} {
				if d*m < hi {
					out = append(out, d*m)
				}
			}
		}
	}
	return out
}

// fmtNum formats a tick or value with an optional unit.
func fmtNum(v float64, unit string) string {
	switch unit {
	case "B":
		return bytesHuman(v)
	case "ms":
		switch {
		case v >= 1000:
			return trimNum(v/1000) + " s"
		case v < 1 && v > 0:
			return trimNum(v*1000) + " µs"
		}
		return trimNum(v) + " ms"
	}
	switch a := math.Abs(v); {
	case a >= 1e6:
		return trimNum(v/1e6) + "M"
	case a >= 1e4:
		return trimNum(v/1e3) + "k"
	}
	return trimNum(v) + unit
}

func trimNum(v float64) string {
	if math.Abs(v) >= 100 || v == math.Trunc(v) {
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	}
	if math.Abs(v) >= 10 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func bytesHuman(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1<<30:
		return trimNum(v/(1<<30)) + " GiB"
	case a >= 1<<20:
		return trimNum(v/(1<<20)) + " MiB"
	case a >= 1<<10:
		return trimNum(v/(1<<10)) + " KiB"
	}
	return trimNum(v) + " B"
}

func esc(s string) string { return html.EscapeString(s) }

// BarChart draws horizontal bars.
func BarChart(id, title string, bars []Bar, expect bool) template.HTML {
	const w, rowH = 900, 24
	h := padT + rowH*max(len(bars), 1) + 20
	var b strings.Builder
	ex := ""
	if expect {
		ex = ` data-expect="1"`
	}
	fmt.Fprintf(&b, `<svg class="chart" id="%s" data-chart="%s"%s viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		esc(id), esc(id), ex, w, h, w, h, esc(title))
	fmt.Fprintf(&b, `<text x="%d" y="18" class="title">%s</text>`, padL, esc(title))
	if len(bars) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="empty">none</text></svg>`, padL, padT+16)
		return template.HTML(b.String())
	}
	maxV := 0.0
	for _, br := range bars {
		maxV = math.Max(maxV, br.Value)
	}
	const labelW = 260
	fmt.Fprintf(&b, `<g data-series="bars" data-points="%d">`, len(bars))
	for i, br := range bars {
		y := padT + i*rowH
		bw := 0.0
		if maxV > 0 {
			bw = br.Value / maxV * float64(w-labelW-padR-80)
		}
		col := br.Color
		if col == "" {
			col = Palette[1]
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="yt">%s</text><rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %s</title></rect><text x="%.1f" y="%d" class="legend">%s</text>`,
			labelW-6, y+15, esc(br.Label), labelW, y+3, math.Max(bw, 1), rowH-6, col, esc(br.Label), fmtNum(br.Value, ""), float64(labelW)+bw+6, y+15, fmtNum(br.Value, ""))
	}
	b.WriteString(`</g></svg>`)
	return template.HTML(b.String())
}
