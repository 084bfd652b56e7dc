package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

// Sync pulls user from every other member of its replica set and every
// leaving member now and waits for those pulls; it returns their errors
// joined. It fails with ErrNotShared when this node is not a member.
func (r *Replicator) Sync(ctx context.Context, user string) error {
	set, err := r.replicaSet(ctx, user)
	if err != nil {
		return err
	}
	if !set.IsMember(r.self) {
		return fmt.Errorf("%w: %s is not a member of %q's replica set", ErrNotShared, r.self, user)
	}
	var chans []chan error
	for _, p := range append(set.Peers(), set.Leaving...) {
		if p == r.self {
			continue
		}
		ch := make(chan error, 1)
		if err := r.mark(p, user, ch); err != nil {
			return err
		}
		chans = append(chans, ch)
	}
	var errs []error
	for _, ch := range chans {
		select {
		case err := <-ch:
			errs = append(errs, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// peerLoop is the pull work queued for one peer. Its fields are guarded
// by Replicator.mu.
type peerLoop struct {
	id    peer.ID
	dirty map[string]*queued
	// order lists the users of dirty in the order they were queued (a
	// user started or gone is skipped when met): pulls start oldest
	// first, so with more queued users than slots none waits for luck.
	order []string
	// running holds the users being pulled; retry those whose pull
	// failed and waits for its backoff.
	running map[string]queued
	retry   map[string]*retrying
	wake    chan struct{}
	// waiting is signalled when a pull with a waiter is queued (a peer's
	// SyncRequest: a write there waits for this node): it ends the
	// backoffs early, since the request just came from the peer.
	waiting chan struct{}
	// refusals counts, per user, the peer's consecutive "not shared"
	// answers.
	refusals map[string]int
}

// queued is a user's pull waiting to start or running: its waiters, when
// it was first owed (for the lag metric) and the consecutive failures of
// the pulls before it (for its backoff).
type queued struct {
	waiters  []chan error
	since    time.Time
	failures int
}

// retrying is a failed pull waiting for its backoff: due is when it is
// queued again, failures its consecutive failures, since when the pull
// was first owed.
type retrying struct {
	due      time.Time
	failures int
	since    time.Time
}

// maxRefusals is how many times a pull the peer refused as not shared is
// retried (with the loop's backoff: about 3 s in all at the defaults). The
// two nodes' views of a replica set converge within the membership cache's
// TTL (2 s by default) after the directory moves a user, so a new replica
// refused by a peer with a stale view gets its backfill now, not at the
// next sweep.
const maxRefusals = 5

// mark queues a pull of user from p (waking or starting p's goroutine);
// waiter, when not nil, receives the pull's outcome.
func (r *Replicator) mark(p peer.ID, user string, waiter chan error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return ErrClosed
	case !r.started:
		return ErrNotStarted
	}
	l := r.loops[p]
	if l == nil {
		l = &peerLoop{id: p, dirty: map[string]*queued{}, running: map[string]queued{}, retry: map[string]*retrying{},
			refusals: map[string]int{}, wake: make(chan struct{}, 1), waiting: make(chan struct{}, 1)}
		r.loops[p] = l
		r.wg.Add(1)
		go r.run(l)
	}
	q := l.dirty[user]
	if q == nil {
		q = &queued{since: time.Now()}
		l.dirty[user] = q
		l.order = append(l.order, user)
	}
	if waiter != nil {
		q.waiters = append(q.waiters, waiter)
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
	if waiter != nil {
		select {
		case l.waiting <- struct{}{}:
		default:
		}
	}
	return nil
}

// pullOutcome is the end of one user's pull, for the loop.
type pullOutcome struct {
	user string
	err  error
}

// run is the pull goroutine of one peer. It starts the pull of each
// queued user as soon as one of Config.PullConcurrency slots is free,
// never two pulls of one user at once (a user queued again while it is
// pulled is pulled again after), and answers each user's waiters when its
// own pull ends: a write waiting for its user's pull waits neither for
// other users' pulls nor for a batch of them to end (a large pull, such as
// a collection delete's tombstones, takes tens of milliseconds). A failed
// pull is queued again after its backoff (RetryMin doubling to RetryMax
// per consecutive failure of that user), cut short when the peer sends a
// SyncRequest (a write there waits for this node: the peer is reachable
// again).
func (r *Replicator) run(l *peerLoop) {
	defer r.wg.Done()
	ctx := r.ctx
	done := make(chan pullOutcome, r.cfg.PullConcurrency)
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()
	for {
		now := time.Now()
		r.mu.Lock()
		for user, rt := range l.retry {
			if !rt.due.After(now) {
				requeueLocked(l, user, rt)
			}
		}
		if r.startPullsLocked(l, done) {
			// The pulls started serve every waiter queued so far: a
			// signal left from them must not cut a later backoff short.
			select {
			case <-l.waiting:
			default:
			}
		}
		var nextRetry time.Time
		for _, rt := range l.retry {
			if nextRetry.IsZero() || rt.due.Before(nextRetry) {
				nextRetry = rt.due
			}
		}
		idle := len(l.running) == 0 && len(l.dirty) == 0 && len(l.retry) == 0
		r.mu.Unlock()
		var retryC <-chan time.Time
		var waitingC <-chan struct{}
		if !nextRetry.IsZero() {
			retryTimer.Reset(nextRetry.Sub(now))
			retryC, waitingC = retryTimer.C, l.waiting
		}
		var idleC <-chan time.Time
		var idleTimer *time.Timer
		if idle {
			idleTimer = time.NewTimer(r.cfg.IdleTimeout)
			idleC = idleTimer.C
		}
		select {
		case o := <-done:
			r.finished(l, o)
		case <-l.wake:
		case <-retryC:
		case <-waitingC:
			// The peer asked for a pull and waits for it (a write there):
			// it reached this node just now, so the failures it caused
			// may be over (a healed partition); pull now instead of
			// making the write wait for the backoff. The failure counts
			// are kept for the next failures.
			r.mu.Lock()
			for user, rt := range l.retry {
				requeueLocked(l, user, rt)
			}
			r.mu.Unlock()
		case <-idleC:
			r.mu.Lock()
			if len(l.dirty) == 0 {
				delete(r.loops, l.id)
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
		case <-ctx.Done():
			// The pulls in flight end with ctx and answer their waiters.
			r.mu.Lock()
			n := len(l.running)
			r.mu.Unlock()
			for range n {
				<-done
			}
			r.endLoop(l)
			return
		}
		if idleTimer != nil {
			idleTimer.Stop()
		}
		retryTimer.Stop()
	}
}

// startPullsLocked starts the pulls of queued users, oldest first, while
// slots are free, each sending its outcome to done; it reports whether it
// started any. r.mu is held.
func (r *Replicator) startPullsLocked(l *peerLoop, done chan<- pullOutcome) bool {
	ctx := r.ctx
	started := false
	i, skipped := 0, 0
	for i < len(l.order) && len(l.running) < r.cfg.PullConcurrency {
		user := l.order[i]
		i++
		q := l.dirty[user]
		if q == nil {
			continue
		}
		if _, ok := l.running[user]; ok {
			// Queued again while it is pulled: it stays first in line.
			l.order[skipped] = user
			skipped++
			continue
		}
		delete(l.dirty, user)
		l.running[user] = *q
		started = true
		go func(ws []chan error) {
			err := ctx.Err()
			if err == nil {
				err = r.pull(ctx, l.id, user)
			}
			for _, w := range ws {
				w <- err
			}
			done <- pullOutcome{user, err}
		}(q.waiters)
	}
	// The skipped users move up to just before the rest of the line (at
	// most PullConcurrency of them: they are running).
	copy(l.order[i-skipped:i], l.order[:skipped])
	l.order = l.order[i-skipped:]
	if len(l.dirty) == 0 {
		l.order = nil
	}
	return started
}

// requeueLocked moves user from l.retry to l.dirty, keeping its failure
// count for the end of its next pull. r.mu is held.
func requeueLocked(l *peerLoop, user string, rt *retrying) {
	q := l.dirty[user]
	if q == nil {
		q = &queued{since: rt.since}
		l.dirty[user] = q
		l.order = append(l.order, user)
	} else if rt.since.Before(q.since) {
		q.since = rt.since
	}
	q.failures = rt.failures
	delete(l.retry, user)
}

// finished records the end of a user's pull: a failure worth retrying
// waits for its backoff in l.retry.
func (r *Replicator) finished(l *peerLoop, o pullOutcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ran := l.running[o.user]
	delete(l.running, o.user)
	since, n := ran.since, ran.failures+1
	if o.err == nil || r.ctx.Err() != nil {
		delete(l.refusals, o.user)
		return
	}
	r.c.errors.Add(1)
	r.log.Warn("replication: pull failed", "peer", l.id, "user", o.user, "err", o.err)
	switch {
	case errors.Is(o.err, ErrNotShared):
		// This node's own view: the user is not (or no longer) shared
		// with the peer; the next sweep looks again.
		return
	case p2p.IsCode(o.err, CodeForbidden):
		if l.refusals[o.user]++; l.refusals[o.user] > maxRefusals {
			delete(l.refusals, o.user)
			return
		}
	}
	backoff := r.cfg.RetryMax
	if n-1 < 30 {
		backoff = min(r.cfg.RetryMin<<(n-1), r.cfg.RetryMax)
	}
	if q := l.dirty[o.user]; q != nil && q.since.Before(since) {
		since = q.since
	}
	l.retry[o.user] = &retrying{due: time.Now().Add(backoff), failures: n, since: since}
}

// endLoop fails the waiters still queued on l when the replicator stops.
func (r *Replicator) endLoop(l *peerLoop) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range l.dirty {
		for _, w := range q.waiters {
			w <- ErrClosed
		}
	}
	l.dirty = nil
	delete(r.loops, l.id)
}

// pull replicates user from p: changes since the checkpoint, revs_diff,
// fetch of what is missing, apply with the checkpoint in the same batch,
// until the feed is exhausted. A pull that reaches the end of p's feed is
// complete: this node then has everything p had when it answered the
// last page (pulled reports it when that completes a backfill or a
// handoff).
//
// Reading and writing overlap once the feed has more than one page: then
// a goroutine applies the batches, in order, each page's checkpoint with
// its last batch, while this one asks for the next pages and fetches what
// they miss, with the next page's changes asked for while a page's
// revisions are fetched. At most one batch waits between them and one
// page ahead, so a pull holds at most three fetch answers and two pages. Asking revs_diff before the pages ahead are
// applied can only ask for more than needed (a document a page ahead
// also lists), and applying a revision twice is harmless. A pull of one
// page (live replication) applies it in this goroutine.
func (r *Replicator) pull(ctx context.Context, p peer.ID, user string) error {
	started := time.Now()
	set, ok, err := r.allowed(ctx, user, r.self, p)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %q with %s", ErrNotShared, user, p)
	}
	cp, err := r.st.GetCheckpoint(ctx, user, p.String())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		final, complete bool
		steps           chan pullStep // nil until the feed has a second page
		applied         = make(chan error, 1)
	)
	apply := func(b pullStep) error {
		if err := r.applyPulled(ctx, p, user, b); err != nil {
			return err
		}
		if b.last {
			complete, final = true, b.final
		}
		return nil
	}
	send := func(b pullStep, more bool) error {
		if more && steps == nil {
			steps = make(chan pullStep, 1)
			go func() {
				var err error
				for b := range steps {
					if err == nil {
						if err = apply(b); err != nil {
							cancel()
						}
					}
				}
				applied <- err
			}()
		}
		if steps == nil {
			return apply(b)
		}
		select {
		case steps <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err = r.produce(ctx, p, user, cp, send)
	if steps != nil {
		close(steps)
		if aerr := <-applied; aerr != nil {
			return aerr
		}
	}
	if err != nil {
		return err
	}
	if !complete {
		return fmt.Errorf("replication: pull of %q from %s ended early", user, p)
	}
	r.c.pulls.Add(1)
	r.pulled(user, p, set, started, final)
	return nil
}

// pullStep is one step of a pull's writes, in order: revisions to apply
// with the checkpoint cp (nil: none yet), or cp alone (cpOnly); last marks
// the step that ends the peer's feed, final its answer's Final.
type pullStep struct {
	revs        []node.Revision
	cp          *node.Checkpoint
	cpOnly      bool
	last, final bool
}

// applyPulled makes b's writes.
func (r *Replicator) applyPulled(ctx context.Context, p peer.ID, user string, b pullStep) error {
	switch {
	case b.cpOnly:
		return r.st.SetCheckpoint(ctx, user, p.String(), *b.cp)
	case len(b.revs) > 0 || b.cp != nil:
		return r.applyBatch(ctx, p, user, b.revs, b.cp)
	}
	return nil
}

// produce reads p's feed from the checkpoint cp and sends the batches to
// write, in order, each with whether more pages follow its page, until
// the feed ends or a step fails.
func (r *Replicator) produce(ctx context.Context, p peer.ID, user string, cp node.Checkpoint, out func(b pullStep, more bool) error) error {
	since := cp.Seq
	changes := func(since uint64) (*ChangesResponse, error) {
		return call[*ChangesResponse](ctx, r, p, &ChangesRequest{User: user, Since: since, Limit: uint32(r.cfg.ChangesBatch), InlineBytes: inlineBytes})
	}
	// The next page is asked for while this one's missing revisions are
	// fetched (at most one page ahead).
	var ahead chan changesPage
	for {
		var resp *ChangesResponse
		var err error
		if ahead != nil {
			page := <-ahead
			ahead = nil
			resp, err = page.resp, page.err
		} else {
			resp, err = changes(since)
		}
		if err != nil {
			return err
		}
		switch {
		case resp.Source == "":
			return fmt.Errorf("%w: %s sent no store uuid", ErrProtocol, p)
		case resp.Source != cp.Source && since != 0:
			// Another store than the checkpoint's: start over.
			r.log.Info("replication: peer store changed, replicating from scratch", "peer", p, "user", user, "source", resp.Source)
			cp, since = node.Checkpoint{}, 0
			continue
		case len(resp.Rows) > r.cfg.ChangesBatch:
			return fmt.Errorf("%w: %s sent %d rows for a limit of %d", ErrProtocol, p, len(resp.Rows), r.cfg.ChangesBatch)
		case resp.Last < since || (resp.More && resp.Last == since):
			return fmt.Errorf("%w: %s answered last %d (more %v) after %d", ErrProtocol, p, resp.Last, resp.More, since)
		}
		next := node.Checkpoint{Source: resp.Source, Seq: resp.Last}
		send := func(b pullStep) error { return out(b, resp.More) }
		if resp.More {
			ch := make(chan changesPage, 1)
			ahead = ch
			go func(since uint64) {
				resp, err := changes(since)
				ch <- changesPage{resp, err}
			}(resp.Last)
		}
		q := make([]node.DocRevs, len(resp.Rows))
		for i, row := range resp.Rows {
			q[i] = node.DocRevs{Coll: row.Coll, ID: row.ID, Revs: row.Leaves}
		}
		missing, err := r.st.RevsDiff(ctx, user, q)
		if err != nil {
			return err
		}
		last := pullStep{cp: &next, last: !resp.More, final: resp.Final}
		if len(missing) == 0 {
			last.cpOnly = next != cp
			err = send(last)
		} else if revs, ok := r.inlined(p, user, missing, resp.Revisions); ok {
			last.revs = revs
			err = send(last)
		} else {
			err = r.fetchMissing(ctx, p, user, missing, last, send)
		}
		if err != nil {
			return err
		}
		cp, since = next, resp.Last
		if !resp.More {
			return nil
		}
	}
}

// changesPage is the outcome of a changes call made ahead.
type changesPage struct {
	resp *ChangesResponse
	err  error
}

// fetchMissing fetches the missing revisions from p in batches and sends
// them; the last batch is last with its revisions.
func (r *Replicator) fetchMissing(ctx context.Context, p peer.ID, user string, missing []node.DocRevs, last pullStep, send func(pullStep) error) error {
	for start := 0; start < len(missing); {
		end := min(start+r.cfg.FetchBatch, len(missing))
		req := &FetchRequest{User: user, Docs: make([]FetchDoc, 0, end-start)}
		for _, m := range missing[start:end] {
			revs := m.Revs
			if len(revs) > MaxLeaves {
				revs = revs[:MaxLeaves]
			}
			req.Docs = append(req.Docs, FetchDoc{Coll: m.Coll, ID: m.ID, Revs: revs})
		}
		resp, err := call[*FetchResponse](ctx, r, p, req)
		if err != nil {
			return err
		}
		if resp.Done == 0 || int(resp.Done) > len(req.Docs) {
			return fmt.Errorf("%w: %s answered %d of %d documents", ErrProtocol, p, resp.Done, len(req.Docs))
		}
		revs := r.vet(p, user, req.Docs[:resp.Done], resp.Revisions)
		start += int(resp.Done)
		if start == len(missing) {
			last.revs = revs
			return send(last)
		}
		if len(revs) == 0 {
			continue
		}
		if err := send(pullStep{revs: revs}); err != nil {
			return err
		}
	}
	return nil
}

// applyBatch applies revisions pulled from p, with the checkpoint cp when
// it is not nil, and counts the refused ones.
func (r *Replicator) applyBatch(ctx context.Context, p peer.ID, user string, revs []node.Revision, cp *node.Checkpoint) error {
	errs, err := r.st.ApplyRevisions(ctx, user, revs, p.String(), cp)
	if err != nil {
		return err
	}
	var refused int
	for i, e := range errs {
		if e == nil {
			continue
		}
		refused++
		if refused <= 3 {
			r.log.Warn("replication: revision refused", "peer", p, "user", user, "collection", revs[i].Coll, "id", revs[i].ID, "rev", revs[i].Rev().String(), "err", e)
		}
	}
	r.c.pulled.Add(uint64(len(revs) - refused))
	r.c.refused.Add(uint64(refused))
	return nil
}

// inlineBytes is how much of a changes answer may be inlined revisions.
const inlineBytes = 1 << 20

// inlined returns the revisions of a changes answer that cover every
// missing revision (each missing one is the leaf of, or on the path of, an
// inlined revision of its document), vetted like a fetch answer; ok is
// false when something is not covered (then the puller fetches).
func (r *Replicator) inlined(p peer.ID, user string, missing []node.DocRevs, got []node.Revision) ([]node.Revision, bool) {
	if len(got) == 0 {
		return nil, false
	}
	// The answer carries every row's leaves; keep those of the missing
	// revisions (the others are known here already, not an offence).
	want := make(map[[2]string][]revtree.Rev, len(missing))
	for _, m := range missing {
		want[[2]string{m.Coll, m.ID}] = m.Revs
	}
	var revs []node.Revision
	for _, x := range got {
		if ws, ok := want[[2]string{x.Coll, x.ID}]; ok && pathHasAny(x.Path, ws) {
			revs = append(revs, x)
		}
	}
	byDoc := make(map[[2]string][]revtree.Path, len(revs))
	for _, x := range revs {
		k := [2]string{x.Coll, x.ID}
		byDoc[k] = append(byDoc[k], x.Path)
	}
	for _, m := range missing {
		for _, want := range m.Revs {
			covered := false
			for _, pth := range byDoc[[2]string{m.Coll, m.ID}] {
				if pathHasAny(pth, []revtree.Rev{want}) {
					covered = true
					break
				}
			}
			if !covered {
				return nil, false
			}
		}
	}
	return revs, true
}

// vet keeps the revisions of a fetch answer that were asked for: each
// must belong to a document of docs and carry one of the revisions asked
// for that document in its path (the revision itself, or an ancestor of
// a newer leaf). The others are counted as refused.
func (r *Replicator) vet(p peer.ID, user string, docs []FetchDoc, got []node.Revision) []node.Revision {
	asked := make(map[[2]string][]revtree.Rev, len(docs))
	for _, d := range docs {
		asked[[2]string{d.Coll, d.ID}] = d.Revs
	}
	out := got[:0:0]
	refused := 0
	for _, rev := range got {
		want, ok := asked[[2]string{rev.Coll, rev.ID}]
		if ok && pathHasAny(rev.Path, want) {
			out = append(out, rev)
			continue
		}
		refused++
		if refused <= 3 {
			r.log.Warn("replication: peer sent a revision not asked for", "peer", p, "user", user, "collection", rev.Coll, "id", rev.ID, "rev", rev.Rev().String())
		}
	}
	r.c.refused.Add(uint64(refused))
	return out
}

func pathHasAny(pth revtree.Path, revs []revtree.Rev) bool {
	for _, w := range revs {
		if w.Pos > pth.Start || pth.Start-w.Pos >= uint64(len(pth.IDs)) {
			continue
		}
		if pth.IDs[pth.Start-w.Pos] == w.Hash {
			return true
		}
	}
	return false
}
