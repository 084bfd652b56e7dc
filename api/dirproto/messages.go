package dirproto

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/hce-sync/hce/api/p2p"
)

// Protocols a directory voter serves to storage nodes. The version is part
// of the id: an incompatible change gets a new id, served beside the old
// one for a while.
const (
	// ProtoHeartbeat: HeartbeatRequest -> {} (an empty JSON object). The
	// node is the calling peer.
	ProtoHeartbeat protocol.ID = "/hce/dir/1.0.0/heartbeat"
	// ProtoCheckPassword: CheckPasswordRequest -> CheckPasswordResponse,
	// without the fields version 1.1 added (Addr, RetryAfterMS). Only
	// for users whose set (or leaving list) names the calling node.
	ProtoCheckPassword protocol.ID = "/hce/dir/1.0.0/checkpw"
	// ProtoCheckPassword11 is ProtoCheckPassword with the client's
	// address in the request and a throttle in the response.
	ProtoCheckPassword11 protocol.ID = "/hce/dir/1.1.0/checkpw"
	// ProtoKeys: empty request -> KeysResponse.
	ProtoKeys protocol.ID = "/hce/dir/1.0.0/keys"
	// ProtoAssignment: AssignmentRequest -> AssignmentResponse, without
	// Creds (version 1.1). Only admitted (neither pending nor retired)
	// nodes may ask, and only about users whose set (or leaving list)
	// names them; others get p2p.CodeForbidden.
	ProtoAssignment protocol.ID = "/hce/dir/1.0.0/assignment"
	// ProtoAssignment11 is ProtoAssignment with the user's credential
	// state (AssignmentResponse.Creds).
	ProtoAssignment11 protocol.ID = "/hce/dir/1.1.0/assignment"
	// ProtoPeers: empty request -> PeersResponse.
	ProtoPeers protocol.ID = "/hce/dir/1.0.0/peers"
	// ProtoUsers: UsersRequest -> UsersResponse, one page of the users
	// whose replica set contains the calling node (as a member or as a
	// leaving member that still owes a handoff). Only admitted nodes may
	// ask.
	ProtoUsers protocol.ID = "/hce/dir/1.0.0/users"
	// ProtoReport: ReportRequest -> ReportResponse. A node reports what
	// its replication did for users it holds: writes it acknowledged
	// without every other member's confirmation, completed backfills,
	// completed handoffs. The answering voter commits them through raft
	// (a follower forwards to the leader) before it answers. Only
	// admitted nodes may report, and only about users whose set (or
	// leaving list) names them.
	ProtoReport protocol.ID = "/hce/dir/1.0.0/report"
)

// Protocols a storage node serves to the directory voters.
const (
	// ProtoAccount: AccountEvent -> {} (an empty JSON object), without
	// the fields version 1.1 added (ChangedAt, Gen). Only directory
	// voters may call it (others get CodeForbidden); the node answers
	// once it has acted on the event (for a deletion: once the user's
	// records are durably gone).
	ProtoAccount protocol.ID = "/hce/node/1.0.0/account"
	// ProtoAccount11 is ProtoAccount with the credential state.
	ProtoAccount11 protocol.ID = "/hce/node/1.1.0/account"
	// ProtoMembership: MembershipEvent -> {}. Only directory voters may
	// call it; the node answers once it has dropped its cached replica
	// sets of the users named.
	ProtoMembership protocol.ID = "/hce/node/1.0.0/membership"
)

// Error codes of the directory protocols (besides p2p.CodeForbidden,
// p2p.CodeUnavailable and the RPC layer's codes).
const (
	// CodeNotLeader: the voter is not the raft leader (heartbeats go to
	// the leader); try another voter.
	CodeNotLeader = "not_leader"
	// CodeUnknownNode: the calling peer is not a registered node.
	CodeUnknownNode = "unknown_node"
	// CodeRetired: the calling node is retired.
	CodeRetired = "retired"
)

