package state

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/placement"
)

// Errors of the cluster commands.
var (
	// ErrUnknownNode means no storage node has that ID.
	ErrUnknownNode = errors.New("directory: unknown storage node")
	// ErrNodeRetired means the node is retired; retired is final.
	ErrNodeRetired = errors.New("directory: storage node is retired")
	// ErrBadNodeState means the state change is not allowed.
	ErrBadNodeState = errors.New("directory: storage node state change not allowed")
)

// RegisterNode records a storage node (or updates the addresses, operator
// and capacity of a known one, keeping its state). The proposer has
// verified the registration's signature. A new node starts Pending; a
// Pending one becomes Active when Approve is set or the AutoApprove
// setting is on. Re-registering a retired node fails with ErrNodeRetired.
type RegisterNode struct {
	ID        string   `json:"id"`
	Operator  string   `json:"op"`
	BaseURL   string   `json:"url"`
	P2PAddrs  []string `json:"p2p,omitempty"`
	Capacity  int      `json:"cap"`
	PublicKey []byte   `json:"pk"`
	Approve   bool     `json:"ap,omitempty"`
}

// ApproveNode makes a Pending node Active (a no-op for an Active one).
type ApproveNode struct {
	ID string `json:"id"`
}

// SetNodeState moves a node to Active (back up from Down), Down or
// Draining, then normalizes the sets it concerns (placement.Normalize):
// Down drops the node from every set that has another current alive
// member (into the leaving list) and adds filling replacements, and leaves
// the others waiting for it; Draining adds filling replacements to every
// set of the node, which stays a member until they are current (the
// leader's loop then commits FinishLeave); Active tops up short sets.
type SetNodeState struct {
	ID    string          `json:"id"`
	State placement.State `json:"st"`
}

// RetireNode retires a node for good: it leaves every set and leaving
// list. A set whose only current members it held has its filling members
// made current (logged at ERROR: acknowledged writes may be lost).
type RetireNode struct {
	ID string `json:"id"`
}

// FinishDrain drops the (draining) node from every set whose
// replacements are current, as FinishLeave does for each. It is no longer
// proposed (the leader's loop commits FinishLeave per user) but stays
// decodable for older logs.
type FinishDrain struct {
	ID string `json:"id"`
}

// SetSettings replaces the cluster settings. Zero fields take defaults.
// Version 2 carries the capacity limits (Settings.MaxNodeCapacity,
// MaxOperatorCapacity); settings without them are written as version 1.
type SetSettings struct {
	Settings Settings `json:"s"`
}

// setSettingsV1 is the version 1 body of SetSettings.
type setSettingsV1 struct {
	Settings struct {
		Replicas    int   `json:"replicas"`
		AutoApprove bool  `json:"auto_approve"`
		DownAfterMS int64 `json:"down_after_ms,omitempty"`
	} `json:"s"`
}

func decodeSetSettingsV1(body []byte) (Command, error) {
	o, err := decodeStrict[setSettingsV1](CmdSetSettings, body)
	if err != nil {
		return nil, err
	}
	s := o.Settings
	return SetSettings{Settings: Settings{Replicas: s.Replicas, AutoApprove: s.AutoApprove, DownAfterMS: s.DownAfterMS}}, nil
}

// SetVoter records a voter's HTTP URL and raft address (forwarding and
// the admin status use it) and, from body version 2 on, its libp2p peer
// ID and addresses (storage nodes reach the directory there). A SetVoter
// without PeerID is encoded as version 1, which older voters read; on
// apply it keeps the peer ID and addresses already recorded.
type SetVoter struct {
	ID       string   `json:"id"`
	HTTPURL  string   `json:"url"`
	RaftAddr string   `json:"raft"`
	PeerID   string   `json:"peer,omitempty"`
	P2PAddrs []string `json:"p2p,omitempty"`
}

// setVoterV1 is the version 1 body of SetVoter.
type setVoterV1 struct {
	ID       string `json:"id"`
	HTTPURL  string `json:"url"`
	RaftAddr string `json:"raft"`
}

// Type implements Command.
func (setVoterV1) Type() CommandType { return CmdSetVoter }
func (setVoterV1) version() uint8    { return commandV1 }

// setVoterV2 is the body version of SetVoter carrying libp2p fields.
const setVoterV2 = 2

// Type implements Command.
func (RegisterNode) Type() CommandType { return CmdRegisterNode }

