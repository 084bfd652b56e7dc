package dirclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
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
	// DefaultMembershipTTL is how long a user's replica set, as Serves,
	// Replicas and Assignment use it, is reused. Short, so that after a
	// failover or a drain a node starts (or stops) serving a user within
	// about two seconds of the directory's change, while a burst of
	// requests of one user costs one directory call. The rules that keep
	// acknowledged writes on every current member count on every node
	// using the same lifetime (replication.Config.MembershipTTL).
	DefaultMembershipTTL = 2 * time.Second
	// DefaultFailureLogInterval is the least time between two WARN lines
	// about the same failing directory call (heartbeats, keys, peers).
	DefaultFailureLogInterval = 30 * time.Second
	// maxMembershipCache bounds the replica set cache (entries); when
	// full it is emptied.
	maxMembershipCache = 100000
	// DefaultKeyMissRefresh is the least time between two fetches of the
	// directory's keys prompted by a token naming an unknown key.
	DefaultKeyMissRefresh = 5 * time.Second
	// maxRevocations bounds the credential changes learnt from account
	// events that are kept (each for api.MaxTokenLifetime +
	// api.TokenClockSkew); when full the oldest half goes.
	maxRevocations = 100000
	// maxHeartbeatRetry bounds the pause before a failed heartbeat is
	// tried again: after an election, heartbeats reach the new leader
	// within about this long.
	maxHeartbeatRetry = time.Second
	minHeartbeatRetry = 200 * time.Millisecond
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
	// Directory lists the directory voters known at start, with their
	// addresses; the client learns the others (voters that joined later)
	// from the directory's peer list (RefreshPeers). At least one is
	// required.
	Directory []peer.AddrInfo
	// Logger receives reachability changes. Default: discard.
	Logger *slog.Logger
	// HeartbeatInterval is the period of heartbeats. Default 5 s. A
	// failed heartbeat is tried again sooner (within a second).
	HeartbeatInterval time.Duration
	// Load returns the number of users this node serves, sent with each
	// heartbeat. Default: always 0.
	Load func() int
	// Unconfirmed returns how many writes this node acknowledged without
	// every member's confirmation (node.Store.UnconfirmedWrites), sent
	// with each heartbeat. Default: always 0.
	Unconfirmed func() uint64
	// HandoffBacklog returns the number of users this node holds as a
	// leaving member (replication.Replicator.HandoffBacklog), sent with
	// each heartbeat. Default: always 0.
	HandoffBacklog func() int
	// KeyRefresh is the period at which the directory's token keys are
	// fetched again. Default 1 min; after a failed fetch the next one comes
	// a heartbeat interval later.
	KeyRefresh time.Duration
	// KeyMissRefresh is the least time between two extra fetches of the
	// keys prompted by tokens naming an unknown key id (a voter's key
	// published since the last fetch). Default DefaultKeyMissRefresh.
	KeyMissRefresh time.Duration
	// CallTimeout bounds one call to one voter. Default 5 s.
	CallTimeout time.Duration
	// MembershipTTL is how long Serves, Replicas and Assignment reuse a
	// user's replica set. Default DefaultMembershipTTL (2 s).
	MembershipTTL time.Duration
	// FailureLogInterval is the least time between two WARN lines about
	// the same failing call while it keeps failing (each says how many
	// failures and the last error). Default 30 s.
	FailureLogInterval time.Duration
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
		Logger:             slog.New(slog.DiscardHandler),
		HeartbeatInterval:  DefaultHeartbeatInterval,
		KeyRefresh:         DefaultKeyRefresh,
		KeyMissRefresh:     DefaultKeyMissRefresh,
		CallTimeout:        DefaultDirectoryCallTimeout,
		MembershipTTL:      DefaultMembershipTTL,
		FailureLogInterval: DefaultFailureLogInterval,
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
	case c.KeyRefresh < 0 || c.KeyMissRefresh < 0:
		return fmt.Errorf("dirclient: Config.KeyRefresh %v or KeyMissRefresh %v is negative", c.KeyRefresh, c.KeyMissRefresh)
	case c.MembershipTTL < 0:
		return fmt.Errorf("dirclient: Config.MembershipTTL %v is negative", c.MembershipTTL)
	case c.CallTimeout < 0:
		return fmt.Errorf("dirclient: Config.CallTimeout %v is negative", c.CallTimeout)
	case c.FailureLogInterval < 0:
		return fmt.Errorf("dirclient: Config.FailureLogInterval %v is negative", c.FailureLogInterval)
	}
	for i, v := range c.Directory {
		if err := v.ID.Validate(); err != nil {
			return fmt.Errorf("dirclient: directory voter %d: %w", i, err)
		}
	}
	return nil
}