// Bounds of the directory messages.
const (
	// MaxUserLen and MaxPasswordLen bound CheckPasswordRequest fields.
	MaxUserLen     = 1024
	MaxPasswordLen = 4096
	// MaxKeys bounds KeysResponse.Keys; MaxKidLen a key id.
	MaxKeys   = 256
	MaxKidLen = 256
	// MaxReplicas bounds AssignmentResponse.Nodes.
	MaxReplicas = 16
	// MaxPeers bounds each list of PeersResponse (p2p.MaxMessageSize is the
	// tighter bound in practice: about 1,000 peer IDs in all).
	MaxPeers = 4096
	// MaxIDLen bounds a node or peer ID; MaxURLLen a node URL.
	MaxIDLen  = 256
	MaxURLLen = 2048
	// MaxPeerAddrs bounds the addresses PeersResponse.Addrs gives one
	// peer; MaxAddrLen one multiaddress.
	MaxPeerAddrs = 8
	MaxAddrLen   = 256
	// MaxUsersPage bounds UsersResponse.Users, and is the page size a
	// UsersRequest gets when its Limit is 0 or larger.
	MaxUsersPage = 500
)

// HeartbeatRequest tells the directory a node is alive. Any voter takes
// it: a follower passes it on to the leader. A voter that cannot (no
// leader known) answers CodeNotLeader with the leader's peer ID, if it
// knows one, as the error message.
type HeartbeatRequest struct {
	// Load is the number of users the node serves.
	Load int `json:"load"`
	// Time is the node's clock, Unix milliseconds (for skew diagnostics).
	Time int64 `json:"time"`
	// Unconfirmed counts the writes this node acknowledged, since it
	// started, without every other member's confirmation (each was
	// reported first, see ReportRequest.Unconfirmed).
	Unconfirmed uint64 `json:"unconfirmed,omitempty"`
	// HandoffBacklog is the number of users this node holds data of as a
	// leaving member, not yet handed off.
	HandoffBacklog int `json:"handoff_backlog,omitempty"`
}

// Validate implements Validator.
func (r HeartbeatRequest) Validate() error {
	if r.Load < 0 || r.HandoffBacklog < 0 {
		return fmt.Errorf("%w: negative load %d or backlog %d", p2p.ErrBadMessage, r.Load, r.HandoffBacklog)
	}
	return nil
}

// MaxReportItems bounds the items of one ReportRequest, all lists
// together.
const MaxReportItems = 512

// ReportRequest carries a node's replication reports (the node is the
// calling peer). Each list may be empty; together they hold at most
// MaxReportItems items. The directory applies each item on its own, in
// order, in one raft entry, and ignores items that no longer apply (a
// stale epoch, a user no longer held); an ignored item is not an error.
type ReportRequest struct {
	// Unconfirmed: the caller is about to acknowledge a write of each
	// user that some members did not confirm in time. Every member of
	// the set other than the caller and those in Confirmed becomes
	// filling (its epoch increases). The caller acknowledges the write
	// only after this report is committed (and, when Notified is false
	// in the response, after waiting the membership cache lifetime).
	Unconfirmed []UnconfirmedWrite `json:"unconfirmed,omitempty"`
	// Filled: the caller, a filling member, completed a pull of the
	// user from Source, a member that was current, which it started
	// after it learnt Epoch (see AssignedNode.Epoch). The directory makes
	// the caller current if its epoch is still Epoch and Source is still
	// a current member.
	Filled []Filled `json:"filled,omitempty"`
	// HandedOff: the caller, a current member, completed a pull of the
	// user from Source, a leaving member that answered as final (it no
	// longer takes writes of the user). The directory removes Source
	// from the user's leaving list.
	HandedOff []HandedOff `json:"handed_off,omitempty"`
}

// UnconfirmedWrite is one item of ReportRequest.Unconfirmed.
type UnconfirmedWrite struct {
	User string `json:"user"`
	// Confirmed are the IDs of the members that did confirm the write.
	Confirmed []string `json:"confirmed,omitempty"`
}

