package mix

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// maxExtra bounds the ops that follow a sync's first op (a mix whose first
// op has a tiny weight would otherwise draw very long syncs).
const maxExtra = 200

// WBO is one record a generated request writes: its id, payload length in
// bytes, ttl in seconds (0: none) and sortindex.
type WBO struct {
	ID        string
	Size      int
	TTL       int
	Sortindex int
}

// Request is one generated request: the op, the collection {coll} stands
// for ("" when the path has none), the device that sends it and the WBOs
// it writes. Seed feeds whatever else the request needs at random
// (payload bytes).
type Request struct {
	Op     *Op
	Coll   string
	Device int
	WBOs   []WBO
	Seed   uint64
}

// Collection is the collection the request's path names after /storage/
// ("" for none).
func (q Request) Collection() string { return q.Op.collection(q.Coll) }

// Sync is what one device of a user sends in one sync: Requests in order,
// each sent when the one before it has been answered.
type Sync struct {
	Device   int
	Requests []Request
}

// Generator draws syncs, background requests and prefill records from a
// mix. It holds no mutable state: every draw takes its randomness from
// the *rand.Rand given, so a seed fixes the sequence. Safe for concurrent
// use with distinct *rand.Rand.
type Generator struct {
	m       *Mix
	first   int       // index into m.Ops, -1 for none
	rest    []int     // indexes of the ops drawn by weight
	cum     []float64 // cumulative normalised weights over rest
	q       float64   // P(another op follows) when first >= 0
	bg      []int
	bgCum   []float64
	bgTotal float64 // background requests per active user per hour
	prefill map[string]int
}

// NewGenerator returns a generator for m whose prefill holds
// prefillScale times the records the mix names (at least one where the
// mix names any; 1 means as written).
func NewGenerator(m *Mix, prefillScale float64) *Generator {
	if !(prefillScale > 0) {
		prefillScale = 1
	}
	g := &Generator{m: m, first: -1, prefill: map[string]int{}}
	total, wFirst := 0.0, 0.0
	for i, o := range m.Ops {
		if o.Name == m.First {
			g.first, wFirst = i, o.Weight
			continue
		}
		if o.Weight > 0 {
			g.rest = append(g.rest, i)
			total += o.Weight
		}
	}
	acc := 0.0
	for _, i := range g.rest {
		acc += m.Ops[i].Weight / total
		g.cum = append(g.cum, acc)
	}
	if g.first >= 0 && total > 0 {
		extra := total / wFirst // mean number of ops after the first
		g.q = extra / (1 + extra)
	}
	for i, o := range m.Background {
		if o.Weight > 0 {
			g.bg = append(g.bg, i)
			g.bgTotal += o.Weight
		}
	}
	acc = 0
	for _, i := range g.bg {
		acc += m.Background[i].Weight / g.bgTotal
		g.bgCum = append(g.bgCum, acc)
	}
	for _, p := range m.Prefill {
		g.prefill[p.Coll] = g.PrefillCount(p, prefillScale)
	}
	return g
}

// Mix returns the generator's mix.
func (g *Generator) Mix() *Mix { return g.m }

// PrefillCount is the number of records prefill p writes at scale (per
// device records are not scaled).
func (g *Generator) PrefillCount(p Prefill, scale float64) int {
	if p.PerDevice {
		return g.m.Devices
	}
	if p.IDs.Kind == FixedID {
		return min(p.Records, 1)
	}
	n := int(math.Round(float64(p.Records) * scale))
	if n == 0 && p.Records > 0 {
		n = 1
	}
	return n
}

// RequestsPerSync is the mean number of requests in a sync.
func (g *Generator) RequestsPerSync() float64 {
	if g.first < 0 {
		return 1
	}
	if g.q == 0 {
		return 1
	}
	// 1 + mean of a geometric count capped at maxExtra
	q := g.q
	return 1 + q*(1-math.Pow(q, maxExtra))/(1-q)
}

// RatePerUser is the mean request rate of one active user in requests/s:
// syncs every Think seconds plus the background ops.
func (g *Generator) RatePerUser() float64 {
	return g.RequestsPerSync()/g.m.Think.Mean() + g.bgTotal/3600
}

// SyncRatePerUser is the mean number of syncs of one active user per
// second.
func (g *Generator) SyncRatePerUser() float64 { return 1 / g.m.Think.Mean() }

// BackgroundRatePerUser is the background requests of one active user per
// second.
func (g *Generator) BackgroundRatePerUser() float64 { return g.bgTotal / 3600 }

