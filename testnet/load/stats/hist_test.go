package stats

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverAndOrder(t *testing.T) {
	prevHi := int64(0)
	for i := range nBuckets {
		lo, hi := bucketRange(i)
		if lo != prevHi || hi <= lo {
			t.Fatalf("bucket %d = [%d, %d), previous ended at %d", i, lo, hi, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi-1) != i {
			t.Fatalf("bucket %d [%d, %d): bucketOf(lo)=%d bucketOf(hi-1)=%d", i, lo, hi, bucketOf(lo), bucketOf(hi-1))
		}
		if lo >= subCount && float64(hi-lo)/float64(lo) > 1.0/(subCount/2) {
			t.Fatalf("bucket %d too wide: [%d, %d)", i, lo, hi)
		}
		prevHi = hi
	}
}

// TestQuantilesMatchExact compares the histogram's quantiles with exact
// ones over log-normal samples: within 0.5 %.
func TestQuantilesMatchExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	var h, a, b Histogram
	var xs []time.Duration
	for i := range 100_000 {
		d := time.Duration(float64(time.Millisecond) * (0.1 + r.ExpFloat64()*r.ExpFloat64()*5))
		xs = append(xs, d)
		h.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	slices.Sort(xs)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := xs[int(q*float64(len(xs)))-1]
		for _, hh := range []*Histogram{&h, &a} {
			got := hh.Quantile(q)
			if d := float64(got-exact) / float64(exact); d > 0.005 || d < -0.005 {
				t.Errorf("q%.3f: %v, exact %v", q, got, exact)
			}
		}
	}
	if h.Count() != 100_000 || a.Count() != h.Count() || h.Max() != xs[len(xs)-1] || h.Min() != xs[0] {
		t.Fatalf("count %d/%d max %v min %v", h.Count(), a.Count(), h.Max(), h.Min())
	}
	if n := h.CountAbove(xs[len(xs)-1001]); n < 970 || n > 1010 {
		t.Fatalf("CountAbove: %d, want about 1000", n)
	}
	h.Reset()
	if h.Count() != 0 || h.Quantile(0.5) != 0 {
		t.Fatal("Reset left data")
	}
}