// Client is a storage node's link to the directory over libp2p.
// It checks HTTP Basic passwords (node.PasswordChecker), keeps the
// directory's token verification keys (Keys), sends heartbeats (Run),
// looks up replica sets (Serves, Replicas, Assignment), lists the users
// assigned to this node (AssignedUsers), sends replication reports
// (Report) and serves the voters' membership events
// (ServeMembershipEvents).
//
// It follows the directory whoever leads it: it knows every voter (those
// configured and those the directory lists, learnt at every
// RefreshPeers), tries the voter that answered last first and then every
// other, and follows a voter's "not leader" answer naming the leader at
// once. Safe for concurrent use.
type Client struct {
	cfg  Config
	rpc  p2p.RPCConfig
	keys node.StaticKeys

	vmu      sync.Mutex
	voters   []peer.ID // configured ones first, then learnt ones
	learnt   map[peer.ID]bool
	answered peer.ID // the voter that answered last
	leader   peer.ID // the voter that took the last heartbeat or report

	memMu sync.Mutex
	mem   map[string]memEntry // user -> cached replica set
	gen   uint64              // bumped by every invalidation
	// floor is the newest directory state (raft index) this node has
	// seen in an assignment answer or a membership event: an answer from
	// an older state is not used (views never go back); staleSince is
	// when answers began to be all older (zero: they are not).
	floor      uint64
	staleSince time.Time
	// revoked holds the credential changes account events told of, per
	// user, until the tokens they revoke have expired.
	revoked map[string]revocation

	// keyMu serialises the refreshes prompted by unknown key ids;
	// keyMissAt is when the last one began.
	keyMu     sync.Mutex
	keyMissAt time.Time

	// Run's state (its goroutine only).
	hbLog, keysLog, peersLog failLog
	peersAt                  time.Time
	hbRetry                  time.Duration
}

// memEntry is a cached replica set; its slices are never modified after
// the entry is stored.
type memEntry struct {
	nodes, leaving []dirproto.AssignedNode
	// exists says whether the directory answered the set (the user
	// exists and the set or leaving list names this node); creds is the
	// credential state it sent (version 1.1), nil from older voters.
	exists  bool
	creds   *dirproto.Credentials
	expires time.Time
}

