package state

import (
	"errors"
	"fmt"
	"slices"

	"github.com/hce-sync/hce/directory/placement"
)

// The lifecycle commands (types 50 to 59): voters leaving the cluster,
// storage nodes restored from a backup, drains undone and retirements
// that wait for the node's data to be elsewhere. A voter that does not
// know them must never see them: the leader proposes them only once
// every voter said it decodes them (the directory's feature gate,
// Understands).
const (
	CmdRemoveVoter   CommandType = 50
	CmdMarkRestored  CommandType = 51
	CmdUndrainNode   CommandType = 52
	CmdRetireDrained CommandType = 53
)

// ErrNodeNotDrained means a RetireDrained found the node still named by
// some replica set, as a member or in a leaving list: its data is not
// yet fully elsewhere.
var ErrNodeNotDrained = errors.New("directory: storage node still holds users (drain not finished or handoffs owed)")

// RemoveVoter forgets a voter's record (SetVoter) once raft removed it
// from the configuration: storage nodes stop dialling it and their
// gaters stop admitting it. A voter without a record is a no-op.
type RemoveVoter struct {
	ID string `json:"id"`
}

// MarkRestored records that storage node Node was restored from a
// backup: it may lack writes acknowledged after the backup was taken. In
// every set where it is a current member beside another current member
// it becomes filling under a fresh epoch (so it serves nobody and is
// primary nowhere until it has backfilled from a current member, and no
// other member backfills from it as a source). Where it is the only
// current member it stays current and the loss is logged at ERROR:
// writes acknowledged after the backup are gone.
type MarkRestored struct {
	Node string `json:"n"`
}

// UndrainNode ends the drain of a Draining node: it becomes Active
// again, and in each of its sets the filling members beyond R serving
// members (the drain's replacements that have not backfilled yet) leave
// the set into its leaving list, which a handoff then clears. Users that
// already left the node stay where they went. The node must be Draining
// (ErrBadNodeState otherwise).
type UndrainNode struct {
	ID string `json:"id"`
}

// RetireDrained retires a node only if no replica set names it, as a
// member or in a leaving list, so that every user it held is on other
// current members and every handoff it owed is done; otherwise it fails
// with ErrNodeNotDrained and changes nothing. RetireNode stays the
// forced path (a dead node; losses accepted).
type RetireDrained struct {
	ID string `json:"id"`
}

// Type implements Command.
func (RemoveVoter) Type() CommandType { return CmdRemoveVoter }

// Type implements Command.
func (MarkRestored) Type() CommandType { return CmdMarkRestored }

// Type implements Command.
func (UndrainNode) Type() CommandType { return CmdUndrainNode }

// Type implements Command.
func (RetireDrained) Type() CommandType { return CmdRetireDrained }

func (RemoveVoter) version() uint8   { return commandV1 }
func (MarkRestored) version() uint8  { return commandV1 }
func (UndrainNode) version() uint8   { return commandV1 }
func (RetireDrained) version() uint8 { return commandV1 }

func init() {
	codecs[CmdRemoveVoter] = v1[RemoveVoter]("RemoveVoter")
	codecs[CmdMarkRestored] = v1[MarkRestored]("MarkRestored")
	codecs[CmdUndrainNode] = v1[UndrainNode]("UndrainNode")
	codecs[CmdRetireDrained] = v1[RetireDrained]("RetireDrained")
}

// applyLifecycle applies a lifecycle command; f.mu is held.
func (f *FSM) applyLifecycle(c Command) error {
	switch c := c.(type) {
	case RemoveVoter:
		if c.ID == "" {
			return fmt.Errorf("%w: RemoveVoter without id", ErrMalformedCommand)
		}
		delete(f.cl.Voters, c.ID)
		return nil
	case MarkRestored:
		return f.markRestored(c.Node)
	case UndrainNode:
		return f.undrain(c.ID)
	case RetireDrained:
		n, err := f.liveNode(c.ID)
		if err != nil {
			return err
		}
		if us := f.cl.byNode[c.ID]; us != nil && us.len() > 0 {
			return fmt.Errorf("%w: %s is named by %d sets (%d as a member)", ErrNodeNotDrained, c.ID, us.len(), n.Load)
		}
		f.touchVersions()
		f.setNode(n, func(n *nodeRecord) { n.State = placement.Retired })
		f.cl.floor = f.index
		return nil
	}
	return fmt.Errorf("%w: %v cannot be applied here", ErrMalformedCommand, c.Type())
}

