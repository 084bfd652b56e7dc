package directory

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// Heartbeat records that storage node nodeID is alive with the given load
// (users it serves). Only the leader tracks heartbeats (ErrNotLeader
// elsewhere); a node marked down is marked active again by committing
// SetNodeState. ErrUnknownNode, ErrNodeRetired.
func (d *Directory) Heartbeat(ctx context.Context, nodeID string, load int) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if !d.IsLeader() {
		return ErrNotLeader
	}
	return d.beats.beat(ctx, nodeID, load)
}

// heartbeat is the last heartbeat of a node seen by the leader.
type heartbeat struct {
	at   time.Time
	load int
}

// liveness is the leader's watch over the storage nodes. It records their
// heartbeats in memory only and, while this voter leads, commits the
// changes of state they imply: a silent active or draining node goes
// down (run), a down node that heartbeats comes back up (beat).
type liveness struct {
	state   *state.FSM
	leading func() bool
	// propose commits a command on this voter (the leader), unforwarded.
	propose func(ctx context.Context, c state.Command) error
	clock   func() time.Time
	// downAfter is the silence limit (Nodes.DownAfter) unless the
	// cluster setting Settings.DownAfterMS overrides it; tick is how
	// often run checks; timeout bounds one write.
	downAfter, tick, timeout time.Duration
	log                      *slog.Logger

	mu   sync.Mutex
	last map[string]heartbeat
}

func newLiveness(d *Directory) *liveness {
	return &liveness{
		state:   d.state,
		leading: d.IsLeader,
		propose: func(ctx context.Context, c state.Command) error {
			return d.writeLocal(ctx, mustEncode(c))
		},
		clock:     d.cfg.Clock,
		downAfter: d.cfg.Nodes.DownAfter,
		tick:      d.cfg.Nodes.LivenessTick,
		timeout:   d.cfg.Raft.ApplyTimeout,
		log:       d.log,
		last:      make(map[string]heartbeat),
	}
}

// beat records a heartbeat of node id (on the leader) and brings a down
// node back up.
func (l *liveness) beat(ctx context.Context, id string, load int) error {
	n, ok := l.state.Node(id)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	l.mu.Lock()
	l.last[id] = heartbeat{at: l.clock(), load: load}
	l.mu.Unlock()
	switch n.State {
	case placement.Retired.String():
		return ErrNodeRetired
	case placement.Down.String():
		l.log.Info("directory: storage node is back", "node", id)
		return l.propose(ctx, state.SetNodeState{ID: id, State: placement.Active})
	}
	return nil
}

// lastBeat returns node id's last heartbeat (the zero heartbeat if none).
func (l *liveness) lastBeat(id string) heartbeat {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last[id]
}

// limit is the current silence limit.
func (l *liveness) limit() time.Duration {
	if ms := l.state.Settings().DownAfterMS; ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return l.downAfter
}

// run runs on every voter until ctx ends and acts while it leads: an
// active or draining node whose last heartbeat is older than the silence
// limit (counted at the earliest from when this leader first saw it live)
// is marked down by a raft write. Heartbeats bring it back (beat).
func (l *liveness) run(ctx context.Context) {
	tick := time.NewTicker(l.tick)
	defer tick.Stop()
	// seen is when this voter, as leader, first saw each node live: after
	// an election, an approval or a comeback a node gets a full silence
	// limit for its first heartbeat here.
	seen := make(map[string]time.Time)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !l.leading() {
			clear(seen)
			continue
		}
		now := l.clock()
		limit := l.limit()
		for _, n := range l.state.Nodes() {
			if n.State != placement.Active.String() && n.State != placement.Draining.String() {
				delete(seen, n.ID)
				continue
			}
			first, ok := seen[n.ID]
			if !ok {
				first = now
				seen[n.ID] = now
			}
			last := l.lastBeat(n.ID).at
			if last.Before(first) {
				last = first
			}
			if now.Sub(last) <= limit {
				continue
			}
			l.log.Warn("directory: storage node silent, marking it down", "node", n.ID, "silent", now.Sub(last))
			wctx, cancel := context.WithTimeout(ctx, l.timeout)
			if err := l.propose(wctx, state.SetNodeState{ID: n.ID, State: placement.Down}); err != nil {
				l.log.Warn("directory: marking node down failed", "node", n.ID, "err", err)
			}
			cancel()
		}
	}
}