// revocation is a credential change an account event told of.
type revocation struct {
	state   api.CredentialState
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
	if cfg.KeyMissRefresh == 0 {
		cfg.KeyMissRefresh = d.KeyMissRefresh
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = d.CallTimeout
	}
	if cfg.MembershipTTL == 0 {
		cfg.MembershipTTL = d.MembershipTTL
	}
	if cfg.FailureLogInterval == 0 {
		cfg.FailureLogInterval = d.FailureLogInterval
	}
	cfg.Directory = append([]peer.AddrInfo(nil), cfg.Directory...)
	c := &Client{
		mem:     make(map[string]memEntry),
		revoked: make(map[string]revocation),
		cfg:     cfg,
		rpc:     p2p.RPCConfig{Timeout: cfg.CallTimeout, MaxFrameSize: p2p.MaxMessageSize, Logger: cfg.Logger},
		learnt:  map[peer.ID]bool{},
	}
	for _, v := range cfg.Directory {
		if len(v.Addrs) > 0 {
			cfg.Host.Peerstore().AddAddrs(v.ID, v.Addrs, peerstore.PermanentAddrTTL)
		}
		if !slices.Contains(c.voters, v.ID) {
			c.voters = append(c.voters, v.ID)
		}
	}
	c.hbLog = failLog{what: "heartbeat"}
	c.keysLog = failLog{what: "fetching directory keys"}
	c.peersLog = failLog{what: "fetching directory peers"}
	return c, nil
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

// leaderHint returns the peer ID a CodeNotLeader answer names as the
// leader ("" when it names none).
func leaderHint(err error) peer.ID {
	var re *p2p.RemoteError
	if !errors.As(err, &re) || re.Code != dirproto.CodeNotLeader {
		return ""
	}
	for _, f := range strings.Fields(re.Message) {
		if id, err := peer.Decode(strings.Trim(f, `"'(),.;:`)); err == nil {
			return id
		}
	}
	return ""
}

// voterPref chooses which voter a call tries first.
type voterPref int

const (
	anyVoter    voterPref = iota // the one that answered last
	leaderVoter                  // the one that took the last heartbeat or report
)

// order returns the voters to try, the preferred one first.
func (c *Client) order(pref voterPref) []peer.ID {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	first := c.answered
	if pref == leaderVoter && c.leader != "" {
		first = c.leader
	}
	out := make([]peer.ID, 0, len(c.voters)+1)
	if first != "" {
		out = append(out, first)
	}
	for _, v := range c.voters {
		if v != first {
			out = append(out, v)
		}
	}
	return out
}

// answeredBy records that voter v answered a call of kind pref.
func (c *Client) answeredBy(pref voterPref, v peer.ID) {
	c.vmu.Lock()
	c.answered = v
	if pref == leaderVoter {
		c.leader = v
	}
	c.vmu.Unlock()
}

// callDirectory sends req over proto to the voters, the preferred one
// first, until one answers or fails for good; a "not leader" answer that
// names the leader sends the request there next. Each attempt decodes
// into a fresh Resp. Dials skip libp2p's dial backoff: a voter that was
// down or cut off is tried again as soon as it is its turn.
func callDirectory[Resp any](ctx context.Context, c *Client, pref voterPref, proto protocol.ID, req any) (Resp, error) {
	return callVoters(ctx, c, pref, proto, func(ctx context.Context, id peer.ID, resp *Resp) error {
		return p2p.CallJSON(ctx, c.rpc, c.cfg.Host, id, proto, req, resp)
	})
}

// callDirectoryVersioned is callDirectory over a versioned protocol:
// newer with req, or older with oldReq to voters that do not speak newer
// (dirproto.CallVersioned).
func callDirectoryVersioned[Resp any](ctx context.Context, c *Client, pref voterPref, newer, older protocol.ID, req, oldReq any) (Resp, error) {
	return callVoters(ctx, c, pref, newer, func(ctx context.Context, id peer.ID, resp *Resp) error {
		_, err := dirproto.CallVersioned(ctx, c.rpc, c.cfg.Host, id, newer, older, req, oldReq, resp)
		return err
	})
}

// callVoters runs call against the voters in the order callDirectory
// describes.
func callVoters[Resp any](ctx context.Context, c *Client, pref voterPref, proto protocol.ID,
	call func(ctx context.Context, id peer.ID, resp *Resp) error) (Resp, error) {
	var zero Resp
	order := c.order(pref)
	tried := make(map[peer.ID]bool, len(order))
	dctx := network.WithForceDirectDial(ctx, "the directory client keeps its own retry pace")
	var errs []error
	for len(order) > 0 {
		id := order[0]
		order = order[1:]
		if tried[id] || id == c.cfg.Host.ID() {
			continue
		}
		tried[id] = true
		var resp Resp
		err := call(dctx, id, &resp)
		if err == nil {
			c.answeredBy(pref, id)
			return resp, nil
		}
		if ctx.Err() != nil {
			return zero, fmt.Errorf("dirclient: directory %s: %w", proto, ctx.Err())
		}
		if !retryable(err) {
			return zero, err
		}
		errs = append(errs, err)
		if h := leaderHint(err); h != "" && !tried[h] {
			order = append([]peer.ID{h}, order...)
		}
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no voter known"))
	}
	return zero, fmt.Errorf("%w: %s: %w", ErrDirectoryUnavailable, proto, errors.Join(errs...))
}

// Voters returns the directory voters this client knows: the configured
// ones and those the directory listed at the last RefreshPeers.
func (c *Client) Voters() []peer.ID {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	return slices.Clone(c.voters)
}

// CheckPassword asks the directory whether password is user's, passing
// the client address ctx carries (api.ClientAddr) for the directory's
// limits on failed logins. It returns nil when it is, an error wrapping
// api.ErrUnauthorized when it is not (or the user is unknown, not held
// by this node, or the credentials are out of bounds), an
// *api.ThrottleError (429) when the directory refuses to check during a
// back-off, and one wrapping ErrDirectoryUnavailable (so
// api.ErrUnavailable: 503) when no voter could answer.
func (c *Client) CheckPassword(ctx context.Context, user, password string) error {
	req := dirproto.CheckPasswordRequest{User: user, Password: password, Addr: api.ClientAddr(ctx)}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("node: credentials of %q: %v: %w", user, err, api.ErrUnauthorized)
	}
	old := dirproto.CheckPasswordRequest{User: user, Password: password}
	resp, err := callDirectoryVersioned[dirproto.CheckPasswordResponse](ctx, c, anyVoter,
		dirproto.ProtoCheckPassword11, dirproto.ProtoCheckPassword, req, old)
	if err != nil {
		if p2p.IsCode(err, p2p.CodeForbidden) {
			return fmt.Errorf("node: the directory does not let this node check %q: %v: %w", user, err, api.ErrUnauthorized)
		}
		if errors.Is(err, ErrDirectoryUnavailable) || ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: %w", ErrDirectoryUnavailable, err)
	}
	if resp.RetryAfterMS > 0 {
		return api.TooManyRequests(fmt.Errorf("node: the directory holds back password checks of %q", user),
			time.Duration(resp.RetryAfterMS)*time.Millisecond)
	}
	if !resp.OK {
		return fmt.Errorf("node: directory refused the password of %q: %w", user, api.ErrUnauthorized)
	}
	return nil
}

// Keys returns the directory's token verification keys as last fetched
// (by RefreshKeys or Run), for AuthConfig.Keys. It is empty until the
// first successful fetch, so bearer tokens are refused until then. It is
// a node.KeyRefresher: a token naming a key id it does not know makes it
// fetch the keys again, at most once per Config.KeyMissRefresh.
func (c *Client) Keys() node.KeySource { return clientKeys{c} }

