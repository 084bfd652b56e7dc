package dirclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node"
)

// Defaults of Config.
const (
	DefaultHeartbeatInterval    = 5 * time.Second
	DefaultKeyRefresh           = time.Minute
	DefaultDirectoryCallTimeout = 5 * time.Second
	// DefaultMembershipTTL is how long a user's replica set, as Holds and
	// Replicas use it (a positive or negative Holds answer), is reused. Short, so that after a failover or a drain a
	// node starts (or stops) serving a user within about two seconds of
	// the directory's change, while a burst of requests of one user costs
	// one directory call.
	DefaultMembershipTTL = 2 * time.Second
	// maxMembershipCache bounds the replica set cache (entries); when
	// full it is emptied.
	maxMembershipCache = 100000
)

// ErrDirectoryUnavailable means no directory voter could answer; it wraps
// api.ErrUnavailable, so the storage API answers 503.
var ErrDirectoryUnavailable = fmt.Errorf("dirclient: directory unreachable: %w", api.ErrUnavailable)

// Config configures a Client. A zero field means
// "use the default".
type Config struct {
	// Host is this node's libp2p host (p2p.NewHost). Its gater, if any,
	// must admit the directory voters. Required.
	Host host.Host
	// Directory lists the directory voters with their addresses, in the
	// order to try them. At least one is required.
	Directory []peer.AddrInfo
	// Logger receives reachability changes. Default: discard.
	Logger *slog.Logger
	// HeartbeatInterval is the period of heartbeats. Default 5 s.
	HeartbeatInterval time.Duration
	// Load returns the number of users this node serves, sent with each
	// heartbeat. Default: always 0.
	Load func() int
	// KeyRefresh is the period at which the directory's token keys are
	// fetched again. Default 1 min; after a failed fetch the next one comes
	// a heartbeat interval later.
	KeyRefresh time.Duration
	// CallTimeout bounds one call to one voter. Default 5 s.
	CallTimeout time.Duration
	// MembershipTTL is how long Holds and Replicas reuse a user's replica
	// set. Default DefaultMembershipTTL (2 s).
	MembershipTTL time.Duration
	// Allowlist, when set, is kept equal (by Run, every heartbeat
	// interval) to the directory's active nodes plus the voters (those
	// of Directory always included), for this node's connection gater;
	// connections to peers that leave the list are closed.
	Allowlist *p2p.StaticAllowlist
}

// DefaultConfig returns a Config with the
// defaults filled in; Host and Directory must still be set.
func DefaultConfig() Config {
	return Config{
		Logger:            slog.New(slog.DiscardHandler),
		HeartbeatInterval: DefaultHeartbeatInterval,
		KeyRefresh:        DefaultKeyRefresh,
		CallTimeout:       DefaultDirectoryCallTimeout,
		MembershipTTL:     DefaultMembershipTTL,
	}
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	switch {
	case c.Host == nil:
		return errors.New("dirclient: Config.Host is required")
	case len(c.Directory) == 0:
		return errors.New("dirclient: Config.Directory is empty")
	case c.HeartbeatInterval < 0:
		return fmt.Errorf("dirclient: Config.HeartbeatInterval %v is negative", c.HeartbeatInterval)
	case c.KeyRefresh < 0:
		return fmt.Errorf("dirclient: Config.KeyRefresh %v is negative", c.KeyRefresh)
	case c.MembershipTTL < 0:
		return fmt.Errorf("dirclient: Config.MembershipTTL %v is negative", c.MembershipTTL)
	case c.CallTimeout < 0:
		return fmt.Errorf("dirclient: Config.CallTimeout %v is negative", c.CallTimeout)
	}
	for i, v := range c.Directory {
		if err := v.ID.Validate(); err != nil {
			return fmt.Errorf("dirclient: directory voter %d: %w", i, err)
		}
	}
	return nil
}

// Client is a storage node's link to the directory over libp2p.
// It checks HTTP Basic passwords (it implements node.PasswordChecker), keeps the
// directory's token verification keys (Keys), sends heartbeats (Run),
// looks up replica sets (Holds, Replicas) and lists the users assigned to
// this node (AssignedUsers).
// Voters are tried in the configured order, starting with the last one
// that answered: any voter answers password checks and key fetches, the
// leader takes heartbeats. Safe for concurrent use.
type Client struct {
	cfg  Config
	rpc  p2p.RPCConfig
	keys node.StaticKeys

	answered atomic.Int32 // index of the voter that answered last
	leader   atomic.Int32 // index of the voter that took the last heartbeat
	hbFailed atomic.Bool  // the last heartbeat failed (log once)

	memMu sync.Mutex
	mem   map[string]memEntry // user -> cached replica set

	voters atomic.Pointer[map[peer.ID]struct{}] // voters of the last RefreshPeers
}