// Type implements Command.
func (ApproveNode) Type() CommandType { return CmdApproveNode }

// Type implements Command.
func (SetNodeState) Type() CommandType { return CmdSetNodeState }

// Type implements Command.
func (RetireNode) Type() CommandType { return CmdRetireNode }

// Type implements Command.
func (FinishDrain) Type() CommandType { return CmdFinishDrain }

// Type implements Command.
func (SetSettings) Type() CommandType { return CmdSetSettings }

// Type implements Command.
func (SetVoter) Type() CommandType { return CmdSetVoter }

func (RegisterNode) version() uint8 { return commandV1 }
func (ApproveNode) version() uint8  { return commandV1 }
func (SetNodeState) version() uint8 { return commandV1 }
func (RetireNode) version() uint8   { return commandV1 }
func (FinishDrain) version() uint8  { return commandV1 }
func (c SetSettings) version() uint8 {
	if c.Settings.MaxNodeCapacity != 0 || c.Settings.MaxOperatorCapacity != 0 {
		return commandV2
	}
	return commandV1
}
func (c SetVoter) version() uint8 {
	if c.PeerID != "" || len(c.P2PAddrs) > 0 {
		return setVoterV2
	}
	return commandV1
}

// decodeSetVoterV1 decodes a version 1 SetVoter body (no libp2p fields).
func decodeSetVoterV1(body []byte) (Command, error) {
	c, err := decodeJSON[setVoterV1](body)
	if err != nil {
		return nil, err
	}
	o := c.(setVoterV1)
	return SetVoter{ID: o.ID, HTTPURL: o.HTTPURL, RaftAddr: o.RaftAddr}, nil
}

// Settings are the cluster-wide settings kept in the FSM.
type Settings struct {
	// Replicas is R, the size of every user's replica set. Default 2.
	Replicas int `json:"replicas"`
	// AutoApprove makes newly registered nodes Active at once.
	AutoApprove bool `json:"auto_approve"`
	// DownAfterMS, when positive, overrides the directory's configured
	// silence limit (directory.NodeConfig.DownAfter), in milliseconds.
	DownAfterMS int64 `json:"down_after_ms,omitempty"`
	// MaxNodeCapacity, when positive, caps the capacity a node declares:
	// placement counts min(declared, MaxNodeCapacity). Zero: no cap.
	MaxNodeCapacity int `json:"max_node_capacity,omitempty"`
	// MaxOperatorCapacity, when positive, caps the summed capacity of
	// one operator's nodes (active, draining or down): when their capped
	// capacities add up to more, each is scaled down in proportion
	// (rounded down). Zero: no cap.
	MaxOperatorCapacity int `json:"max_operator_capacity,omitempty"`
}

// DefaultReplicas is the default of Settings.Replicas.
const DefaultReplicas = 2

func (s Settings) withDefaults() Settings {
	if s.Replicas <= 0 {
		s.Replicas = DefaultReplicas
	}
	return s
}

// nodeRecord is one storage node in the FSM. Records are replaced, never
// modified in place, except Load, which Snapshot copies under the lock.
type nodeRecord struct {
	ID        string          `json:"id"`
	Operator  string          `json:"operator"`
	BaseURL   string          `json:"url"`
	P2PAddrs  []string        `json:"p2p,omitempty"`
	Capacity  int             `json:"capacity"`
	State     placement.State `json:"state"`
	Added     uint64          `json:"added"`
	PublicKey []byte          `json:"pk"`
	Load      int             `json:"load"`
	// HawkKey is the node's X25519 public key for Sync 1.5 (the Hawk
	// keys of its users' credentials are sealed to it; SetNodeHawkKey),
	// nil until the node published one. Snapshot version 5.
	HawkKey []byte `json:"hk,omitempty"`
}

// VoterInfo is a directory voter as recorded by SetVoter.
type VoterInfo struct {
	ID       string   `json:"id"`
	HTTPURL  string   `json:"url"`
	RaftAddr string   `json:"raft"`
	PeerID   string   `json:"peer,omitempty"`
	P2PAddrs []string `json:"p2p,omitempty"`
}

