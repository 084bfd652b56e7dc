package replication

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// sweepLoop runs Sweep at start and every SweepInterval.
func (r *Replicator) sweepLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.SweepInterval)
	defer t.Stop()
	for {
		if err := r.Sweep(r.ctx); err != nil && r.ctx.Err() == nil {
			r.c.errors.Add(1)
			r.log.Warn("replication: sweep failed", "err", err)
		}
		r.c.sweeps.Add(1)
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep goes over every user the directory assigns to this node, a page
// of users at a time:
//   - for a user this node is a member of, it asks each other member and
//     each leaving member for the user's sequence number (a page of users
//     per request) and queues a pull of the users whose number is past
//     this node's checkpoint (or whose peer store changed); from a
//     leaving member a current member pulls anyway, to complete the
//     handoff. This catches up changes whose notice was lost and
//     backfills a new member.
//   - a user this node is leaving counts in HandoffBacklog; the first
//     sweep that finds it leaving tells the user's current members
//     (a notice), so they pull what it holds at once.
//
// After a complete pass (every page answered), the users this node has
// data of that the directory listed neither now nor at the previous
// complete pass, at least two membership cache lifetimes apart, and whose
// replica set still does not name this node, are wiped
// (Store.WipeUser): their handoff is done or they were never this node's.
// Nothing is wiped after an error. A peer that fails is skipped for the
// rest of the sweep; Sweep returns the membership's and the store's
// errors only.
func (r *Replicator) Sweep(ctx context.Context) error {
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	down := map[peer.ID]bool{}
	assigned := map[string]bool{}
	leaving := map[string]bool{}
	after := ""
	for {
		page, more, err := r.mem.AssignedUsers(ctx, after, r.cfg.SeqsBatch)
		if err != nil {
			return err
		}
		byPeer := map[peer.ID][]string{}
		force := map[peer.ID]map[string]bool{}
		for _, u := range page {
			assigned[u.User] = true
			r.observe(u.User, u.Set)
			switch {
			case u.Set.IsMember(r.self):
				current := u.Set.IsCurrent(r.self)
				for _, p := range append(u.Set.Peers(), u.Set.Leaving...) {
					if p == r.self || down[p] {
						continue
					}
					byPeer[p] = append(byPeer[p], u.User)
					if current && u.Set.IsLeaving(p) {
						if force[p] == nil {
							force[p] = map[string]bool{}
						}
						force[p][u.User] = true
					}
				}
			case u.Set.IsLeaving(r.self):
				leaving[u.User] = true
			}
		}
		for p, users := range byPeer {
			if err := r.sweepPeer(ctx, p, users, force[p]); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				down[p] = true
				r.c.errors.Add(1)
				r.log.Warn("replication: sweep of a peer failed", "peer", p, "err", err)
			}
		}
		if !more || len(page) == 0 {
			break
		}
		after = page[len(page)-1].User
	}
	r.backlog.Store(int64(len(leaving)))
	r.announceLeaving(ctx, leaving)
	return r.wipeUnassigned(ctx, assigned)
}

func (r *Replicator) sweepPeer(ctx context.Context, p peer.ID, users []string, force map[string]bool) error {
	for len(users) > 0 {
		n := min(len(users), r.cfg.SeqsBatch)
		chunk := users[:n]
		users = users[n:]
		resp, err := call[*SeqsResponse](ctx, r, p, &SeqsRequest{Users: chunk})
		if err != nil {
			return err
		}
		if len(resp.Seqs) != len(chunk) || resp.Source == "" {
			return fmt.Errorf("%w: %s answered %d sequence numbers for %d users", ErrProtocol, p, len(resp.Seqs), len(chunk))
		}
		for i, u := range chunk {
			seq := resp.Seqs[i]
			if force[u] {
				// A handoff: pull even from an empty leaving member, whose
				// final answer lets the directory forget it.
				if err := r.mark(p, u, nil); err != nil {
					return err
				}
				continue
			}
			if seq == 0 {
				continue // nothing there, or not shared in the peer's view
			}
			cp, err := r.st.GetCheckpoint(ctx, u, p.String())
			if err != nil {
				return err
			}
			if cp.Source != resp.Source || seq > cp.Seq {
				if err := r.mark(p, u, nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// announceLeaving sends, for each user this node newly found itself
// leaving, a notice of what it holds to the user's current members.
func (r *Replicator) announceLeaving(ctx context.Context, leaving map[string]bool) {
	r.wmu.Lock()
	was := r.leavingWas
	r.leavingWas = leaving
	r.wmu.Unlock()
	for u := range leaving {
		if was[u] {
			continue
		}
		set, err := r.replicaSet(ctx, u)
		if err != nil || !set.IsLeaving(r.self) {
			continue
		}
		seq, err := r.st.UpdateSeq(ctx, u)
		if err != nil || seq == 0 {
			continue
		}
		r.mu.Lock()
		for _, p := range noticeTargets(set, r.self) {
			r.queueNoticeLocked(p, u, seq)
		}
		r.mu.Unlock()
	}
}

// wipeUnassigned wipes the users this node has data of that a complete
// sweep found unassigned (see Sweep); assigned are the users the sweep
// listed.
func (r *Replicator) wipeUnassigned(ctx context.Context, assigned map[string]bool) error {
	now := time.Now()
	cands := map[string]time.Time{}
	r.wmu.Lock()
	prev := r.wipeCands
	r.wmu.Unlock()
	var due []string
	for after := ""; ; {
		users, err := r.st.Users(ctx, after, 1000)
		if err != nil {
			return err
		}
		for _, u := range users {
			if assigned[u] {
				continue
			}
			since, ok := prev[u]
			if !ok {
				since = now
			}
			cands[u] = since
			if now.Sub(since) >= 2*r.cfg.MembershipTTL {
				due = append(due, u)
			}
		}
		if len(users) < 1000 {
			break
		}
		after = users[len(users)-1]
	}
	r.wmu.Lock()
	r.wipeCands = cands
	r.wmu.Unlock()
	for _, u := range due {
		set, err := r.replicaSet(ctx, u)
		if err != nil {
			return err // no positive answer: wipe nothing
		}
		if set.Holds(r.self) {
			continue
		}
		if err := r.st.WipeUser(ctx, u); err != nil {
			return err
		}
		r.c.wiped.Add(1)
		r.wmu.Lock()
		delete(r.wipeCands, u)
		r.wmu.Unlock()
		r.log.Info("replication: user no longer held here, data deleted", "user", u)
	}
	return nil
}
