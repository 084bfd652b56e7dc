package directory

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/directory/placement"
)

// PathP2P is the public endpoint listing the voters' libp2p identities
// and addresses (GET, no authentication): storage nodes read it before
// they dial the directory.
const PathP2P = "/internal/v1/p2p"

// VoterP2P is one voter in the answer of GET /internal/v1/p2p.
type VoterP2P struct {
	// ID is the voter's raft server ID.
	ID string `json:"id"`
	// HTTP is the voter's HTTP base URL ("" when not recorded).
	HTTP string `json:"http"`
	// PeerID is the voter's libp2p peer ID.
	PeerID string `json:"peer_id"`
	// Addrs are the voter's libp2p multiaddresses.
	Addrs []string `json:"addrs"`
}

// P2PInfo is the answer of GET /internal/v1/p2p.
type P2PInfo struct {
	Voters []VoterP2P `json:"voters"`
}

// startP2P creates the voter's libp2p host when Config.P2PListen is set:
// identity from the data folder, a gater over the FSM (p2pAllowed), and
// the directory protocols (ServeP2P).
func (d *Directory) startP2P(ctx context.Context) error {
	if len(d.cfg.P2PListen) == 0 {
		return nil
	}
	key, _, err := p2p.LoadOrCreateIdentity(d.cfg.Dir)
	if err != nil {
		return fmt.Errorf("directory: libp2p identity: %w", err)
	}
	hc := p2p.DefaultConfig()
	hc.Key = key
	hc.ListenAddrs = d.cfg.P2PListen
	hc.Logger = d.log.With("component", "p2p")
	hc.Gater = p2p.NewGater(p2p.AllowFunc(d.p2pAllowed), hc.Logger)
	h, err := p2p.NewHost(ctx, hc)
	if err != nil {
		return fmt.Errorf("directory: libp2p host: %w", err)
	}
	d.host = h
	d.ServeP2P(h)
	return nil
}

// P2PHost returns the voter's libp2p host, or nil without
// Config.P2PListen.
func (d *Directory) P2PHost() host.Host { return d.host }

// p2pAllowed is the voter's gater policy, read from the FSM on every
// connection so that it always matches the committed state: registered
// storage nodes that are not retired (pending ones too: they heartbeat),
// and the voters that recorded a peer ID.
func (d *Directory) p2pAllowed(id peer.ID) bool {
	if n, ok := d.p2pNode(id); ok {
		return n.State != placement.Retired.String()
	}
	return d.fsm.hasVoterPeer(id.String())
}

// selfP2P returns this voter's peer ID and sorted listen addresses ("",
// nil without a host).
func (d *Directory) selfP2P() (string, []string) {
	if d.host == nil {
		return "", nil
	}
	var addrs []string
	for _, a := range d.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	sort.Strings(addrs)
	return d.host.ID().String(), addrs
}

// selfVoter is the SetVoter describing this voter now.
func (d *Directory) selfVoter() SetVoter {
	pid, addrs := d.selfP2P()
	return SetVoter{ID: d.cfg.ID, HTTPURL: d.cfg.HTTPURL, RaftAddr: string(d.trans.LocalAddr()),
		PeerID: pid, P2PAddrs: addrs}
}

// voterRecorded reports whether the FSM holds this voter's current record.
func (d *Directory) voterRecorded() bool {
	v, ok := d.fsm.voters()[d.cfg.ID]
	if !ok || v.HTTPURL != d.cfg.HTTPURL {
		return false
	}
	pid, addrs := d.selfP2P()
	return v.PeerID == pid && slices.Equal(v.P2PAddrs, addrs)
}

