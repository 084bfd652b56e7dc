package directory

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/placement"
	"github.com/hce-sync/hce/directory/state"
)

// HashParams are the argon2id parameters used for new password hashes.
// Stored hashes carry their own parameters, so changing these only affects
// hashes made afterwards; old hashes keep verifying.
type HashParams struct {
	// Time is the number of passes over memory (argon2 "t"). Default 2.
	Time uint32
	// MemoryKiB is the memory cost in KiB (argon2 "m"). Default 19456
	// (19 MiB), OWASP's minimum for argon2id with t=2, p=1.
	MemoryKiB uint32
	// Threads is the degree of parallelism (argon2 "p"). Default 1.
	Threads uint8
	// SaltLen is the random salt length in bytes. Default 16.
	SaltLen uint32
	// KeyLen is the derived key length in bytes. Default 32.
	KeyLen uint32
}

// DefaultHashParams returns OWASP's minimum argon2id parameters
// (m=19 MiB, t=2, p=1) with a 16-byte salt and a 32-byte key.
func DefaultHashParams() HashParams {
	return HashParams{Time: 2, MemoryKiB: 19 * 1024, Threads: 1, SaltLen: 16, KeyLen: 32}
}

func (p HashParams) withDefaults() HashParams {
	d := DefaultHashParams()
	if p.Time == 0 {
		p.Time = d.Time
	}
	if p.MemoryKiB == 0 {
		p.MemoryKiB = d.MemoryKiB
	}
	if p.Threads == 0 {
		p.Threads = d.Threads
	}
	if p.SaltLen == 0 {
		p.SaltLen = d.SaltLen
	}
	if p.KeyLen == 0 {
		p.KeyLen = d.KeyLen
	}
	return p
}

// validate checks parameters after defaults were applied.
func (p HashParams) validate() error {
	if p.MemoryKiB < 8*uint32(p.Threads) {
		return fmt.Errorf("directory: argon2 memory %d KiB below 8*threads", p.MemoryKiB)
	}
	if p.MemoryKiB > maxHashMemoryKiB || p.Time > maxHashTime {
		return fmt.Errorf("directory: argon2 m=%d KiB, t=%d above the limits %d, %d", p.MemoryKiB, p.Time, maxHashMemoryKiB, maxHashTime)
	}
	if p.SaltLen < 8 || p.SaltLen > 64 {
		return fmt.Errorf("directory: argon2 salt length %d out of [8, 64]", p.SaltLen)
	}
	if p.KeyLen < 16 || p.KeyLen > 64 {
		return fmt.Errorf("directory: argon2 key length %d out of [16, 64]", p.KeyLen)
	}
	return nil
}

// Defaults that the command line reuses for its flags.
const (
	// DefaultID is the default raft server ID of a voter.
	DefaultID = "dir1"
	// DefaultResetCodeTTL is how long a password reset code stays valid.
	DefaultResetCodeTTL = 6 * time.Hour
	// DefaultTokenTTL is the default lifetime of issued tokens.
	DefaultTokenTTL = 30 * time.Minute
	// DefaultServeNodeID is the default audience of tokens when users are
	// not assigned to registered storage nodes (serve mode).
	DefaultServeNodeID = "local"
	// DefaultDownAfter is how long the leader waits without a heartbeat
	// before it marks a storage node down.
	DefaultDownAfter = 15 * time.Second
	// DefaultReplicas is the default replica set size R of the cluster
	// settings (Settings.Replicas).
	DefaultReplicas = state.DefaultReplicas
	// DefaultPlacementTick is NodeConfig.PlacementTick's default.
	DefaultPlacementTick = time.Second
	// DefaultMaxTransfers is NodeConfig.MaxTransfers's default.
	DefaultMaxTransfers = 4
	// DefaultInviteTTL is how long an invite code stays valid unless the
	// admin says otherwise.
	DefaultInviteTTL = 7 * 24 * time.Hour
)

