package testnet

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/node"
)

// Mode says how a Testnet runs its voters and storage nodes.
type Mode int

const (
	// InProcess runs every voter and node inside the calling process
	// (StartVoter, StartNode); Kill is an abrupt Close.
	InProcess Mode = iota
	// ChildProcess runs each voter and node as a child `hce directory` or
	// `hce node` process of Config.Binary; Kill is SIGKILL.
	ChildProcess
)

// String names the mode as testnet.json records it.
func (m Mode) String() string {
	if m == ChildProcess {
		return "child-process"
	}
	return "in-process"
}

// Defaults of Config (Replicas: DefaultReplicas).
const (
	// DefaultDirectories is the number of directory voters D.
	DefaultDirectories = 3
	// DefaultNodes is the number of storage nodes N.
	DefaultNodes = 4
	// DefaultOperators is the number of operators the nodes are spread
	// over.
	DefaultOperators = 2
	// DefaultDownAfter is the heartbeat silence after which a testnet's
	// directory marks a node down (shorter than a production voter's
	// DefaultVoterDownAfter, so failovers show quickly).
	DefaultDownAfter = 5 * time.Second
	// DefaultHeartbeat is a testnet's nodes' heartbeat interval.
	DefaultHeartbeat = time.Second
	// DefaultSweep is a testnet's nodes' replication sweep interval.
	DefaultSweep = 2 * time.Second
	// DefaultChildLogLevel is the --log-level of child processes.
	DefaultChildLogLevel = "warn"
)

// Config configures a Testnet. A zero field takes its default
// (DefaultConfig).
type Config struct {
	// Dir holds the CA (DIR/ca), every member's data folder (DIR/d1,
	// DIR/n1, ...), child logs (DIR/logs) and DIR/testnet.json. Required.
	Dir string
	// Directories is the number of directory voters D. Default
	// DefaultDirectories (3).
	Directories int
	// Nodes is the number of storage nodes N. Default DefaultNodes (4).
	Nodes int
	// Operators is the number of operators (op1..opK) the nodes are
	// spread over round-robin. Default DefaultOperators (2).
	Operators int
	// Replicas is the replica set size R. Default DefaultReplicas (2).
	Replicas int
	// Mode is InProcess (default) or ChildProcess.
	Mode Mode
	// Binary is the path of the hce binary; required with ChildProcess.
	Binary string
	// BinaryFor, when set, picks the binary of each start of a member
	// (by short name: d1, n2, ...; "" keeps Binary): a mixed-version
	// testnet, and a rolling upgrade when it answers differently for a
	// Restart. ChildProcess only.
	BinaryFor func(member string) string
	// DownAfter is the heartbeat silence after which a node is marked
	// down. Default DefaultDownAfter (5 s).
	DownAfter time.Duration
	// Heartbeat is the nodes' heartbeat interval. Default
	// DefaultHeartbeat (1 s).
	Heartbeat time.Duration
	// Sweep is the nodes' replication sweep interval (see
	// NodeConfig.SweepInterval). Default DefaultSweep (2 s): testnets are
	// small, and a short sweep catches up quickly after a partition heals.
	Sweep time.Duration
	// AdminToken protects the admin API. Default: 32 random bytes, hex.
	AdminToken string
	// ChildLogLevel is the --log-level of child processes. Default
	// DefaultChildLogLevel ("warn").
	ChildLogLevel string
	// Logger receives the testnet's logs (and, in process, the members').
	// Default: discard.
	Logger *slog.Logger
	// Directory, when set, adjusts each in-process voter's directory
	// configuration last (ignored with ChildProcess).
	Directory func(*directory.Config)
	// TLS serves every member's HTTP over HTTPS, with certificates from
	// the testnet's HTTPS CA (DIR/https-ca, see HTTPSCADir); RootCAs
	// returns the pool that trusts it.
	TLS bool
	// HTTP, when set, adjusts each in-process member's HTTP configuration
	// last (ignored with ChildProcess).
	HTTP func(member string, c *HTTPConfig)
	// Store sizes every node's Pebble store, in process and in child
	// processes (hce node's --block-cache-mib, --memtable-mib and
	// --max-compactions). Zero fields: the node's defaults.
	Store StoreSizing
}

// StoreSizing is how a testnet's nodes size their Pebble store (see
// node.Config). Zero fields mean node.DefaultConfig's; sizes are whole
// MiB (a child process gets them in MiB).
type StoreSizing struct {
	// BlockCacheMiB is node.Config.CacheBytes in MiB.
	BlockCacheMiB int64 `json:"block_cache_mib,omitempty"`
	// MemTableMiB is node.Config.MemTableBytes in MiB.
	MemTableMiB int64 `json:"memtable_mib,omitempty"`
	// MaxCompactions is node.Config.MaxCompactions.
	MaxCompactions int `json:"max_compactions,omitempty"`
}

// apply sets the non-zero sizes on c.
func (z StoreSizing) apply(c *node.Config) {
	if z.BlockCacheMiB > 0 {
		c.CacheBytes = z.BlockCacheMiB << 20
	}
	if z.MemTableMiB > 0 {
		c.MemTableBytes = z.MemTableMiB << 20
	}
	if z.MaxCompactions > 0 {
		c.MaxCompactions = z.MaxCompactions
	}
}

// args returns the hce node flags of the non-zero sizes.
func (z StoreSizing) args() []string {
	var a []string
	if z.BlockCacheMiB > 0 {
		a = append(a, "--block-cache-mib", strconv.FormatInt(z.BlockCacheMiB, 10))
	}
	if z.MemTableMiB > 0 {
		a = append(a, "--memtable-mib", strconv.FormatInt(z.MemTableMiB, 10))
	}
	if z.MaxCompactions > 0 {
		a = append(a, "--max-compactions", strconv.Itoa(z.MaxCompactions))
	}
	return a
}

// DefaultConfig returns the defaults (Dir still needs to be set).
func DefaultConfig() Config {
	return Config{
		Directories:   DefaultDirectories,
		Nodes:         DefaultNodes,
		Operators:     DefaultOperators,
		Replicas:      DefaultReplicas,
		DownAfter:     DefaultDownAfter,
		Heartbeat:     DefaultHeartbeat,
		Sweep:         DefaultSweep,
		ChildLogLevel: DefaultChildLogLevel,
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Directories <= 0 {
		c.Directories = d.Directories
	}
	if c.Nodes <= 0 {
		c.Nodes = d.Nodes
	}
	if c.Operators <= 0 {
		c.Operators = d.Operators
	}
	if c.Replicas <= 0 {
		c.Replicas = d.Replicas
	}
	if c.DownAfter <= 0 {
		c.DownAfter = d.DownAfter
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = d.Heartbeat
	}
	if c.Sweep <= 0 {
		c.Sweep = d.Sweep
	}
	if c.ChildLogLevel == "" {
		c.ChildLogLevel = d.ChildLogLevel
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a configuration Start cannot run.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("testnet: Config.Dir is required")
	case c.Mode != InProcess && c.Mode != ChildProcess:
		return fmt.Errorf("testnet: unknown mode %d", c.Mode)
	case c.Mode == ChildProcess && c.Binary == "":
		return errors.New("testnet: ChildProcess mode needs Config.Binary")
	case c.Directories < 0 || c.Nodes < 0 || c.Operators < 0 || c.Replicas < 0:
		return errors.New("testnet: negative count")
	case c.Store.BlockCacheMiB < 0 || c.Store.MemTableMiB < 0 || c.Store.MaxCompactions < 0:
		return errors.New("testnet: negative store size")
	}
	return nil
}
