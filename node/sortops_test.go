package node

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

// stableOrder is the order sortedOps.sort must produce: by key, writes
// of one key in staging order.
func stableOrder(o *sortedOps) []bufOp {
	want := slices.Clone(o.ops)
	slices.SortStableFunc(want, func(x, y bufOp) int { return bytes.Compare(o.key(&x), o.key(&y)) })
	return want
}

func checkSorted(t *testing.T, o *sortedOps) {
	t.Helper()
	want := stableOrder(o)
	o.sort()
	for i := range want {
		if want[i].off != o.ops[i].off {
			t.Fatalf("position %d: key %q (staged at %d), want %q (staged at %d)",
				i, o.key(&o.ops[i]), o.ops[i].off, o.key(&want[i]), want[i].off)
		}
	}
}

// TestSortOps checks the radix sort against a stable comparison sort on
// keys built to defeat it: shared prefixes of every length, keys that are
// prefixes of others, zero bytes where the padding puts them, 0xff, and
// the same key staged several times.
func TestSortOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{0, 1, 'a', 'b', 0xfe, 0xff}
	for round := range 2000 {
		o := new(sortedOps)
		var staged [][]byte
		n := rng.IntN(60)
		if round%100 == 0 {
			n = 2000
		}
		prefix := make([]byte, rng.IntN(20))
		for i := range prefix {
			prefix[i] = alphabet[rng.IntN(len(alphabet))]
		}
		for range n {
			var k []byte
			if len(staged) > 0 && rng.IntN(5) == 0 {
				k = staged[rng.IntN(len(staged))] // the same key again
				if rng.IntN(2) == 0 {
					k = k[:rng.IntN(len(k)+1)] // or a prefix of one
				}
			} else {
				k = slices.Clone(prefix)
				for range rng.IntN(30) {
					k = append(k, alphabet[rng.IntN(len(alphabet))])
				}
			}
			staged = append(staged, k)
			o.add(k, []byte{byte(len(staged))}, opSet)
		}
		checkSorted(t, o)
	}
}

// TestSortOpsPostKeys sorts the writes of a POST of 100 updates, as the
// writer stages them, and a batch with global keys among the user's.
func TestSortOpsPostKeys(t *testing.T) {
	o := postOps(rand.New(rand.NewPCG(3, 4)))
	checkSorted(t, o)
	o.add(globalExpKey(nil, 1234, "user", "history"), nil, opSet)
	o.add(metaKey(nil, numKey(7), ""), []byte("meta"), opSet)
	o.add(metaKey(nil, numKey(7), ""), []byte("meta2"), opSet)
	checkSorted(t, o)
}

// postOps stages the writes of a POST of 100 updates to random ids of a
// user's collection, in the writer's order: per record its head, record,
// old and new modified entries, old and new changes rows, sometimes an
// ancestor chunk; then the collection and user meta.
func postOps(rng *rand.Rand) *sortedOps {
	o := new(sortedOps)
	kp := numKey(12345)
	val := make([]byte, 300)
	for range 100 {
		id := make([]byte, 12)
		for i := range id {
			id[i] = 'a' + byte(rng.IntN(26))
		}
		seq := rng.Uint64N(800)
		o.add(recKey(nil, kp, "history", string(id)), val[:80], opSet)
		o.add(dataKey(nil, kp, "history", seq), val, opSet)
		o.add(modKey(nil, kp, "history", rng.Int64N(1<<40), seq), nil, opDel)
		o.add(modKey(nil, kp, "history", 1<<41, seq), nil, opSet)
		o.add(chgKey(nil, kp, rng.Uint64N(1<<20)), nil, opDel)
		o.add(chgKey(nil, kp, 1<<21+seq), val[:40], opSet)
		if rng.IntN(3) == 0 {
			o.add(append(collPrefix(nil, kp, tagAnc, "history"), id...), val[:51], opMerge)
		}
	}
	o.add(metaKey(nil, kp, "history"), val[:20], opSet)
	o.add(metaKey(nil, kp, ""), val[:30], opSet)
	return o
}

// BenchmarkSortOps sorts a POST's ~700 staged writes with the radix sort
// and, beside it, with the stable comparison sort it replaced.
//
//	go test -run '^$' -bench SortOps ./node/
func BenchmarkSortOps(b *testing.B) {
	o := postOps(rand.New(rand.NewPCG(5, 6)))
	orig := slices.Clone(o.ops)
	b.Run("radix", func(b *testing.B) {
		for b.Loop() {
			copy(o.ops, orig)
			o.sort()
		}
	})
	b.Run("stable", func(b *testing.B) {
		for b.Loop() {
			copy(o.ops, orig)
			slices.SortStableFunc(o.ops, func(x, y bufOp) int { return bytes.Compare(o.key(&x), o.key(&y)) })
		}
	})
	b.Run("pdq", func(b *testing.B) {
		for b.Loop() {
			copy(o.ops, orig)
			slices.SortFunc(o.ops, func(x, y bufOp) int {
				if c := bytes.Compare(o.key(&x), o.key(&y)); c != 0 {
					return c
				}
				return int(x.off - y.off)
			})
		}
	})
}
