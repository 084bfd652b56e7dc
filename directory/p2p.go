package directory

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// p2pTimeout bounds one directory RPC served over libp2p; a password
// check waits for the hasher, a heartbeat may commit a state change.
const p2pTimeout = 10 * time.Second

// ServeP2P serves the directory protocols of api/dirproto to storage nodes
// on h (which the caller owns and closes):
//
//   - dirproto.ProtoHeartbeat: Heartbeat for the calling peer, whose ID is the
//     node's ID (the hex form of its key is tried when the peer ID is not
//     registered). Any voter takes it: a follower passes it on to the leader
//     over the voters' internal HTTP endpoint. A voter that cannot (no leader
//     known, or the leader unreachable) answers dirproto.CodeNotLeader with
//     the leader's libp2p peer ID as the message when it knows one (empty
//     otherwise); the node dials that voter next. Unknown and retired nodes
//     get dirproto.CodeUnknownNode and dirproto.CodeRetired.
//   - dirproto.ProtoCheckPassword(11): CheckPassword, answered by any voter
//     from its local state through the login guard (version 1.1 passes the
//     client's address and answers a back-off as RetryAfterMS; version 1.0
//     answers it as a wrong password, a full queue in both as
//     p2p.CodeUnavailable, so the node tries another voter). Only
//     registered nodes that are neither pending nor retired may ask
//     (others get dirproto.CodeUnknownNode), and only about users whose
//     set or leaving list names them (others, and unknown users, get
//     p2p.CodeForbidden), so that no node can use the directory as a
//     password oracle for users it does not hold.
//   - dirproto.ProtoKeys: PublicKeys, to any peer the gater admitted (the keys
//     are public).
//   - dirproto.ProtoAssignment(11): a user's replica set (primary first;
//     each member with its filling state, epoch and whether it is down),
//     its leaving nodes and (version 1.1) its credential state, answered
//     locally to admitted nodes only (dirproto.CodeUnknownNode otherwise)
//     and only about users whose set or leaving list names the caller
//     (p2p.CodeForbidden otherwise, unknown users included).
//   - dirproto.ProtoPeers: the peer IDs of active and draining nodes and of the
//     voters, for the nodes' connection gaters, with the nodes' registered
//     and the voters' recorded libp2p addresses, for dialling them.
//   - dirproto.ProtoUsers: one page of the users whose replica set names the
//     calling node (as a member or as a leaving node), each with its set as
//     in ProtoAssignment, in user-name order, answered locally to admitted
//     nodes only (dirproto.CodeUnknownNode otherwise). A page costs
//     O(log n + page size) for a node of n users, and is cut short (More
//     set) to fit p2p.MaxMessageSize.
//   - dirproto.ProtoRestored: MarkRestored for the calling node (restored
//     from a backup), committed through raft before it answers; admitted
//     nodes only; while some voter does not decode the command (the
//     feature gate) it answers p2p.CodeUnavailable.
//   - dirproto.ProtoReport: Report, committed through raft (a follower
//     forwards it to the leader) before it answers; admitted nodes only.
//     Unconfirmed items refused because the node is not a current member
//     of the user's set fail the call with p2p.CodeForbidden; a write
//     that found no leader within the wait fails with
//     dirproto.CodeNotLeader, one whose outcome is unknown with
//     p2p.CodeUnavailable.
//
// Requests are bounded by p2p.MaxMessageSize and decoded strictly. Which
// peers may connect at all is the host's gater's business (the wiring
// admits registered nodes and the other voters).
func (d *Directory) ServeP2P(h host.Host) {
	s := &p2pServer{d: d}
	cfg := p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize, Timeout: p2pTimeout, Logger: d.log}
	p2p.Serve(h, dirproto.ProtoHeartbeat, p2p.HandleJSON(s.heartbeat), cfg)
	p2p.Serve(h, dirproto.ProtoCheckPassword, p2p.HandleJSON(s.checkPassword10), cfg)
	p2p.Serve(h, dirproto.ProtoCheckPassword11, p2p.HandleJSON(s.checkPassword11), cfg)
	p2p.Serve(h, dirproto.ProtoKeys, p2p.HandleJSON(s.keys), cfg)
	p2p.Serve(h, dirproto.ProtoAssignment, p2p.HandleJSON(s.assignment10), cfg)
	p2p.Serve(h, dirproto.ProtoAssignment11, p2p.HandleJSON(s.assignment11), cfg)
	p2p.Serve(h, dirproto.ProtoPeers, p2p.HandleJSON(s.peers), cfg)
	p2p.Serve(h, dirproto.ProtoUsers, p2p.HandleJSON(s.users), cfg)
	p2p.Serve(h, dirproto.ProtoReport, p2p.HandleJSON(s.report), cfg)
	p2p.Serve(h, dirproto.ProtoRestored, p2p.HandleJSON(s.restored), cfg)
}

