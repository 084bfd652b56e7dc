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

// SetNodeState moves a node to Active (back up), Down or Draining.
// Down repairs every user set listing the node; Draining adds the
// replacement replicas of every user of the node (step 1 of a drain, see
// FinishDrain); Active repairs under-replicated users.
type SetNodeState struct {
	ID    string          `json:"id"`
	State placement.State `json:"st"`
}

// RetireNode retires a node for good and repairs its users' sets.
type RetireNode struct {
	ID string `json:"id"`
}

// FinishDrain is step 2 of a drain: every user set listing the (draining)
// node drops it, keeping the replacements step 1 added.
type FinishDrain struct {
	ID string `json:"id"`
}

// SetSettings replaces the cluster settings. Zero fields take defaults.
type SetSettings struct {
	Settings Settings `json:"s"`
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
func (SetSettings) version() uint8  { return commandV1 }
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
	Nodes    map[string]*nodeRecord `json:"nodes"`
	Assign   map[string][]string    `json:"assign"`
	Settings Settings               `json:"settings"`
	Voters   map[string]VoterInfo   `json:"voters"`

	// The fields below are derived from Assign and never persisted
	// (encoding/json skips unexported fields): validate rebuilds them on
	// restore and setAssignment keeps them current.
	//
	// byNode lists each node's assigned users in order, so that a page
	// of a node's users costs O(log n + page).
	byNode map[string]*userSet
	// changed is, per node, the raft index of the last change to its
	// list (a user added or removed, or the set of one of its users
	// changed). floor is the raft index of the last change to every list
	// at once (a node's address changed, or the first cluster change
	// after a restore). versionsUnknown is set by a restore until the
	// next cluster change, because the snapshot does not say at which
	// index the lists last changed.
	changed         map[string]uint64
	floor           uint64
	versionsUnknown bool
}

func newClusterState() clusterState {
	return clusterState{
		Nodes:    make(map[string]*nodeRecord),
		Assign:   make(map[string][]string),
		Settings: Settings{}.withDefaults(),
		Voters:   make(map[string]VoterInfo),
		byNode:   make(map[string]*userSet),
		changed:  make(map[string]uint64),
	}
}

// clone copies the maps and node records (assignment slices are never
// modified in place, so they are shared). The clone is for encoding a
// snapshot: it has none of the derived fields.
func (c *clusterState) clone() clusterState {
	out := clusterState{
		Nodes:    make(map[string]*nodeRecord, len(c.Nodes)),
		Assign:   maps.Clone(c.Assign),
		Settings: c.Settings,
		Voters:   maps.Clone(c.Voters),
	}
	for id, n := range c.Nodes {
		cp := *n
		out.Nodes[id] = &cp
	}
	return out
}