// Config configures a Directory. A zero field means "use the default".
// Dir is the only field without a default; the sub-structs group the
// settings of one concern each.
type Config struct {
	// ID is the raft server ID of this voter. Default DefaultID.
	ID string
	// Dir is the data folder. It holds raft.db (raft-boltdb log and stable
	// store), snapshots/, the token signing key and, with Nodes.P2PListen,
	// the libp2p identity. Required. Created (0700) if missing.
	Dir string
	// Logger receives the directory's and raft's logs. Default
	// slog.Default().
	Logger *slog.Logger
	// Clock returns the current time; it stamps commands before they are
	// proposed (the state machine never reads a clock), checks reset code
	// expiry, times tokens and heartbeats. Default time.Now.
	Clock func() time.Time
	// AdminToken protects the admin API and the voter-to-voter internal
	// endpoints (join, forward); every voter of a cluster needs the same
	// one. Empty disables those endpoints (401). Required in cluster mode.
	AdminToken string

	// Accounts configures the account API.
	Accounts AccountConfig
	// Tokens configures the bearer tokens IssueToken signs.
	Tokens TokenConfig
	// Raft configures raft, its stores and the write path into it.
	Raft RaftConfig
	// Cluster configures the multi-voter mode. When Bootstrap, Join and
	// RaftAddr are all empty the directory runs as one self-bootstrapped
	// voter on Raft.Transport (or an in-memory transport), as `hce serve`
	// does.
	Cluster ClusterConfig
	// Nodes configures how storage nodes are admitted, watched, placed
	// and served over libp2p.
	Nodes NodeConfig

	// Sync configures the Sync 1.5 tokenserver (GET /1.0/sync/1.5, see
	// sync.go); off unless a way to verify access tokens is given.
	Sync SyncConfig

	// Faults, when set, cuts chosen raft and libp2p links (test
	// partitions, see Faults). Nil: nothing is refused.
	Faults Faults
}

// AccountConfig configures the account API: hashing, password resets and
// the storage node of users created while none is registered.
type AccountConfig struct {
	// NodeURL is the base URL of the storage node a new account gets when
	// no storage node is registered (the serve case). A missing trailing
	// "/" is added. Empty means no node (StorageNode answers "").
	NodeURL string
	// PasswordHash are the argon2id parameters for new hashes. Default
	// DefaultHashParams(). Tests may lower them.
	PasswordHash HashParams
	// HashConcurrency bounds how many argon2 computations run at once
	// (each takes PasswordHash.MemoryKiB of memory). Default GOMAXPROCS.
	HashConcurrency int
	// ResetCodeTTL is how long a password reset code stays valid.
	// Default DefaultResetCodeTTL (6 h).
	ResetCodeTTL time.Duration
	// ResetURL, when set, is put into reset mails as
	// ResetURL?username=<user>&key=<code>. Optional.
	ResetURL string
	// Mailer sends password reset codes. Default LogMailer over Logger
	// (development only: it logs the code).
	Mailer Mailer
	// CredentialsChanged, when set, is called after a committed command
	// that invalidates a user's credentials (account deleted, password
	// changed or reset), with the account name, and with "" after a
	// snapshot restore (any account may have changed). It runs on raft's
	// apply goroutine: it must be quick and must not call back into the
	// Directory. Storage nodes use it to drop cached Basic-auth answers.
	CredentialsChanged func(user string)
	// Limits bounds failed logins and the hashing they cost (the login
	// guard, guard.go). Zero fields: DefaultLoginLimits.
	Limits LoginLimits
	// Resets bounds password-reset mails. Zero fields:
	// DefaultResetLimits.
	Resets ResetLimits
	// InviteTTL is the lifetime of invite codes CreateInvite makes when
	// asked for none. Default DefaultInviteTTL (7 days).
	InviteTTL time.Duration

	// The voter's Weave user API (UserAPIConfig) takes the following.

	// Registration is who may create accounts (api.Registration); zero
	// means open.
	Registration api.Registration
	// Captcha, when set, turns captchas on for registrations and reset
	// requests (api.UserConfig.Captcha); CaptchaSiteKey and CaptchaHTML
	// go into /misc/1.0/captcha_html.
	Captcha                     api.CaptchaVerifier
	CaptchaSiteKey, CaptchaHTML string
	// AdminSecret, when set, lets requests carrying it in X-Weave-Secret
	// skip the captcha and the registration policy.
	AdminSecret string
}

