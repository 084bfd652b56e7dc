package replication

import (
	"github.com/libp2p/go-libp2p/core/peer"
)

// Changed implements node.ChangeNotifier: it queues a push notice of
// user's change to the other members of its replica set (see
// noticeTargets) and returns at once (it runs under the store's user
// lock).
//
// A change made by revisions pulled from peer from is not announced back
// to that peer (it has them); the other replicas still hear of it.
func (r *Replicator) Changed(user string, seq uint64, from string) {
	if r.noted.Load() {
		return
	}
	r.nmu.Lock()
	n, queued := r.notes[user]
	if !queued {
		n.skip = from
	} else if n.skip != from {
		n.skip = ""
	}
	n.seq = max(n.seq, seq)
	r.notes[user] = n
	r.nmu.Unlock()
	select {
	case r.noteWake <- struct{}{}:
	default:
	}
}

// note is a queued change notice: the user's newest seq and the peer the
// change came from, when all queued changes came from that one peer.
type note struct {
	seq  uint64
	skip string
}

// noticeLoop hands queued notices to the per-peer senders.
func (r *Replicator) noticeLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.noteWake:
		}
		r.nmu.Lock()
		notes := r.notes
		r.notes = map[string]note{}
		r.nmu.Unlock()
		for user, nt := range notes {
			set, err := r.replicaSet(r.ctx, user)
			if err != nil {
				r.c.errors.Add(1)
				r.log.Warn("replication: replica set for a notice", "user", user, "err", err)
				continue
			}
			r.mu.Lock()
			for _, p := range noticeTargets(set, r.self) {
				if nt.skip == "" || p.String() != nt.skip {
					r.queueNoticeLocked(p, user, nt.seq)
				}
			}
			r.mu.Unlock()
		}
	}
}

// noticeTargets lists the peers self tells about a change of a user with
// replica set set: the other members when self is a member; the current
// members when self is leaving (what it still holds goes to them); nobody
// otherwise.
func noticeTargets(set ReplicaSet, self peer.ID) []peer.ID {
	member := set.IsMember(self)
	if !member && !set.IsLeaving(self) {
		return nil
	}
	var out []peer.ID
	for _, m := range set.Members {
		if m.Peer != self && (member || !m.Filling) {
			out = append(out, m.Peer)
		}
	}
	return out
}

// queueNoticeLocked queues a notice of user's seq for p and starts p's
// sender when none runs. The caller holds r.mu.
func (r *Replicator) queueNoticeLocked(p peer.ID, user string, seq uint64) {
	if r.closed || !r.started {
		return
	}
	ob := r.outbox[p]
	if ob == nil {
		ob = map[string]uint64{}
		r.outbox[p] = ob
	}
	ob[user] = max(ob[user], seq)
	if !r.sending[p] {
		r.sending[p] = true
		r.wg.Add(1)
		go r.sendNotices(p)
	}
}

// sendNotices sends p's queued notices until none is left; notices queued
// while a send is in flight are coalesced into the next one.
func (r *Replicator) sendNotices(p peer.ID) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		ob := r.outbox[p]
		delete(r.outbox, p)
		if len(ob) == 0 || r.closed {
			delete(r.sending, p)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		n := &Notice{Users: make([]UserSeq, 0, min(len(ob), MaxUsers))}
		flush := func() {
			if _, err := call[*NoticeAck](r.ctx, r, p, n); err != nil {
				if r.ctx.Err() == nil {
					r.c.errors.Add(1)
					r.log.Debug("replication: notice not delivered", "peer", p, "err", err)
				}
			} else {
				r.c.sent.Add(uint64(len(n.Users)))
			}
			n.Users = n.Users[:0]
		}
		for u, seq := range ob {
			n.Users = append(n.Users, UserSeq{User: u, Seq: seq})
			if len(n.Users) == MaxUsers {
				flush()
			}
		}
		if len(n.Users) > 0 {
			flush()
		}
	}
}
