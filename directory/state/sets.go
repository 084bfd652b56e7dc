package state

import (
	"errors"
	"fmt"
	"slices"

	"github.com/hce-sync/hce/directory/placement"
)

// Errors of the replica-set commands.
var (
	// ErrNotCurrentMember means a node reported a write it acknowledged
	// without every member's confirmation (NodeReport.Unconfirmed) for a
	// user whose set does not list it as a current member: it must not
	// acknowledge the write.
	ErrNotCurrentMember = errors.New("directory: not a current member of the user's replica set")
	// ErrNoTransfer means a StartTransfer no longer applies (the set or
	// the loads changed since it was planned, or a node is down or
	// draining).
	ErrNoTransfer = placement.ErrNoTransfer
)

// MaxReportItems bounds the items of one NodeReport (all lists together)
// and MaxLeaveItems those of one FinishLeave.
const (
	MaxReportItems = 1024
	MaxLeaveItems  = 1024
)

// NodeReport carries what a storage node's replication did for users it
// holds (dirproto.ReportRequest). Its items are applied in this order,
// each on its own: every Unconfirmed item, then every Filled item, then
// every HandedOff item; items that no longer apply (a stale epoch, a user
// no longer naming the node, a source no longer current or leaving) are
// skipped, and each applied item normalizes the user's set. The result is
// nil, or ErrNotCurrentMember naming the users of Unconfirmed items that
// were refused because Node is not a current member of their set (the
// other items are applied all the same).
type NodeReport struct {
	// Node is the reporting node's ID.
	Node string `json:"n"`
	// Unconfirmed: Node acknowledges a write of each user that the other
	// members not listed in Confirmed did not confirm: they become
	// filling (placement.MarkUnconfirmed).
	Unconfirmed []ReportUnconfirmed `json:"u,omitempty"`
	// Filled: Node, a filling member, completed a backfill of the user
	// from Source under Epoch (placement.MarkFilled).
	Filled []ReportFilled `json:"f,omitempty"`
	// HandedOff: Node, a current member, pulled everything Source, a
	// leaving node, held (placement.HandOff).
	HandedOff []ReportHandedOff `json:"h,omitempty"`
}

// ReportUnconfirmed is one item of NodeReport.Unconfirmed.
type ReportUnconfirmed struct {
	User      string   `json:"u"`
	Confirmed []string `json:"c,omitempty"`
}

// ReportFilled is one item of NodeReport.Filled.
type ReportFilled struct {
	User   string `json:"u"`
	Epoch  uint64 `json:"e"`
	Source string `json:"s"`
}

// ReportHandedOff is one item of NodeReport.HandedOff.
type ReportHandedOff struct {
	User   string `json:"u"`
	Source string `json:"s"`
}

// StartTransfer begins moving one user's membership from node From to
// node To (rebalancing, placement.StartTransfer): From's member is marked
// Leave and To joins as a filling member. It fails with ErrNoTransfer
// unless, at apply time, every node is up and none drains, the set allows
// it (placement.CanTransfer), To has room, and the move still improves the
// balance (placement.Improves, with each transfer under way counted on its
// destination only).
type StartTransfer struct {
	User string `json:"u"`
	From string `json:"from"`
	To   string `json:"to"`
}

// FinishLeave drops leaving members (of a draining node, or marked Leave
// by a transfer) whose sets are ready (placement.ReadyToLeave) into the
// sets' leaving lists; items not ready are skipped. The leader's loop
// proposes it.
type FinishLeave struct {
	Items []LeaveItem `json:"i"`
}

// LeaveItem names a member that may leave a user's set.
type LeaveItem struct {
	User string `json:"u"`
	Node string `json:"n"`
}

// Type implements Command.
func (NodeReport) Type() CommandType { return CmdNodeReport }

// Type implements Command.
func (StartTransfer) Type() CommandType { return CmdStartTransfer }

// Type implements Command.
func (FinishLeave) Type() CommandType { return CmdFinishLeave }

func (NodeReport) version() uint8    { return commandV1 }
func (StartTransfer) version() uint8 { return commandV1 }
func (FinishLeave) version() uint8   { return commandV1 }