// clusterState is the cluster part of the FSM; guarded by FSM.mu.
type clusterState struct {
	Nodes map[string]*nodeRecord `json:"nodes"`
	// Sets holds each user's replica set (members and leaving nodes).
	// Sets are never modified in place (a change stores a new one), so a
	// snapshot shares them.
	Sets     map[string]*placement.Set `json:"sets"`
	Settings Settings                  `json:"settings"`
	Voters   map[string]VoterInfo      `json:"voters"`
	// EpochSeq is the last epoch given to a member that became filling
	// (placement.Member.Epoch): epochs never repeat.
	EpochSeq uint64 `json:"epoch_seq,omitempty"`

	// The fields below are derived from Sets and never persisted
	// (encoding/json skips unexported fields): validate rebuilds them on
	// restore and setReplicas keeps them current.
	//
	// byNode lists, per node, the users naming it (as a member or as a
	// leaving node) in order, so that a page of a node's users costs
	// O(log n + page).
	byNode map[string]*userSet
	// moving holds the users with a transfer under way (a member marked
	// Leave).
	moving map[string]struct{}
	// changed is, per node, the raft index of the last change to its
	// list (a user added or removed, or the set of one of its users
	// changed). floor is the raft index of the last change to every list
	// at once (a node's address or liveness changed, or the first cluster
	// change after a restore). versionsUnknown is set by a restore until
	// the next cluster change, because the snapshot does not say at which
	// index the lists last changed.
	changed         map[string]uint64
	floor           uint64
	versionsUnknown bool
}

// clusterStateV2 is the cluster object of snapshot version 2: replica
// sets as lists of node IDs, every member current.
type clusterStateV2 struct {
	Nodes    map[string]*nodeRecord `json:"nodes"`
	Assign   map[string][]string    `json:"assign"`
	Settings Settings               `json:"settings"`
	Voters   map[string]VoterInfo   `json:"voters"`
}

// upgrade converts a version 2 cluster object.
func (v clusterStateV2) upgrade() clusterState {
	c := clusterState{Nodes: v.Nodes, Settings: v.Settings, Voters: v.Voters,
		Sets: make(map[string]*placement.Set, len(v.Assign))}
	for u, ids := range v.Assign {
		s := placement.NewSet(ids)
		c.Sets[u] = &s
	}
	return c
}

func newClusterState() clusterState {
	return clusterState{
		Nodes:    make(map[string]*nodeRecord),
		Sets:     make(map[string]*placement.Set),
		Settings: Settings{}.withDefaults(),
		Voters:   make(map[string]VoterInfo),
		byNode:   make(map[string]*userSet),
		moving:   make(map[string]struct{}),
		changed:  make(map[string]uint64),
	}
}

// clone copies the maps and node records (sets are never modified in
// place, so they are shared). The clone is for encoding a snapshot: it
// has none of the derived fields.
func (c *clusterState) clone() clusterState {
	out := clusterState{
		Nodes:    make(map[string]*nodeRecord, len(c.Nodes)),
		Sets:     maps.Clone(c.Sets),
		Settings: c.Settings,
		Voters:   maps.Clone(c.Voters),
		EpochSeq: c.EpochSeq,
	}
	for id, n := range c.Nodes {
		cp := *n
		out.Nodes[id] = &cp
	}
	return out
}

// validate checks a restored cluster state and rebuilds the derived
// fields and the loads.
func (c *clusterState) validate() error {
	if c.Nodes == nil {
		c.Nodes = make(map[string]*nodeRecord)
	}
	if c.Sets == nil {
		c.Sets = make(map[string]*placement.Set)
	}
	if c.Voters == nil {
		c.Voters = make(map[string]VoterInfo)
	}
	c.Settings = c.Settings.withDefaults()
	for id, n := range c.Nodes {
		if n == nil || n.ID != id {
			return fmt.Errorf("directory: snapshot node %q malformed", id)
		}
		n.Load = 0
	}
	byNode := make(map[string][]string)
	c.moving = make(map[string]struct{})
	for u, s := range c.Sets {
		if s == nil || (len(s.Members) == 0 && len(s.Leaving) == 0) {
			return fmt.Errorf("directory: snapshot set of %q is empty", u)
		}
		seen := make(map[string]bool)
		for _, id := range append(s.IDs(), s.Leaving...) {
			n, ok := c.Nodes[id]
			if !ok {
				return fmt.Errorf("directory: snapshot assigns %q to unknown node %q", u, id)
			}
			if seen[id] {
				return fmt.Errorf("directory: snapshot set of %q names %q twice", u, id)
			}
			seen[id] = true
			if s.Find(id) >= 0 {
				n.Load++
			}
			byNode[id] = append(byNode[id], u)
		}
		for _, m := range s.Members {
			c.EpochSeq = max(c.EpochSeq, m.Epoch)
			if m.Leave {
				c.moving[u] = struct{}{}
			}
		}
	}
	c.byNode = make(map[string]*userSet, len(byNode))
	for id, users := range byNode {
		slices.Sort(users)
		c.byNode[id] = newUserSet(users)
	}
	c.changed = make(map[string]uint64)
	c.floor, c.versionsUnknown = 0, true
	return nil
}