// Think draws the time to a user's next sync.
func (g *Generator) Think(r *rand.Rand) float64 { return g.m.Think.Sample(r) }

// Sync draws one sync of a user: the device, the first op (if the mix has
// one) and the ops after it.
func (g *Generator) Sync(r *rand.Rand) Sync {
	s := Sync{Device: r.IntN(g.m.Devices)}
	if g.first < 0 {
		s.Requests = []Request{g.request(r, &g.m.Ops[g.pick(r, g.cum, g.rest)], s.Device)}
		return s
	}
	s.Requests = append(s.Requests, g.request(r, &g.m.Ops[g.first], s.Device))
	for n := 0; n < maxExtra && len(g.rest) > 0 && r.Float64() < g.q; n++ {
		s.Requests = append(s.Requests, g.request(r, &g.m.Ops[g.pick(r, g.cum, g.rest)], s.Device))
	}
	return s
}

// HasBackground says whether the mix has background ops with a rate.
func (g *Generator) HasBackground() bool { return len(g.bg) > 0 }

// Background draws one background request (by rate); HasBackground must
// hold.
func (g *Generator) Background(r *rand.Rand) Request {
	dev := r.IntN(g.m.Devices)
	return g.request(r, &g.m.Background[g.pick(r, g.bgCum, g.bg)], dev)
}

func (g *Generator) pick(r *rand.Rand, cum []float64, idx []int) int {
	u := r.Float64()
	for i, c := range cum {
		if u < c {
			return idx[i]
		}
	}
	return idx[len(idx)-1]
}

func (g *Generator) request(r *rand.Rand, op *Op, dev int) Request {
	req := Request{Op: op, Device: dev, Seed: r.Uint64()}
	if len(op.Colls) > 0 {
		req.Coll = op.Colls[r.IntN(len(op.Colls))]
	}
	if op.Body != WBOBody {
		return req
	}
	n := max(int(op.WBOs.Sample(r)), 1)
	n = min(n, MaxWBOs)
	if op.IDs.Kind == DeviceIDs || op.IDs.Kind == FixedID {
		n = 1
	}
	req.WBOs = make([]WBO, n)
	for i := range req.WBOs {
		w := &req.WBOs[i]
		w.Size = int(op.Size.Sample(r))
		w.TTL = op.TTL
		w.Sortindex = r.IntN(1000)
		switch op.IDs.Kind {
		case DeviceIDs:
			w.ID = DeviceID(dev)
		case FixedID:
			w.ID = op.IDs.Fixed
		case PoolIDs:
			w.ID = PrefillID(r.IntN(op.IDs.N))
		case ReuseIDs:
			if k := g.prefill[req.Collection()]; k > 0 && r.Float64() < op.IDs.P {
				w.ID = PrefillID(r.IntN(k))
			} else {
				w.ID = NewID(r)
			}
		default:
			w.ID = NewID(r)
		}
	}
	return req
}

// PrefillRecords draws the records prefill p writes for one user at the
// generator's scale, in id order.
func (g *Generator) PrefillRecords(r *rand.Rand, p Prefill) []WBO {
	n := g.prefill[p.Coll]
	out := make([]WBO, n)
	for i := range out {
		w := &out[i]
		w.Size, w.TTL, w.Sortindex = int(p.Size.Sample(r)), p.TTL, r.IntN(1000)
		switch p.IDs.Kind {
		case DeviceIDs:
			w.ID = DeviceID(i)
		case FixedID:
			w.ID = p.IDs.Fixed
		default:
			w.ID = PrefillID(i)
		}
	}
	return out
}

// PrefillTotal is the number of records and payload bytes prefill writes
// per user, in expectation.
func (g *Generator) PrefillTotal() (records int, payloadBytes float64) {
	for _, p := range g.m.Prefill {
		n := g.prefill[p.Coll]
		records += n
		payloadBytes += float64(n) * p.Size.Mean()
	}
	return records, payloadBytes
}

// PrefillID is the id of prefill record i of a collection (12 characters,
// as Sync ids are).
func PrefillID(i int) string { return fmt.Sprintf("p%011d", i) }

// DeviceID is the id of device d's record in per-device collections
// (tabs, clients).
func DeviceID(d int) string { return fmt.Sprintf("device%06d", d) }

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// NewID draws a fresh 12-character id from the base64url alphabet.
func NewID(r *rand.Rand) string {
	var b [12]byte
	v := r.Uint64()
	for i := range b {
		if i == 10 {
			v = r.Uint64()
		}
		b[i] = idAlphabet[v&63]
		v >>= 6
	}
	return string(b[:])
}