// applySets applies a replica-set command; f.mu is held.
func (f *FSM) applySets(c Command) error {
	f.touchVersions()
	switch c := c.(type) {
	case NodeReport:
		if c.Node == "" || len(c.Unconfirmed)+len(c.Filled)+len(c.HandedOff) > MaxReportItems {
			return fmt.Errorf("%w: NodeReport without node or with too many items", ErrMalformedCommand)
		}
		if _, ok := f.cl.Nodes[c.Node]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownNode, c.Node)
		}
		var refused []string
		for _, it := range c.Unconfirmed {
			p := f.cl.Sets[it.User]
			if p == nil {
				refused = append(refused, it.User)
				continue
			}
			out, ok := placement.MarkUnconfirmed(*p, c.Node, it.Confirmed, &f.cl.EpochSeq)
			if !ok {
				refused = append(refused, it.User)
				continue
			}
			f.setReplicas(it.User, out)
			f.normalize(it.User)
		}
		for _, it := range c.Filled {
			if p := f.cl.Sets[it.User]; p != nil {
				if out, ok := placement.MarkFilled(*p, c.Node, it.Epoch, it.Source); ok {
					f.setReplicas(it.User, out)
					f.normalize(it.User)
				}
			}
		}
		for _, it := range c.HandedOff {
			if p := f.cl.Sets[it.User]; p != nil {
				if out, ok := placement.HandOff(*p, c.Node, it.Source); ok {
					f.setReplicas(it.User, out)
					f.normalize(it.User)
				}
			}
		}
		if len(refused) > 0 {
			return fmt.Errorf("%w: node %s, users %q", ErrNotCurrentMember, c.Node, refused)
		}
		return nil
	case StartTransfer:
		p := f.cl.Sets[c.User]
		if p == nil {
			return fmt.Errorf("%w: user %q has no set", ErrNoTransfer, c.User)
		}
		nodes := f.transferNodes()
		for _, n := range nodes {
			if n.State == placement.Down || n.State == placement.Draining {
				return fmt.Errorf("%w: node %s is %v", ErrNoTransfer, n.ID, n.State)
			}
		}
		if to, ok := f.cl.Nodes[c.To]; !ok || to.Load >= to.Capacity {
			return fmt.Errorf("%w: %s has no room", ErrNoTransfer, c.To)
		}
		out, err := placement.StartTransfer(*p, placement.Transfer{From: c.From, To: c.To}, nodes, f.policy(), &f.cl.EpochSeq)
		if err != nil {
			return err
		}
		f.setReplicas(c.User, out)
		f.normalize(c.User)
		return nil
	case FinishLeave:
		if len(c.Items) == 0 || len(c.Items) > MaxLeaveItems {
			return fmt.Errorf("%w: FinishLeave of %d items", ErrMalformedCommand, len(c.Items))
		}
		for _, it := range c.Items {
			f.finishLeave(it.User, it.Node)
		}
		return nil
	}
	return fmt.Errorf("%w: %v cannot be applied here", ErrMalformedCommand, c.Type())
}

// transferNodes lists the nodes with the loads rebalancing works with:
// each transfer under way counts on its destination (a member already)
// and not on its source (which leaves once the destination is current);
// f.mu is held.
func (f *FSM) transferNodes() []placement.Node {
	nodes := f.placementNodes()
	out := make(map[string]int)
	for u := range f.cl.moving {
		for _, m := range f.cl.Sets[u].Members {
			if m.Leave {
				out[m.ID]++
			}
		}
	}
	for i := range nodes {
		nodes[i].Load -= out[nodes[i].ID]
	}
	return nodes
}

// Transfers returns the number of transfers under way (users with a
// member marked Leave).
func (f *FSM) Transfers() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.cl.moving)
}

// LeavesReady returns up to limit members that may leave their sets now
// (placement.ReadyToLeave): members on draining nodes and members marked
// Leave by a transfer, by node then user. The leader proposes them as
// FinishLeave; the state machine checks each again.
func (f *FSM) LeavesReady(limit int) []LeaveItem {
	f.mu.RLock()
	defer f.mu.RUnlock()
	idx := placement.NewIndex(f.placementNodes())
	var out []LeaveItem
	var draining []string
	for id, n := range f.cl.Nodes {
		if n.State == placement.Draining {
			draining = append(draining, id)
		}
	}
	slices.Sort(draining)
	for _, id := range draining {
		for _, u := range f.usersOf(id, true) {
			if len(out) >= limit {
				return out
			}
			if idx.ReadyToLeave(*f.cl.Sets[u], id) {
				out = append(out, LeaveItem{User: u, Node: id})
			}
		}
	}
	moving := make([]string, 0, len(f.cl.moving))
	for u := range f.cl.moving {
		moving = append(moving, u)
	}
	slices.Sort(moving)
	for _, u := range moving {
		for _, m := range f.cl.Sets[u].Members {
			if len(out) >= limit {
				return out
			}
			if m.Leave && idx.ReadyToLeave(*f.cl.Sets[u], m.ID) {
				out = append(out, LeaveItem{User: u, Node: m.ID})
			}
		}
	}
	return out
}

// PlanTransfers returns up to limit transfers worth starting now
// (placement.Rebalance), at most one per source, destination and user,
// each with a user of the source whose set allows it; it looks at up to
// scan users of each source and 4*scan users in all. It returns nothing while a node is down or
// draining. The leader proposes them as StartTransfer; the state machine
// checks each again.
func (f *FSM) PlanTransfers(limit, scan int) []StartTransfer {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if limit <= 0 {
		return nil
	}
	nodes := f.transferNodes()
	idx := placement.NewIndex(nodes)
	used := make(map[string]bool) // sources, destinations and users
	budget := 4 * scan            // users looked at in all
	var out []StartTransfer
	for _, t := range placement.Rebalance(nodes, f.policy()) {
		if budget <= 0 {
			break
		}
		if used[t.From] || used[t.To] {
			continue
		}
		if to := f.cl.Nodes[t.To]; to == nil || to.Load >= to.Capacity {
			continue
		}
		us := f.cl.byNode[t.From]
		if us == nil {
			continue
		}
		for _, u := range us.after("", min(scan, budget)) {
			budget--
			if !used["user:"+u] && idx.CanTransfer(*f.cl.Sets[u], t) {
				out = append(out, StartTransfer{User: u, From: t.From, To: t.To})
				used[t.From], used[t.To], used["user:"+u] = true, true, true
				break
			}
		}
		if len(out) >= limit {
			break
		}
	}
	return out
}