// touchVersions ends the unknown-versions state a restore leaves: f.mu
// is held and a cluster change is being applied at f.index, which is
// later than every change the restored snapshot holds.
func (f *FSM) touchVersions() {
	if f.cl.versionsUnknown {
		f.cl.floor, f.cl.versionsUnknown = f.index, false
	}
}

// applyCluster applies a cluster command; f.mu is held, f.index is the
// entry's raft index.
func (f *FSM) applyCluster(c Command) error {
	cl := &f.cl
	f.touchVersions()
	switch c := c.(type) {
	case RegisterNode:
		if c.ID == "" || c.BaseURL == "" || len(c.PublicKey) == 0 {
			return fmt.Errorf("%w: RegisterNode without id, url or key", ErrMalformedCommand)
		}
		url := c.BaseURL
		if !strings.HasSuffix(url, "/") {
			url += "/"
		}
		n := &nodeRecord{
			ID: c.ID, Operator: c.Operator, BaseURL: url, P2PAddrs: slices.Clone(c.P2PAddrs),
			Capacity: c.Capacity, PublicKey: c.PublicKey, State: placement.Pending,
		}
		if old, ok := cl.Nodes[c.ID]; ok {
			if old.State == placement.Retired {
				return ErrNodeRetired
			}
			n.State, n.Added, n.Load, n.HawkKey = old.State, old.Added, old.Load, old.HawkKey
			if (old.BaseURL != n.BaseURL || !bytes.Equal(old.PublicKey, n.PublicKey)) && cl.byNode[c.ID] != nil {
				// Its address is part of the entries of other nodes'
				// lists.
				cl.floor = f.index
			}
		}
		cl.Nodes[c.ID] = n
		if n.State == placement.Pending && (c.Approve || cl.Settings.AutoApprove) {
			n.State, n.Added = placement.Active, f.index
			f.normalizeShort()
		}
		return nil
	case ApproveNode:
		n, err := f.liveNode(c.ID)
		if err != nil {
			return err
		}
		switch n.State {
		case placement.Active:
			return nil
		case placement.Pending:
		default:
			return fmt.Errorf("%w: approve a %v node", ErrBadNodeState, n.State)
		}
		f.setNode(n, func(n *nodeRecord) { n.State, n.Added = placement.Active, f.index })
		f.normalizeShort()
		return nil
	case SetNodeState:
		return f.setNodeState(c)
	case FinishDrain:
		n, err := f.liveNode(c.ID)
		if err != nil {
			return err
		}
		if n.State != placement.Draining {
			return fmt.Errorf("%w: finish drain of a %v node", ErrBadNodeState, n.State)
		}
		for _, u := range f.usersOf(c.ID, true) {
			f.finishLeave(u, c.ID)
		}
		return nil
	case RetireNode:
		n, err := f.liveNode(c.ID)
		if err != nil {
			return err
		}
		f.setNode(n, func(n *nodeRecord) { n.State = placement.Retired })
		cl.floor = f.index
		for _, u := range f.usersOf(c.ID, false) {
			f.normalize(u)
		}
		return nil
	case SetSettings:
		if c.Settings.MaxNodeCapacity < 0 || c.Settings.MaxOperatorCapacity < 0 {
			return fmt.Errorf("%w: negative capacity limit", ErrMalformedCommand)
		}
		cl.Settings = c.Settings.withDefaults()
		f.normalizeShort()
		return nil
	case SetVoter:
		if c.ID == "" {
			return fmt.Errorf("%w: SetVoter without id", ErrMalformedCommand)
		}
		v := VoterInfo{ID: c.ID, HTTPURL: c.HTTPURL, RaftAddr: c.RaftAddr,
			PeerID: c.PeerID, P2PAddrs: slices.Clone(c.P2PAddrs)}
		if c.PeerID == "" {
			old := cl.Voters[c.ID]
			v.PeerID, v.P2PAddrs = old.PeerID, old.P2PAddrs
		}
		cl.Voters[c.ID] = v
		return nil
	}
	return fmt.Errorf("%w: %v cannot be applied here", ErrMalformedCommand, c.Type())
}

