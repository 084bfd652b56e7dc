package replication

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hce-sync/hce/api/dirproto"
)

// Defaults of Config.
const (
	DefaultSweepInterval = time.Minute
	DefaultChangesBatch  = 1000
	DefaultFetchBatch    = 1000
	DefaultSeqsBatch     = 500
	DefaultIdleTimeout   = time.Minute
	// DefaultPullConcurrency is how many users' pulls from one peer run
	// at once.
	DefaultPullConcurrency = 8
	DefaultRetryMin        = 100 * time.Millisecond
	DefaultRetryMax        = 30 * time.Second
	DefaultCallTimeout     = 30 * time.Second
	// DefaultReplicaWait is how long a client write waits for the other
	// members' confirmations (hce node --replica-wait).
	DefaultReplicaWait = 2 * time.Second
	// DefaultReportTimeout bounds one report to the directory.
	DefaultReportTimeout = 10 * time.Second
	// DefaultMembershipTTL is the membership cache lifetime the rules
	// count on (the node's directory client's default).
	DefaultMembershipTTL = 2 * time.Second
)

// MaxPullConcurrency bounds Config.PullConcurrency.
const MaxPullConcurrency = 64

// Config configures a Replicator. A zero field means "use the default".
type Config struct {
	// Store is this node's store. Required.
	Store Store
	// Membership gives the users' replica sets. Required.
	Membership Membership
	// Transport reaches the other nodes. Required.
	Transport Transport
	// Logger receives pulls (debug), refused revisions and requests
	// (warn) and failures (warn). Default: discard.
	Logger *slog.Logger
	// SweepInterval is how often every assigned user is compared with its
	// peers' sequence numbers (the catch-up after lost notices, and the
	// backfill of a new replica). Default 1 minute.
	SweepInterval time.Duration
	// ChangesBatch is the rows asked per changes request. Default 1000, at
	// most MaxRows.
	ChangesBatch int
	// FetchBatch is the documents asked per fetch request. Default 1000, at
	// most MaxFetchDocs.
	FetchBatch int
	// SeqsBatch is the users asked per sequence-number request of a sweep.
	// Default 500, at most MaxUsers.
	SeqsBatch int
	// IdleTimeout is how long a peer's pull goroutine waits for work
	// before it exits. Default 1 minute.
	IdleTimeout time.Duration
	// PullConcurrency is how many users' pulls from one peer run at once
	// (a client write waits for its own user's pull, not for the others'
	// queued beside it). Default 8, at most MaxPullConcurrency.
	PullConcurrency int
	// RetryMin and RetryMax bound the backoff before a failed pull is
	// retried. Defaults 100 ms and 30 s.
	RetryMin, RetryMax time.Duration
	// CallTimeout bounds one request to a peer. Default 30 s.
	CallTimeout time.Duration
	// Reporter sends reports to the directory: writes acknowledged
	// without every member's confirmation (Unconfirmed), completed
	// backfills (Filled) and handoffs (HandedOff). Without one, a write
	// some member did not confirm is not acknowledged (WaitReplicated
	// fails) and nothing else is reported.
	Reporter Reporter
	// ReplicaWait is the longest a client write waits for the other
	// members' confirmations before it reports the ones missing.
	// Default 2 s.
	ReplicaWait time.Duration
	// ReportTimeout bounds one report (a write waits for it). Default
	// 10 s.
	ReportTimeout time.Duration
	// MembershipTTL is the longest any node of the federation reuses a
	// replica set it read from the directory (the Membership's cache
	// lifetime, the same on every node). A filling member starts the pull
	// it reports as its backfill at least this long after it learnt its
	// epoch; a write whose report was not pushed to the members waits
	// this long before it is acknowledged. Default 2 s.
	MembershipTTL time.Duration
	// ViewLag is how old, at most, the directory state is from which a
	// voter answers a node's membership lookup (the directory's view lag,
	// its raft heartbeat timeout): a replica set a node uses may reflect
	// the directory as it was MembershipTTL + ViewLag ago. A filling
	// member starts the pull it reports as its backfill at least
	// MembershipTTL + ViewLag after it learnt its epoch. (A write whose
	// report was not pushed waits the lag the directory's answer states.)
	// Default dirproto.DefaultViewLag (1 s, raft's default heartbeat
	// timeout); it must not be below the directory's.
	ViewLag time.Duration
}