// memEntry is a cached replica set; nodes is never modified after the
// entry is stored.
type memEntry struct {
	nodes   []dirproto.AssignedNode
	expires time.Time
}

var (
	_ node.PasswordChecker = (*Client)(nil)
	_ node.Membership      = (*Client)(nil)
)

// New returns a client for cfg and records the voters'
// addresses in the host's peerstore.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = d.HeartbeatInterval
	}
	if cfg.KeyRefresh == 0 {
		cfg.KeyRefresh = d.KeyRefresh
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = d.CallTimeout
	}
	if cfg.MembershipTTL == 0 {
		cfg.MembershipTTL = d.MembershipTTL
	}
	cfg.Directory = append([]peer.AddrInfo(nil), cfg.Directory...)
	for _, v := range cfg.Directory {
		if len(v.Addrs) > 0 {
			cfg.Host.Peerstore().AddAddrs(v.ID, v.Addrs, peerstore.PermanentAddrTTL)
		}
	}
	return &Client{
		mem: make(map[string]memEntry),
		cfg: cfg,
		rpc: p2p.RPCConfig{Timeout: cfg.CallTimeout, MaxFrameSize: p2p.MaxMessageSize, Logger: cfg.Logger},
	}, nil
}

// retryable reports whether another voter may answer where one failed:
// transport failures, and the remote codes meaning "not here, not now".
func retryable(err error) bool {
	var re *p2p.RemoteError
	if !errors.As(err, &re) {
		return true
	}
	switch re.Code {
	case dirproto.CodeNotLeader, p2p.CodeUnavailable, p2p.CodeInternal:
		return true
	}
	return false
}

// callDirectory sends req over proto to the voters in order, from the
// one at *start, until one answers or fails for good; it records the one
// that answered in *start. Each attempt decodes into a fresh Resp.
func callDirectory[Resp any](ctx context.Context, c *Client, start *atomic.Int32, proto protocol.ID, req any) (Resp, error) {
	n := len(c.cfg.Directory)
	first := int(start.Load())
	var errs []error
	for i := range n {
		idx := (first + i) % n
		var resp Resp
		err := p2p.CallJSON(ctx, c.rpc, c.cfg.Host, c.cfg.Directory[idx].ID, proto, req, &resp)
		if err == nil {
			start.Store(int32(idx))
			return resp, nil
		}
		var zero Resp
		if ctx.Err() != nil {
			return zero, fmt.Errorf("dirclient: directory %s: %w", proto, ctx.Err())
		}
		if !retryable(err) {
			return zero, err
		}
		errs = append(errs, err)
	}
	var zero Resp
	return zero, fmt.Errorf("%w: %s: %w", ErrDirectoryUnavailable, proto, errors.Join(errs...))
}

// CheckPassword asks the directory whether password is user's. It returns
// nil when it is, an error wrapping api.ErrUnauthorized when it is not
// (or the user is unknown, or the credentials are out of bounds), and one
// wrapping ErrDirectoryUnavailable (so api.ErrUnavailable: 503) when no
// voter could answer.
func (c *Client) CheckPassword(ctx context.Context, user, password string) error {
	req := dirproto.CheckPasswordRequest{User: user, Password: password}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("node: credentials of %q: %v: %w", user, err, api.ErrUnauthorized)
	}
	resp, err := callDirectory[dirproto.CheckPasswordResponse](ctx, c, &c.answered, dirproto.ProtoCheckPassword, req)
	if err != nil {
		if errors.Is(err, ErrDirectoryUnavailable) || ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: %w", ErrDirectoryUnavailable, err)
	}
	if !resp.OK {
		return fmt.Errorf("node: directory refused the password of %q: %w", user, api.ErrUnauthorized)
	}
	return nil
}

// Keys returns the directory's token verification keys as last fetched
// (by RefreshKeys or Run), for AuthConfig.Keys. It is empty until the
// first successful fetch, so bearer tokens are refused until then.
func (c *Client) Keys() node.KeySource { return &c.keys }

// RefreshKeys fetches the directory's published keys and makes them the
// whole set Keys returns (retired keys disappear).
func (c *Client) RefreshKeys(ctx context.Context) error {
	resp, err := callDirectory[dirproto.KeysResponse](ctx, c, &c.answered, dirproto.ProtoKeys, nil)
	if err != nil {
		return err
	}
	m := make(map[string]ed25519.PublicKey, len(resp.Keys))
	for kid, k := range resp.Keys {
		m[kid] = ed25519.PublicKey(k)
	}
	c.keys.Replace(m)
	return nil
}

