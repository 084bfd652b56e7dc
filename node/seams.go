package node

import (
	"context"
	"time"
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

// ReplicaWaiter confirms that another replica holds a user's changes: the
// replicator implements it. WaitReplicated returns nil once some other
// node of the user's replica set has everything of the user's feed up to
// seq (at once when the user has no other replica).
type ReplicaWaiter interface {
	WaitReplicated(ctx context.Context, user string, seq uint64) error
}

// SetChangeNotifier installs n (nil removes it). Safe for concurrent use.
func (s *Store) SetChangeNotifier(n ChangeNotifier) {
	if n == nil {
		s.notify.Store(nil)
		return
	}
	s.notify.Store(&n)
}

// SetReplicaWaiter makes every client write that changed documents wait,
// after its commit and before it returns, until w confirms that another
// replica holds it, at most timeout (nil w turns this off). A write whose
// confirmation fails or times out (every other replica down or cut off)
// is still acknowledged: it is durable here and replicates later; it is
// counted in UnconfirmedWrites and logged. Call before serving.
func (s *Store) SetReplicaWaiter(w ReplicaWaiter, timeout time.Duration) {
	s.waiter, s.waitTimeout = w, timeout
}

// UnconfirmedWrites counts the client writes acknowledged without a
// replica's confirmation (see SetReplicaWaiter).
func (s *Store) UnconfirmedWrites() uint64 { return s.unconfirmed.Load() }

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
// state entry is st (a write that changed nothing waits too: the replica
// answers quickly, having nothing to pull).
func (s *Store) awaitReplicas(ctx context.Context, user string, st *userState) {
	if s.waiter == nil || st == nil {
		return
	}
	seq := st.chg.Load()
	if seq == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.waitTimeout)
	defer cancel()
	if err := s.waiter.WaitReplicated(wctx, user, seq); err != nil {
		s.unconfirmed.Add(1)
		s.log.Warn("write acknowledged without a replica's confirmation", "user", user, "seq", seq, "err", err)
	}
}
