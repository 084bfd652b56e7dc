package replication

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node"
)

// WaitReplicated implements node.ReplicaWaiter, the acknowledgement rule:
// after a client write of user (whose feed then reached seq) it sends a
// SyncRequest to every other member of the user's replica set, current
// and filling, each retried with backoff, and waits until all of them
// hold the user up to seq, at most Config.ReplicaWait. Members the
// directory marks down are not waited for once every other member has
// answered.
//
// Nodes that left the set a moment ago are asked too, or waited out
// (leavers.go), before any success is returned.
//
// When every member confirmed it returns (false, nil). Otherwise it
// reports Unconfirmed{user, the members that confirmed} to the directory
// (which makes the others filling, so they stop serving and must backfill
// again) and returns (true, nil) once the report is committed, this node
// is still a current member by the directory's answer after the commit,
// and, when the directory could not push the change to those members
// (Notified false), after waiting Config.MembershipTTL plus the
// directory's view lag (dirproto.ReportResponse.ViewLag) so their cached
// views have expired. Any failure of that (directory unreachable, no
// quorum, this node no longer current) is an error: the write must not be
// acknowledged. A node that is not a current member by its own view
// fails at once with ErrNotCurrent, and so does one whose report the
// directory refused because it is no longer a current member; those
// errors wrap node.ErrNotServing as well, so the client is answered 401
// and asks the directory where the user lives now.
func (r *Replicator) WaitReplicated(ctx context.Context, user string, seq uint64) (bool, error) {
	r.mu.Lock()
	started, closed := r.started, r.closed
	r.mu.Unlock()
	switch {
	case closed:
		return false, ErrClosed
	case !started:
		return false, ErrNotStarted
	}
	set, err := r.replicaSet(ctx, user)
	if err != nil {
		return false, err
	}
	if !set.IsCurrent(r.self) {
		return false, notCurrent(user, "", nil)
	}
	var others []Member
	for _, m := range set.Members {
		if m.Peer != r.self {
			others = append(others, m)
		}
	}
	// Nodes that left the set a moment ago may still serve the user from
	// a cached view: they are asked too, or waited out (leavers.go).
	var leavers chan error
	if ls := r.recentLeavers(user, set, time.Now()); len(ls) > 0 {
		r.c.leaverWrites.Add(1)
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		leavers = make(chan error, 1)
		go func() { leavers <- r.awaitLeavers(lctx, user, seq, ls) }()
	}
	settled := func() error {
		if leavers == nil {
			return nil
		}
		return <-leavers
	}
	if len(others) == 0 {
		return false, settled()
	}
	confirmed, moved := r.confirm(ctx, others, user, seq)
	if moved {
		return false, notCurrent(user, " (a member refused the write's confirmation and the directory says so)", nil)
	}
	if len(confirmed) == len(others) {
		return false, settled()
	}
	if err := r.reportUnconfirmed(ctx, user, confirmed); err != nil {
		r.c.uncFailed.Add(1)
		return false, err
	}
	r.c.uncReported.Add(1)
	if err := settled(); err != nil {
		return true, err
	}
	r.log.Warn(UnconfirmedAckLog, "user", user, "confirmed", len(confirmed), "members", len(others)+1)
	return true, nil
}

// Log messages a test harness counts in the nodes' logs (testnet's chaos
// report).
const (
	// UnconfirmedAckLog: a client write was acknowledged after the
	// members that did not confirm it were reported (and made filling).
	UnconfirmedAckLog = "replication: write acknowledged after reporting members that did not confirm it"
	// LeaverWaitLog: a client write waited to the end of its window for a
	// node that had just left the user's set and did not answer.
	LeaverWaitLog = "replication: write waited out a node that had just left the user's set"
)

// notCurrent is WaitReplicated's error when this node is not a current
// member of user's set: ErrNotCurrent, and node.ErrNotServing so that the
// client is answered 401. why completes the message; cause, when not
// nil, is wrapped too.
func notCurrent(user, why string, cause error) error {
	if cause != nil {
		return fmt.Errorf("%w of %q's replica set%s: %w: %w", ErrNotCurrent, user, why, cause, node.ErrNotServing)
	}
	return fmt.Errorf("%w of %q's replica set%s: %w", ErrNotCurrent, user, why, node.ErrNotServing)
}

