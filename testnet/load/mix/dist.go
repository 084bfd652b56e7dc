package mix

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Unit says what a distribution's values measure, and so which suffixes
// its numbers may carry.
type Unit int

// The units of a mix file's distributions.
const (
	// Count is a plain number of things (WBOs per request, records).
	Count Unit = iota
	// Bytes is a size: a number with an optional B, KB, MB, KiB or MiB
	// suffix (KB = 1000 bytes, KiB = 1024).
	Bytes
	// Seconds is a duration: a Go duration ("600s", "10m", "250ms").
	Seconds
)

// Dist is a probability distribution over non-negative numbers, as a mix
// file writes it. Count and Bytes distributions yield whole numbers.
// Sample is safe for concurrent use with distinct generators.
type Dist interface {
	// Sample draws one value.
	Sample(r *rand.Rand) float64
	// Mean is the distribution's expected value (for Pareto with a cap,
	// the mean without the cap, which the caps of the built-in mixes
	// change by less than one part in a million).
	Mean() float64
	// String is the distribution in mix-file syntax.
	String() string
}

// Const is a distribution with one value.
type Const struct {
	V    float64
	Unit Unit
}

// Sample returns V.
func (c Const) Sample(*rand.Rand) float64 { return c.V }

// Mean returns V.
func (c Const) Mean() float64 { return c.V }

func (c Const) String() string { return formatValue(c.V, c.Unit) }

// Uniform draws uniformly from [Lo, Hi]; whole numbers for Count and Bytes.
type Uniform struct {
	Lo, Hi float64
	Unit   Unit
}

// Sample draws one value.
func (u Uniform) Sample(r *rand.Rand) float64 {
	if u.Unit == Seconds {
		return u.Lo + r.Float64()*(u.Hi-u.Lo)
	}
	return u.Lo + float64(r.Int64N(int64(u.Hi-u.Lo)+1))
}

// Mean is (Lo+Hi)/2.
func (u Uniform) Mean() float64 { return (u.Lo + u.Hi) / 2 }

func (u Uniform) String() string {
	return "uniform(" + formatValue(u.Lo, u.Unit) + "," + formatValue(u.Hi, u.Unit) + ")"
}

// Pareto is Scale times a Pareto(Alpha) variate (type I, minimum 1),
// truncated to a whole number and capped at Cap (0: no cap). With Alpha
// 3 and Scale 300 it is Mozilla's Sync load-test payload size: minimum
// 300, mean 450, 99th percentile about 1,392.
type Pareto struct {
	Alpha, Scale, Cap float64
	Unit              Unit
}

// Sample draws one value.
func (p Pareto) Sample(r *rand.Rand) float64 {
	u := 1 - r.Float64() // (0, 1]
	v := math.Floor(p.Scale * math.Pow(u, -1/p.Alpha))
	if p.Cap > 0 && v > p.Cap {
		v = p.Cap
	}
	return v
}

// Mean is Alpha·Scale/(Alpha-1) less the half unit the truncation takes
// off (infinite for Alpha <= 1).
func (p Pareto) Mean() float64 {
	if p.Alpha <= 1 {
		return math.Inf(1)
	}
	return p.Alpha*p.Scale/(p.Alpha-1) - 0.5
}

func (p Pareto) String() string {
	s := "pareto(" + strconv.FormatFloat(p.Alpha, 'g', -1, 64) + "," + formatValue(p.Scale, p.Unit)
	if p.Cap > 0 {
		s += "," + formatValue(p.Cap, p.Unit)
	}
	return s + ")"
}

// Geometric draws whole numbers from [Min, Max] with probabilities falling
// geometrically (P(k) proportional to q^(k-Min)), q chosen so that the mean
// is Want.
type Geometric struct {
	Min, Max, Want float64
	q              float64
}

func newGeometric(lo, hi, mean float64) (*Geometric, error) {
	if !(lo <= mean && mean <= hi) || lo < 0 || hi-lo > 1e9 {
		return nil, fmt.Errorf("geometric(%g,%g,%g): need min <= mean <= max", lo, hi, mean)
	}
	g := &Geometric{Min: lo, Max: hi, Want: mean}
	if hi == lo {
		return g, nil
	}
	mid := (lo + hi) / 2
	if mean == mid {
		g.q = 1
		return g, nil
	}
	// The truncated mean grows with q on (0, inf); bisect on log q.
	a, b := -50.0, 50.0
	for range 200 {
		m := (a + b) / 2
		if g.meanFor(math.Exp(m)) < mean {
			a = m
		} else {
			b = m
		}
	}
	g.q = math.Exp((a + b) / 2)
	return g, nil
}