// voterRecordLoop writes this voter's record (SetVoter with its libp2p
// identity) until the FSM holds it: at start, and after a restart on new
// ports. It retries every 200 ms while there is no leader.
func (d *Directory) voterRecordLoop(ctx context.Context) {
	defer d.bg.Done()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !d.voterRecorded() {
		if _, id := d.raft.LeaderWithID(); id != "" {
			wctx, cancel := context.WithTimeout(ctx, d.cfg.ApplyTimeout)
			err := d.write(wctx, d.selfVoter())
			cancel()
			if err != nil && ctx.Err() == nil {
				d.log.Debug("directory: recording voter failed, retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// P2PVoters returns the voters with a recorded libp2p identity, sorted by
// ID; this voter's entry comes from its live host.
func (d *Directory) P2PVoters() []VoterP2P {
	var out []VoterP2P
	for _, v := range d.fsm.voters() {
		if v.ID == d.cfg.ID && d.host != nil {
			continue
		}
		if v.PeerID == "" {
			continue
		}
		out = append(out, VoterP2P{ID: v.ID, HTTP: v.HTTPURL, PeerID: v.PeerID, Addrs: slices.Clone(v.P2PAddrs)})
	}
	if d.host != nil {
		pid, addrs := d.selfP2P()
		out = append(out, VoterP2P{ID: d.cfg.ID, HTTP: d.cfg.HTTPURL, PeerID: pid, Addrs: addrs})
	}
	slices.SortFunc(out, func(a, b VoterP2P) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (d *Directory) handleP2PInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, P2PInfo{Voters: d.P2PVoters()})
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

// admittedNode returns the calling node if it is registered and neither
// pending nor retired, else a dirproto.CodeUnknownNode error.
func (d *Directory) admittedNode(from peer.ID) (NodeInfo, error) {
	n, ok := d.p2pNode(from)
	if !ok || n.State == placement.Pending.String() || n.State == placement.Retired.String() {
		return NodeInfo{}, p2p.Errorf(dirproto.CodeUnknownNode, "peer %s is not an admitted storage node", from)
	}
	return n, nil
}

func (d *Directory) p2pAssignment(_ context.Context, from peer.ID, r dirproto.AssignmentRequest) (dirproto.AssignmentResponse, error) {
	if d.closed.Load() {
		return dirproto.AssignmentResponse{}, p2pError(ErrClosed)
	}
	if _, err := d.admittedNode(from); err != nil {
		return dirproto.AssignmentResponse{}, err
	}
	set, _, ok := d.fsm.assignment(r.User)
	out := dirproto.AssignmentResponse{Exists: ok, Nodes: []dirproto.AssignedNode{}}
	for _, n := range set {
		out.Nodes = append(out.Nodes, dirproto.AssignedNode{ID: n.ID, PeerID: nodePeerID(n), URL: n.URL})
	}
	return out, nil
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

// p2pUsers answers one page of the calling node's users from the local
// FSM (any voter may answer; a lagging follower answers its older view,
// with its older Version). The page ends early, with More set, where the
// next user would take the encoded answer past p2p.MaxMessageSize; a
// user whose entry alone is too big for a message gets CodeInternal,
// since no page could carry it.
func (d *Directory) p2pUsers(_ context.Context, from peer.ID, r dirproto.UsersRequest) (dirproto.UsersResponse, error) {
	if d.closed.Load() {
		return dirproto.UsersResponse{}, p2pError(ErrClosed)
	}
	self, err := d.admittedNode(from)
	if err != nil {
		return dirproto.UsersResponse{}, err
	}
	limit := r.Limit
	if limit <= 0 || limit > dirproto.MaxUsersPage {
		limit = dirproto.MaxUsersPage
	}
	page, nodes, more, version := d.fsm.usersPage(self.ID, r.After, limit)
	wire := make(map[string]dirproto.AssignedNode, len(nodes))
	for id, n := range nodes {
		wire[id] = dirproto.AssignedNode{ID: n.ID, PeerID: nodePeerID(n), URL: n.URL}
	}
	out := dirproto.UsersResponse{Users: make([]dirproto.UserReplicas, 0, len(page)), More: more, Version: version}
	size := usersEnvelope
	for _, u := range page {
		e := dirproto.UserReplicas{User: u.User, Nodes: make([]dirproto.AssignedNode, 0, len(u.Set))}
		for _, id := range u.Set {
			e.Nodes = append(e.Nodes, wire[id])
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

func (d *Directory) p2pPeers(_ context.Context, from peer.ID, _ struct{}) (dirproto.PeersResponse, error) {
	if d.closed.Load() {
		return dirproto.PeersResponse{}, p2pError(ErrClosed)
	}
	out := dirproto.PeersResponse{Nodes: []string{}, Voters: []string{}, Addrs: map[string][]string{}}
	for _, n := range d.fsm.nodes() {
		if n.State == placement.Active.String() || n.State == placement.Draining.String() {
			pid := nodePeerID(n)
			out.Nodes = append(out.Nodes, pid)
			// The nodes dial each other (replication) at the addresses
			// they registered; the bounds keep the answer valid.
			var addrs []string
			for _, a := range n.P2PAddrs {
				if a != "" && len(a) <= dirproto.MaxAddrLen && len(addrs) < dirproto.MaxPeerAddrs {
					addrs = append(addrs, a)
				}
			}
			if len(addrs) > 0 {
				out.Addrs[pid] = addrs
			}
		}
	}
	for _, v := range d.P2PVoters() {
		out.Voters = append(out.Voters, v.PeerID)
	}
	return out, nil
}