// TokenConfig configures the bearer tokens of IssueToken.
type TokenConfig struct {
	// TTL is the lifetime of the tokens IssueToken signs. Default
	// DefaultTokenTTL (30 min); at most api.MaxTokenLifetime (1 h).
	TTL time.Duration
	// ServeNodeID is the token audience (node id) for users not assigned
	// to registered storage nodes, as in serve mode. Default
	// DefaultServeNodeID.
	ServeNodeID string
}

// RaftConfig configures raft and the write path into it. A zero timing
// field means raft's default (see raft.DefaultConfig).
type RaftConfig struct {
	// Transport is raft's network transport in single-voter mode. Nil
	// means an in-memory transport, which is enough for a voter that
	// reaches no one. Cluster mode makes its own (mutual TLS).
	Transport raft.Transport
	// LogLevel is the level raft's own log is filtered at (raft's default
	// would be DEBUG). Default slog.LevelInfo.
	LogLevel slog.Level
	// ApplyTimeout bounds how long a write may wait to be enqueued into
	// raft, and one voter-to-voter request; a caller's ctx bounds the
	// total wait. Default 10 s.
	ApplyTimeout time.Duration
	// MaxBatch is the most commands the group-commit loop puts into one
	// raft entry. Default 128, at most state.MaxBatchCommands.
	MaxBatch int
	// SnapshotOnClose takes a raft snapshot in Close when there are log
	// entries since the last one, so the next start replays less.
	SnapshotOnClose bool
	// SnapshotRetain: number of snapshots kept on disk. Default 2.
	SnapshotRetain int

	// HeartbeatTimeout: how long a follower waits without contact from a
	// leader before it stands for election. Raft default 1 s.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: how long a candidate waits for votes. Raft default 1 s.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: how long a leader stays leader without contact
	// from a quorum. Must not exceed HeartbeatTimeout. Raft default 500 ms.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: the longest a follower can go without learning the
	// commit index. Raft default 50 ms.
	CommitTimeout time.Duration
	// SnapshotInterval: how often raft checks whether to snapshot.
	// Raft default 120 s.
	SnapshotInterval time.Duration
	// SnapshotThreshold: number of log entries since the last snapshot
	// that triggers one. Raft default 8192.
	SnapshotThreshold uint64
	// TrailingLogs: log entries kept after a snapshot, so a lagging
	// follower can catch up without a snapshot. Raft default 10240.
	TrailingLogs uint64
}

// ClusterConfig configures a voter of a multi-voter cluster: raft over
// mutual TLS, joining, and forwarding writes to the leader.
type ClusterConfig struct {
	// Bootstrap makes this voter create a new cluster with itself as the
	// only member on first start (ignored when raft state exists).
	Bootstrap bool
	// Join is the HTTP base URL of any voter of an existing cluster. On
	// first start (no raft state) Open asks it, with AdminToken, to add
	// this voter (POST /internal/v1/join).
	Join string
	// AwaitAdd lets a voter with no raft state and neither Bootstrap nor
	// Join start and wait (Open blocks, bounded by its ctx) until an
	// admin adds it through a voter of the cluster (Directory.AddVoter,
	// hce admin voter add); it logs the command to run every 30 s.
	AwaitAdd bool
	// RaftAddr is the host:port raft listens on over mutual TLS
	// (directory/raftls). Required with Bootstrap or Join. Port 0 picks one.
	RaftAddr string
	// RaftAdvertise is the host:port other voters dial. Default: the
	// listener's address.
	RaftAdvertise string
	// HTTPURL is this voter's advertised HTTP base URL, where HTTPHandler
	// is served; other voters forward writes to it. Required in cluster
	// mode.
	HTTPURL string
	// TLSCA, TLSCert and TLSKey are PEM: the directory CA certificate and
	// this voter's certificate and key issued by it (raftls.CA.Issue).
	// Required in cluster mode.
	TLSCA, TLSCert, TLSKey []byte
	// HTTPClient is used to forward writes and to join. Default: a client
	// with a 10 s timeout.
	HTTPClient *http.Client
}