// meanFor is the mean of the truncated geometric with ratio q.
func (g *Geometric) meanFor(q float64) float64 {
	n := g.Max - g.Min + 1
	if math.Abs(q-1) < 1e-12 {
		return g.Min + (n-1)/2
	}
	// sum k q^k / sum q^k over k = 0..n-1
	num, den := 0.0, 0.0
	if n <= 10000 {
		p := 1.0
		for k := 0.0; k < n; k++ {
			num += k * p
			den += p
			p *= q
		}
		return g.Min + num/den
	}
	// closed form for long ranges
	qn := math.Pow(q, n)
	den = (1 - qn) / (1 - q)
	num = q * (1 - n*math.Pow(q, n-1) + (n-1)*qn) / ((1 - q) * (1 - q))
	return g.Min + num/den
}

// Sample draws one value by inverting the truncated distribution.
func (g *Geometric) Sample(r *rand.Rand) float64 {
	n := g.Max - g.Min + 1
	if n <= 1 {
		return g.Min
	}
	if g.q == 1 {
		return g.Min + float64(r.Int64N(int64(n)))
	}
	u := r.Float64()
	k := math.Floor(math.Log(1-u*(1-math.Pow(g.q, n))) / math.Log(g.q))
	return g.Min + math.Min(math.Max(k, 0), n-1)
}

// Mean is the mean asked for.
func (g *Geometric) Mean() float64 { return g.Want }

func (g *Geometric) String() string {
	return "geometric(" + formatValue(g.Min, Count) + "," + formatValue(g.Max, Count) + "," + strconv.FormatFloat(g.Want, 'g', -1, 64) + ")"
}

// Exp is exponential with mean M.
type Exp struct {
	M    float64
	Unit Unit
}

// Sample draws one value.
func (e Exp) Sample(r *rand.Rand) float64 {
	v := r.ExpFloat64() * e.M
	if e.Unit != Seconds {
		v = math.Floor(v)
	}
	return v
}

// Mean returns M.
func (e Exp) Mean() float64 { return e.M }

func (e Exp) String() string { return "exp(" + formatValue(e.M, e.Unit) + ")" }

// Mixture draws from Parts[i] with probability Weights[i] (normalised).
type Mixture struct {
	Weights []float64
	Parts   []Dist
}

// Sample draws one value.
func (m Mixture) Sample(r *rand.Rand) float64 {
	u := r.Float64()
	for i, w := range m.Weights {
		if u < w || i == len(m.Weights)-1 {
			return m.Parts[i].Sample(r)
		}
		u -= w
	}
	return 0
}

// Mean is the weighted mean of the parts.
func (m Mixture) Mean() float64 {
	s := 0.0
	for i, w := range m.Weights {
		s += w * m.Parts[i].Mean()
	}
	return s
}

func (m Mixture) String() string {
	var b strings.Builder
	for i, w := range m.Weights {
		if i > 0 {
			b.WriteString(" + ")
		}
		b.WriteString(strconv.FormatFloat(w, 'g', -1, 64) + "*" + m.Parts[i].String())
	}
	return b.String()
}

// ParseDist reads a distribution in mix-file syntax:
//
//	VALUE                      a constant
//	uniform(LO,HI)             uniform on [LO, HI]
//	pareto(ALPHA,SCALE[,CAP])  SCALE times a Pareto(ALPHA) variate, capped
//	geometric(MIN,MAX,MEAN)    whole numbers in [MIN, MAX] with that mean
//	exp(MEAN)                  exponential
//	W1*D1 + W2*D2 ...          a mixture (weights normalised)
//
// Values carry the unit's suffixes (see Unit).
func ParseDist(s string, unit Unit) (Dist, error) {
	s = strings.TrimSpace(s)
	terms := splitTop(s, '+')
	if len(terms) == 1 {
		return parsePrim(terms[0], unit)
	}
	var m Mixture
	total := 0.0
	for _, t := range terms {
		star := strings.IndexByte(t, '*')
		if star < 0 {
			return nil, fmt.Errorf("mixture term %q has no weight (W*DIST)", strings.TrimSpace(t))
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(t[:star]), 64)
		if err != nil || !(w > 0) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("mixture weight %q: want a positive number", strings.TrimSpace(t[:star]))
		}
		d, err := parsePrim(t[star+1:], unit)
		if err != nil {
			return nil, err
		}
		m.Weights = append(m.Weights, w)
		m.Parts = append(m.Parts, d)
		total += w
	}
	for i := range m.Weights {
		m.Weights[i] /= total
	}
	return m, nil
}

