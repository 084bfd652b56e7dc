package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node/revtree"
)

// ApplyRevisions stores revisions received from a peer or a CouchDB
// replicator with CouchDB's new_edits=false semantics: each revision's path
// is merged into its document's tree as given (a revision the tree already
// has is a no-op), bodies are kept for leaves only, trees are stemmed to
// Config.RevsLimit. errs[i] is nil when revs[i] was stored or already known,
// or wraps ErrRevRejected with the reason it was refused; refused revisions
// change nothing and do not stop the others. A document whose winner
// changes gets a fresh modified (the time the change became visible here)
// and is updated in the Weave view; other revisions stay invisible to Weave
// clients. Everything accepted, and cp for peer when it is not nil, is
// committed in one synced batch, so a checkpoint never runs ahead of the
// data. err is for failures of the store itself (then nothing was stored).
//
// peer "" marks a client's write (the CouchDB endpoint): it is
// acknowledged under the ReplicaWaiter's rule like a Weave write, and
// fails with ErrNotAcknowledged (after its commit) when the waiter
// refuses it.
func (s *Store) ApplyRevisions(ctx context.Context, user string, revs []Revision, peer string, cp *Checkpoint) (errs []error, err error) {
	if err := checkNames(user); err != nil {
		return nil, err
	}
	if cp != nil && (peer == "" || len(peer) > MaxOriginLen) {
		return nil, fmt.Errorf("node: checkpoint peer of %d bytes", len(peer))
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	errs = make([]error, len(revs))
	order := make([]int, 0, len(revs))
	for i := range revs {
		r := &revs[i]
		if err := ValidateDocID(r.Coll, r.ID); err != nil {
			errs[i] = err
			continue
		}
		if err := r.Body.validate(r.Path.Deleted); err != nil {
			errs[i] = err
			continue
		}
		if len(r.Path.IDs) == 0 {
			errs[i] = fmt.Errorf("%w: empty revision path", ErrRevRejected)
			continue
		}
		if err := r.Verify(); err != nil {
			errs[i] = err
			continue
		}
		order = append(order, i)
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if c := strings.Compare(revs[a].Coll, revs[b].Coll); c != 0 {
			return c
		}
		return strings.Compare(revs[a].ID, revs[b].ID)
	})
	if len(order) == 0 && cp == nil {
		return errs, nil
	}
	quota := s.cfg.QuotaBytes
	var check checkFunc
	if quota > 0 && peer == "" {
		check = func(st *userState) (*userState, error) { return s.purgedLocked(user, st) }
	}
	var overUsage int64 // the user's usage after a replicated batch, when over quota
	_, st, err := s.writeLockedFrom(user, peer, check,
		func(st *userState, t stamp, b *pebble.Batch, sc *scratch) (func(), error) {
			// A client's revisions that add content are refused one by
			// one once the user's usage, with the payloads accepted
			// before them in this call, reaches the quota; tombstones and
			// revisions already stored pass. Replicated ones never are:
			// another member acknowledged them.
			budget := int64(math.MaxInt64)
			if quota > 0 && peer == "" {
				budget = quota - st.usage()
			}
			var writers []*writer
			var w *writer
			ops := getOps()
			defer ops.release()
			flush := func() error {
				if w == nil {
					return nil
				}
				if err := w.applyWinners(); err != nil {
					return err
				}
				if err := w.finish(); err != nil {
					return err
				}
				writers = append(writers, w)
				return nil
			}
			for j, i := range order {
				r := &revs[i]
				if w == nil || w.coll != r.Coll {
					if err := flush(); err != nil {
						return nil, err
					}
					if w == nil {
						w = s.newWriter(b, sc, st, user, r.Coll, t)
					} else {
						w = w.next(st, r.Coll)
					}
					w.ops = ops
					if err := w.prefetchGroup(revs, order[j:]); err != nil {
						return nil, err
					}
				}
				ds, err := w.doc(r.ID)
				if err != nil {
					return nil, err
				}
				if err := s.loadPath(user, st.kp, ds); err != nil {
					return nil, err
				}
				adds := !r.Path.Deleted && !ds.contains(r.Path.Leaf())
				if adds && budget <= 0 {
					errs[i] = fmt.Errorf("%w: %s/%s: %w", ErrRevRejected, r.Coll, r.ID, api.ErrOverQuota)
					continue
				}
				if done, changed := ds.applyLinear(r, s.revCfg); done {
					if changed {
						ds.dirty = true
						if adds {
							budget -= int64(len(r.Body.Payload))
						}
					}
					continue
				}
				trial := ds.t().Clone()
				changed, merr := trial.Merge(r.Path)
				if merr != nil {
					errs[i] = fmt.Errorf("%w: %s/%s: %w", ErrRevRejected, r.Coll, r.ID, merr)
					continue
				}
				if !changed {
					continue
				}
				if err := w.checkLimits(ds, r, trial); err != nil {
					if !errors.Is(err, ErrRevRejected) {
						return nil, err
					}
					errs[i] = err
					continue
				}
				ds.tree = trial
				if leaf := r.Path.Leaf(); ds.isLeaf(leaf) {
					ds.setBody(leaf, r.Body)
				}
				s.settle(ds)
				if adds {
					budget -= int64(len(r.Body.Payload))
				}
			}
			if err := flush(); err != nil {
				return nil, err
			}
			if cp != nil {
				sc.k = ckptKey(sc.k[:0], st.kp, peer)
				sc.v = appendCheckpoint(sc.v[:0], cp)
				if err := b.Set(sc.k, sc.v, nil); err != nil {
					return nil, err
				}
			}
			if len(writers) == 0 {
				if b.Empty() {
					return nil, nil
				}
				return func() {}, nil
			}
			return func() {
				for _, w := range writers {
					w.apply(st)
				}
				if quota > 0 && peer != "" && st.usage() > quota {
					overUsage = st.usage()
				}
			}, nil
		})
	if err != nil {
		return nil, err
	}
	if overUsage > 0 {
		s.reportOverQuota(user, peer, overUsage)
	}
	if peer == "" {
		// A client's write (a CouchDB replicator pushing to this node):
		// acknowledged under the same rule as a Weave write, even when it
		// changed nothing (a retry of a write not acknowledged before).
		if err := s.awaitReplicas(ctx, user, st); err != nil {
			return nil, err
		}
	}
	return errs, nil
}