// setNodeState applies SetNodeState; f.mu is held.
func (f *FSM) setNodeState(c SetNodeState) error {
	n, err := f.liveNode(c.ID)
	if err != nil {
		return err
	}
	if n.State == c.State {
		return nil
	}
	switch {
	case n.State == placement.Pending:
		return fmt.Errorf("%w: %v node to %v (approve it first)", ErrBadNodeState, n.State, c.State)
	case c.State == placement.Active && n.State == placement.Down:
		f.setNode(n, func(n *nodeRecord) { n.State = placement.Active })
		f.cl.floor = f.index // the Down flag of its entries changed
		for _, u := range f.usersOf(c.ID, true) {
			f.normalize(u)
		}
		f.normalizeShort()
	case c.State == placement.Down:
		f.setNode(n, func(n *nodeRecord) { n.State = placement.Down })
		f.cl.floor = f.index
		var waiting []string
		for _, u := range f.usersOf(c.ID, true) {
			if f.normalize(u).Waiting {
				waiting = append(waiting, u)
			}
		}
		if len(waiting) > 0 {
			f.log.Warn("directory: storage node down holds the only current copy of some users; they wait for it",
				"node", c.ID, "users", len(waiting), "first", waiting[:min(len(waiting), 5)], "index", f.index)
		}
	case c.State == placement.Draining:
		f.setNode(n, func(n *nodeRecord) { n.State = placement.Draining })
		for _, u := range f.usersOf(c.ID, true) {
			f.normalize(u)
		}
	default:
		return fmt.Errorf("%w: %v to %v", ErrBadNodeState, n.State, c.State)
	}
	return nil
}