// p2pServer answers the directory protocols for a Directory.
type p2pServer struct{ d *Directory }

// nodeOfPeer returns the registered node the peer is, by peer ID or hex
// key.
func nodeOfPeer(st *state.FSM, from peer.ID) (NodeInfo, bool) {
	if n, ok := st.Node(from.String()); ok {
		return n, true
	}
	pk, err := from.ExtractPublicKey()
	if err != nil {
		return NodeInfo{}, false
	}
	raw, err := pk.Raw()
	if err != nil {
		return NodeInfo{}, false
	}
	return st.Node(hex.EncodeToString(raw))
}

// admittedNode returns the calling node if it is registered and neither
// pending nor retired, else a dirproto.CodeUnknownNode error.
func (s *p2pServer) admittedNode(from peer.ID) (NodeInfo, error) {
	n, ok := nodeOfPeer(s.d.state, from)
	if !ok || n.State == placement.Pending.String() || n.State == placement.Retired.String() {
		return NodeInfo{}, p2p.Errorf(dirproto.CodeUnknownNode, "peer %s is not an admitted storage node", from)
	}
	return n, nil
}

// nodePeerID returns the libp2p peer ID of a registered node: from its
// public key, or its ID when the key is missing.
func nodePeerID(n NodeInfo) string {
	if len(n.PublicKey) == ed25519.PublicKeySize {
		if id, err := p2p.PeerIDFromEd25519(ed25519.PublicKey(n.PublicKey)); err == nil {
			return id.String()
		}
	}
	return n.ID
}

func (s *p2pServer) heartbeat(ctx context.Context, from peer.ID, r dirproto.HeartbeatRequest) (struct{}, error) {
	id := from.String()
	if n, ok := nodeOfPeer(s.d.state, from); ok {
		id = n.ID
	}
	err := s.d.Heartbeat(ctx, id, r)
	if errors.Is(err, ErrNotLeader) {
		return struct{}{}, &p2p.RemoteError{Code: dirproto.CodeNotLeader, Message: s.d.leaderPeerID()}
	}
	return struct{}{}, p2pError(err)
}

func (s *p2pServer) report(ctx context.Context, from peer.ID, r dirproto.ReportRequest) (dirproto.ReportResponse, error) {
	self, err := s.admittedNode(from)
	if err != nil {
		return dirproto.ReportResponse{}, err
	}
	resp, err := s.d.Report(ctx, self.ID, r)
	if errors.Is(err, ErrNotCurrentMember) {
		return resp, &p2p.RemoteError{Code: p2p.CodeForbidden, Message: err.Error()}
	}
	return resp, p2pError(err)
}

// leaderPeerID returns the libp2p peer ID of the leader as recorded in the
// state ("" when no leader is known or it has none recorded).
func (d *Directory) leaderPeerID() string {
	id, _ := d.Leader()
	if id == "" {
		return ""
	}
	if id == d.cfg.ID && d.host != nil {
		return d.host.ID().String()
	}
	return d.state.Voters()[id].PeerID
}

// holds returns the user's replica set if its members or leaving list
// name node, else a p2p.CodeForbidden error (also for an unknown user,
// so that a node cannot tell unknown names from others' users).
func (s *p2pServer) holds(ctx context.Context, node, user string) (Replicas, error) {
	// A negative answer only from the leader's up-to-date state
	// (absent.go): a node told it holds no copy may wipe it.
	var r Replicas
	ok, err := s.d.readConfirmed(ctx, user, node, func() (found bool) {
		r, found = s.named(node, user)
		return found
	})
	if err != nil {
		return Replicas{}, p2pError(err)
	}
	if !ok {
		return Replicas{}, p2p.Errorf(p2p.CodeForbidden, "node %s does not hold user %q", node, user)
	}
	return r, nil
}

// named returns user's replica set if it names node as a member or a
// leaving node, from the local state.
func (s *p2pServer) named(node, user string) (Replicas, bool) {
	r, _, ok := s.d.state.Replicas(user)
	if ok {
		for _, m := range r.Members {
			if m.ID == node {
				return r, true
			}
		}
		for _, n := range r.Leaving {
			if n.ID == node {
				return r, true
			}
		}
	}
	return Replicas{}, false
}

