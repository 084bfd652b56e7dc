package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/hce-sync/hce/api"
)

// ChangeNotifier hears about every committed change of a user's revision
// trees (a client write or replicated revisions; client writes only when no
// ReplicaWaiter is set, since the waiter reaches the replicas itself): the
// replicator sends push notices from it. from is the peer argument of the ApplyRevisions call
// that made the change ("" for a client write), so the notice need not go
// back where the revisions came from. Changed is called with the user's
// lock held, right after the commit: it must not block or call back into
// the store.
type ChangeNotifier interface {
	Changed(user string, seq uint64, from string)
}

// ReplicaWaiter decides when a client write may be acknowledged (the
// acknowledgement rule); the replicator implements it.
//
// WaitReplicated runs after the commit of a client write of user whose
// changes feed then reached seq, with the user's lock released. It
// returns (false, nil) when every other member of the user's replica set
// confirmed it holds the user up to seq (at once when there is no other
// member), and (true, nil) when some did not confirm in time and the
// directory committed a report of it (so those members are no longer
// counted as holding every acknowledged write). Any error means the write
// must not be acknowledged: the store then answers ErrNotAcknowledged
// (503; the write stays committed here and replicates later), or, when
// the error wraps ErrNotServing (this node is no longer a current member
// of the user's set: it was made filling, or the user moved), an error
// wrapping ErrNotServing and api.ErrUnauthorized, so the client gets 401,
// asks the directory for the user's node and sends the write there. The
// waiter bounds its own wait; ctx carries the request's values but not
// its cancellation.
type ReplicaWaiter interface {
	WaitReplicated(ctx context.Context, user string, seq uint64) (reported bool, err error)
}

// ErrNotAcknowledged is returned by a client write that committed but that
// the ReplicaWaiter did not let the store acknowledge (members did not
// confirm it and the directory could not be told). It wraps
// api.ErrUnavailable: the client gets 503 and retries; the write is
// durable here and reaches the other members by replication.
var ErrNotAcknowledged = fmt.Errorf("node: write committed but not acknowledged: %w", api.ErrUnavailable)

// SetChangeNotifier installs n (nil removes it). Safe for concurrent use.
func (s *Store) SetChangeNotifier(n ChangeNotifier) {
	if n == nil {
		s.notify.Store(nil)
		return
	}
	s.notify.Store(&n)
}

// SetReplicaWaiter makes every client write (Weave writes and CouchDB
// _bulk_docs or PUT of a document) wait, after its commit and before it
// returns, until w lets it be acknowledged (nil w turns this off: writes
// are acknowledged at once and announced through the ChangeNotifier). A
// write w refuses fails with ErrNotAcknowledged and is counted in
// UnacknowledgedWrites; one w acknowledged after reporting unconfirmed
// members is counted in UnconfirmedWrites. Call before serving.
func (s *Store) SetReplicaWaiter(w ReplicaWaiter) { s.waiter = w }

// UnconfirmedWrites counts the client writes acknowledged without every
// other member's confirmation (each reported to the directory first, see
// ReplicaWaiter) since the store was opened.
func (s *Store) UnconfirmedWrites() uint64 { return s.unconfirmed.Load() }

// UnacknowledgedWrites counts the client writes that committed but failed
// with ErrNotAcknowledged since the store was opened.
func (s *Store) UnacknowledgedWrites() uint64 { return s.unacked.Load() }

// changed runs after a commit that changed user's documents.
func (s *Store) changed(user string, seq uint64, from string) {
	s.watch.wake(user)
	if from == "" && s.waiter != nil {
		// A client write: the replica waiter contacts every other
		// replica right after the commit (awaitReplicas); a notice would
		// only make them pull twice.
		return
	}
	if n := s.notify.Load(); n != nil {
		(*n).Changed(user, seq, from)
	}
}

// awaitReplicas runs the replica waiter after a client write of user whose
// state entry is st (a write that changed nothing waits too: the replicas
// answer quickly, having nothing to pull). It returns ErrNotAcknowledged
// (wrapped) when the write must not be acknowledged.
func (s *Store) awaitReplicas(ctx context.Context, user string, st *userState) error {
	if s.waiter == nil || st == nil {
		return nil
	}
	seq := st.chg.Load()
	if seq == 0 {
		return nil
	}
	reported, err := s.waiter.WaitReplicated(context.WithoutCancel(ctx), user, seq)
	if err != nil {
		s.unacked.Add(1)
		s.log.Warn("write committed but not acknowledged", "user", user, "seq", seq, "err", err)
		if errors.Is(err, ErrNotServing) {
			return fmt.Errorf("node: write of user %q seq %d committed but not acknowledged: %w: %w", user, seq, err, api.ErrUnauthorized)
		}
		return fmt.Errorf("%w: user %q seq %d: %w", ErrNotAcknowledged, user, seq, err)
	}
	if reported {
		s.unconfirmed.Add(1)
	}
	return nil
}