// Heartbeat sends one heartbeat with the current load to the directory
// leader, trying the voters in turn. A remote refusal (this node is
// unknown or retired) comes back as a *p2p.RemoteError.
func (c *Client) Heartbeat(ctx context.Context) error {
	load := 0
	if c.cfg.Load != nil {
		load = c.cfg.Load()
	}
	req := dirproto.HeartbeatRequest{Load: max(load, 0), Time: time.Now().UnixMilli()}
	_, err := callDirectory[struct{}](ctx, c, &c.leader, dirproto.ProtoHeartbeat, req)
	return err
}

// Holds implements node.Membership: it reports whether this node (the host's
// peer ID) is in user's replica set, as Replicas returns it (so answers,
// positive and negative, are cached for MembershipTTL). A user name out of
// bounds is held by no node. When no voter answers it returns an error
// wrapping ErrDirectoryUnavailable.
func (c *Client) Holds(ctx context.Context, user string) (bool, error) {
	nodes, err := c.replicas(ctx, user)
	if err != nil {
		return false, err
	}
	self := c.cfg.Host.ID().String()
	for _, n := range nodes {
		if n.PeerID == self || n.ID == self {
			return true, nil
		}
	}
	return false, nil
}

// Replicas returns user's replica set, primary first (dirproto.ProtoAssignment);
// it is empty when the user has none, does not exist, or has a name out of
// bounds. Answers are cached for MembershipTTL, shared with Holds, so a
// set may be that old; InvalidateUser drops the cached one. The caller
// owns the returned slice. When no voter answers it returns an error
// wrapping ErrDirectoryUnavailable. Safe for concurrent use; concurrent
// misses of one user may each ask the directory.
func (c *Client) Replicas(ctx context.Context, user string) ([]dirproto.AssignedNode, error) {
	nodes, err := c.replicas(ctx, user)
	return slices.Clone(nodes), err
}

// replicas is Replicas without the copy: the result is shared with the
// cache and must not be modified.
func (c *Client) replicas(ctx context.Context, user string) ([]dirproto.AssignedNode, error) {
	now := time.Now()
	c.memMu.Lock()
	e, ok := c.mem[user]
	c.memMu.Unlock()
	if ok && now.Before(e.expires) {
		return e.nodes, nil
	}
	req := dirproto.AssignmentRequest{User: user}
	if err := req.Validate(); err != nil {
		return nil, nil
	}
	resp, err := callDirectory[dirproto.AssignmentResponse](ctx, c, &c.answered, dirproto.ProtoAssignment, req)
	if err != nil {
		if errors.Is(err, ErrDirectoryUnavailable) || ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrDirectoryUnavailable, err)
	}
	c.memMu.Lock()
	if len(c.mem) >= maxMembershipCache {
		clear(c.mem)
	}
	c.mem[user] = memEntry{nodes: resp.Nodes, expires: now.Add(c.cfg.MembershipTTL)}
	c.memMu.Unlock()
	return resp.Nodes, nil
}

// InvalidateUser drops the cached replica set of user, so that the next
// Holds or Replicas asks the directory (for instance after a peer said
// the set changed). An answer already in flight may still store the old
// set.
func (c *Client) InvalidateUser(user string) {
	c.memMu.Lock()
	delete(c.mem, user)
	c.memMu.Unlock()
}

// AssignedUsers returns one page of the users whose replica set contains
// this node, each with its whole replica set (primary first), in
// ascending byte order of name strictly after after ("" for the first
// page); limit is the most wanted (0, or above dirproto.MaxUsersPage, means
// dirproto.MaxUsersPage). more says the list goes on: ask again with after set
// to the last user returned. version identifies the state of the list
// (see dirproto.UsersResponse.Version; 0 means unknown). The answer is not
// cached and not merged into the Replicas cache. A refusal (this node is
// not an admitted node) comes back as a *p2p.RemoteError; when no voter
// answers the error wraps ErrDirectoryUnavailable.
func (c *Client) AssignedUsers(ctx context.Context, after string, limit int) (users []dirproto.UserReplicas, more bool, version uint64, err error) {
	req := dirproto.UsersRequest{After: after, Limit: limit}
	if err := req.Validate(); err != nil {
		return nil, false, 0, err
	}
	resp, err := callDirectory[dirproto.UsersResponse](ctx, c, &c.answered, dirproto.ProtoUsers, req)
	if err != nil {
		return nil, false, 0, err
	}
	if len(resp.Users) > 0 && resp.Users[0].User <= after {
		return nil, false, 0, fmt.Errorf("%w: users page starts at %q, not after %q", p2p.ErrBadMessage, resp.Users[0].User, after)
	}
	return resp.Users, resp.More, resp.Version, nil
}