// clientKeys is the Client's node.KeySource and node.KeyRefresher.
type clientKeys struct{ c *Client }

func (k clientKeys) PublicKey(kid string) (ed25519.PublicKey, bool) { return k.c.keys.PublicKey(kid) }

// RefreshKey fetches the keys again unless that was done less than
// KeyMissRefresh ago (then the answer is the current set's), and reports
// whether kid is known afterwards. Concurrent calls wait for one fetch.
func (k clientKeys) RefreshKey(ctx context.Context, kid string) bool {
	c := k.c
	if _, ok := c.keys.PublicKey(kid); ok {
		return true
	}
	c.keyMu.Lock()
	defer c.keyMu.Unlock()
	if _, ok := c.keys.PublicKey(kid); ok {
		return true
	}
	if time.Since(c.keyMissAt) < c.cfg.KeyMissRefresh {
		return false
	}
	c.keyMissAt = time.Now()
	if err := c.RefreshKeys(ctx); err != nil {
		c.cfg.Logger.Debug("dirclient: fetching keys for an unknown key id failed", "kid", kid, "err", err)
		return false
	}
	_, ok := c.keys.PublicKey(kid)
	return ok
}

// RefreshKeys fetches the directory's published keys and makes them the
// whole set Keys returns (retired keys disappear).
func (c *Client) RefreshKeys(ctx context.Context) error {
	resp, err := callDirectory[dirproto.KeysResponse](ctx, c, anyVoter, dirproto.ProtoKeys, nil)
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

// Heartbeat sends one heartbeat (load, unconfirmed writes, handoff
// backlog) to the directory, the voter that took the last one first (any
// voter takes it; a follower passes it to the leader). A remote refusal
// (this node is unknown or retired) comes back as a *p2p.RemoteError.
func (c *Client) Heartbeat(ctx context.Context) error {
	req := dirproto.HeartbeatRequest{Time: time.Now().UnixMilli()}
	if c.cfg.Load != nil {
		req.Load = max(c.cfg.Load(), 0)
	}
	if c.cfg.Unconfirmed != nil {
		req.Unconfirmed = c.cfg.Unconfirmed()
	}
	if c.cfg.HandoffBacklog != nil {
		req.HandoffBacklog = max(c.cfg.HandoffBacklog(), 0)
	}
	_, err := callDirectory[struct{}](ctx, c, leaderVoter, dirproto.ProtoHeartbeat, req)
	return err
}

// Report sends replication reports (dirproto.ProtoReport), the voter that
// took the last heartbeat or report first, and returns the directory's
// answer once it committed them. It then drops its cached replica sets of
// every user the report names (they changed, or the caller wants the
// directory's view: replication.Reporter). It implements
// replication.Reporter. When no voter answers the error wraps
// ErrDirectoryUnavailable; a refusal comes back as a *p2p.RemoteError
// (after a CodeForbidden refusal the cached sets are dropped too: the
// directory committed the report's other items).
func (c *Client) Report(ctx context.Context, req dirproto.ReportRequest) (dirproto.ReportResponse, error) {
	if err := req.Validate(); err != nil {
		return dirproto.ReportResponse{}, err
	}
	resp, err := callDirectory[dirproto.ReportResponse](ctx, c, leaderVoter, dirproto.ProtoReport, req)
	// A refusal (p2p.CodeForbidden: some Unconfirmed item's user no
	// longer has this node as a current member) comes after the commit
	// of the rest: the cached sets are stale as after a success.
	if err != nil && !p2p.IsCode(err, p2p.CodeForbidden) {
		return dirproto.ReportResponse{}, err
	}
	var users []string
	for _, u := range req.Unconfirmed {
		users = append(users, u.User)
	}
	for _, f := range req.Filled {
		users = append(users, f.User)
	}
	for _, h := range req.HandedOff {
		users = append(users, h.User)
	}
	c.InvalidateUsers(users...)
	return resp, err
}

// Serves implements node.Membership: it reports whether this node (the
// host's peer ID) is a current member of user's replica set (in the set
// and not filling), as Assignment returns it (so answers, positive and
// negative, are cached for MembershipTTL). A user name out of bounds is
// served by no node. When no voter answers (and no cached set is fresh)
// it returns an error wrapping ErrDirectoryUnavailable.
func (c *Client) Serves(ctx context.Context, user string) (bool, error) {
	e, err := c.assignment(ctx, user)
	if err != nil {
		return false, err
	}
	self := c.cfg.Host.ID().String()
	for _, n := range e.nodes {
		if n.PeerID == self || n.ID == self {
			return !n.Filling, nil
		}
	}
	return false, nil
}

// Replicas returns user's replica set, primary first (dirproto.ProtoAssignment);
// it is empty when the user has none, does not exist, or has a name out of
// bounds. See Assignment.
func (c *Client) Replicas(ctx context.Context, user string) ([]dirproto.AssignedNode, error) {
	e, err := c.assignment(ctx, user)
	return slices.Clone(e.nodes), err
}

// Assignment returns user's replica set, primary first, and its leaving
// members (dirproto.ProtoAssignment); both are empty when the user has
// none, does not exist, or has a name out of bounds. Answers are cached
// for MembershipTTL, so a set may be that old; InvalidateUsers (and a
// voter's membership event) drops the cached one, and an answer that was
// in flight while a set was dropped is not cached. The caller owns the
// returned slices. When no voter answers it returns an error wrapping
// ErrDirectoryUnavailable. Safe for concurrent use; concurrent misses of
// one user may each ask the directory.
func (c *Client) Assignment(ctx context.Context, user string) (nodes, leaving []dirproto.AssignedNode, err error) {
	e, err := c.assignment(ctx, user)
	return slices.Clone(e.nodes), slices.Clone(e.leaving), err
}

// assignment is Assignment without the copies: the entry's slices are
// shared with the cache and must not be modified. A user the directory
// does not let this node ask about (not held by it, or unknown: p2p
// CodeForbidden) gets an empty entry, cached like any answer.
func (c *Client) assignment(ctx context.Context, user string) (memEntry, error) {
	now := time.Now()
	c.memMu.Lock()
	e, ok := c.mem[user]
	gen := c.gen
	c.memMu.Unlock()
	if ok && now.Before(e.expires) {
		return e, nil
	}
	req := dirproto.AssignmentRequest{User: user}
	if err := req.Validate(); err != nil {
		return memEntry{}, nil
	}
	var resp dirproto.AssignmentResponse
	var err error
	for attempt := 0; ; attempt++ {
		// Every voter is asked in turn until one answers from a state not
		// older than the floor; the last answer is kept in case none does.
		var last *dirproto.AssignmentResponse
		resp, err = callVoters(ctx, c, anyVoter, dirproto.ProtoAssignment11, func(ctx context.Context, id peer.ID, r *dirproto.AssignmentResponse) error {
			if _, err := dirproto.CallVersioned(ctx, c.rpc, c.cfg.Host, id, dirproto.ProtoAssignment11, dirproto.ProtoAssignment, req, req, r); err != nil {
				return err
			}
			if !c.notBehind(r.Index) {
				last = r
				return errBehind
			}
			return nil
		})
		if err != nil && last != nil && errors.Is(err, errBehind) && ctx.Err() == nil {
			resp, err = *last, nil
		}
		if err != nil || c.notBehind(resp.Index) || attempt == staleRetries {
			break
		}
		// A voter a moment behind one this node heard: ask again shortly.
		select {
		case <-ctx.Done():
			return memEntry{}, ctx.Err()
		case <-time.After(staleRetryWait):
		}
	}
	if err == nil {
		if ok, floor := c.acceptIndex(resp.Index); !ok {
			err = fmt.Errorf("%w: the voters answer from directory state %d, older than state %d this node has seen",
				ErrDirectoryUnavailable, resp.Index, floor)
		}
	}
	switch {
	case p2p.IsCode(err, p2p.CodeForbidden):
		e = memEntry{expires: now.Add(c.cfg.MembershipTTL)}
	case err != nil:
		if errors.Is(err, ErrDirectoryUnavailable) || ctx.Err() != nil {
			return memEntry{}, err
		}
		return memEntry{}, fmt.Errorf("%w: %w", ErrDirectoryUnavailable, err)
	default:
		e = memEntry{nodes: resp.Nodes, leaving: resp.Leaving, exists: resp.Exists, creds: resp.Creds,
			expires: now.Add(c.cfg.MembershipTTL)}
	}
	c.memMu.Lock()
	if c.gen == gen {
		// No set was dropped while this answer was in flight (it could
		// predate the change that dropped it).
		if len(c.mem) >= maxMembershipCache {
			clear(c.mem)
		}
		c.mem[user] = e
	}
	c.memMu.Unlock()
	return e, nil
}

// Bounds of the wait for a voter that answers from a state older than one
// this node has seen (Client.floor).
const (
	staleRetries   = 5
	staleRetryWait = 20 * time.Millisecond
)

// staleReset: when every answer has been older than the floor for this
// long, the directory's state went back (a restore from a backup): the
// floor is reset to what the voters say. A variable for tests.
var staleReset = 30 * time.Second

// errBehind is a voter's answer from a state older than the floor.
var errBehind = errors.New("dirclient: the voter answered from a state older than one this node has seen")

// notBehind reports whether an answer from directory state index is at
// least as new as what this node has seen (0: a voter that does not say).
func (c *Client) notBehind(index uint64) bool {
	c.memMu.Lock()
	defer c.memMu.Unlock()
	return index == 0 || index >= c.floor
}

// acceptIndex decides whether an answer from directory state index may be
// used, raising the floor to it: yes when it is not older than the floor;
// when it is, no, unless answers have been older for staleReset (then the
// floor goes back to index, logged). It also returns the floor.
func (c *Client) acceptIndex(index uint64) (bool, uint64) {
	c.memMu.Lock()
	defer c.memMu.Unlock()
	switch {
	case index == 0:
		return true, c.floor
	case index >= c.floor:
		c.floor, c.staleSince = index, time.Time{}
		return true, c.floor
	}
	now := time.Now()
	if c.staleSince.IsZero() {
		c.staleSince = now
	}
	if now.Sub(c.staleSince) < staleReset {
		return false, c.floor
	}
	c.cfg.Logger.Warn("dirclient: the directory's state went back (restored from a backup?); following it",
		"was", c.floor, "now", index)
	c.floor, c.staleSince = index, time.Time{}
	return true, c.floor
}

// raiseFloor notes that the directory's state reached index.
func (c *Client) raiseFloor(index uint64) {
	c.memMu.Lock()
	c.floor = max(c.floor, index)
	c.memMu.Unlock()
}

// Credentials implements node.CredentialSource: the user's credential
// state from its cached replica set (the directory's answer, at most
// MembershipTTL old) merged with the account events this node received,
// the later change winning. A user this node does not hold, or that does
// not exist, has Exists false. From a voter too old to send credential
// states only the events count (ChangedAt 0). When no voter answers (and
// no cached answer is fresh) it returns an error wrapping
// ErrDirectoryUnavailable.
func (c *Client) Credentials(ctx context.Context, user string) (api.CredentialState, error) {
	e, err := c.assignment(ctx, user)
	if err != nil {
		return api.CredentialState{}, err
	}
	st := api.CredentialState{Exists: e.exists}
	if e.creds != nil {
		st.ChangedAt, st.Gen = e.creds.ChangedAt, e.creds.Gen
	}
	c.memMu.Lock()
	r, ok := c.revoked[user]
	c.memMu.Unlock()
	if ok && time.Now().Before(r.expires) {
		st.ChangedAt = max(st.ChangedAt, r.state.ChangedAt)
		if r.state.Gen > st.Gen {
			st.Gen = r.state.Gen
			st.Exists = st.Exists && r.state.Exists
		}
	}
	return st, nil
}

// NoteAccountEvent records what a voter's account event said (the new
// credential state, or the deletion's floor: dirproto.AccountEvent) for
// as long as the tokens it revokes may live, and drops the user's cached
// replica set, so Credentials holds the change even if the next lookup
// reaches a voter that has not applied it yet.
func (c *Client) NoteAccountEvent(ev dirproto.AccountEvent) {
	now := time.Now()
	st := api.CredentialState{Exists: !ev.Deleted, ChangedAt: ev.ChangedAt, Gen: ev.Gen}
	c.memMu.Lock()
	if len(c.revoked) >= maxRevocations {
		for u, r := range c.revoked {
			if !now.Before(r.expires) || len(c.revoked) >= maxRevocations/2 {
				delete(c.revoked, u)
			}
		}
	}
	if old, ok := c.revoked[ev.User]; ok && now.Before(old.expires) {
		st.ChangedAt = max(st.ChangedAt, old.state.ChangedAt)
		if old.state.Gen > st.Gen {
			st.Gen, st.Exists = old.state.Gen, old.state.Exists
		}
	}
	c.revoked[ev.User] = revocation{state: st, expires: now.Add(api.MaxTokenLifetime + api.TokenClockSkew)}
	c.memMu.Unlock()
	c.InvalidateUsers(ev.User)
}

// InvalidateUsers drops the cached replica sets of users, so that the
// next Serves, Replicas or Assignment asks the directory; answers in
// flight meanwhile are not cached.
func (c *Client) InvalidateUsers(users ...string) {
	c.memMu.Lock()
	for _, u := range users {
		delete(c.mem, u)
	}
	c.gen++
	c.memMu.Unlock()
}

// InvalidateUser drops the cached replica set of user (InvalidateUsers).
func (c *Client) InvalidateUser(user string) { c.InvalidateUsers(user) }

// AssignedUsers returns one page of the users whose replica set contains
// this node as a member or as a leaving member, each with its whole
// replica set (primary first) and leaving members, in ascending byte
// order of name strictly after after ("" for the first page); limit is
// the most wanted (0, or above dirproto.MaxUsersPage, means
// dirproto.MaxUsersPage). more says the list goes on: ask again with
// after set to the last user returned. version identifies the state of
// the list (see dirproto.UsersResponse.Version; 0 means unknown). The
// answer is not cached and not merged into the Assignment cache. A
// refusal (this node is not an admitted node) comes back as a
// *p2p.RemoteError; when no voter answers the error wraps
// ErrDirectoryUnavailable.
func (c *Client) AssignedUsers(ctx context.Context, after string, limit int) (users []dirproto.UserReplicas, more bool, version uint64, err error) {
	req := dirproto.UsersRequest{After: after, Limit: limit}
	if err := req.Validate(); err != nil {
		return nil, false, 0, err
	}
	resp, err := callDirectory[dirproto.UsersResponse](ctx, c, anyVoter, dirproto.ProtoUsers, req)
	if err != nil {
		return nil, false, 0, err
	}
	if len(resp.Users) > 0 && resp.Users[0].User <= after {
		return nil, false, 0, fmt.Errorf("%w: users page starts at %q, not after %q", p2p.ErrBadMessage, resp.Users[0].User, after)
	}
	return resp.Users, resp.More, resp.Version, nil
}

// RefreshPeers fetches the directory's peer list (dirproto.ProtoPeers).
// Its voters become the voters this client knows, besides the configured
// ones: new ones are logged, their addresses go into the host's
// peerstore. With an Allowlist, the listed active nodes and the voters
// become its whole content (connections to peers no longer listed are
// closed) and the nodes' registered addresses go into the peerstore
// (nodes dial each other for replication).
func (c *Client) RefreshPeers(ctx context.Context) error {
	resp, err := callDirectory[dirproto.PeersResponse](ctx, c, anyVoter, dirproto.ProtoPeers, nil)
	if err != nil {
		return err
	}
	ps := c.cfg.Host.Peerstore()
	addrsOf := func(s string) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, a := range resp.Addrs[s] {
			if m, err := ma.NewMultiaddr(a); err == nil {
				out = append(out, m)
			}
		}
		return out
	}
	var voters []peer.ID
	for _, s := range resp.Voters {
		id, err := peer.Decode(s)
		if err != nil {
			c.cfg.Logger.Debug("dirclient: directory listed an unparsable voter id", "peer", s, "err", err)
			continue
		}
		if id == c.cfg.Host.ID() {
			continue
		}
		voters = append(voters, id)
		if as := addrsOf(s); len(as) > 0 {
			ps.AddAddrs(id, as, peerstore.PermanentAddrTTL)
		}
	}
	c.learnVoters(voters)
	if c.cfg.Allowlist == nil {
		return nil
	}
	ids := c.Voters()
	for _, s := range resp.Nodes {
		id, err := peer.Decode(s)
		if err != nil {
			c.cfg.Logger.Debug("dirclient: directory listed an unparsable peer id", "peer", s, "err", err)
			continue
		}
		ids = append(ids, id)
		if id == c.cfg.Host.ID() {
			continue
		}
		// The other nodes' registered addresses go into the peerstore,
		// so that protocols between nodes (replication) can dial them.
		if as := addrsOf(s); len(as) > 0 {
			ps.AddAddrs(id, as, peerstore.PermanentAddrTTL)
		}
	}
	old := c.cfg.Allowlist.List()
	c.cfg.Allowlist.Replace(ids)
	for _, id := range old {
		if !c.cfg.Allowlist.Allowed(id) {
			_ = c.cfg.Host.Network().ClosePeer(id)
		}
	}
	return nil
}