// Filled is one item of ReportRequest.Filled.
type Filled struct {
	User   string `json:"user"`
	Epoch  uint64 `json:"epoch"`
	Source string `json:"source"`
}

// HandedOff is one item of ReportRequest.HandedOff.
type HandedOff struct {
	User   string `json:"user"`
	Source string `json:"source"`
}

// Validate implements Validator.
func (r ReportRequest) Validate() error {
	if n := len(r.Unconfirmed) + len(r.Filled) + len(r.HandedOff); n > MaxReportItems {
		return fmt.Errorf("%w: %d report items", p2p.ErrBadMessage, n)
	}
	bad := func(user string, ids ...string) error {
		if user == "" || len(user) > MaxUserLen {
			return fmt.Errorf("%w: user name of %d bytes", p2p.ErrBadMessage, len(user))
		}
		for _, id := range ids {
			if id == "" || len(id) > MaxIDLen {
				return fmt.Errorf("%w: node id of %d bytes", p2p.ErrBadMessage, len(id))
			}
		}
		return nil
	}
	for _, u := range r.Unconfirmed {
		if len(u.Confirmed) > MaxReplicas {
			return fmt.Errorf("%w: %d confirmations", p2p.ErrBadMessage, len(u.Confirmed))
		}
		if err := bad(u.User, u.Confirmed...); err != nil {
			return err
		}
	}
	for _, f := range r.Filled {
		if err := bad(f.User, f.Source); err != nil {
			return err
		}
	}
	for _, h := range r.HandedOff {
		if err := bad(h.User, h.Source); err != nil {
			return err
		}
	}
	return nil
}

// ReportResponse answers a ReportRequest once its items are committed.
// Notified is true when every member that became filling through an
// Unconfirmed item was told so at once (ProtoMembership) and dropped its
// cached view; when false, the caller waits its membership cache
// lifetime plus ViewLagMs before it acknowledges: a member may have read
// its view from a voter whose state was up to ViewLagMs old (the
// directory answers who serves a user only from a state at most that
// old). 0 (a directory that does not send it): DefaultViewLag.
type ReportResponse struct {
	Notified  bool  `json:"notified"`
	ViewLagMs int64 `json:"view_lag_ms,omitempty"`
}

// DefaultViewLag is the view lag a node assumes when the directory's
// ReportResponse does not state one: raft's default heartbeat timeout.
const DefaultViewLag = time.Second

// MaxViewLag bounds the view lag a node accepts from a ReportResponse
// (a larger one is taken as this), so that a directory cannot hold a
// write's acknowledgement for long.
const MaxViewLag = 10 * time.Second

// ViewLag returns the response's view lag, DefaultViewLag when it states
// none, at most MaxViewLag.
func (r ReportResponse) ViewLag() time.Duration {
	if r.ViewLagMs <= 0 {
		return DefaultViewLag
	}
	return min(time.Duration(r.ViewLagMs)*time.Millisecond, MaxViewLag)
}

// CheckPasswordRequest asks whether Password is User's password.
type CheckPasswordRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	// Addr is the IP address of the client that sent the credentials to
	// the node, for the directory's per-client limits on failed logins
	// (version 1.1; empty: unknown).
	Addr string `json:"addr,omitempty"`
}

// Validate implements Validator.
func (r CheckPasswordRequest) Validate() error {
	switch {
	case r.User == "" || len(r.User) > MaxUserLen:
		return fmt.Errorf("%w: user name of %d bytes", p2p.ErrBadMessage, len(r.User))
	case len(r.Password) > MaxPasswordLen:
		return fmt.Errorf("%w: password of %d bytes", p2p.ErrBadMessage, len(r.Password))
	case len(r.Addr) > MaxAddrLen:
		return fmt.Errorf("%w: client address of %d bytes", p2p.ErrBadMessage, len(r.Addr))
	}
	return nil
}