// reportOverQuota records that replicated revisions left user over quota:
// they are stored all the same (another member acknowledged them), the
// store counts it (ReplicatedOverQuota) and logs it at a bounded rate.
func (s *Store) reportOverQuota(user, peer string, usage int64) {
	s.overQuota.Add(1)
	if ok, held := s.overQuotaLog.allow(s.cfg.Clock()); ok {
		s.log.Warn("replicated revisions left a user over quota", "user", user, "peer", peer,
			"usage_bytes", usage, "quota_bytes", s.cfg.QuotaBytes, "not_logged", held)
	}
}

// ReplicatedOverQuota counts the replicated batches that left their user
// over quota since the store was opened. Replication never refuses data
// for a quota (another member acknowledged it): the user's client writes
// are refused until usage is below the quota again.
func (s *Store) ReplicatedOverQuota() uint64 { return s.overQuota.Load() }

// checkLimits refuses revision r of document ds (a tree) when merging it,
// as trial, would take the document past Config.MaxConflicts or
// Config.MaxDocBytes and further from them than it is: a document already
// past a limit (stored before it, or with other limits) may still lose
// conflicts and bytes.
func (w *writer) checkLimits(ds *docState, r *Revision, trial *revtree.Tree) error {
	if err := w.viewPlen(ds, r.ID); err != nil {
		return err
	}
	bytes0, conf0 := ds.size()
	keep := ds.tree
	ds.tree = trial
	bytes1, conf1 := ds.size()
	ds.tree = keep
	if leaf := r.Path.Leaf(); trial.IsLeaf(leaf) {
		// The new leaf's body is not in ds yet.
		bytes1 += int64(len(r.Body.Payload))
	}
	cfg := &w.s.cfg
	switch {
	case conf1 > cfg.MaxConflicts && conf1 > conf0:
		return fmt.Errorf("%w: %s/%s would have %d conflicting leaves (limit %d)", ErrTooManyConflicts, r.Coll, r.ID, conf1, cfg.MaxConflicts)
	case bytes1 > cfg.MaxDocBytes && bytes1 > bytes0:
		return fmt.Errorf("%w: %s/%s would have %d bytes (limit %d)", ErrDocTooLarge, r.Coll, r.ID, bytes1, cfg.MaxDocBytes)
	}
	return nil
}