// learnVoters makes listed, with the configured voters, the voters this
// client knows.
func (c *Client) learnVoters(listed []peer.ID) {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	next := make(map[peer.ID]bool, len(listed))
	for _, id := range listed {
		next[id] = true
		if !c.learnt[id] && !c.configured(id) {
			c.cfg.Logger.Info("dirclient: directory voter learnt", "voter", id)
		}
	}
	c.learnt = next
	voters := c.voters[:0:0]
	for _, v := range c.cfg.Directory {
		if !slices.Contains(voters, v.ID) {
			voters = append(voters, v.ID)
		}
	}
	for _, id := range listed {
		if !slices.Contains(voters, id) {
			voters = append(voters, id)
		}
	}
	c.voters = voters
}

// configured reports whether id is one of Config.Directory.
func (c *Client) configured(id peer.ID) bool {
	for _, v := range c.cfg.Directory {
		if v.ID == id {
			return true
		}
	}
	return false
}

// IsVoter reports whether id is a directory voter this client knows: one
// of the configured voters, or one the directory listed at the last
// RefreshPeers. Storage nodes admit only voters to the protocols the
// directory calls (dirproto.ProtoAccount, dirproto.ProtoMembership).
func (c *Client) IsVoter(id peer.ID) bool {
	c.vmu.Lock()
	defer c.vmu.Unlock()
	return slices.Contains(c.voters, id)
}

