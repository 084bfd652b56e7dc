package replication

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// fillState is what this node knows of a user it is a filling member of.
type fillState struct {
	epoch  uint64
	learnt time.Time // when this node first saw itself filling at epoch
	next   time.Time // when the fill loop next starts a pull
	tries  int
	set    ReplicaSet // the last set seen
}

// observe notes this node's state in user's replica set set (every set
// the replicator reads passes here): a filling member remembers when it
// learnt its epoch, and the fill loop then pulls the user from a current
// member, starting at least MembershipTTL + ViewLag later (fillSettle),
// to report Filled.
func (r *Replicator) observe(user string, set ReplicaSet) {
	r.noteLeavers(user, set, time.Now())
	self, ok := set.Member(r.self)
	filling := ok && self.Filling
	r.fmu.Lock()
	defer r.fmu.Unlock()
	st := r.fills[user]
	if !filling {
		if st != nil {
			delete(r.fills, user)
		}
		return
	}
	if st != nil && st.epoch == self.Epoch {
		st.set = set
		return
	}
	now := time.Now()
	r.fills[user] = &fillState{epoch: self.Epoch, learnt: now, next: now.Add(r.fillSettle()), set: set}
	select {
	case r.fillWake <- struct{}{}:
	default:
	}
}

// MembershipChanged tells the replicator that the replica sets of users
// changed at the directory (the node's directory client calls it when a
// voter sends a dirproto.MembershipEvent, after dropping its cached sets).
// The fill loop reads those sets again soon: a member that became filling
// learns its epoch at once rather than at the next request or sweep, and
// a member pulls from members that just left the set. It does not block.
func (r *Replicator) MembershipChanged(users []string) {
	r.fmu.Lock()
	for _, u := range users {
		if len(r.changed) >= maxChanged {
			break
		}
		r.changed[u] = true
	}
	r.fmu.Unlock()
	select {
	case r.fillWake <- struct{}{}:
	default:
	}
}

// maxChanged bounds the users MembershipChanged keeps for the fill loop;
// the sweep covers whatever is dropped.
const maxChanged = 10000

// fillLoop starts the pulls that complete backfills: for each user this
// node is filling, once fillSettle has passed since it learnt its
// epoch, a pull from a current member that is not down (the primary
// first, then the others in turn); again, with backoff, until the
// directory makes it current. It also reads the sets MembershipChanged
// named.
func (r *Replicator) fillLoop() {
	defer r.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.fillWake:
		case <-t.C:
		}
		r.fmu.Lock()
		changed := r.changed
		r.changed = map[string]bool{}
		r.fmu.Unlock()
		for u := range changed {
			r.lookAgain(r.ctx, u)
		}
		now := time.Now()
		next := now.Add(time.Hour)
		type job struct {
			user  string
			set   ReplicaSet
			tries int
		}
		var jobs []job
		r.fmu.Lock()
		for u, st := range r.fills {
			if !st.next.After(now) {
				jobs = append(jobs, job{u, st.set, st.tries})
				st.tries++
				st.next = now.Add(min(r.cfg.MembershipTTL<<min(st.tries, 8), max(r.cfg.SweepInterval, r.cfg.MembershipTTL)))
			}
			if st.next.Before(next) {
				next = st.next
			}
		}
		r.fmu.Unlock()
		for _, j := range jobs {
			if src, ok := fillSource(j.set, r.self, j.tries); ok {
				if err := r.mark(src, j.user, nil); err != nil {
					return
				}
			}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(time.Until(next))
	}
}

// fillSource picks the member a filling node pulls from at its try-th
// attempt: the current members that are not down, other than self, in
// set order (the primary first), taken in turn.
func fillSource(set ReplicaSet, self peer.ID, try int) (peer.ID, bool) {
	var cands []peer.ID
	for _, m := range set.Members {
		if m.Peer != self && !m.Filling && !m.Down {
			cands = append(cands, m.Peer)
		}
	}
	if len(cands) == 0 {
		return "", false
	}
	return cands[try%len(cands)], true
}

// lookAgain reads user's replica set after a membership change and
// queues the pulls it calls for: from every leaving member when this node
// is a member (the handoff need not wait for a sweep).
func (r *Replicator) lookAgain(ctx context.Context, user string) {
	set, err := r.replicaSet(ctx, user)
	if err != nil || !set.IsMember(r.self) {
		return
	}
	for _, l := range set.Leaving {
		if l != r.self && !set.IsMember(l) {
			_ = r.mark(l, user, nil)
		}
	}
}

// fillSettle is how long after learning its epoch a filling member starts
// the pull it reports as its backfill: by then every writer's view of the
// set (cached up to MembershipTTL, read from a directory state up to
// ViewLag old) lists it, so later writes were confirmed by it or made it
// filling again.
func (r *Replicator) fillSettle() time.Duration { return r.cfg.MembershipTTL + r.cfg.ViewLag }
