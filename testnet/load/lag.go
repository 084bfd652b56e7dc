package load

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hce-sync/hce/testnet/load/mix"
	"github.com/hce-sync/hce/testnet/load/report"
	"github.com/hce-sync/hce/testnet/load/stats"
)

// LagCollection is the collection replication lag probes write to.
const LagCollection = "hcelag"

// Replication lag probes: how often a probe looks at the replica, and how
// long it waits before counting the record as lost.
const (
	lagPoll    = 5 * time.Millisecond
	lagTimeout = 30 * time.Second
)

// lagStats accumulates the probes of a run.
type lagStats struct {
	mu                         sync.Mutex
	write, lag                 stats.Histogram
	probes, seen, lost, failed int
}

func (l *lagStats) result() *report.Lag {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.probes == 0 {
		return nil
	}
	return &report.Lag{Probes: l.probes, Seen: l.seen, Lost: l.lost, Failed: l.failed,
		Write: report.FromHistogram(&l.write), Lag: report.FromHistogram(&l.lag)}
}

// probeLag writes one record every LagEvery on a user's primary node and
// polls another replica of that user until it serves the record, until
// ctx ends. Probes take turns over the profiles with a known replica; one
// probe runs at a time.
func (e *Engine) probeLag(ctx context.Context) {
	var ps []*profile
	for _, p := range e.profiles {
		p.mu.Lock()
		if p.replica != "" {
			ps = append(ps, p)
		}
		p.mu.Unlock()
	}
	if len(ps) == 0 {
		e.note("replication lag: no user had a second replica to probe")
		return
	}
	r := rand.New(rand.NewPCG(e.cfg.Seed, 0x1a9))
	t := time.NewTicker(e.cfg.LagEvery)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.probeOnce(ctx, ps[i%len(ps)], r)
	}
}

func (e *Engine) probeOnce(ctx context.Context, p *profile, r *rand.Rand) {
	id := mix.NewID(r)
	nonce := mix.NewID(r) + mix.NewID(r)
	p.mu.Lock()
	primary, replica := p.storage, p.replica
	p.mu.Unlock()
	body := []byte(`[{"id":"` + id + `","payload":"` + nonce + `"}]`)
	t0 := time.Now()
	out := e.send(ctx, http.MethodPost, primary+"1.1/"+p.name+"/storage/"+LagCollection, p.auth, nil, body, true)
	acked := time.Now()
	if ctx.Err() != nil {
		return // the phase ended: the probe counts for nothing
	}
	e.lag.mu.Lock()
	e.lag.probes++
	if out.kind != "" {
		e.lag.failed++
		e.lag.mu.Unlock()
		return
	}
	e.lag.write.Record(acked.Sub(t0))
	e.lag.mu.Unlock()
	url := replica + "1.1/" + p.name + "/storage/" + LagCollection + "/" + id
	deadline := acked.Add(lagTimeout)
	for first := true; ; first = false {
		o, data := e.sendRead(ctx, http.MethodGet, url, p.auth, nil)
		if o.status == http.StatusOK && strings.Contains(string(data), nonce) {
			lag := time.Since(acked)
			if first {
				lag = 0 // already there when we first looked
			}
			e.lag.mu.Lock()
			e.lag.seen++
			e.lag.lag.Record(lag)
			e.lag.mu.Unlock()
			return
		}
		if ctx.Err() != nil {
			// The phase ended before the replica served it: wait for
			// it (bounded), so the probe still counts.
			ctx = context.WithoutCancel(ctx)
		}
		if time.Now().After(deadline) {
			e.lag.mu.Lock()
			e.lag.lost++
			e.lag.mu.Unlock()
			return
		}
		time.Sleep(lagPoll)
	}
}