// NodeConfig configures the directory's side of the storage nodes.
type NodeConfig struct {
	// AutoApprove makes registered storage nodes active at once, without
	// an admin's approval (serve and testnet). The cluster setting of the
	// same name (Settings.AutoApprove) has the same effect.
	AutoApprove bool
	// DownAfter is how long the leader waits without a heartbeat before it
	// marks a storage node down. Default DefaultDownAfter (15 s); the
	// cluster setting Settings.DownAfterMS overrides it.
	DownAfter time.Duration
	// LivenessTick is how often the leader checks heartbeats. Default
	// DownAfter/5.
	LivenessTick time.Duration
	// P2PListen, when set, gives this voter a libp2p host listening on
	// these multiaddresses (e.g. "/ip4/127.0.0.1/tcp/0"), with the
	// identity kept in Dir (api/p2p.LoadOrCreateIdentity). The host
	// serves the directory protocols to storage nodes (ServeP2P); its
	// gater admits registered, non-retired nodes and the other voters.
	// The voter records its peer ID and addresses in the state (SetVoter).
	// Empty: no libp2p host.
	P2PListen []string
	// NotifyNodes makes the voter that handles a password change, a
	// password reset or an account deletion tell the storage nodes of
	// the user's replica set over libp2p (dirproto.ProtoAccount; see
	// notify.go), so they drop cached credentials and, on a deletion,
	// the user's records. Needs P2PListen. Default off.
	NotifyNodes bool
	// Placement tunes the allocation policy (zero fields: placement's
	// defaults). Now is ignored: the state machine uses the raft index.
	Placement placement.Policy
	// PlacementTick is how often the leader's placement loop looks for
	// members that may leave their sets (drains, transfers) besides after
	// every change of sets, and starts rebalancing transfers. Default
	// DefaultPlacementTick (1 s).
	PlacementTick time.Duration
	// MaxTransfers bounds the rebalancing transfers under way at once.
	// Default DefaultMaxTransfers (4); negative turns rebalancing off.
	MaxTransfers int
}

// DefaultConfig returns a Config with the defaults filled in, except Dir
// (required), the ones Open derives from other fields (Logger:
// slog.Default(); Accounts.Mailer: a LogMailer over the logger;
// Cluster.HTTPClient; Nodes.LivenessTick: DownAfter/5) and the optional
// ones (empty means off).
func DefaultConfig() Config {
	return Config{
		ID:    DefaultID,
		Clock: time.Now,
		Accounts: AccountConfig{
			PasswordHash:    DefaultHashParams(),
			HashConcurrency: runtime.GOMAXPROCS(0),
			ResetCodeTTL:    DefaultResetCodeTTL,
		},
		Tokens: TokenConfig{TTL: DefaultTokenTTL, ServeNodeID: DefaultServeNodeID},
		Raft: RaftConfig{
			LogLevel:       slog.LevelInfo,
			ApplyTimeout:   10 * time.Second,
			MaxBatch:       128,
			SnapshotRetain: 2,
		},
		Nodes: NodeConfig{DownAfter: DefaultDownAfter, PlacementTick: DefaultPlacementTick, MaxTransfers: DefaultMaxTransfers},
	}
}