// DefaultConfig returns a Config with the defaults filled in; Store,
// Membership and Transport must still be set.
func DefaultConfig() Config {
	return Config{
		Logger:          slog.New(slog.DiscardHandler),
		SweepInterval:   DefaultSweepInterval,
		ChangesBatch:    DefaultChangesBatch,
		FetchBatch:      DefaultFetchBatch,
		SeqsBatch:       DefaultSeqsBatch,
		IdleTimeout:     DefaultIdleTimeout,
		PullConcurrency: DefaultPullConcurrency,
		RetryMin:        DefaultRetryMin,
		RetryMax:        DefaultRetryMax,
		CallTimeout:     DefaultCallTimeout,
		ReplicaWait:     DefaultReplicaWait,
		ReportTimeout:   DefaultReportTimeout,
		MembershipTTL:   DefaultMembershipTTL,
		ViewLag:         dirproto.DefaultViewLag,
	}
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("replication: Config.Store is required")
	case c.Membership == nil:
		return errors.New("replication: Config.Membership is required")
	case c.Transport == nil:
		return errors.New("replication: Config.Transport is required")
	case c.SweepInterval < 0 || c.IdleTimeout < 0 || c.RetryMin < 0 || c.RetryMax < 0 || c.CallTimeout < 0 ||
		c.ReplicaWait < 0 || c.ReportTimeout < 0 || c.MembershipTTL < 0 || c.ViewLag < 0:
		return errors.New("replication: Config durations must not be negative")
	case c.ChangesBatch < 0 || c.ChangesBatch > MaxRows:
		return fmt.Errorf("replication: Config.ChangesBatch %d not in [0, %d]", c.ChangesBatch, MaxRows)
	case c.FetchBatch < 0 || c.FetchBatch > MaxFetchDocs:
		return fmt.Errorf("replication: Config.FetchBatch %d not in [0, %d]", c.FetchBatch, MaxFetchDocs)
	case c.PullConcurrency < 0 || c.PullConcurrency > MaxPullConcurrency:
		return fmt.Errorf("replication: Config.PullConcurrency %d not in [0, %d]", c.PullConcurrency, MaxPullConcurrency)
	case c.SeqsBatch < 0 || c.SeqsBatch > MaxUsers:
		return fmt.Errorf("replication: Config.SeqsBatch %d not in [0, %d]", c.SeqsBatch, MaxUsers)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	def := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	def(&c.SweepInterval, d.SweepInterval)
	def(&c.IdleTimeout, d.IdleTimeout)
	def(&c.RetryMin, d.RetryMin)
	def(&c.RetryMax, d.RetryMax)
	def(&c.CallTimeout, d.CallTimeout)
	def(&c.ReplicaWait, d.ReplicaWait)
	def(&c.ReportTimeout, d.ReportTimeout)
	def(&c.MembershipTTL, d.MembershipTTL)
	def(&c.ViewLag, d.ViewLag)
	if c.ChangesBatch == 0 {
		c.ChangesBatch = d.ChangesBatch
	}
	if c.PullConcurrency == 0 {
		c.PullConcurrency = d.PullConcurrency
	}
	if c.FetchBatch == 0 {
		c.FetchBatch = d.FetchBatch
	}
	if c.SeqsBatch == 0 {
		c.SeqsBatch = d.SeqsBatch
	}
	c.RetryMax = max(c.RetryMax, c.RetryMin)
	return c
}
