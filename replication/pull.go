package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	dirty map[string][]chan error
	wake  chan struct{}
	// waiting is signalled when a pull with a waiter is queued (a peer's
	// SyncRequest: a write there waits for this node): it ends a backoff
	// early, since the request just came from the peer.
	waiting chan struct{}
	// refusals counts, per user, the peer's consecutive "not shared"
	// answers (owned by the loop's goroutine).
	refusals map[string]int
	// pendingSince is when the oldest pull now in dirty was queued;
	// inflightSince that of the batch being pulled (zero: none), inflight
	// its size. They measure the peer's replication lag and queue
	// (metrics.go). Guarded by r.mu.
	pendingSince, inflightSince time.Time
	inflight                    int
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
		l = &peerLoop{id: p, dirty: map[string][]chan error{}, wake: make(chan struct{}, 1), waiting: make(chan struct{}, 1)}
		r.loops[p] = l
		r.wg.Add(1)
		go r.run(l)
	}
	ws := l.dirty[user]
	if waiter != nil {
		ws = append(ws, waiter)
	}
	l.dirty[user] = ws
	if l.pendingSince.IsZero() {
		l.pendingSince = time.Now()
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

// run is the pull goroutine of one peer.
func (r *Replicator) run(l *peerLoop) {
	defer r.wg.Done()
	ctx := r.ctx
	var backoff time.Duration
	for {
		r.mu.Lock()
		batch := l.dirty
		if len(batch) > 0 {
			// The batch serves every waiter queued so far: a signal
			// left from them must not cut a later backoff short.
			select {
			case <-l.waiting:
			default:
			}
			l.dirty = map[string][]chan error{}
			l.inflightSince, l.pendingSince, l.inflight = l.pendingSince, time.Time{}, len(batch)
		} else {
			batch = nil // l.dirty stays shared with mark
		}
		r.mu.Unlock()
		if batch == nil {
			idle := time.NewTimer(r.cfg.IdleTimeout)
			select {
			case <-l.wake:
				idle.Stop()
				continue
			case <-ctx.Done():
				idle.Stop()
				r.endLoop(l)
				return
			case <-idle.C:
				r.mu.Lock()
				if len(l.dirty) == 0 {
					delete(r.loops, l.id)
					r.mu.Unlock()
					return
				}
				r.mu.Unlock()
				continue
			}
		}
		var failed []string
		for user, err := range r.pullBatch(ctx, l.id, batch) {
			if err == nil || ctx.Err() != nil {
				delete(l.refusals, user)
				continue
			}
			r.c.errors.Add(1)
			r.log.Warn("replication: pull failed", "peer", l.id, "user", user, "err", err)
			switch {
			case errors.Is(err, ErrNotShared):
				// This node's own view: the user is not (or no longer)
				// shared with the peer; the next sweep looks again.
			case p2p.IsCode(err, CodeForbidden):
				if l.refusals == nil {
					l.refusals = map[string]int{}
				}
				if l.refusals[user]++; l.refusals[user] <= maxRefusals {
					failed = append(failed, user)
				} else {
					delete(l.refusals, user)
				}
			default:
				failed = append(failed, user)
			}
		}
		if len(failed) == 0 {
			r.mu.Lock()
			l.inflightSince, l.inflight = time.Time{}, 0
			r.mu.Unlock()
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, r.cfg.RetryMin), r.cfg.RetryMax)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			r.endLoop(l)
			return
		case <-t.C:
		case <-l.waiting:
			// The peer asked for a pull and waits for it (a write there):
			// it reached this node just now, so the failures it caused
			// may be over (a healed partition); pull now instead of
			// making the write wait for the backoff. The backoff is kept
			// for the next failure.
			t.Stop()
		}
		r.mu.Lock()
		for _, u := range failed {
			if _, ok := l.dirty[u]; !ok {
				l.dirty[u] = nil
			}
		}
		// The failed pulls are still owed since the batch was queued.
		if l.pendingSince.IsZero() || l.inflightSince.Before(l.pendingSince) {
			l.pendingSince = l.inflightSince
		}
		l.inflightSince, l.inflight = time.Time{}, 0
		r.mu.Unlock()
	}
}

// pullBatch pulls the users of batch from p, up to Config.PullConcurrency
// at a time, answers each user's waiters as soon as its own pull ends, and
// returns every user's outcome. Pulls of different users are independent
// (each has its own checkpoint and the store locks per user), so a write
// waiting for its user's pull does not wait behind the other users' pulls
// of the same batch.
func (r *Replicator) pullBatch(ctx context.Context, p peer.ID, batch map[string][]chan error) map[string]error {
	out := make(map[string]error, len(batch))
	var mu sync.Mutex
	one := func(user string, ws []chan error) {
		err := ctx.Err()
		if err == nil {
			err = r.pull(ctx, p, user)
		}
		for _, w := range ws {
			w <- err
		}
		mu.Lock()
		out[user] = err
		mu.Unlock()
	}
	if len(batch) == 1 || r.cfg.PullConcurrency == 1 {
		for user, ws := range batch {
			one(user, ws)
		}
		return out
	}
	sem := make(chan struct{}, r.cfg.PullConcurrency)
	var wg sync.WaitGroup
	for user, ws := range batch {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			one(user, ws)
		})
	}
	wg.Wait()
	return out
}

// endLoop fails the waiters still queued on l when the replicator stops.
func (r *Replicator) endLoop(l *peerLoop) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ws := range l.dirty {
		for _, w := range ws {
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
// they miss. At most one batch waits between them, so a pull holds at
// most three fetch answers. Asking revs_diff before the pages ahead are
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
	for {
		resp, err := call[*ChangesResponse](ctx, r, p, &ChangesRequest{User: user, Since: since, Limit: uint32(r.cfg.ChangesBatch), InlineBytes: inlineBytes})
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
