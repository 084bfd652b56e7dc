package directory

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// suspicionWarnEvery bounds the "hearing from too few nodes" warnings.
const suspicionWarnEvery = 30 * time.Second

// pathHeartbeat is the voter-to-voter endpoint a follower passes a node's
// heartbeat on to the leader with.
const pathHeartbeat = "/internal/v1/heartbeat"

// forwardedHeartbeat is the body of POST /internal/v1/heartbeat.
type forwardedHeartbeat struct {
	Node      string                    `json:"node"`
	Heartbeat dirproto.HeartbeatRequest `json:"heartbeat"`
}

// Heartbeat records that storage node nodeID is alive, with what it
// reports (load, writes acknowledged without every replica's
// confirmation, handoff backlog). Any voter takes it: the leader records
// it (and commits a down node back up); a follower records it for its own
// admin view and passes it on to the leader over the voters' internal
// HTTP endpoint. When no leader is known or the leader cannot be reached,
// it fails with ErrNotLeader (over libp2p: dirproto.CodeNotLeader with
// the leader's peer ID, when known, as the message, which the node dials
// next). ErrUnknownNode, ErrNodeRetired.
func (d *Directory) Heartbeat(ctx context.Context, nodeID string, r dirproto.HeartbeatRequest) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if d.IsLeader() {
		return d.beats.beat(ctx, nodeID, r)
	}
	if _, ok := d.state.Node(nodeID); ok {
		d.beats.record(nodeID, r)
	}
	t, ok := d.leaderTarget()
	if !ok {
		return ErrNotLeader
	}
	body, _ := json.Marshal(forwardedHeartbeat{Node: nodeID, Heartbeat: r})
	resp, err := d.internalPost(ctx, t.url+pathHeartbeat, "application/json", body, true)
	if err != nil {
		if ctx.Err() == nil {
			d.markStale(t, err)
		}
		return fmt.Errorf("%w: passing the heartbeat on to %s: %w", ErrNotLeader, t.id, err)
	}
	return decodeWireResult(resp)
}

// heartbeat is the last heartbeat of a node this voter saw.
type heartbeat struct {
	at  time.Time // this voter's clock when it arrived
	req dirproto.HeartbeatRequest
}

// liveness is the leader's watch over the storage nodes. It records their
// heartbeats in memory only and, while this voter leads, commits the
// changes of state they imply: a silent active or draining node goes
// down (run), a down node that heartbeats comes back up (beat).
type liveness struct {
	state   *state.FSM
	leading func() bool
	// term returns the current raft term: a change means a new
	// leadership, which gives every node a full silence limit again.
	term func() uint64
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

	// refrained counts the ticks in which the leader suspected itself and
	// marked nobody down.
	refrained atomic.Uint64
}

func newLiveness(d *Directory) *liveness {
	return &liveness{
		state:   d.state,
		leading: d.IsLeader,
		term:    d.raft.CurrentTerm,
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

// record stores a heartbeat of node id.
func (l *liveness) record(id string, r dirproto.HeartbeatRequest) {
	l.mu.Lock()
	l.last[id] = heartbeat{at: l.clock(), req: r}
	l.mu.Unlock()
}

// beat records a heartbeat of node id (on the leader) and brings a down
// node back up.
func (l *liveness) beat(ctx context.Context, id string, r dirproto.HeartbeatRequest) error {
	n, ok := l.state.Node(id)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	if n.State == placement.Retired.String() {
		return ErrNodeRetired
	}
	l.record(id, r)
	if n.State == placement.Down.String() {
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

// beats returns a copy of every recorded heartbeat.
func (l *liveness) beats() map[string]heartbeat {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.last)
}

// limit is the current silence limit.
func (l *liveness) limit() time.Duration {
	if ms := l.state.Settings().DownAfterMS; ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return l.downAfter
}

// run runs on every voter until ctx ends and acts while it leads, every
// tick: an active or draining node whose last heartbeat is older than the
// silence limit, counted at the earliest from when this voter's current
// leadership began (a new leader, or one re-elected, gives every node a
// full limit), is marked down by a raft write. Heartbeats bring it back
// (beat).
//
// Self-suspicion: in one tick the leader marks nodes down only if it
// heard, within the limit, from at least as many active or draining nodes
// as it would mark down, and from at least one; otherwise the silence is
// more likely its own (its libp2p host cut off, the followers not passing
// heartbeats on), so it marks nobody and warns (at most every 30 s).
func (l *liveness) run(ctx context.Context) {
	tick := time.NewTicker(l.tick)
	defer tick.Stop()
	var (
		term     uint64
		since    time.Time
		lastWarn time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !l.leading() {
			term = 0
			continue
		}
		now := l.clock()
		if t := l.term(); t != term {
			term, since = t, now
		}
		limit := l.limit()
		var silent []string
		heard := 0
		for _, n := range l.state.Nodes() {
			if n.State != placement.Active.String() && n.State != placement.Draining.String() {
				continue
			}
			last := l.lastBeat(n.ID).at
			if !last.IsZero() && now.Sub(last) <= limit {
				heard++
			}
			if last.Before(since) {
				last = since
			}
			if now.Sub(last) > limit {
				silent = append(silent, n.ID)
			}
		}
		if len(silent) == 0 {
			continue
		}
		if heard == 0 || heard < len(silent) {
			l.refrained.Add(1)
			if now.Sub(lastWarn) >= suspicionWarnEvery {
				lastWarn = now
				l.log.Warn("directory: hearing from too few storage nodes; marking none down (the silence may be this leader's)",
					"heard", heard, "silent", len(silent), "limit", limit)
			}
			continue
		}
		for _, id := range silent {
			l.log.Warn("directory: storage node silent, marking it down", "node", id, "limit", limit)
			wctx, cancel := context.WithTimeout(ctx, l.timeout)
			if err := l.propose(wctx, state.SetNodeState{ID: id, State: placement.Down}); err != nil {
				l.log.Warn("directory: marking node down failed", "node", id, "err", err)
			}
			cancel()
		}
	}
}
