package directory

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hce-sync/hce/directory/state"
)

// maxBatchBytes bounds the encoded size of one group-commit batch entry.
const maxBatchBytes = 1 << 20

// committers is the number of group-commit loops, i.e. the number of
// batches that can be in flight in raft at once.
const committers = 2

// write proposes one command through the group commit and waits for its
// result, for ctx, or for Close. On a follower the command is forwarded to
// the leader (see propose).
func (d *Directory) write(ctx context.Context, c state.Command) error {
	if d.closed.Load() {
		return ErrClosed
	}
	enc, err := state.EncodeCommand(c)
	if err != nil {
		return err
	}
	return d.propose(ctx, enc)
}

// writeLocal proposes an encoded command on this voter (the leader), with
// no forwarding: ErrNotLeader if this voter does not lead.
func (d *Directory) writeLocal(ctx context.Context, enc []byte) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if d.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := d.gate.check(ctx, enc); err != nil {
		return err
	}
	return d.commits.propose(ctx, d.ctx.Done(), enc)
}

// mustEncode encodes a command the directory builds itself.
func mustEncode(c state.Command) []byte {
	enc, err := state.EncodeCommand(c)
	if err != nil {
		panic(err) // only called with commands that always encode
	}
	return enc
}

// proposal is one write waiting for the group commit.
type proposal struct {
	ctx  context.Context
	enc  []byte     // the encoded command
	done chan error // buffered(1): the command's result
}

// committer is the group commit: callers queue encoded commands
// (propose), and each of the loops (run) takes the first waiting
// proposal, adds whatever else is already queued (up to maxBatch commands
// and maxBatchBytes), proposes them as one raft entry, waits for it to be
// applied and hands each proposal its own result. While it waits, new
// proposals queue up and form the next batch, so under load each fsync
// carries many commands and without load a write is proposed at once.
type committer struct {
	raft     *raft.Raft
	log      *slog.Logger
	maxBatch int
	timeout  time.Duration // bounds the enqueue into raft

	queue chan *proposal
	// stopped is closed by stop, once no proposal will be answered any
	// more.
	stopped chan struct{}

	batches  atomic.Uint64 // raft entries proposed
	commands atomic.Uint64 // commands in them
	apply    prometheus.Histogram
}

func newCommitter(r *raft.Raft, cfg RaftConfig, log *slog.Logger) *committer {
	return &committer{
		raft: r, log: log, maxBatch: cfg.MaxBatch, timeout: cfg.ApplyTimeout,
		queue:   make(chan *proposal, 4*cfg.MaxBatch),
		stopped: make(chan struct{}),
		apply:   newApplyHistogram(),
	}
}

// propose queues enc and waits for its result, for ctx, or for closing
// (then ErrClosed, unless the command is already in raft: its result
// comes once stop has run).
func (c *committer) propose(ctx context.Context, closing <-chan struct{}, enc []byte) error {
	p := &proposal{ctx: ctx, enc: enc, done: make(chan error, 1)}
	select {
	case c.queue <- p:
	case <-ctx.Done():
		return ctx.Err()
	case <-closing:
		return ErrClosed
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.stopped:
		select {
		case err := <-p.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// stop answers the proposals still queued with ErrClosed and releases
// every caller still waiting. It runs once every loop has returned.
func (c *committer) stop() {
	for {
		select {
		case p := <-c.queue:
			p.done <- ErrClosed
		default:
			close(c.stopped)
			return
		}
	}
}

// run is one group-commit loop; it returns when ctx ends, after
// answering the batch it has in raft.
func (c *committer) run(ctx context.Context) {
	batch := make([]*proposal, 0, c.maxBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-c.queue:
			batch = append(batch, p)
		case <-ctx.Done():
			return
		}
		size := len(batch[0].enc)
	fill:
		for len(batch) < c.maxBatch && size < maxBatchBytes {
			select {
			case p := <-c.queue:
				batch = append(batch, p)
				size += len(p.enc) + binary.MaxVarintLen32
			default:
				break fill
			}
		}
		live := batch[:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil {
				p.done <- err
				continue
			}
			live = append(live, p)
		}
		if len(live) > 0 {
			c.commit(live)
		}
		clear(batch[:cap(batch)])
	}
}

// commit proposes ps as one raft entry and answers each.
func (c *committer) commit(ps []*proposal) {
	data := ps[0].enc
	if len(ps) > 1 {
		encs := make([][]byte, len(ps))
		for i, p := range ps {
			encs[i] = p.enc
		}
		data = state.EncodeBatch(encs)
	}
	c.batches.Add(1)
	c.commands.Add(uint64(len(ps)))
	begin := time.Now()
	f := c.raft.Apply(data, c.timeout)
	answer := func(err error) {
		for _, p := range ps {
			p.done <- err
		}
	}
	if err := f.Error(); err != nil {
		answer(mapRaftErr(err))
		return
	}
	c.apply.Observe(time.Since(begin).Seconds())
	resp := f.Response()
	if len(ps) == 1 {
		err, _ := resp.(error)
		ps[0].done <- err
		return
	}
	switch r := resp.(type) {
	case []error:
		if len(r) == len(ps) {
			for i, p := range ps {
				p.done <- r[i]
			}
			return
		}
		err := fmt.Errorf("directory: batch of %d got %d results", len(ps), len(r))
		c.log.Error("directory: internal error", "err", err)
		answer(err)
	case error:
		answer(r)
	default:
		answer(fmt.Errorf("directory: unexpected apply response %T", resp))
	}
}
