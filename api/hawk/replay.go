package hawk

import (
	"hash/maphash"
	"math/bits"
	"sync"
)

// replayCache remembers the nonces of accepted requests for as long as
// their timestamps stay acceptable, in bounded memory.
//
// Layout: one bucket per second of client timestamp, n = 2*skew+2 buckets
// used round-robin (bucket ts mod n). An accepted ts lies within
// [now-skew, now+skew], so two accepted timestamps that share a bucket are
// at least n > 2*skew seconds apart, and by the time the later one is
// acceptable the earlier one no longer is: a bucket found holding an older
// second is simply emptied. Each bucket is a fixed array of `slots` 64-bit
// fingerprints (a keyed hash of id and nonce; zero marks a free slot) with
// linear probing, filled to at most 3/4.
//
// Memory bound: n * slots * 8 bytes, allocated per bucket on first use,
// where slots is the largest power of two <= size/n but at least 16: so
// at most size*8 bytes unless size < 16*n. The rate bound that comes with
// it: at most slots*3/4 distinct nonces per second of client timestamp;
// beyond that add fails with ErrReplayCacheFull (the request is refused,
// not let through unrecorded). Replay protection must remember every nonce
// of the last 2*skew seconds, so a larger skew needs a proportionally
// larger size for the same request rate.
//
// A false "replay" needs two distinct (id, nonce) pairs of the same second
// with equal 64-bit fingerprints under a per-process random key: about
// k²/2^65 for k nonces in a second, negligible.
type replayCache struct {
	seed    maphash.Seed
	buckets []replayBucket
	slots   int // power of two
	maxFill int
}

type replayBucket struct {
	mu     sync.Mutex
	second int64
	used   int
	fp     []uint64
}

// newReplayCache sizes a cache for timestamps within ±skew seconds and at
// most size fingerprints in all (size is rounded down so that each bucket
// holds a power of two, at least 16).
func newReplayCache(skew int64, size int) *replayCache {
	n := int(2*skew + 2)
	per := size / n
	if per < 16 {
		per = 16
	}
	per = 1 << (bits.Len(uint(per)) - 1) // round down to a power of two
	return &replayCache{
		seed:    maphash.MakeSeed(),
		buckets: make([]replayBucket, n),
		slots:   per,
		maxFill: per * 3 / 4,
	}
}

// bytes returns the most memory the cache's fingerprint arrays can take.
func (c *replayCache) bytes() int { return len(c.buckets) * c.slots * 8 }

// add records (id, nonce) for second ts. It returns ErrReplay when the pair
// was already recorded for ts, and ErrReplayCacheFull when the bucket is
// full or holds a later second (the clock went back by more than the
// window). The caller has checked that ts is within the skew window.
func (c *replayCache) add(id, nonce string, ts int64) error {
	if ts < 0 {
		return ErrReplayCacheFull
	}
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(id)
	h.WriteByte(0)
	h.WriteString(nonce)
	fp := h.Sum64()
	if fp == 0 {
		fp = 1
	}
	b := &c.buckets[ts%int64(len(c.buckets))]
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.fp == nil:
		b.fp = make([]uint64, c.slots)
		b.second = ts
	case b.second < ts:
		clear(b.fp)
		b.used = 0
		b.second = ts
	case b.second > ts:
		return ErrReplayCacheFull
	}
	mask := uint64(c.slots - 1)
	for i := fp & mask; ; i = (i + 1) & mask {
		switch b.fp[i] {
		case fp:
			return ErrReplay
		case 0:
			if b.used >= c.maxFill {
				return ErrReplayCacheFull
			}
			b.fp[i] = fp
			b.used++
			return nil
		}
	}
}