// liveNode returns the record of node id unless it is unknown
// (ErrUnknownNode) or retired (ErrNodeRetired); f.mu is held.
func (f *FSM) liveNode(id string) (*nodeRecord, error) {
	n, ok := f.cl.Nodes[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	if n.State == placement.Retired {
		return nil, ErrNodeRetired
	}
	return n, nil
}

// setNode stores a modified copy of n.
func (f *FSM) setNode(n *nodeRecord, fn func(*nodeRecord)) {
	cp := *n
	fn(&cp)
	f.cl.Nodes[n.ID] = &cp
}

// policy returns the placement policy at the current entry.
func (f *FSM) policy() placement.Policy {
	p := f.placement
	p.Now = f.index
	return p
}

// placementNodes lists the nodes with their current loads and their
// effective capacities (effectiveCapacities).
func (f *FSM) placementNodes() []placement.Node {
	caps := f.effectiveCapacities()
	out := make([]placement.Node, 0, len(f.cl.Nodes))
	for _, n := range f.cl.Nodes {
		out = append(out, placement.Node{
			ID: n.ID, Operator: n.Operator, Capacity: caps[n.ID], Load: n.Load,
			State: n.State, Added: n.Added,
		})
	}
	return out
}

// effectiveCapacities returns the capacity placement counts for each
// node: what it declared, capped by Settings.MaxNodeCapacity, then
// scaled down in proportion where one operator's nodes (active,
// draining, down) add up to more than Settings.MaxOperatorCapacity. A
// node's own word is never trusted beyond the operator's limits; f.mu is
// held.
func (f *FSM) effectiveCapacities() map[string]int {
	s := f.cl.Settings
	caps := make(map[string]int, len(f.cl.Nodes))
	sum := make(map[string]int64)
	for _, n := range f.cl.Nodes {
		c := max(n.Capacity, 0)
		if s.MaxNodeCapacity > 0 {
			c = min(c, s.MaxNodeCapacity)
		}
		caps[n.ID] = c
		if n.State == placement.Active || n.State == placement.Draining || n.State == placement.Down {
			sum[n.Operator] += int64(c)
		}
	}
	if s.MaxOperatorCapacity <= 0 {
		return caps
	}
	limit := int64(s.MaxOperatorCapacity)
	for _, n := range f.cl.Nodes {
		if total := sum[n.Operator]; total > limit {
			caps[n.ID] = int(int64(caps[n.ID]) * limit / total)
		}
	}
	return caps
}

// SetChange is one user's replica set change, as the FSM's SetsChanged
// hook hears it: Nodes are the nodes named by the set (members and
// leaving) before or after the change, sorted.
type SetChange struct {
	User  string
	Nodes []string
}

// setReplicas stores user's new set and keeps the loads, the per-node
// index, the list versions and the transfers under way current; it
// queues the change for the SetsChanged hook. A set with neither members
// nor leaving nodes removes the user's entry.
func (f *FSM) setReplicas(user string, s placement.Set) {
	f.touchVersions()
	var old placement.Set
	if p := f.cl.Sets[user]; p != nil {
		old = *p
	}
	if old.Equal(s) {
		return
	}
	oldNames := append(old.IDs(), old.Leaving...)
	newNames := append(s.IDs(), s.Leaving...)
	for _, id := range oldNames {
		if !slices.Contains(newNames, id) {
			if us := f.cl.byNode[id]; us != nil && us.remove(user) && us.len() == 0 {
				delete(f.cl.byNode, id)
			}
		}
		if old.Find(id) >= 0 && s.Find(id) < 0 {
			f.addLoad(id, -1)
		}
		f.cl.changed[id] = f.index
	}
	for _, id := range newNames {
		if !slices.Contains(oldNames, id) {
			us := f.cl.byNode[id]
			if us == nil {
				us = newUserSet(nil)
				f.cl.byNode[id] = us
			}
			us.insert(user)
		}
		if s.Find(id) >= 0 && old.Find(id) < 0 {
			f.addLoad(id, 1)
		}
		f.cl.changed[id] = f.index
	}
	if slices.ContainsFunc(s.Members, func(m placement.Member) bool { return m.Leave }) {
		f.cl.moving[user] = struct{}{}
	} else {
		delete(f.cl.moving, user)
	}
	if len(s.Members) == 0 && len(s.Leaving) == 0 {
		delete(f.cl.Sets, user)
	} else {
		cp := s.Clone()
		f.cl.Sets[user] = &cp
	}
	all := append(oldNames, newNames...)
	slices.Sort(all)
	f.pending = append(f.pending, SetChange{User: user, Nodes: slices.Compact(all)})
}

func (f *FSM) addLoad(id string, d int) {
	if n, ok := f.cl.Nodes[id]; ok {
		f.setNode(n, func(n *nodeRecord) { n.Load += d })
	}
}

// allocate gives a new user its replica set. With no storage node
// registered, or none able to take the user while fallback is set, the
// user gets no set and the caller keeps fallback as its node.
func (f *FSM) allocate(user, fallback string) error {
	f.touchVersions()
	if len(f.cl.Nodes) == 0 {
		return nil
	}
	ids, err := placement.Assign(f.placementNodes(), f.cl.Settings.Replicas, f.policy())
	if errors.Is(err, placement.ErrNoCapacity) && fallback != "" {
		return nil
	}
	if err != nil && !errors.Is(err, placement.ErrUnderReplicated) {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	f.setReplicas(user, placement.NewSet(ids))
	return nil
}

// usersOf returns the users naming node id, in order: as a member only
// (membersOnly), or as a member or leaving node.
func (f *FSM) usersOf(id string, membersOnly bool) []string {
	us := f.cl.byNode[id]
	if us == nil {
		return nil
	}
	all := us.after("", us.len())
	if !membersOnly {
		return all
	}
	out := all[:0:0]
	for _, u := range all {
		if s := f.cl.Sets[u]; s != nil && s.Find(id) >= 0 {
			out = append(out, u)
		}
	}
	return out
}

// normalize applies placement.Normalize to user's set and stores the
// result; f.mu is held.
func (f *FSM) normalize(user string) placement.Outcome {
	p := f.cl.Sets[user]
	if p == nil {
		return placement.Outcome{}
	}
	out, oc := placement.Normalize(*p, f.placementNodes(), f.cl.Settings.Replicas, f.policy(), &f.cl.EpochSeq)
	if oc.Lost {
		f.log.Error("directory: every current copy of a user was on retired nodes; the rest of its set was made current, "+
			"so writes acknowledged only on the retired nodes are lost", "user", user, "set", out.IDs(), "index", f.index)
	}
	if oc.Changed {
		f.setReplicas(user, out)
	}
	return oc
}

// normalizeShort normalizes, in user order, every set with fewer than R
// members that are Active and not leaving (after an approval, a node back
// up, new settings).
func (f *FSM) normalizeShort() {
	r := f.cl.Settings.Replicas
	var users []string
	for u, s := range f.cl.Sets {
		serving := 0
		for _, m := range s.Members {
			if n, ok := f.cl.Nodes[m.ID]; ok && n.State == placement.Active && !m.Leave {
				serving++
			}
		}
		if serving < r {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	for _, u := range users {
		f.normalize(u)
	}
}

// finishLeave drops leaving member id of user's set when its set is
// ready (placement.FinishLeave), then normalizes; f.mu is held.
func (f *FSM) finishLeave(user, id string) bool {
	p := f.cl.Sets[user]
	if p == nil {
		return false
	}
	out, ok := placement.FinishLeave(*p, id, f.placementNodes())
	if ok {
		f.setReplicas(user, out)
		f.normalize(user)
	}
	return ok
}

// info converts a record for callers; f.mu is held.
func (f *FSM) info(n *nodeRecord) NodeInfo {
	leaving := 0
	if us := f.cl.byNode[n.ID]; us != nil {
		leaving = us.len() - n.Load
	}
	return NodeInfo{
		ID: n.ID, Operator: n.Operator, URL: n.BaseURL, P2PAddrs: slices.Clone(n.P2PAddrs),
		Capacity: n.Capacity, Load: n.Load, Leaving: leaving, State: n.State.String(), Added: n.Added,
		PublicKey: n.PublicKey, HawkKey: n.HawkKey,
	}
}

// infoWith is info with the effective capacity from caps
// (effectiveCapacities); f.mu is held.
func (f *FSM) infoWith(n *nodeRecord, caps map[string]int) NodeInfo {
	ni := f.info(n)
	ni.EffectiveCapacity = caps[n.ID]
	return ni
}

// NodeInfo describes a storage node as the directory records it.
type NodeInfo struct {
	// ID is the node's identity (libp2p peer ID or hex public key).
	ID string `json:"id"`
	// Operator is who runs the node.
	Operator string `json:"operator,omitempty"`
	// URL is the node's base URL, ending in "/".
	URL string `json:"url"`
	// P2PAddrs are the node's libp2p multiaddresses.
	P2PAddrs []string `json:"p2p_addrs,omitempty"`
	// Capacity is the most users the node says it takes; Load how many
	// sets list it as a member.
	Capacity int `json:"capacity,omitempty"`
	Load     int `json:"load"`
	// EffectiveCapacity is the capacity placement counts: Capacity capped
	// by the cluster's limits per node and per operator (Settings). Set
	// by FSM.Nodes only.
	EffectiveCapacity int `json:"effective_capacity,omitempty"`
	// Leaving is how many users' leaving lists name the node: it left
	// their sets and still owes them a handoff.
	Leaving int `json:"leaving,omitempty"`
	// State is "pending", "active", "draining", "down" or "retired".
	State string `json:"state,omitempty"`
	// Added is the raft index at which the node was approved.
	Added uint64 `json:"added,omitempty"`
	// PublicKey is the node's Ed25519 public key.
	PublicKey []byte `json:"public_key,omitempty"`
	// HawkKey is the node's X25519 public key for Sync 1.5 credentials
	// (nil: the node serves no Sync 1.5).
	HawkKey []byte `json:"hawk_key,omitempty"`
}

// Down reports whether the directory considers the node down.
func (n NodeInfo) Down() bool { return n.State == placement.Down.String() }

// Alive reports whether the node takes part in replication (active or
// draining).
func (n NodeInfo) Alive() bool {
	return n.State == placement.Active.String() || n.State == placement.Draining.String()
}

// Nodes returns every storage node, sorted by ID.
func (f *FSM) Nodes() []NodeInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	caps := f.effectiveCapacities()
	out := make([]NodeInfo, 0, len(f.cl.Nodes))
	for _, n := range f.cl.Nodes {
		out = append(out, f.infoWith(n, caps))
	}
	slices.SortFunc(out, func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Node returns the storage node id.
func (f *FSM) Node(id string) (NodeInfo, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.cl.Nodes[id]
	if !ok {
		return NodeInfo{}, false
	}
	return f.info(n), true
}

// nodeInfo returns the record of id, or a NodeInfo with the ID only for a
// node missing from the state; f.mu is held.
func (f *FSM) nodeInfo(id string) NodeInfo {
	if n, ok := f.cl.Nodes[id]; ok {
		return f.info(n)
	}
	return NodeInfo{ID: id}
}

// MemberInfo is one member of a user's replica set with its node's record.
type MemberInfo struct {
	NodeInfo
	// Filling, Epoch and Leave are the member's state (placement.Member).
	Filling bool
	Epoch   uint64
	Leave   bool
}

// Replicas is a user's replica set with the nodes' records: the members,
// primary first, and the leaving nodes.
type Replicas struct {
	Members []MemberInfo
	Leaving []NodeInfo
}

// Serving returns the member that serves the user's clients: the
// primary, when it is current and its node alive; ok is false when no
// member qualifies (the primary is down or filling: clients wait) or the
// set is empty.
func (r Replicas) Serving() (MemberInfo, bool) {
	if len(r.Members) == 0 {
		return MemberInfo{}, false
	}
	p := r.Members[0]
	return p, !p.Filling && p.Alive()
}

// Replicas returns the user's replica set, the account's fallback node URL
// (Account.Node) and whether the user exists.
func (f *FSM) Replicas(user string) (r Replicas, fallback string, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.accounts[user]
	if !ok {
		return Replicas{}, "", false
	}
	if s := f.cl.Sets[user]; s != nil {
		r = f.replicas(*s)
	}
	return r, a.Node, true
}

// replicas expands a set; f.mu is held.
func (f *FSM) replicas(s placement.Set) Replicas {
	var r Replicas
	for _, m := range s.Members {
		r.Members = append(r.Members, MemberInfo{NodeInfo: f.nodeInfo(m.ID), Filling: m.Filling, Epoch: m.Epoch, Leave: m.Leave})
	}
	for _, id := range s.Leaving {
		r.Leaving = append(r.Leaving, f.nodeInfo(id))
	}
	return r
}

// Assignment returns the members of the user's replica set as node infos
// (primary first; a node missing from the state appears with its ID
// only), the account's fallback node URL (Account.Node), and whether the
// user exists.
func (f *FSM) Assignment(user string) (set []NodeInfo, fallback string, ok bool) {
	r, fallback, ok := f.Replicas(user)
	for _, m := range r.Members {
		set = append(set, m.NodeInfo)
	}
	return set, fallback, ok
}

// Settings returns the cluster settings.
func (f *FSM) Settings() Settings {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cl.Settings
}

// Voters returns the recorded voters by raft ID (a copy).
func (f *FSM) Voters() map[string]VoterInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.cl.Voters)
}

// HasVoterPeer reports whether a recorded voter has libp2p peer ID id.
func (f *FSM) HasVoterPeer(id string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, v := range f.cl.Voters {
		if v.PeerID == id {
			return true
		}
	}
	return false
}

// UserAssignment is one user's replica set.
type UserAssignment struct {
	User string
	// Set is the user's set. It is shared with the FSM and must not be
	// modified.
	Set placement.Set
}

// UsersPage returns, in one consistent view, up to limit (> 0) users
// whose set names node id (as a member or as a leaving node), in
// ascending order strictly after after, with their sets; nodes holds the
// records of every node those sets name; more says whether further users
// follow; version is the node's list version (see dirproto.UsersResponse:
// 0 while unknown after a restore). It costs O(log n + limit) for a node
// of n users.
func (f *FSM) UsersPage(id, after string, limit int) (page []UserAssignment, nodes map[string]NodeInfo, more bool, version uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.cl.versionsUnknown {
		version = max(f.cl.changed[id], f.cl.floor)
	}
	nodes = make(map[string]NodeInfo)
	s := f.cl.byNode[id]
	if s == nil {
		return nil, nodes, false, version
	}
	users := s.after(after, limit+1)
	if len(users) > limit {
		users, more = users[:limit], true
	}
	page = make([]UserAssignment, 0, len(users))
	for _, u := range users {
		set := *f.cl.Sets[u] // never modified in place: safe to share
		page = append(page, UserAssignment{User: u, Set: set})
		for _, nid := range append(set.IDs(), set.Leaving...) {
			if _, ok := nodes[nid]; !ok {
				nodes[nid] = f.nodeInfo(nid)
			}
		}
	}
	return page, nodes, more, version
}
