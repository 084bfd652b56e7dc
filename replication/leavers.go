package replication

import (
	"context"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/p2p"
)

// Leavers.
//
// A node that leaves a user's set (a transfer or drain finishing, a
// failover) is no longer asked to confirm writes from the moment a writer
// sees it leave, but it may go on serving the user's reads from its
// cached view (up to MembershipTTL) read from a directory state up to
// ViewLag old: until MembershipTTL + ViewLag after the change, when the
// directory could not tell it at once. So for that long after this node
// first sees a node in a user's leaving list, its client writes of the
// user also ask that node: it answers "not a member" (its view says it
// left, and views never go back: it serves the user no more), or
// confirms, or the write waits out the window before it is acknowledged.
// The window is measured from when this node first saw the node leaving,
// never before the change (a node that restarted waits once more than
// needed, when the leaver does not answer).

// CodeNotMember: the node asked to confirm a write is not a member of
// the user's set by its own view (it does not serve the user).
const CodeNotMember = "not_member"

// maxTrackedLeavers bounds the users whose leavers are remembered.
const maxTrackedLeavers = 1 << 16

// leaver is a node that left a user's set, with the end of the window in
// which this node's writes of the user ask it.
type leaver struct {
	peer  peer.ID
	until time.Time
}

// noteLeavers records when this node first saw each node of set's leaving
// list (observe calls it for every set read).
func (r *Replicator) noteLeavers(user string, set ReplicaSet, now time.Time) {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	m := r.left[user]
	if len(set.Leaving) == 0 {
		delete(r.left, user)
		return
	}
	for p := range m {
		if !slices.Contains(set.Leaving, p) {
			delete(m, p)
		}
	}
	for _, p := range set.Leaving {
		if p == r.self {
			continue
		}
		if _, ok := m[p]; ok {
			continue
		}
		if m == nil {
			if len(r.left) >= maxTrackedLeavers {
				r.pruneLeavers(now)
			}
			m = make(map[peer.ID]time.Time, len(set.Leaving))
			r.left[user] = m
		}
		m[p] = now
	}
	if len(m) == 0 {
		delete(r.left, user)
	}
}

// pruneLeavers forgets the users whose windows have all ended (and, if
// that is not enough, every user: a node seen leaving again later only
// makes a write wait longer than needed). r.lmu held.
func (r *Replicator) pruneLeavers(now time.Time) {
	w := r.leaverWindow()
	for u, m := range r.left {
		open := false
		for _, seen := range m {
			open = open || now.Before(seen.Add(w))
		}
		if !open {
			delete(r.left, u)
		}
	}
	if len(r.left) >= maxTrackedLeavers {
		clear(r.left)
	}
}

// leaverWindow is how long after first seeing a node leave a user's set
// this node's writes of the user ask it.
func (r *Replicator) leaverWindow() time.Duration { return r.cfg.MembershipTTL + r.cfg.ViewLag }

// recentLeavers returns the nodes of user's leaving list whose window is
// still open at now (none of set's members).
func (r *Replicator) recentLeavers(user string, set ReplicaSet, now time.Time) []leaver {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	var out []leaver
	w := r.leaverWindow()
	for p, seen := range r.left[user] {
		if until := seen.Add(w); now.Before(until) && !set.IsMember(p) && p != r.self {
			out = append(out, leaver{peer: p, until: until})
		}
	}
	return out
}

// awaitLeavers asks each leaver to confirm user up to seq, retrying with
// backoff, until it confirms or answers CodeNotMember, or its window ends;
// it returns when every leaver is settled so (nil), or ctx's error.
func (r *Replicator) awaitLeavers(ctx context.Context, user string, seq uint64, leavers []leaver) error {
	done := make(chan struct{}, len(leavers))
	for _, l := range leavers {
		go func() {
			defer func() { done <- struct{}{} }()
			lctx, cancel := context.WithDeadline(ctx, l.until)
			defer cancel()
			for wait := r.cfg.RetryMin; ; wait = min(2*wait, r.cfg.RetryMax) {
				_, err := call[*SyncResponse](lctx, r, l.peer, &SyncRequest{User: user, Seq: seq})
				if err == nil || p2p.IsCode(err, CodeNotMember) {
					return
				}
				t := time.NewTimer(wait)
				select {
				case <-lctx.Done():
					t.Stop()
					if ctx.Err() == nil {
						r.log.Warn(LeaverWaitLog, "user", user, "peer", l.peer, "err", err)
					}
					return
				case <-t.C:
				}
			}
		}()
	}
	for range leavers {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