// viewPlen sets ds.viewPlen (the payload length of the live winner whose
// fields are in the Weave record) when it is needed and not known yet.
func (w *writer) viewPlen(ds *docState, id string) error {
	if !ds.inView || ds.viewPlen >= 0 {
		return nil
	}
	h, pend, ok, err := w.lookup(id)
	if err != nil {
		return err
	}
	switch {
	case pend != nil:
		ds.viewPlen = int64(len(pend.payload))
	case ok:
		ds.viewPlen = h.plen
	default:
		ds.viewPlen = 0
	}
	return nil
}

// applyWinners updates the Weave view of w's collection's changed
// documents whose winner changed in this request.
func (w *writer) applyWinners() error {
	for _, ds := range w.rs.collDocs(w.coll) {
		if !ds.dirty || ds.run.drop {
			continue
		}
		win, ok := ds.winner()
		if !ok || (ds.run.hadOrig && win.Rev == ds.run.orig.Rev) {
			continue
		}
		id := ds.id
		if ds.inView && ds.run.hadOrig && ds.isLeaf(ds.run.orig.Rev) {
			// The old winner stays a (losing) leaf: its fields move from
			// the Weave record into the document before it is replaced.
			if err := w.fillFromView(ds, ds.run.orig.Rev); err != nil {
				return err
			}
		}
		if win.Deleted {
			if err := w.unview(id); err != nil {
				return err
			}
			continue
		}
		x, _, err := ds.body(win.Rev)
		if err != nil {
			return fmt.Errorf("node: document %s/%s of %s: %w: %w", w.coll, id, w.user, errCorrupt, err)
		}
		if err := w.install(id, &x); err != nil {
			return err
		}
	}
	return nil
}

// install makes body x (a replicated winner) the Weave record id, stamped
// with the request's time.
func (w *writer) install(id string, x *Body) error {
	oh, _, exists, err := w.lookup(id)
	if err != nil {
		return err
	}
	nr := record{id: id, has: x.Has, si: x.SortIndex, parent: x.ParentID, pred: x.PredecessorID, exp: x.Expiry}
	if x.Has&api.FieldPayload != 0 {
		nr.payload = x.Payload
		nr.mod = w.ts
	}
	if exists {
		nr.seq = oh.seq
	} else {
		nr.seq = w.nextSeq
		w.nextSeq++
		w.seqDirty = true
	}
	return w.store(&nr, &oh, exists)
}

// unview removes the Weave record id (its winner became a tombstone).
func (w *writer) unview(id string) error {
	oh, _, exists, err := w.lookup(id)
	if err != nil || !exists {
		return err
	}
	if err := w.remove(id, &oh); err != nil {
		return err
	}
	w.cm.last = max(w.cm.last, w.ts)
	return nil
}

// prefetchGroup reads ahead, with one iterator each, the documents and
// record heads of the revisions of w's collection at the start of order
// (sorted by collection and id), when there are enough of them.
func (w *writer) prefetchGroup(revs []Revision, order []int) error {
	var ids []string
	for _, i := range order {
		if revs[i].Coll != w.coll {
			break
		}
		if n := len(ids); n == 0 || ids[n-1] != revs[i].ID {
			ids = append(ids, revs[i].ID)
		}
	}
	if len(ids) < prefetchMin {
		return nil
	}
	return w.prefetch(ids)
}
