package replication

import (
	"context"
	"fmt"
	"slices"
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
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep compares every user assigned to this node with each peer of its
// replica set, a page of users per request, and queues a pull of the users
// whose sequence number on the peer is past this node's checkpoint (or
// whose peer store changed). It is how a new replica is backfilled and how
// changes whose notice was lost are caught up. A peer that fails is
// skipped for the rest of the sweep; Sweep returns the membership's
// errors only.
func (r *Replicator) Sweep(ctx context.Context) error {
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	down := map[peer.ID]bool{}
	after := ""
	for {
		page, more, err := r.mem.AssignedUsers(ctx, after, r.cfg.SeqsBatch)
		if err != nil {
			return err
		}
		byPeer := map[peer.ID][]string{}
		for _, u := range page {
			if !slices.Contains(u.Peers, r.self) {
				continue
			}
			for _, p := range u.Peers {
				if p != r.self && !down[p] {
					byPeer[p] = append(byPeer[p], u.User)
				}
			}
		}
		for p, users := range byPeer {
			if err := r.sweepPeer(ctx, p, users); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				down[p] = true
				r.c.errors.Add(1)
				r.log.Warn("replication: sweep of a peer failed", "peer", p, "err", err)
			}
		}
		if !more || len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].User
	}
}

func (r *Replicator) sweepPeer(ctx context.Context, p peer.ID, users []string) error {
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
			if seq == 0 {
				continue
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
