package testnet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrStillRunning means Resume found a member of the testnet running:
// the testnet was not stopped (attach to it instead).
var ErrStillRunning = errors.New("testnet: still running")

// Resume starts again, as child processes of binary, every voter and
// node of the stopped testnet whose manifest is in dir, with their data
// folders, ports and admin token (neither bootstrap nor join: they come
// back with their state), and returns once it is healthy, as Start does.
// The returned Testnet owns the members (Close stops them). It fails with
// ErrStillRunning if any member still runs.
func Resume(ctx context.Context, dir, binary string) (_ *Testnet, err error) {
	t, err := Attach(dir)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	all := append(append([]*member{}, t.voters...), t.nodes...)
	for _, m := range all {
		if m.running() {
			t.mu.Unlock()
			return nil, fmt.Errorf("%w: %s (pid %d) in %s; use hce testnet status, or stop it first", ErrStillRunning, m.name, m.pid, dir)
		}
		m.pid = 0
	}
	t.mu.Unlock()
	t.owner = true
	if binary != "" {
		t.cfg.Binary = binary
	}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	begin := time.Now()
	// Voters first, together (each needs the others for a quorum, but a
	// restarted voter serves before it has one), then the nodes.
	for _, group := range [][]*member{t.voters, t.nodes} {
		errs := make([]error, len(group))
		var wg sync.WaitGroup
		for i, m := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = t.start(ctx, m, false)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	if err := t.WaitHealthy(ctx); err != nil {
		return nil, err
	}
	t.log.Info("testnet resumed", "voters", len(t.voters), "nodes", len(t.nodes), "took", time.Since(begin))
	if err := t.updateManifest(nil); err != nil {
		return nil, err
	}
	return t, nil
}