// RefreshPeers fetches the directory's active nodes and voters
// (dirproto.ProtoPeers) and makes them, with the configured voters, the whole
// of Allowlist; connections to peers no longer listed are closed. The
// listed nodes' registered addresses go into the host's peerstore (nodes
// dial each other for replication). A no-op without Allowlist.
func (c *Client) RefreshPeers(ctx context.Context) error {
	if c.cfg.Allowlist == nil {
		return nil
	}
	resp, err := callDirectory[dirproto.PeersResponse](ctx, c, &c.answered, dirproto.ProtoPeers, nil)
	if err != nil {
		return err
	}
	ids := make([]peer.ID, 0, len(resp.Nodes)+len(resp.Voters)+len(c.cfg.Directory))
	for _, v := range c.cfg.Directory {
		ids = append(ids, v.ID)
	}
	for _, s := range append(resp.Nodes, resp.Voters...) {
		id, err := peer.Decode(s)
		if err != nil {
			c.cfg.Logger.Debug("node: directory listed an unparsable peer id", "peer", s, "err", err)
			continue
		}
		ids = append(ids, id)
	}
	vs := make(map[peer.ID]struct{}, len(resp.Voters))
	for _, s := range resp.Voters {
		if id, err := peer.Decode(s); err == nil {
			vs[id] = struct{}{}
		}
	}
	c.voters.Store(&vs)
	old := c.cfg.Allowlist.List()
	c.cfg.Allowlist.Replace(ids)
	// The other nodes' registered addresses go into the peerstore, so
	// that protocols between nodes (replication) can dial them.
	for s, as := range resp.Addrs {
		id, err := peer.Decode(s)
		if err != nil || id == c.cfg.Host.ID() || !c.cfg.Allowlist.Allowed(id) {
			continue
		}
		var addrs []ma.Multiaddr
		for _, a := range as {
			if m, err := ma.NewMultiaddr(a); err == nil {
				addrs = append(addrs, m)
			}
		}
		if len(addrs) > 0 {
			c.cfg.Host.Peerstore().AddAddrs(id, addrs, peerstore.PermanentAddrTTL)
		}
	}
	for _, id := range old {
		if !c.cfg.Allowlist.Allowed(id) {
			_ = c.cfg.Host.Network().ClosePeer(id)
		}
	}
	return nil
}

// IsVoter reports whether id is a directory voter this client knows: one
// of the configured voters, or one the directory listed at the last
// RefreshPeers. Storage nodes admit only voters to the protocols the
// directory calls (dirproto.ProtoAccount).
func (c *Client) IsVoter(id peer.ID) bool {
	for _, v := range c.cfg.Directory {
		if v.ID == id {
			return true
		}
	}
	if vs := c.voters.Load(); vs != nil {
		_, ok := (*vs)[id]
		return ok
	}
	return false
}

// Run fetches the keys and sends a heartbeat at once, then keeps doing so
// every KeyRefresh and HeartbeatInterval, until ctx is done; it then
// returns nil. With an Allowlist it also refreshes the peers at every
// heartbeat. Failures are logged, never fatal.
func (c *Client) Run(ctx context.Context) error {
	log := c.cfg.Logger
	keysOK := true
	refresh := func() time.Duration {
		if err := c.RefreshKeys(ctx); err != nil {
			if ctx.Err() == nil {
				if keysOK {
					log.Warn("node: fetching directory keys failed", "err", err)
				}
				keysOK = false
			}
			return min(c.cfg.HeartbeatInterval, c.cfg.KeyRefresh)
		}
		if !keysOK {
			log.Info("node: directory keys fetched again")
		}
		keysOK = true
		return c.cfg.KeyRefresh
	}
	peersOK := true
	beat := func() {
		if perr := c.RefreshPeers(ctx); perr != nil && ctx.Err() == nil {
			if peersOK {
				log.Warn("node: fetching directory peers failed", "err", perr)
			}
			peersOK = false
		} else if perr == nil {
			peersOK = true
		}
		err := c.Heartbeat(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			if !c.hbFailed.Swap(true) {
				log.Warn("node: heartbeat failed", "err", err)
			} else {
				log.Debug("node: heartbeat failed", "err", err)
			}
		case c.hbFailed.Swap(false):
			log.Info("node: heartbeats accepted again")
		}
	}
	keyTimer := time.NewTimer(refresh())
	defer keyTimer.Stop()
	beat()
	hb := time.NewTicker(c.cfg.HeartbeatInterval)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hb.C:
			beat()
		case <-keyTimer.C:
			keyTimer.Reset(refresh())
		}
	}
}