// CheckPasswordResponse answers a CheckPasswordRequest: OK is false for a
// wrong password and for an unknown user alike. RetryAfterMS (version
// 1.1), when positive, means the directory did not check the password:
// the account or the client is in a back-off after failed logins, or
// sent too many checks at once; the node answers 429 with that wait.
type CheckPasswordResponse struct {
	OK           bool  `json:"ok"`
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

// KeysResponse lists the directory's published token verification keys:
// Ed25519 public keys (32 bytes, base64 in JSON) by key id.
type KeysResponse struct {
	Keys map[string][]byte `json:"keys"`
}

// Validate implements Validator.
func (r KeysResponse) Validate() error {
	if len(r.Keys) > MaxKeys {
		return fmt.Errorf("%w: %d keys", p2p.ErrBadMessage, len(r.Keys))
	}
	for kid, k := range r.Keys {
		if kid == "" || len(kid) > MaxKidLen {
			return fmt.Errorf("%w: key id of %d bytes", p2p.ErrBadMessage, len(kid))
		}
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: key %q has %d bytes", p2p.ErrBadMessage, kid, len(k))
		}
	}
	return nil
}

// AssignmentRequest asks for User's replica set.
type AssignmentRequest struct {
	User string `json:"user"`
}

// Validate implements Validator.
func (r AssignmentRequest) Validate() error {
	if r.User == "" || len(r.User) > MaxUserLen {
		return fmt.Errorf("%w: user name of %d bytes", p2p.ErrBadMessage, len(r.User))
	}
	return nil
}

// AssignedNode is one member of a replica set (or one leaving member).
type AssignedNode struct {
	// ID is the node's directory ID; PeerID its libp2p peer ID (usually
	// the same string); URL its Weave base URL.
	ID     string `json:"id"`
	PeerID string `json:"peer_id"`
	URL    string `json:"url"`
	// Filling is true while the member may lack acknowledged writes: it
	// was added and has not yet confirmed its backfill, or a write was
	// acknowledged without its confirmation. A filling member serves no
	// client of the user (it answers 401) and is never made primary; it
	// replicates, confirms writes and reports its backfill
	// (ReportRequest.Filled) to become current.
	Filling bool `json:"filling,omitempty"`
	// Epoch changes each time this member becomes filling (the directory
	// draws epochs from one cluster-wide sequence, so a node added again
	// later never sees an old one). A Filled report names the epoch it
	// was made under; one for another epoch is ignored. A member waits at least the membership cache lifetime after
	// it learnt an epoch before it starts the pull it reports for it, so
	// every writer of the user knows it as a member by then.
	Epoch uint64 `json:"epoch,omitempty"`
	// Down is true when the directory considers the node down (it is
	// kept in the set because it may hold the user's only current copy).
	Down bool `json:"down,omitempty"`
}

// AssignmentResponse answers an AssignmentRequest: Nodes is the user's
// replica set, primary first (empty when the user has none), and Exists
// says whether the user exists at all. Leaving lists nodes that left the
// set and still owe a handoff: the members pull from them until one
// current member reports the handoff done (ReportRequest.HandedOff).
// The primary is always a current (non-filling) member when one is alive;
// when none is, the set is left as it was and clients wait.
type AssignmentResponse struct {
	Exists  bool           `json:"exists"`
	Nodes   []AssignedNode `json:"nodes"`
	Leaving []AssignedNode `json:"leaving,omitempty"`
	// Creds (version 1.1) is the user's credential state: a node refuses
	// tokens issued at or before ChangedAt and drops cached Basic answers
	// of another Gen, so revocation holds within the membership cache
	// lifetime even when the account event is lost.
	Creds *Credentials `json:"creds,omitempty"`
	// Index is the raft index of the last change the answering voter had
	// applied when it read the answer (the answer reflects at least that
	// state). A node never uses an answer older than one it has already
	// seen (or than a MembershipEvent's Index), so its view of its sets
	// does not go back when it asks another, slightly lagging, voter.
	// 0: a voter that does not send it.
	Index uint64 `json:"index,omitempty"`
}