// confirm sends a SyncRequest for (user, seq) to every member of others in
// parallel, retrying each failure with backoff, and returns the peers
// that confirmed by the time every member not marked down confirmed (so
// at once when all are marked down), or by Config.ReplicaWait. When a
// member refuses as "not shared" and the Membership is a FreshMembership,
// it asks the directory once for the set: notCurrent reports that this
// node is no longer a current member (confirm then returns at once).
func (r *Replicator) confirm(ctx context.Context, others []Member, user string, seq uint64) (confirmed []peer.ID, notCurrent bool) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ReplicaWait)
	defer cancel() // stops the attempts still running
	done := make(chan Member, len(others))
	refused := make(chan struct{}, 1)
	live := 0
	for _, m := range others {
		if !m.Down {
			live++
		}
		go func() {
			for wait := r.cfg.RetryMin; ; wait = min(2*wait, r.cfg.RetryMax) {
				_, err := call[*SyncResponse](ctx, r, m.Peer, &SyncRequest{User: user, Seq: seq})
				if err == nil {
					done <- m
					return
				}
				if p2p.IsCode(err, CodeForbidden) || p2p.IsCode(err, CodeNotMember) {
					select {
					case refused <- struct{}{}:
					default:
					}
				}
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		}()
	}
	fresh, _ := r.mem.(FreshMembership)
	var check chan bool // the directory's answer: still current?
	asked := false      // once per write: a member with a stale view refuses every retry
	liveOK := 0
	for len(confirmed) < len(others) && liveOK < live {
		select {
		case m := <-done:
			confirmed = append(confirmed, m.Peer)
			if !m.Down {
				liveOK++
			}
		case <-refused:
			if fresh == nil || asked {
				continue
			}
			asked = true
			check = make(chan bool, 1)
			go func() {
				set, err := fresh.FreshReplicaSet(ctx, user)
				if err == nil {
					r.observe(user, set)
				}
				check <- err != nil || set.IsCurrent(r.self)
			}()
		case current := <-check:
			if !current {
				return confirmed, true
			}
			check = nil
		case <-ctx.Done():
			return confirmed, false
		}
	}
	return confirmed, false
}

// reportUnconfirmed reports that the members of user's set other than
// this node and confirmed did not confirm a write, and returns nil once
// the write may be acknowledged (see WaitReplicated).
func (r *Replicator) reportUnconfirmed(ctx context.Context, user string, confirmed []peer.ID) error {
	if r.cfg.Reporter == nil {
		return fmt.Errorf("%w: members of %q did not confirm a write", ErrNoReporter, user)
	}
	item := dirproto.UnconfirmedWrite{User: user}
	for _, p := range confirmed {
		item.Confirmed = append(item.Confirmed, p.String())
	}
	slices.Sort(item.Confirmed)
	rctx, cancel := context.WithTimeout(ctx, r.cfg.ReportTimeout)
	defer cancel()
	notified, viewLag, err := r.reports.waitUnconfirmed(rctx, r, item)
	if p2p.IsCode(err, CodeForbidden) {
		// The directory refuses the item when this node is no longer a
		// current member (another writer's report made it filling, or it
		// left the set): the write is on no current member.
		return notCurrent(user, " (the directory refused the report of an unconfirmed write)", err)
	}
	if err != nil {
		return fmt.Errorf("replication: report of an unconfirmed write of %q: %w", user, err)
	}
	// Were this node no longer a current member, the directory would have
	// refused the item; a directory that ignores it instead (as the
	// directory of the first replication design did) is caught here. The
	// Reporter dropped the cached set, so this asks the directory.
	set, err := r.replicaSet(rctx, user)
	if err != nil {
		return fmt.Errorf("replication: replica set of %q after a report: %w", user, err)
	}
	if !set.IsCurrent(r.self) {
		return notCurrent(user, " after reporting an unconfirmed write", nil)
	}
	if !notified {
		// Members that became filling may still serve from a cached view
		// for up to the cache lifetime, and that view may have been read
		// from a voter whose state was up to viewLag old.
		t := time.NewTimer(r.cfg.MembershipTTL + viewLag)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