// ServeMembershipEvents serves dirproto.ProtoMembership on the client's
// host: a directory voter tells this node that the replica sets of some
// users changed. Callers that are not known voters get
// p2p.CodeForbidden. The node drops its cached sets of those users
// (InvalidateUsers) and answers only then, so the voter may count the
// node as notified; the next lookups ask the voter that sent the event
// first (it has applied the change). changed, when not nil, is called
// with the users after that (replication.Replicator.MembershipChanged);
// it must not block.
func (c *Client) ServeMembershipEvents(changed func(users []string)) {
	p2p.Serve(c.cfg.Host, dirproto.ProtoMembership, p2p.HandleJSON(func(_ context.Context, from peer.ID, ev dirproto.MembershipEvent) (struct{}, error) {
		if !c.IsVoter(from) {
			c.cfg.Logger.Debug("dirclient: membership event from a peer that is not a voter", "peer", from)
			return struct{}{}, p2p.Errorf(p2p.CodeForbidden, "peer %s is not a directory voter", from)
		}
		if err := ev.Validate(); err != nil {
			return struct{}{}, p2p.Errorf(p2p.CodeBadRequest, "%v", err)
		}
		c.raiseFloor(ev.Index)
		c.InvalidateUsers(ev.Users...)
		c.vmu.Lock()
		c.answered = from
		c.vmu.Unlock()
		c.cfg.Logger.Debug("dirclient: replica sets changed at the directory", "users", len(ev.Users), "voter", from)
		if changed != nil {
			changed(ev.Users)
		}
		return struct{}{}, nil
	}), p2p.RPCConfig{MaxFrameSize: p2p.MaxMessageSize, Timeout: c.cfg.CallTimeout, Logger: c.cfg.Logger})
}