// validate checks a restored cluster state and recomputes loads.
func (c *clusterState) validate() error {
	if c.Nodes == nil {
		c.Nodes = make(map[string]*nodeRecord)
	}
	if c.Assign == nil {
		c.Assign = make(map[string][]string)
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
	for u, set := range c.Assign {
		for _, id := range set {
			n, ok := c.Nodes[id]
			if !ok {
				return fmt.Errorf("directory: snapshot assigns %q to unknown node %q", u, id)
			}
			n.Load++
			byNode[id] = append(byNode[id], u)
		}
	}
	c.byNode = make(map[string]*userSet, len(byNode))
	for id, users := range byNode {
		slices.Sort(users)
		c.byNode[id] = newUserSet(slices.Compact(users))
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
			n.State, n.Added, n.Load = old.State, old.Added, old.Load
			if (old.BaseURL != n.BaseURL || !bytes.Equal(old.PublicKey, n.PublicKey)) && cl.byNode[c.ID] != nil {
				// Its address is part of the entries of other nodes'
				// lists.
				cl.floor = f.index
			}
		}
		cl.Nodes[c.ID] = n
		if n.State == placement.Pending && (c.Approve || cl.Settings.AutoApprove) {
			n.State, n.Added = placement.Active, f.index
			f.repairWhere(func(set []string) bool { return len(set) < cl.Settings.Replicas })
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
		f.repairWhere(func(set []string) bool { return len(set) < cl.Settings.Replicas })
		return nil
	case SetNodeState:
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
			f.repairWhere(func(set []string) bool { return len(set) < cl.Settings.Replicas })
		case c.State == placement.Down:
			f.setNode(n, func(n *nodeRecord) { n.State = placement.Down })
			f.repairWhere(func(set []string) bool { return slices.Contains(set, c.ID) })
		case c.State == placement.Draining:
			f.setNode(n, func(n *nodeRecord) { n.State = placement.Draining })
			f.drainStep(c.ID, false)
		default:
			return fmt.Errorf("%w: %v to %v", ErrBadNodeState, n.State, c.State)
		}
		return nil
	case FinishDrain:
		n, err := f.liveNode(c.ID)
		if err != nil {
			return err
		}
		if n.State != placement.Draining {
			return fmt.Errorf("%w: finish drain of a %v node", ErrBadNodeState, n.State)
		}
		f.drainStep(c.ID, true)
		return nil
	case RetireNode:
		n, err := f.liveNode(c.ID)
		if err != nil {
			return err
		}
		f.setNode(n, func(n *nodeRecord) { n.State = placement.Retired })
		f.repairWhere(func(set []string) bool { return slices.Contains(set, c.ID) })
		return nil
	case SetSettings:
		cl.Settings = c.Settings.withDefaults()
		f.repairWhere(func(set []string) bool { return len(set) < cl.Settings.Replicas })
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

// placementNodes lists the nodes with their current loads.
func (f *FSM) placementNodes() []placement.Node {
	out := make([]placement.Node, 0, len(f.cl.Nodes))
	for _, n := range f.cl.Nodes {
		out = append(out, placement.Node{
			ID: n.ID, Operator: n.Operator, Capacity: n.Capacity, Load: n.Load,
			State: n.State, Added: n.Added,
		})
	}
	return out
}

// setAssignment stores user's new set and adjusts node loads, the
// per-node user index and list versions (nil or empty set removes the
// assignment).
func (f *FSM) setAssignment(user string, set []string) {
	f.touchVersions()
	old := f.cl.Assign[user]
	if !slices.Equal(old, set) {
		for _, id := range old {
			if !slices.Contains(set, id) {
				if s := f.cl.byNode[id]; s != nil && s.remove(user) && s.len() == 0 {
					delete(f.cl.byNode, id)
				}
			}
			f.cl.changed[id] = f.index
		}
		for _, id := range set {
			if !slices.Contains(old, id) {
				s := f.cl.byNode[id]
				if s == nil {
					s = newUserSet(nil)
					f.cl.byNode[id] = s
				}
				s.insert(user)
			}
			f.cl.changed[id] = f.index
		}
	}
	for _, id := range old {
		if !slices.Contains(set, id) {
			f.addLoad(id, -1)
		}
	}
	for _, id := range set {
		if !slices.Contains(old, id) {
			f.addLoad(id, 1)
		}
	}
	if len(set) == 0 {
		delete(f.cl.Assign, user)
		return
	}
	f.cl.Assign[user] = slices.Clone(set)
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
	f.setAssignment(user, ids)
	return nil
}

// usersWhere returns the assigned users whose set matches, sorted (the
// order of repairs decides loads, so it must not depend on map order).
func (f *FSM) usersWhere(match func(set []string) bool) []string {
	var users []string
	for u, set := range f.cl.Assign {
		if match(set) {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	return users
}

// repairWhere repairs the sets that match, in user order.
func (f *FSM) repairWhere(match func(set []string) bool) {
	r := f.cl.Settings.Replicas
	for _, u := range f.usersWhere(match) {
		a := placement.Assignment{User: u, Nodes: f.cl.Assign[u]}
		if b, changed := placement.Repair(a, f.placementNodes(), r, f.policy()); changed {
			f.setAssignment(u, b.Nodes)
		}
	}
}

// drainStep moves the users of node id: step 1 (final false) adds the
// replacements, step 2 drops the node. A user that cannot be moved safely
// keeps its set.
func (f *FSM) drainStep(id string, final bool) {
	r := f.cl.Settings.Replicas
	for _, u := range f.usersWhere(func(set []string) bool { return slices.Contains(set, id) }) {
		a := placement.Assignment{User: u, Nodes: f.cl.Assign[u]}
		mv, err := placement.DrainOne(a, id, f.placementNodes(), r, f.policy())
		if err != nil {
			f.log.Warn("directory: drain cannot move user yet", "node", id, "user", u, "err", err)
			continue
		}
		if final {
			f.setAssignment(u, mv.Final)
		} else {
			f.setAssignment(u, mv.Add)
		}
	}
}

// info converts a record for callers.
func (n *nodeRecord) info() NodeInfo {
	return NodeInfo{
		ID: n.ID, Operator: n.Operator, URL: n.BaseURL, P2PAddrs: slices.Clone(n.P2PAddrs),
		Capacity: n.Capacity, Load: n.Load, State: n.State.String(), Added: n.Added,
		PublicKey: n.PublicKey,
	}
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
	// Capacity is the most users the node takes; Load how many it holds.
	Capacity int `json:"capacity,omitempty"`
	Load     int `json:"load"`
	// State is "pending", "active", "draining", "down" or "retired".
	State string `json:"state,omitempty"`
	// Added is the raft index at which the node was approved.
	Added uint64 `json:"added,omitempty"`
	// PublicKey is the node's Ed25519 public key.
	PublicKey []byte `json:"public_key,omitempty"`
}

// Nodes returns every storage node, sorted by ID.
func (f *FSM) Nodes() []NodeInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]NodeInfo, 0, len(f.cl.Nodes))
	for _, n := range f.cl.Nodes {
		out = append(out, n.info())
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
	return n.info(), true
}

// Assignment returns the user's replica set as node infos (primary
// first; a node missing from the state appears with its ID only), the
// account's fallback node URL (Account.Node), and whether the user exists.
func (f *FSM) Assignment(user string) (set []NodeInfo, fallback string, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.accounts[user]
	if !ok {
		return nil, "", false
	}
	for _, id := range f.cl.Assign[user] {
		if n, ok := f.cl.Nodes[id]; ok {
			set = append(set, n.info())
		} else {
			set = append(set, NodeInfo{ID: id})
		}
	}
	return set, a.Node, true
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
	// Set lists node IDs, primary first. It is shared with the FSM and
	// must not be modified.
	Set []string
}

// UsersPage returns, in one consistent view, up to limit (> 0) users
// whose set contains node id, in ascending order strictly after after,
// with their sets; nodes holds the records of every node those sets
// name; more says whether further users follow; version is the node's
// list version (see dirproto.UsersResponse: 0 while unknown after a
// restore). It costs O(log n + limit) for a node of n users.
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
		set := f.cl.Assign[u] // never modified in place: safe to share
		page = append(page, UserAssignment{User: u, Set: set})
		for _, nid := range set {
			if _, ok := nodes[nid]; ok {
				continue
			}
			if n, ok := f.cl.Nodes[nid]; ok {
				nodes[nid] = n.info()
			} else {
				nodes[nid] = NodeInfo{ID: nid}
			}
		}
	}
	return page, nodes, more, version
}