// Credentials is a user's credential state as the directory's state
// machine holds it (api.CredentialState of an existing account).
type Credentials struct {
	// ChangedAt is when the credentials last changed, Unix seconds.
	ChangedAt int64 `json:"changed_at"`
	// Gen changes with every change (the raft index of the change).
	Gen uint64 `json:"gen"`
}

// Validate implements Validator.
func (r AssignmentResponse) Validate() error {
	if err := validateReplicas(r.Nodes); err != nil {
		return err
	}
	return validateReplicas(r.Leaving)
}

// validateReplicas checks the bounds of a replica set.
func validateReplicas(nodes []AssignedNode) error {
	if len(nodes) > MaxReplicas {
		return fmt.Errorf("%w: %d replicas", p2p.ErrBadMessage, len(nodes))
	}
	for _, n := range nodes {
		if len(n.ID) > MaxIDLen || len(n.PeerID) > MaxIDLen || len(n.URL) > MaxURLLen {
			return fmt.Errorf("%w: oversized replica entry", p2p.ErrBadMessage)
		}
	}
	return nil
}

// UsersRequest asks for one page of the users assigned to the calling
// node: those whose replica set contains it, in ascending byte order of
// the user name, starting strictly after After ("" for the first page).
// Limit is the most users wanted; 0, or a value above MaxUsersPage, means
// MaxUsersPage.
type UsersRequest struct {
	After string `json:"after"`
	Limit int    `json:"limit"`
}

// Validate implements Validator.
func (r UsersRequest) Validate() error {
	switch {
	case len(r.After) > MaxUserLen:
		return fmt.Errorf("%w: after of %d bytes", p2p.ErrBadMessage, len(r.After))
	case r.Limit < 0:
		return fmt.Errorf("%w: negative limit %d", p2p.ErrBadMessage, r.Limit)
	}
	return nil
}

// UserReplicas is one user of a UsersResponse with its whole replica set,
// primary first, and its leaving members (as in AssignmentResponse).
type UserReplicas struct {
	User    string         `json:"user"`
	Nodes   []AssignedNode `json:"nodes"`
	Leaving []AssignedNode `json:"leaving,omitempty"`
}

// UsersResponse answers a UsersRequest. Users are in strictly ascending
// order of name, all after the request's After. More is true when the
// voter stopped before the end of the list (the page reached the limit or
// p2p.MaxMessageSize): ask again with After set to the last user.
//
// Version is a raft index at or after the last change to the calling
// node's list (a user added or removed, a replica set of one of its users
// changed, or a node's address changed), as the answering voter knows it.
// A node that got the same non-zero Version on the first page of its last
// full sweep has nothing new to learn; any other value means "sweep
// again". 0 means "unknown": the voter restored a snapshot and has
// applied no assignment change since. After a restore a voter reports the
// index of its first such change for every node, so two voters may give
// different Versions for the same list; that only costs a sweep.
type UsersResponse struct {
	Users   []UserReplicas `json:"users"`
	More    bool           `json:"more"`
	Version uint64         `json:"version"`
}

// Validate implements Validator.
func (r UsersResponse) Validate() error {
	if len(r.Users) > MaxUsersPage {
		return fmt.Errorf("%w: %d users", p2p.ErrBadMessage, len(r.Users))
	}
	for i, u := range r.Users {
		if u.User == "" || len(u.User) > MaxUserLen {
			return fmt.Errorf("%w: user name of %d bytes", p2p.ErrBadMessage, len(u.User))
		}
		if i > 0 && r.Users[i-1].User >= u.User {
			return fmt.Errorf("%w: users out of order at %d", p2p.ErrBadMessage, i)
		}
		if err := validateReplicas(u.Nodes); err != nil {
			return err
		}
		if err := validateReplicas(u.Leaving); err != nil {
			return err
		}
	}
	return nil
}