// Run fetches the keys and sends a heartbeat at once, then keeps doing so
// every KeyRefresh and HeartbeatInterval, until ctx is done; it then
// returns nil. Every heartbeat interval it also refreshes the peer list
// (RefreshPeers: the voters and, with an Allowlist, the gater). A failed
// heartbeat is tried again after 200 ms, doubling up to a second (and at
// most HeartbeatInterval), so a new leader is found soon after an
// election. Failures are logged at WARN with the last error and the
// number of failures, at most once per FailureLogInterval while they
// last, and at INFO when calls succeed again; never fatal.
func (c *Client) Run(ctx context.Context) error {
	keyTimer := time.NewTimer(c.refreshKeysLogged(ctx))
	defer keyTimer.Stop()
	hb := time.NewTimer(c.beat(ctx))
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hb.C:
			hb.Reset(c.beat(ctx))
		case <-keyTimer.C:
			keyTimer.Reset(c.refreshKeysLogged(ctx))
		}
	}
}

// refreshKeysLogged runs RefreshKeys, logs the outcome and returns the
// time until the next refresh.
func (c *Client) refreshKeysLogged(ctx context.Context) time.Duration {
	if err := c.RefreshKeys(ctx); err != nil {
		if ctx.Err() == nil {
			c.keysLog.fail(c.cfg.Logger, err, c.cfg.FailureLogInterval)
		}
		return min(c.cfg.HeartbeatInterval, c.cfg.KeyRefresh)
	}
	c.keysLog.ok(c.cfg.Logger)
	return c.cfg.KeyRefresh
}

