package replication

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// WaitReplicated implements node.ReplicaWaiter: it asks every other node of
// user's replica set to pull user now (SyncRequest) and returns nil as soon
// as one of them holds everything up to seq. While every one fails it
// retries (backoff RetryMin..RetryMax) until ctx ends, then returns an
// error. A user without other replicas returns nil at once.
func (r *Replicator) WaitReplicated(ctx context.Context, user string, seq uint64) error {
	ps, err := r.mem.Replicas(ctx, user)
	if err != nil {
		return err
	}
	others := make([]peer.ID, 0, len(ps))
	for _, p := range ps {
		if p != r.self {
			others = append(others, p)
		}
	}
	if len(others) == 0 {
		return nil
	}
	var last error
	for wait := r.cfg.RetryMin; ; wait = min(2*wait, r.cfg.RetryMax) {
		if last = r.syncOnce(ctx, others, user, seq); last == nil {
			return nil
		}
		// Every replica failed (unreachable, or its pull failed): try
		// again until ctx ends, a connection may come back.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("replication: no replica of %q confirmed seq %d: %w (last: %v)", user, seq, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// syncOnce sends a SyncRequest to every peer in parallel and returns nil
// at the first success, else the last error. The other requests go on
// (bounded by CallTimeout): every replica should pull the write, and the
// store sends no separate notice for it.
func (r *Replicator) syncOnce(ctx context.Context, peers []peer.ID, user string, seq uint64) error {
	if len(peers) > 1 {
		ctx = context.WithoutCancel(ctx)
	}
	res := make(chan error, len(peers))
	for _, p := range peers {
		go func() {
			_, err := call[*SyncResponse](ctx, r, p, &SyncRequest{User: user, Seq: seq})
			res <- err
		}()
	}
	var last error
	for range peers {
		if last = <-res; last == nil {
			return nil
		}
	}
	return last
}