// splitTop splits s at sep outside parentheses.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case sep:
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func parsePrim(s string, unit Unit) (Dist, error) {
	s = strings.TrimSpace(s)
	open := strings.IndexByte(s, '(')
	if open < 0 {
		v, err := ParseValue(s, unit)
		if err != nil {
			return nil, err
		}
		return Const{V: v, Unit: unit}, nil
	}
	if !strings.HasSuffix(s, ")") {
		return nil, fmt.Errorf("distribution %q: missing )", s)
	}
	name := strings.TrimSpace(s[:open])
	args := strings.Split(s[open+1:len(s)-1], ",")
	vals := make([]float64, len(args))
	for i, a := range args {
		u := unit
		if name == "pareto" && i == 0 || name == "geometric" && i == 2 {
			u = Count // alpha and the geometric mean are plain numbers
		}
		v, err := ParseValue(a, u)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		vals[i] = v
	}
	want := func(n ...int) error {
		for _, k := range n {
			if len(vals) == k {
				return nil
			}
		}
		return fmt.Errorf("%s takes %v arguments, got %d", name, n, len(vals))
	}
	switch name {
	case "uniform":
		if err := want(2); err != nil {
			return nil, err
		}
		if vals[1] < vals[0] || vals[1]-vals[0] > 1e12 {
			return nil, fmt.Errorf("uniform(%g,%g): need lo <= hi", vals[0], vals[1])
		}
		return Uniform{Lo: vals[0], Hi: vals[1], Unit: unit}, nil
	case "pareto":
		if err := want(2, 3); err != nil {
			return nil, err
		}
		if !(vals[0] > 0) || !(vals[1] > 0) {
			return nil, fmt.Errorf("pareto: alpha and scale must be positive")
		}
		p := Pareto{Alpha: vals[0], Scale: vals[1], Unit: unit}
		if len(vals) == 3 {
			if vals[2] < vals[1] {
				return nil, fmt.Errorf("pareto: cap %g below the scale %g", vals[2], vals[1])
			}
			p.Cap = vals[2]
		}
		return p, nil
	case "geometric":
		if err := want(3); err != nil {
			return nil, err
		}
		if unit != Count {
			return nil, fmt.Errorf("geometric is for counts")
		}
		return newGeometric(vals[0], vals[1], vals[2])
	case "exp":
		if err := want(1); err != nil {
			return nil, err
		}
		if !(vals[0] > 0) {
			return nil, fmt.Errorf("exp: mean must be positive")
		}
		return Exp{M: vals[0], Unit: unit}, nil
	}
	return nil, fmt.Errorf("unknown distribution %q (want uniform, pareto, geometric, exp or a value)", name)
}

// maxValue bounds every value a mix file gives (1e12: a terabyte, or 31
// thousand years), so sums and conversions stay finite.
const maxValue = 1e12

// ParseValue reads one number in unit: a count, a size with an optional
// B/KB/MB/GB/KiB/MiB/GiB suffix, or a Go duration (returned in seconds).
func ParseValue(s string, unit Unit) (float64, error) {
	s = strings.TrimSpace(s)
	var v float64
	switch unit {
	case Seconds:
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("duration %q: want a Go duration such as 600s or 10m", s)
		}
		v = d.Seconds()
	case Bytes:
		mult := 1.0
		for _, suf := range []struct {
			s string
			m float64
		}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
			if strings.HasSuffix(s, suf.s) {
				s, mult = strings.TrimSpace(strings.TrimSuffix(s, suf.s)), suf.m
				break
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("size %q: want a number of bytes (suffixes B, KB, MB, GB, KiB, MiB, GiB)", s)
		}
		v = math.Floor(f * mult)
	default:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("number %q: %w", s, strconv.ErrSyntax)
		}
		v = f
	}
	if math.IsNaN(v) || v < 0 || v > maxValue {
		return 0, fmt.Errorf("value %q out of range [0, 1e12]", s)
	}
	return v, nil
}

func formatValue(v float64, unit Unit) string {
	if unit == Seconds {
		return time.Duration(v * float64(time.Second)).String()
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