// PeersResponse lists the peer IDs a storage node's gater admits: the
// active (and draining) storage nodes and the directory voters.
type PeersResponse struct {
	Nodes  []string `json:"nodes"`
	Voters []string `json:"voters"`
	// Addrs holds the libp2p multiaddresses the listed storage nodes
	// registered and the voters recorded, by peer ID, so that nodes can
	// dial each other (replication) and every voter, including voters
	// that joined after the node started. A peer absent here can only be
	// dialled at addresses learnt otherwise.
	Addrs map[string][]string `json:"addrs,omitempty"`
}

// Validate implements Validator.
func (r PeersResponse) Validate() error {
	if len(r.Nodes) > MaxPeers || len(r.Voters) > MaxPeers {
		return fmt.Errorf("%w: %d nodes, %d voters", p2p.ErrBadMessage, len(r.Nodes), len(r.Voters))
	}
	for _, id := range append(slices.Clone(r.Nodes), r.Voters...) {
		if id == "" || len(id) > MaxIDLen {
			return fmt.Errorf("%w: peer id of %d bytes", p2p.ErrBadMessage, len(id))
		}
	}
	if len(r.Addrs) > MaxPeers {
		return fmt.Errorf("%w: addresses of %d peers", p2p.ErrBadMessage, len(r.Addrs))
	}
	for id, as := range r.Addrs {
		if id == "" || len(id) > MaxIDLen || len(as) > MaxPeerAddrs {
			return fmt.Errorf("%w: %d addresses for a peer id of %d bytes", p2p.ErrBadMessage, len(as), len(id))
		}
		for _, a := range as {
			if a == "" || len(a) > MaxAddrLen {
				return fmt.Errorf("%w: peer address of %d bytes", p2p.ErrBadMessage, len(a))
			}
		}
	}
	return nil
}

// MembershipEvent tells a storage node that the replica sets of Users
// changed (a member became filling or current, a primary moved, a
// member left): the node drops its cached view of those users and asks
// again. Served by nodes over ProtoMembership to voters only.
type MembershipEvent struct {
	Users []string `json:"users"`
	// Index is the raft index of the last change the sending voter had
	// applied (the changes told of included): the node's views of these
	// users must be at least that new from now on (AssignmentResponse.Index).
	Index uint64 `json:"index,omitempty"`
}

// Validate implements Validator.
func (e MembershipEvent) Validate() error {
	if len(e.Users) == 0 || len(e.Users) > MaxUsersPage {
		return fmt.Errorf("%w: %d users", p2p.ErrBadMessage, len(e.Users))
	}
	for _, u := range e.Users {
		if u == "" || len(u) > MaxUserLen {
			return fmt.Errorf("%w: user name of %d bytes", p2p.ErrBadMessage, len(u))
		}
	}
	return nil
}

// AccountEvent tells a storage node that the directory committed a
// change to User's account: its credentials changed (password set or
// reset; Deleted false), or the account was deleted (Deleted true). The
// node drops its cached Basic-auth answers for User, ends the feeds
// opened with the old credentials and, on a deletion, deletes User's
// records. Version 1.1 adds the new credential state (ChangedAt, Gen;
// for a deletion ChangedAt is the time every token of the account was
// issued at or before, and Gen is 0): the node refuses tokens issued at
// or before ChangedAt from then on.
type AccountEvent struct {
	User      string `json:"user"`
	Deleted   bool   `json:"deleted"`
	ChangedAt int64  `json:"changed_at,omitempty"`
	Gen       uint64 `json:"gen,omitempty"`
}

// Validate implements Validator.
func (e AccountEvent) Validate() error {
	if e.User == "" || len(e.User) > MaxUserLen {
		return fmt.Errorf("%w: user name of %d bytes", p2p.ErrBadMessage, len(e.User))
	}
	return nil
}