// withDefaults returns c with zero fields replaced by defaults and the
// URLs normalised (NodeURL ends in "/", HTTPURL and Join do not).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ID == "" {
		c.ID = d.ID
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	a := &c.Accounts
	if a.Mailer == nil {
		a.Mailer = &LogMailer{Logger: c.Logger}
	}
	a.PasswordHash = a.PasswordHash.withDefaults()
	if a.HashConcurrency <= 0 {
		a.HashConcurrency = d.Accounts.HashConcurrency
	}
	if a.ResetCodeTTL <= 0 {
		a.ResetCodeTTL = d.Accounts.ResetCodeTTL
	}
	a.Limits = a.Limits.withDefaults()
	a.Resets = a.Resets.withDefaults()
	if a.InviteTTL <= 0 {
		a.InviteTTL = DefaultInviteTTL
	}
	if a.NodeURL != "" && !strings.HasSuffix(a.NodeURL, "/") {
		a.NodeURL += "/"
	}
	// A negative TTL is kept for Validate to refuse.
	if c.Tokens.TTL == 0 {
		c.Tokens.TTL = d.Tokens.TTL
	}
	if c.Tokens.ServeNodeID == "" {
		c.Tokens.ServeNodeID = d.Tokens.ServeNodeID
	}
	r := &c.Raft
	if r.ApplyTimeout <= 0 {
		r.ApplyTimeout = d.Raft.ApplyTimeout
	}
	if r.MaxBatch <= 0 {
		r.MaxBatch = d.Raft.MaxBatch
	}
	if r.SnapshotRetain <= 0 {
		r.SnapshotRetain = d.Raft.SnapshotRetain
	}
	if c.Cluster.HTTPClient == nil {
		c.Cluster.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	c.Cluster.HTTPURL = strings.TrimSuffix(c.Cluster.HTTPURL, "/")
	c.Cluster.Join = strings.TrimSuffix(c.Cluster.Join, "/")
	if c.Nodes.DownAfter <= 0 {
		c.Nodes.DownAfter = d.Nodes.DownAfter
	}
	if c.Nodes.LivenessTick <= 0 {
		c.Nodes.LivenessTick = c.Nodes.DownAfter / 5
	}
	if c.Nodes.PlacementTick <= 0 {
		c.Nodes.PlacementTick = d.Nodes.PlacementTick
	}
	if c.Nodes.MaxTransfers == 0 {
		c.Nodes.MaxTransfers = d.Nodes.MaxTransfers
	}
	c.Sync = c.Sync.withDefaults()
	return c
}

// clustered reports whether c asks for a multi-voter cluster over
// mutual TLS rather than the single self-bootstrapped voter.
func (c Config) clustered() bool {
	return c.Cluster.Bootstrap || c.Cluster.Join != "" || c.Cluster.RaftAddr != ""
}

// Validate reports whether the configuration (after defaults) is usable.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Dir == "" {
		return errors.New("directory: Config.Dir is required")
	}
	if err := c.Accounts.PasswordHash.validate(); err != nil {
		return err
	}
	if _, err := api.ParseRegistration(string(c.Accounts.Registration)); err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	if c.Accounts.NodeURL != "" {
		u, err := url.Parse(c.Accounts.NodeURL)
		if err != nil {
			return fmt.Errorf("directory: NodeURL: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("directory: NodeURL %q is not an absolute http(s) URL", c.Accounts.NodeURL)
		}
	}
	if c.Accounts.ResetURL != "" {
		if u, err := url.Parse(c.Accounts.ResetURL); err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("directory: ResetURL %q is not an absolute URL", c.Accounts.ResetURL)
		}
	}
	if c.clustered() {
		cl := c.Cluster
		if cl.RaftAddr == "" || cl.HTTPURL == "" {
			return errors.New("directory: cluster mode needs RaftAddr and HTTPURL")
		}
		if len(cl.TLSCA) == 0 || len(cl.TLSCert) == 0 || len(cl.TLSKey) == 0 {
			return errors.New("directory: cluster mode needs TLSCA, TLSCert and TLSKey")
		}
		if c.AdminToken == "" {
			return errors.New("directory: cluster mode needs AdminToken (join and forwarding use it)")
		}
		if cl.Bootstrap && cl.Join != "" {
			return errors.New("directory: Bootstrap and Join are exclusive")
		}
		if c.Raft.Transport != nil {
			return errors.New("directory: Raft.Transport cannot be combined with RaftAddr")
		}
	}
	if c.Tokens.TTL > api.MaxTokenLifetime {
		return fmt.Errorf("directory: Tokens.TTL %v above %v", c.Tokens.TTL, api.MaxTokenLifetime)
	}
	if c.Tokens.TTL < 0 {
		return fmt.Errorf("directory: Tokens.TTL %v is negative", c.Tokens.TTL)
	}
	if err := c.Sync.validate(); err != nil {
		return err
	}
	if c.Raft.MaxBatch > state.MaxBatchCommands {
		return fmt.Errorf("directory: MaxBatch %d above %d", c.Raft.MaxBatch, state.MaxBatchCommands)
	}
	if c.Raft.LeaderLeaseTimeout > 0 && c.Raft.HeartbeatTimeout > 0 &&
		c.Raft.LeaderLeaseTimeout > c.Raft.HeartbeatTimeout {
		return errors.New("directory: Raft.LeaderLeaseTimeout exceeds HeartbeatTimeout")
	}
	return nil
}
