package replication

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
)

// reportQueue holds the reports waiting to be sent to the directory. One
// goroutine (reportLoop) sends them, all that are pending in one request
// (up to dirproto.MaxReportItems), so concurrent writes that each report
// unconfirmed members cost one directory commit per round trip. Its
// fields are guarded by mu.
type reportQueue struct {
	mu sync.Mutex
	// unconfirmed are the writes waiting for their report, by item key
	// (user and confirmed members): equal items share one report.
	unconfirmed map[string]*uncReport
	// filled and handed are retried until the directory commits them;
	// filled is by user (a newer epoch replaces an older one).
	filled map[string]dirproto.Filled
	handed map[dirproto.HandedOff]bool
	wake   chan struct{}
}

// uncReport is one pending Unconfirmed item and the writes waiting on it.
// alone marks an item to be sent in a request of its own (no other
// Unconfirmed item): it was in a request the directory refused for some
// item, and the refusal does not say which.
type uncReport struct {
	item    dirproto.UnconfirmedWrite
	waiters []chan uncResult
	alone   bool
}

type uncResult struct {
	notified bool
	viewLag  time.Duration // the directory's (dirproto.ReportResponse.ViewLag)
	err      error
}

func newReportQueue() reportQueue {
	return reportQueue{
		unconfirmed: map[string]*uncReport{},
		filled:      map[string]dirproto.Filled{},
		handed:      map[dirproto.HandedOff]bool{},
		wake:        make(chan struct{}, 1),
	}
}

func (q *reportQueue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// waitUnconfirmed queues item and waits for the outcome of its report: the
// response's Notified and view lag, or the error of the request that
// carried it, or ctx's.
func (q *reportQueue) waitUnconfirmed(ctx context.Context, r *Replicator, item dirproto.UnconfirmedWrite) (bool, time.Duration, error) {
	if r.noted.Load() {
		return false, 0, ErrClosed
	}
	ch := make(chan uncResult, 1)
	key := uncKey(item)
	q.mu.Lock()
	u := q.unconfirmed[key]
	if u == nil {
		u = &uncReport{item: item}
		q.unconfirmed[key] = u
	}
	u.waiters = append(u.waiters, ch)
	q.mu.Unlock()
	q.poke()
	select {
	case res := <-ch:
		return res.notified, res.viewLag, res.err
	case <-ctx.Done():
		return false, 0, ctx.Err()
	}
}

// uncKey is the queue key of an Unconfirmed item: equal items (same user,
// same confirmed members) share one report.
func uncKey(item dirproto.UnconfirmedWrite) string {
	return item.User + "\x00" + strings.Join(item.Confirmed, "\x00")
}

// queueFilled queues a Filled report (retried until committed).
func (r *Replicator) queueFilled(f dirproto.Filled) {
	if r.cfg.Reporter == nil {
		return
	}
	q := &r.reports
	q.mu.Lock()
	old, ok := q.filled[f.User]
	if !ok || old.Epoch <= f.Epoch {
		q.filled[f.User] = f
	}
	q.mu.Unlock()
	q.poke()
}

// queueHandedOff queues a HandedOff report (retried until committed).
func (r *Replicator) queueHandedOff(h dirproto.HandedOff) {
	if r.cfg.Reporter == nil {
		return
	}
	q := &r.reports
	q.mu.Lock()
	q.handed[h] = true
	q.mu.Unlock()
	q.poke()
}

// reportLoop sends the queued reports until the replicator stops: every
// pending Unconfirmed item first, then Filled and HandedOff items, at
// most dirproto.MaxReportItems per request. A failed request fails the
// writes waiting on its Unconfirmed items (they are not acknowledged) and
// keeps its other items for a retry after a backoff.
func (r *Replicator) reportLoop() {
	defer r.wg.Done()
	q := &r.reports
	var backoff time.Duration
	var retry <-chan time.Time
	fails := 0
	for {
		select {
		case <-r.ctx.Done():
			q.failAll(ErrClosed)
			return
		case <-q.wake:
		case <-retry:
			retry = nil
		}
		if retry != nil {
			// Backing off after a failure: only Unconfirmed items (writes
			// are waiting) go at once.
			q.mu.Lock()
			n := len(q.unconfirmed)
			q.mu.Unlock()
			if n == 0 {
				continue
			}
		}
		req, waiting := q.take()
		if len(req.Unconfirmed)+len(req.Filled)+len(req.HandedOff) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.ReportTimeout)
		resp, err := r.cfg.Reporter.Report(ctx, req)
		cancel()
		refused := p2p.IsCode(err, CodeForbidden)
		if refused && len(waiting) > 1 {
			// The directory applied the request but refused some
			// Unconfirmed item (this node is no longer a current member
			// of that user's set) without saying which: each is sent
			// again alone, so only the refused writes fail.
			q.requeueAlone(waiting)
			waiting = nil
		}
		for _, u := range waiting {
			for _, w := range u.waiters {
				w <- uncResult{notified: resp.Notified, viewLag: resp.ViewLag(), err: err}
			}
		}
		if err != nil && !refused {
			r.c.reportErrs.Add(1)
			fails++
			if fails == 1 || fails%10 == 0 {
				r.log.Warn("replication: report to the directory failed", "err", err, "failures", fails,
					"unconfirmed", len(req.Unconfirmed), "filled", len(req.Filled), "handed_off", len(req.HandedOff))
			}
			q.putBack(req)
			backoff = min(max(2*backoff, r.cfg.RetryMin), r.cfg.RetryMax)
			retry = time.After(backoff)
			continue
		}
		if refused {
			// Committed all the same: its Filled and HandedOff items were
			// applied (or skipped as stale), as after a success.
			r.log.Info("replication: the directory refused an unconfirmed write: not a current member",
				"unconfirmed", len(req.Unconfirmed), "err", err)
		}
		if fails > 0 {
			r.log.Info("replication: reports reach the directory again", "failures", fails)
		}
		fails, backoff, retry = 0, 0, nil
		r.c.filled.Add(uint64(len(req.Filled)))
		r.c.handed.Add(uint64(len(req.HandedOff)))
		for _, f := range req.Filled {
			r.log.Info("replication: backfill reported", "user", f.User, "epoch", f.Epoch, "source", f.Source)
		}
		for _, h := range req.HandedOff {
			r.log.Info("replication: handoff reported", "user", h.User, "source", h.Source)
		}
		q.mu.Lock()
		more := len(q.unconfirmed)+len(q.filled)+len(q.handed) > 0
		q.mu.Unlock()
		if more {
			q.poke()
		}
	}
}