func (s *p2pServer) checkPassword10(ctx context.Context, from peer.ID, r dirproto.CheckPasswordRequest) (dirproto.CheckPasswordResponse, error) {
	r.Addr = ""
	resp, err := s.checkPassword(ctx, from, r)
	resp.RetryAfterMS = 0 // a back-off reads as a wrong password
	return resp, err
}

func (s *p2pServer) checkPassword11(ctx context.Context, from peer.ID, r dirproto.CheckPasswordRequest) (dirproto.CheckPasswordResponse, error) {
	return s.checkPassword(ctx, from, r)
}

func (s *p2pServer) checkPassword(ctx context.Context, from peer.ID, r dirproto.CheckPasswordRequest) (dirproto.CheckPasswordResponse, error) {
	self, err := s.admittedNode(from)
	if err != nil {
		return dirproto.CheckPasswordResponse{}, err
	}
	if _, err := s.holds(ctx, self.ID, r.User); err != nil {
		return dirproto.CheckPasswordResponse{}, err
	}
	if r.Addr != "" {
		ctx = api.WithClientAddr(ctx, r.Addr)
	}
	err = s.d.CheckPassword(ctx, r.User, r.Password)
	if te, ok := api.ThrottleHint(err); ok {
		return dirproto.CheckPasswordResponse{RetryAfterMS: max(te.After.Milliseconds(), 1)}, nil
	}
	switch {
	case err == nil:
		return dirproto.CheckPasswordResponse{OK: true}, nil
	case errors.Is(err, api.ErrUnauthorized):
		return dirproto.CheckPasswordResponse{OK: false}, nil
	}
	return dirproto.CheckPasswordResponse{}, p2pError(err)
}

func (s *p2pServer) keys(context.Context, peer.ID, struct{}) (dirproto.KeysResponse, error) {
	if s.d.closed.Load() {
		return dirproto.KeysResponse{}, p2pError(ErrClosed)
	}
	keys := s.d.PublicKeys()
	out := dirproto.KeysResponse{Keys: make(map[string][]byte, len(keys))}
	for kid, k := range keys {
		out.Keys[kid] = k
	}
	return out, nil
}

func (s *p2pServer) assignment10(ctx context.Context, from peer.ID, r dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
	resp, err := s.assignment(ctx, from, r)
	resp.Creds = nil
	return resp, err
}

func (s *p2pServer) assignment11(ctx context.Context, from peer.ID, r dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
	return s.assignment(ctx, from, r)
}

func (s *p2pServer) assignment(ctx context.Context, from peer.ID, r dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
	if s.d.closed.Load() {
		return dirproto.AssignmentResponse{}, p2pError(ErrClosed)
	}
	self, err := s.admittedNode(from)
	if err != nil {
		return dirproto.AssignmentResponse{}, err
	}
	if err := s.d.fresh(); err != nil {
		return dirproto.AssignmentResponse{}, p2pError(err)
	}
	index := s.d.state.AppliedIndex() // read first: the answer reflects at least this state
	reps, err := s.holds(ctx, self.ID, r.User)
	if err != nil {
		return dirproto.AssignmentResponse{}, err
	}
	creds := s.d.state.Credentials(r.User)
	out := dirproto.AssignmentResponse{Exists: creds.Exists, Nodes: []dirproto.AssignedNode{},
		Creds: &dirproto.Credentials{ChangedAt: creds.ChangedAt, Gen: creds.Gen}, Index: index}
	for _, m := range reps.Members {
		out.Nodes = append(out.Nodes, wireMember(m.NodeInfo, m.Filling, m.Epoch))
	}
	for _, n := range reps.Leaving {
		out.Leaving = append(out.Leaving, wireMember(n, false, 0))
	}
	return out, nil
}

// wireMember is a member (or leaving node) as api/dirproto carries it.
func wireMember(n NodeInfo, filling bool, epoch uint64) dirproto.AssignedNode {
	return dirproto.AssignedNode{ID: n.ID, PeerID: nodePeerID(n), URL: n.URL, Filling: filling, Epoch: epoch, Down: n.Down()}
}

// usersEnvelope bounds the encoded size of a UsersResponse without its
// users: the field names, a true More and the largest Version.
var usersEnvelope = func() int {
	b, err := p2p.Marshal(dirproto.UsersResponse{Users: []dirproto.UserReplicas{}, More: true, Version: ^uint64(0)})
	if err != nil {
		panic(err)
	}
	return len(b)
}()

