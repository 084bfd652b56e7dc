package directory

import (
	"context"
	"errors"
	"time"

	"github.com/hce-sync/hce/directory/state"
)

// transferScan bounds how many users of a source node the rebalancer
// looks at for one transfer.
const transferScan = 512

// placementLoop runs on every voter until ctx ends and acts while it
// leads. After every change of replica sets (woken by the SetsChanged
// hook) and every Nodes.PlacementTick it commits, in FinishLeave entries
// of up to state.MaxLeaveItems, the members that may leave their sets:
// members on draining nodes and transfer sources whose sets' other
// members are current (state.LeavesReady). Every tick, while every node
// is up and none drains, it starts rebalancing transfers
// (state.PlanTransfers): at most one per source, destination and user per
// tick, and at most Nodes.MaxTransfers under way at once.
func (d *Directory) placementLoop(ctx context.Context) {
	tick := time.NewTicker(d.cfg.Nodes.PlacementTick)
	defer tick.Stop()
	for {
		rebalance := false
		select {
		case <-ctx.Done():
			return
		case <-d.placed:
		case <-tick.C:
			rebalance = true
		}
		if !d.IsLeader() {
			continue
		}
		if items := d.state.LeavesReady(state.MaxLeaveItems); len(items) > 0 {
			err := d.placementWrite(ctx, state.FinishLeave{Items: items})
			d.log.Info("directory: members left their sets", "members", len(items), "first_user", items[0].User,
				"first_node", items[0].Node, "err", err)
		}
		max := d.cfg.Nodes.MaxTransfers
		if !rebalance || max < 0 {
			continue
		}
		for _, st := range d.state.PlanTransfers(max-d.state.Transfers(), transferScan) {
			err := d.placementWrite(ctx, st)
			switch {
			case err == nil:
				d.log.Info("directory: rebalancing: transfer started", "user", st.User, "from", st.From, "to", st.To)
			case errors.Is(err, ErrNoTransfer):
				d.log.Debug("directory: rebalancing: transfer no longer applies", "user", st.User, "err", err)
			default:
				d.log.Warn("directory: rebalancing: transfer failed", "user", st.User, "err", err)
			}
		}
	}
}

// placementWrite commits c on this voter (the leader), bounded by the
// apply timeout.
func (d *Directory) placementWrite(ctx context.Context, c state.Command) error {
	wctx, cancel := context.WithTimeout(ctx, d.cfg.Raft.ApplyTimeout)
	defer cancel()
	return d.writeLocal(wctx, mustEncode(c))
}