// take removes up to dirproto.MaxReportItems pending items from the queue
// and returns them as a request, with the Unconfirmed items' waiters. An
// item marked alone is the request's only Unconfirmed item.
func (q *reportQueue) take() (dirproto.ReportRequest, []*uncReport) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var req dirproto.ReportRequest
	var waiting []*uncReport
	room := dirproto.MaxReportItems
	for k, u := range q.unconfirmed {
		if u.alone {
			waiting = []*uncReport{u}
			delete(q.unconfirmed, k)
			break
		}
	}
	if waiting == nil {
		for k, u := range q.unconfirmed {
			if len(waiting) == room {
				break
			}
			waiting = append(waiting, u)
			delete(q.unconfirmed, k)
		}
	}
	for _, u := range waiting {
		req.Unconfirmed = append(req.Unconfirmed, u.item)
		room--
	}
	for k, f := range q.filled {
		if room == 0 {
			break
		}
		req.Filled = append(req.Filled, f)
		delete(q.filled, k)
		room--
	}
	for h := range q.handed {
		if room == 0 {
			break
		}
		req.HandedOff = append(req.HandedOff, h)
		delete(q.handed, h)
		room--
	}
	return req, waiting
}

// putBack queues the Filled and HandedOff items of a failed request again
// (unless a newer one replaced them meanwhile).
func (q *reportQueue) putBack(req dirproto.ReportRequest) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, f := range req.Filled {
		if old, ok := q.filled[f.User]; !ok || old.Epoch < f.Epoch {
			q.filled[f.User] = f
		}
	}
	for _, h := range req.HandedOff {
		q.handed[h] = true
	}
}

// requeueAlone queues the items of a refused request again, each to be
// sent alone (an equal item queued meanwhile shares its report).
func (q *reportQueue) requeueAlone(items []*uncReport) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, u := range items {
		key := uncKey(u.item)
		if cur := q.unconfirmed[key]; cur != nil {
			cur.waiters = append(cur.waiters, u.waiters...)
			cur.alone = true
			continue
		}
		u.alone = true
		q.unconfirmed[key] = u
	}
	q.poke()
}

// failAll fails every waiting write (the replicator stops).
func (q *reportQueue) failAll(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, u := range q.unconfirmed {
		for _, w := range u.waiters {
			w <- uncResult{err: err}
		}
		delete(q.unconfirmed, k)
	}
}

// pulled runs after a complete pull of user from p that started at
// started, with user's replica set set as this node saw it then; final is
// the last answer's Final. It queues the reports the pull earns:
//   - Filled, when this node was a filling member, p a current member, and
//     the pull started at least fillSettle after this node learnt its
//     epoch (every writer knew it as a member by then: later writes were
//     confirmed by it or made it filling again);
//   - HandedOff, when this node was a current member, p a leaving member,
//     and p answered as final (it takes no more writes of the user); when
//     p did not, a pull of p again after MembershipTTL (p's view of the
//     set is at most that old), a few times.
func (r *Replicator) pulled(user string, p peer.ID, set ReplicaSet, started time.Time, final bool) {
	self, ok := set.Member(r.self)
	if !ok {
		return
	}
	if self.Filling {
		if !set.IsCurrent(p) {
			return
		}
		r.fmu.Lock()
		st := r.fills[user]
		due := st != nil && st.epoch == self.Epoch && !started.Before(st.learnt.Add(r.fillSettle()))
		r.fmu.Unlock()
		if due {
			r.queueFilled(dirproto.Filled{User: user, Epoch: self.Epoch, Source: p.String()})
		}
		return
	}
	if !set.IsLeaving(p) {
		return
	}
	k := dirproto.HandedOff{User: user, Source: p.String()}
	r.fmu.Lock()
	n := r.handoffTries[k]
	if final {
		delete(r.handoffTries, k)
	} else if n < maxHandoffRetries {
		if r.handoffTries == nil {
			r.handoffTries = map[dirproto.HandedOff]int{}
		}
		r.handoffTries[k] = n + 1
	}
	r.fmu.Unlock()
	switch {
	case final:
		r.queueHandedOff(k)
	case n < maxHandoffRetries:
		// p does not know yet that it left (its cached view is at most
		// MembershipTTL old): pull again then rather than at the next
		// sweep.
		time.AfterFunc(r.cfg.MembershipTTL, func() { _ = r.mark(p, user, nil) })
	}
}

// maxHandoffRetries bounds the early re-pulls of a leaving member that
// did not answer as final; the sweep pulls again after that.
const maxHandoffRetries = 5
