package testnet

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hce-sync/hce/directory"
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

// Config configures a Testnet. A zero field takes its default.
type Config struct {
	// Dir holds the CA (DIR/ca), every member's data folder (DIR/d1,
	// DIR/n1, ...), child logs (DIR/logs) and DIR/testnet.json. Required.
	Dir string
	// Directories is the number of directory voters D. Default 3.
	Directories int
	// Nodes is the number of storage nodes N. Default 4.
	Nodes int
	// Operators is the number of operators (op1..opK) the nodes are
	// spread over round-robin. Default 2.
	Operators int
	// Replicas is the replica set size R. Default 2.
	Replicas int
	// Mode is InProcess (default) or ChildProcess.
	Mode Mode
	// Binary is the path of the hce binary; required with ChildProcess.
	Binary string
	// DownAfter is the heartbeat silence after which a node is marked
	// down. Default 5 s.
	DownAfter time.Duration
	// Heartbeat is the nodes' heartbeat interval. Default 1 s.
	Heartbeat time.Duration
	// Sweep is the nodes' replication sweep interval (see
	// NodeConfig.SweepInterval). Default 2 s: testnets are small, and a
	// short sweep catches up quickly after a partition heals.
	Sweep time.Duration
	// AdminToken protects the admin API. Default: 32 random bytes, hex.
	AdminToken string
	// ChildLogLevel is the --log-level of child processes. Default "warn".
	ChildLogLevel string
	// Logger receives the testnet's logs (and, in process, the members').
	// Default: discard.
	Logger *slog.Logger
	// Directory, when set, adjusts each in-process voter's directory
	// configuration last (ignored with ChildProcess).
	Directory func(*directory.Config)
}

// DefaultConfig returns the defaults (Dir still needs to be set).
func DefaultConfig() Config {
	return Config{Directories: 3, Nodes: 4, Operators: 2, Replicas: 2, DownAfter: 5 * time.Second,
		Heartbeat: time.Second, Sweep: 2 * time.Second, ChildLogLevel: "warn"}
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
	}
	return nil
}