// markRestored applies MarkRestored; f.mu is held.
func (f *FSM) markRestored(id string) error {
	if _, err := f.liveNode(id); err != nil {
		return err
	}
	f.touchVersions()
	var alone []string
	for _, u := range f.usersOf(id, true) {
		s := *f.cl.Sets[u]
		i := s.Find(id)
		if i < 0 {
			continue
		}
		other := slices.ContainsFunc(s.Members, func(m placement.Member) bool { return m.ID != id && !m.Filling })
		if !other {
			if !s.Members[i].Filling {
				alone = append(alone, u)
			}
			continue
		}
		out := s.Clone()
		out.Members[i].Filling, out.Members[i].Epoch = true, nextEpoch(&f.cl.EpochSeq)
		f.setReplicas(u, out)
		f.normalize(u)
	}
	if len(alone) > 0 {
		f.log.Error("directory: a storage node restored from a backup held the only current copy of some users; "+
			"their writes acknowledged after the backup are lost", "node", id, "users", len(alone),
			"first", alone[:min(len(alone), 5)], "index", f.index)
	}
	return nil
}

// nextEpoch draws the next epoch from seq, as placement does.
func nextEpoch(seq *uint64) uint64 {
	*seq++
	return *seq
}

// undrain applies UndrainNode; f.mu is held.
func (f *FSM) undrain(id string) error {
	n, err := f.liveNode(id)
	if err != nil {
		return err
	}
	if n.State != placement.Draining {
		return fmt.Errorf("%w: undrain a %v node", ErrBadNodeState, n.State)
	}
	f.setNode(n, func(n *nodeRecord) { n.State = placement.Active })
	f.cl.floor = f.index
	r := f.cl.Settings.Replicas
	for _, u := range f.usersOf(id, true) {
		s := *f.cl.Sets[u]
		serving := 0
		for _, m := range s.Members {
			if nr, ok := f.cl.Nodes[m.ID]; ok && nr.State == placement.Active && !m.Leave {
				serving++
			}
		}
		if serving <= r {
			continue
		}
		out := s.Clone()
		// The drain appended its replacements: trim the last filling
		// members first, never the undrained node.
		for j := len(out.Members) - 1; j >= 0 && serving > r; j-- {
			m := out.Members[j]
			if m.ID == id || !m.Filling || m.Leave {
				continue
			}
			if nr, ok := f.cl.Nodes[m.ID]; !ok || nr.State != placement.Active {
				continue
			}
			out.Members = slices.Delete(out.Members, j, j+1)
			out.Leaving = append(out.Leaving, m.ID)
			serving--
		}
		f.setReplicas(u, out)
		f.normalize(u)
	}
	f.normalizeShort()
	return nil
}

// Understands reports whether this build decodes commands of type t in
// body version v.
func Understands(t CommandType, v uint8) bool {
	if t == CmdBatch {
		return v == commandV1
	}
	_, ok := codecs[t].decode[v]
	return ok
}

// Known lists, for every command type this build decodes, the body
// versions it decodes (sorted): what a voter reports to the leader's
// feature gate.
func Known() map[CommandType][]uint8 {
	out := map[CommandType][]uint8{CmdBatch: {commandV1}}
	for t, c := range codecs {
		for v := range c.decode {
			out[t] = append(out[t], v)
		}
		slices.Sort(out[t])
	}
	return out
}

// baseline is what every build decodes, including those that predate
// the feature gate and cannot report what they know (the commands of
// snapshot format 4): the leader may propose these to any voter.
var baseline = map[CommandType][]uint8{
	CmdCreateUser: {1, 2}, CmdDeleteUser: {1, 2}, CmdSetPassword: {1, 2}, CmdSetEmail: {1},
	CmdSetResetCode: {1, 2}, CmdClearResetCode: {1}, CmdResetPassword: {1}, CmdBatch: {1},
	CmdCreateInvite: {1},
	CmdRegisterNode: {1}, CmdApproveNode: {1}, CmdSetNodeState: {1}, CmdRetireNode: {1},
	CmdSetSettings: {1, 2}, CmdFinishDrain: {1}, CmdSetVoter: {1, 2}, CmdNodeReport: {1},
	CmdStartTransfer: {1}, CmdFinishLeave: {1},
	CmdPublishKey: {1}, CmdRetireKey: {1},
}

// Baseline reports whether (t, v) is decoded by every build, those
// before the feature gate included.
func Baseline(t CommandType, v uint8) bool { return slices.Contains(baseline[t], v) }