// users answers one page of the calling node's users from the local
// state (any voter may answer; a lagging follower answers its older view,
// with its older Version). The page ends early, with More set, where the
// next user would take the encoded answer past p2p.MaxMessageSize; a
// user whose entry alone is too big for a message gets CodeInternal,
// since no page could carry it.
func (s *p2pServer) users(_ context.Context, from peer.ID, r dirproto.UsersRequest) (dirproto.UsersResponse, error) {
	if s.d.closed.Load() {
		return dirproto.UsersResponse{}, p2pError(ErrClosed)
	}
	self, err := s.admittedNode(from)
	if err != nil {
		return dirproto.UsersResponse{}, err
	}
	if err := s.d.fresh(); err != nil {
		return dirproto.UsersResponse{}, p2pError(err)
	}
	limit := r.Limit
	if limit <= 0 || limit > dirproto.MaxUsersPage {
		limit = dirproto.MaxUsersPage
	}
	page, nodes, more, version := s.d.state.UsersPage(self.ID, r.After, limit)
	out := dirproto.UsersResponse{Users: make([]dirproto.UserReplicas, 0, len(page)), More: more, Version: version}
	size := usersEnvelope
	for _, u := range page {
		e := dirproto.UserReplicas{User: u.User, Nodes: make([]dirproto.AssignedNode, 0, len(u.Set.Members))}
		for _, m := range u.Set.Members {
			e.Nodes = append(e.Nodes, wireMember(nodes[m.ID], m.Filling, m.Epoch))
		}
		for _, id := range u.Set.Leaving {
			e.Leaving = append(e.Leaving, wireMember(nodes[id], false, 0))
		}
		b, err := json.Marshal(e)
		if err != nil {
			return dirproto.UsersResponse{}, p2p.Errorf(p2p.CodeInternal, "encode user %q: %v", u.User, err)
		}
		if size+len(b)+1 > p2p.MaxMessageSize { // +1: the comma before it
			if len(out.Users) == 0 {
				return dirproto.UsersResponse{}, p2p.Errorf(p2p.CodeInternal,
					"the entry of user %q (%d bytes) does not fit in a message", u.User, len(b))
			}
			out.More = true
			break
		}
		size += len(b) + 1
		out.Users = append(out.Users, e)
	}
	return out, nil
}

func (s *p2pServer) peers(_ context.Context, from peer.ID, _ struct{}) (dirproto.PeersResponse, error) {
	if s.d.closed.Load() {
		return dirproto.PeersResponse{}, p2pError(ErrClosed)
	}
	out := dirproto.PeersResponse{Nodes: []string{}, Voters: []string{}, Addrs: map[string][]string{}}
	for _, n := range s.d.state.Nodes() {
		if n.State == placement.Active.String() || n.State == placement.Draining.String() {
			pid := nodePeerID(n)
			out.Nodes = append(out.Nodes, pid)
			// The nodes dial each other (replication) at the addresses
			// they registered; the bounds keep the answer valid.
			if addrs := boundedAddrs(n.P2PAddrs); len(addrs) > 0 {
				out.Addrs[pid] = addrs
			}
		}
	}
	for _, v := range s.d.P2PVoters() {
		out.Voters = append(out.Voters, v.PeerID)
		if addrs := boundedAddrs(v.Addrs); len(addrs) > 0 {
			out.Addrs[v.PeerID] = addrs
		}
	}
	return out, nil
}

// boundedAddrs keeps the addresses a PeersResponse may carry.
func boundedAddrs(in []string) []string {
	var addrs []string
	for _, a := range in {
		if a != "" && len(a) <= dirproto.MaxAddrLen && len(addrs) < dirproto.MaxPeerAddrs {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// p2pError maps a directory error to the code a node acts on.
func p2pError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotLeader):
		return &p2p.RemoteError{Code: dirproto.CodeNotLeader, Message: err.Error()}
	case errors.Is(err, ErrUnknownNode):
		return &p2p.RemoteError{Code: dirproto.CodeUnknownNode, Message: err.Error()}
	case errors.Is(err, ErrNodeRetired):
		return &p2p.RemoteError{Code: dirproto.CodeRetired, Message: err.Error()}
	}
	return &p2p.RemoteError{Code: p2p.CodeUnavailable, Message: err.Error()}
}
