package stats

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the precision: each power of two is split into 2^subBits
// buckets (relative width at most 2^-(subBits)).
const (
	subBits  = 8
	subCount = 1 << subBits
	maxShift = 42 - subBits
	nBuckets = subCount + maxShift*subCount/2
)

// Histogram counts durations in log-linear buckets. The zero value is an
// empty histogram ready to use.
type Histogram struct {
	counts   []uint64
	n        uint64
	sum      float64 // nanoseconds
	min, max time.Duration
}

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits // v>>shift in [subCount/2, subCount)
	if shift > maxShift {
		return nBuckets - 1
	}
	return subCount + (shift-1)*subCount/2 + int(v>>shift) - subCount/2
}

// bucketRange is the values [lo, hi) bucket i holds.
func bucketRange(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i) + 1
	}
	j := i - subCount
	shift := j/(subCount/2) + 1
	m := int64(j%(subCount/2) + subCount/2)
	return m << shift, (m + 1) << shift
}

// Record adds one duration (negative durations count as 0).
func (h *Histogram) Record(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, nBuckets)
	}
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(int64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += float64(d)
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, nBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Reset empties h, keeping its buckets allocated.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.n, h.sum, h.min, h.max = 0, 0, 0, 0
}

// Count is the number of recorded durations.
func (h *Histogram) Count() uint64 { return h.n }

// Mean is the mean duration (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Max is the largest recorded duration; Min the smallest.
func (h *Histogram) Max() time.Duration { return h.max }

// Min is the smallest recorded duration.
func (h *Histogram) Min() time.Duration { return h.min }

// Quantile returns the duration below which a fraction q of the recorded
// durations lie (the middle of the bucket holding rank ceil(q·n), clamped
// to [Min, Max]); 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var acc uint64
	for i, c := range h.counts {
		acc += c
		if acc >= rank {
			lo, hi := bucketRange(i)
			v := time.Duration(lo + (hi-lo)/2)
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// CountAbove is the number of recorded durations above d (to the
// precision of the buckets).
func (h *Histogram) CountAbove(d time.Duration) uint64 {
	if h.n == 0 {
		return 0
	}
	var n uint64
	for i := bucketOf(int64(d)) + 1; i < len(h.counts); i++ {
		n += h.counts[i]
	}
	return n
}