// beat refreshes the peers when due (every heartbeat interval, and at
// every retry while heartbeats fail: a voter may have joined), sends a
// heartbeat and returns the time until the next one.
func (c *Client) beat(ctx context.Context) time.Duration {
	if c.hbRetry > 0 || time.Since(c.peersAt) >= c.cfg.HeartbeatInterval {
		if err := c.RefreshPeers(ctx); err != nil {
			if ctx.Err() == nil {
				c.peersLog.fail(c.cfg.Logger, err, c.cfg.FailureLogInterval)
			}
		} else {
			c.peersAt = time.Now()
			c.peersLog.ok(c.cfg.Logger)
		}
	}
	err := c.Heartbeat(ctx)
	switch {
	case ctx.Err() != nil:
		return c.cfg.HeartbeatInterval
	case err != nil:
		c.hbLog.fail(c.cfg.Logger, err, c.cfg.FailureLogInterval)
		c.hbRetry = min(max(2*c.hbRetry, minHeartbeatRetry), maxHeartbeatRetry, c.cfg.HeartbeatInterval)
		return c.hbRetry
	}
	c.hbLog.ok(c.cfg.Logger)
	c.hbRetry = 0
	return c.cfg.HeartbeatInterval
}

// failLog rate-limits the logs of a call that keeps failing: a WARN at
// the first failure and then at most one per interval, each with the
// number of failures so far and the last error; an INFO when it succeeds
// again. Not safe for concurrent use (Run's goroutine owns it).
type failLog struct {
	what     string
	failures int
	since    time.Time
	lastWarn time.Time
}

func (f *failLog) fail(log *slog.Logger, err error, every time.Duration) {
	now := time.Now()
	if f.failures == 0 {
		f.since = now
	}
	f.failures++
	if f.failures == 1 || now.Sub(f.lastWarn) >= every {
		f.lastWarn = now
		log.Warn("dirclient: "+f.what+" failed", "err", err, "failures", f.failures, "failing_for", now.Sub(f.since).Round(time.Millisecond))
	}
}

func (f *failLog) ok(log *slog.Logger) {
	if f.failures > 0 {
		log.Info("dirclient: "+f.what+" succeeded again", "failures", f.failures, "failed_for", time.Since(f.since).Round(time.Millisecond))
	}
	f.failures = 0
}
