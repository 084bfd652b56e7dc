package testnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// The nemesis is a Jepsen-style randomized fault test of a running
// testnet. Clients that behave like Sync clients write, read and register
// while the nemesis, driven by a seed, kills and restarts voters (the
// leader too; never a quorum down or cut off) and storage nodes (one at a
// time), and partitions nodes from nodes, nodes from voters and voters from
// voters. Then everything is healed and restarted, the replicas converge,
// and the checker says what broke:
//
//   - every acknowledged record is on every node of its user's final
//     replica set, with its payload;
//   - every acknowledged registration exists;
//   - each user's replicas converge to the same winners (WaitConverged);
//   - no read through node/weave answered 200 without a record whose
//     write was acknowledged before that read started;
//   - the longest stretch without a successful registration.
//
// A writer's acknowledgement time is taken under the lock that a reader
// takes to note its start, after the response was read; so "acknowledged
// before the read started" never includes a write still in flight, and the
// read check reports no false positives.

// Defaults of NemesisConfig.
const (
	// DefaultNemesisDuration is how long faults are injected.
	DefaultNemesisDuration = time.Minute
	// DefaultNemesisUsers is the number of users written and read.
	DefaultNemesisUsers = 4
	// DefaultNemesisMinGap and DefaultNemesisMaxGap bound the pause after
	// each fault step.
	DefaultNemesisMinGap = time.Second
	DefaultNemesisMaxGap = 4 * time.Second
	// DefaultNemesisSettle is how long clients go on after the heal, before
	// the checks.
	DefaultNemesisSettle = 5 * time.Second
	// DefaultNemesisRecover bounds the wait for a healthy testnet after the
	// heal, and for each user's replicas to converge.
	DefaultNemesisRecover = time.Minute
	// nemesisCollection is the collection the clients write and read.
	nemesisCollection = "nemesis"
	// nemesisPassword is every nemesis account's password.
	nemesisPassword = "nemesis password of a sync client"
)

// NemesisConfig configures RunNemesis. A zero field takes its default.
type NemesisConfig struct {
	// Seed drives the fault schedule (which fault, on whom, the pauses);
	// the same seed replays the same choices on the same testnet shape,
	// as far as they do not depend on what the testnet did (who leads,
	// whether a restart succeeded). Zero is a seed like any other.
	Seed uint64
	// Duration is how long faults are injected. Default
	// DefaultNemesisDuration (1 min).
	Duration time.Duration
	// Users is how many users are written (one writer each) and read (one
	// reader each). Default DefaultNemesisUsers (4).
	Users int
	// MinGap and MaxGap bound the random pause after each fault step.
	// Defaults DefaultNemesisMinGap (1 s) and DefaultNemesisMaxGap (4 s).
	MinGap, MaxGap time.Duration
	// Settle is how long the clients go on after everything is healed and
	// healthy, before they stop and the checks run; they go on past it
	// until every writer has had a write acknowledged after the heal
	// (one may be sitting out a Retry-After), for at most Recover from
	// the heal. Default DefaultNemesisSettle (5 s).
	Settle time.Duration
	// Recover bounds the wait for a healthy testnet after the heal and for
	// the replicas to converge. Default DefaultNemesisRecover (1 min).
	Recover time.Duration
	// Quiet injects no faults: the clients run for Duration against a
	// healthy testnet. A quiet run must pass every check; it validates the
	// checker.
	Quiet bool
	// WritePause, ReadPause and RegisterPause are the pauses between one
	// client's requests. Defaults 100 ms, 200 ms and 500 ms.
	WritePause, ReadPause, RegisterPause time.Duration
	// BatchSize is the number of records per write (a Weave POST).
	// Default 5.
	BatchSize int
	// Logger receives progress (each fault as it happens). Default:
	// discard.
	Logger *slog.Logger
}

// DefaultNemesisConfig returns the defaults.
func DefaultNemesisConfig() NemesisConfig {
	return NemesisConfig{Duration: DefaultNemesisDuration, Users: DefaultNemesisUsers,
		MinGap: DefaultNemesisMinGap, MaxGap: DefaultNemesisMaxGap, Settle: DefaultNemesisSettle,
		Recover: DefaultNemesisRecover, WritePause: 100 * time.Millisecond, ReadPause: 200 * time.Millisecond,
		RegisterPause: 500 * time.Millisecond, BatchSize: 5}
}

// Validate reports a configuration RunNemesis cannot use.
func (c NemesisConfig) Validate() error {
	if c.Duration < 0 || c.Users < 0 || c.MinGap < 0 || c.MaxGap < 0 || c.Settle < 0 || c.Recover < 0 || c.BatchSize < 0 {
		return errors.New("testnet: negative NemesisConfig field")
	}
	if c.MinGap > 0 && c.MaxGap > 0 && c.MinGap > c.MaxGap {
		return fmt.Errorf("testnet: nemesis MinGap %v above MaxGap %v", c.MinGap, c.MaxGap)
	}
	return nil
}

// withDefaults fills zero fields.
func (c NemesisConfig) withDefaults() NemesisConfig {
	d := DefaultNemesisConfig()
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.Users == 0 {
		c.Users = d.Users
	}
	if c.MinGap == 0 {
		c.MinGap = d.MinGap
		if c.MaxGap > 0 {
			c.MinGap = min(d.MinGap, c.MaxGap)
		}
	}
	if c.MaxGap == 0 {
		c.MaxGap = max(d.MaxGap, c.MinGap)
	}
	if c.Settle == 0 {
		c.Settle = d.Settle
	}
	if c.Recover == 0 {
		c.Recover = d.Recover
	}
	if c.WritePause <= 0 {
		c.WritePause = d.WritePause
	}
	if c.ReadPause <= 0 {
		c.ReadPause = d.ReadPause
	}
	if c.RegisterPause <= 0 {
		c.RegisterPause = d.RegisterPause
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// NemesisEvent is one step of the schedule: a fault, a repair or a phase.
type NemesisEvent struct {
	// At is the time since the run started.
	At time.Duration
	// What says what was done ("kill d1 (leader)", "partition n1,n2 |
	// n3,n4", "restart n3", ...).
	What string
	// Err is the step's error, if it failed ("" otherwise).
	Err string
}

// LostRecord is an acknowledged record missing from, or different on, a
// node of its user's final replica set.
type LostRecord struct {
	User, Node, ID string
	// AckedBy is the node that acknowledged the write, AckedAt when.
	AckedBy string
	AckedAt time.Duration
	// Why is "missing" or "payload differs".
	Why string
}

// StaleRead is a read through node/weave that answered 200 without a
// record whose write was acknowledged before the read started.
type StaleRead struct {
	User, Node string
	// At is when the read started; Listed how many records it listed;
	// Missing how many acknowledged ones it lacked, Example some of them.
	At      time.Duration
	Listed  int
	Missing int
	Example []string
	// Answered is when the read's answer arrived; AckedBy the nodes that
	// acknowledged the missing writes, FirstAcked and LastAcked when the
	// first and the last of them were acknowledged (what a stale read
	// needs to be traced in the nodes' and voters' logs).
	Answered              time.Duration
	AckedBy               []string
	FirstAcked, LastAcked time.Duration
}

// Outage is a stretch without a successful registration.
type Outage struct {
	From, To time.Duration
	// Attempts failed during it; LastErr is the last failure's error.
	Attempts int
	LastErr  string
}

// NemesisResult is what a run did and found.
type NemesisResult struct {
	Seed     uint64
	Duration time.Duration // of the fault phase
	// Began is the wall-clock time every "+N s" of the result counts
	// from, so that events can be found in the members' logs.
	Began    time.Time
	Voters   int
	Nodes    int
	Replicas int
	Quiet    bool
	// Schedule is every fault, repair and phase, in order.
	Schedule []NemesisEvent
	// Users are the written users' account names.
	Users []string

	// Writes.
	Acked        int            // records acknowledged
	WriteErrors  map[string]int // failed write attempts by cause ("401", "503", "unreachable", ...)
	Lookups      int            // node/weave look-ups by writers and readers
	LookupErrors map[string]int // failed look-ups by cause
	// Unconfirmed counts the writes nodes logged as acknowledged after
	// reporting the members that did not confirm them (made filling:
	// replication.UnconfirmedAckLog) during the run; LeaverWaits those
	// that waited out a node that had just left the set
	// (replication.LeaverWaitLog). -1 when the logs could not be read (in
	// process). Statistics, not checks: both are the rule working.
	Unconfirmed, LeaverWaits int

	// Reads.
	Reads      int            // reads through node/weave answered 200 and checked
	ReadErrors map[string]int // non-200 reads by cause
	StaleReads []StaleRead

	// Registrations.
	Registered        int            // registrations acknowledged
	RegisterErrors    map[string]int // failed registrations by cause
	MissingRegistered []string       // acknowledged, not found at the end
	LongestOutage     Outage         // the longest stretch without a successful registration
	Outages           []Outage       // stretches longer than 2 s, in order

	// End state.
	Unhealthy    string   // why the testnet was not healthy after the heal ("" if it was)
	NotConverged []string // "user: error"
	// FinalSets are the users' replica sets at the end (node names,
	// primary first); UnderReplicated lists the users whose set has fewer
	// than Replicas nodes although every node was restarted.
	FinalSets       map[string][]string
	UnderReplicated []string
	Lost            []LostRecord
	// Unchecked lists what the checker could not read (a node of a final
	// set that did not answer): a failure, since nothing was verified.
	Unchecked []string
	// NoAckAfterHeal lists users whose writer got no acknowledgement
	// within Recover of the heal, with what it was doing.
	NoAckAfterHeal []string
	// WritesResumed is how long after the heal the last writer to
	// recover had its first write acknowledged.
	WritesResumed time.Duration
}

// OK reports whether every check passed.
func (r *NemesisResult) OK() bool {
	return len(r.StaleReads) == 0 && len(r.MissingRegistered) == 0 && r.Unhealthy == "" &&
		len(r.NotConverged) == 0 && len(r.UnderReplicated) == 0 && len(r.Lost) == 0 && len(r.Unchecked) == 0 &&
		len(r.NoAckAfterHeal) == 0
}

// Err returns nil when OK, else an error summing up the failed checks.
func (r *NemesisResult) Err() error {
	if r.OK() {
		return nil
	}
	var why []string
	if n := len(r.Lost); n > 0 {
		why = append(why, fmt.Sprintf("%d acknowledged record copies lost", n))
	}
	if n := len(r.StaleReads); n > 0 {
		why = append(why, fmt.Sprintf("%d reads answered 200 without acknowledged writes", n))
	}
	if n := len(r.MissingRegistered); n > 0 {
		why = append(why, fmt.Sprintf("%d acknowledged registrations missing", n))
	}
	if n := len(r.NotConverged); n > 0 {
		why = append(why, fmt.Sprintf("%d users not converged", n))
	}
	if n := len(r.UnderReplicated); n > 0 {
		why = append(why, fmt.Sprintf("%d users with fewer than %d replicas", n, r.Replicas))
	}
	if r.Unhealthy != "" {
		why = append(why, "not healthy after the heal")
	}
	if n := len(r.Unchecked); n > 0 {
		why = append(why, fmt.Sprintf("%d checks could not run", n))
	}
	if n := len(r.NoAckAfterHeal); n > 0 {
		why = append(why, fmt.Sprintf("%d writers stuck after the heal", n))
	}
	return fmt.Errorf("testnet: nemesis (seed %d) failed: %s", r.Seed, strings.Join(why, "; "))
}

// RunNemesis runs the randomized fault test against tn (started with
// Start in ChildProcess mode, or attached): it registers cfg.Users users,
// starts their writers and readers and a registration prober, injects
// faults for cfg.Duration (none with cfg.Quiet), heals and restarts every
// member, waits until the testnet is healthy, lets the clients go on for
// cfg.Settle, stops them, and checks. The error is for a run that could
// not be done (bad config, users could not be registered); what the
// checks found is in the result (NemesisResult.OK, Err, Print). ctx ending
// stops the run early, still healing and restarting what it broke.
func RunNemesis(ctx context.Context, tn *Testnet, cfg NemesisConfig) (*NemesisResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &nemesis{tn: tn, cfg: cfg, log: cfg.Logger, begin: time.Now(),
		rng: rand.New(rand.NewPCG(cfg.Seed, 0x6e656d65736973)),
		hc:  &http.Client{Timeout: 10 * time.Second}}
	defer n.hc.CloseIdleConnections()
	for _, v := range tn.Voters() {
		n.voters = append(n.voters, v.ID)
		n.voterURLs = append(n.voterURLs, v.HTTP)
	}
	for _, nd := range tn.Nodes() {
		n.nodes = append(n.nodes, nd.Name)
	}
	res := &NemesisResult{Seed: cfg.Seed, Duration: cfg.Duration, Began: n.begin, Voters: len(n.voters), Nodes: len(n.nodes),
		Replicas: tn.cfg.Replicas, Quiet: cfg.Quiet, Unconfirmed: -1, LeaverWaits: -1}
	if len(n.voters) == 0 || len(n.nodes) == 0 {
		return nil, errors.New("testnet: nemesis needs voters and nodes")
	}
	n.st.downVoters = map[string]bool{}
	hctx, cancel := context.WithTimeout(ctx, cfg.Recover)
	err := tn.WaitHealthy(hctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("testnet: nemesis: the testnet is not healthy at the start: %w", err)
	}
	logs := n.logOffsets()
	if err := n.registerUsers(ctx); err != nil {
		return nil, err
	}
	for _, u := range n.users {
		res.Users = append(res.Users, u.name)
	}

	cctx, stopClients := context.WithCancel(context.Background())
	var clients sync.WaitGroup
	for _, u := range n.users {
		clients.Add(2)
		go func() { defer clients.Done(); n.writer(cctx, u) }()
		go func() { defer clients.Done(); n.reader(cctx, u) }()
	}
	clients.Add(1)
	go func() { defer clients.Done(); n.prober(cctx) }()
	stop := func() {
		stopClients()
		clients.Wait()
	}

	n.event("start: %d users writing and reading, registrations every %v", len(n.users), cfg.RegisterPause)
	if cfg.Quiet {
		n.pause(ctx, cfg.Duration)
	} else {
		n.faults(ctx, time.Now().Add(cfg.Duration))
	}
	healed := n.healAll(ctx)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Recover)
	if err := tn.WaitHealthy(rctx); err != nil {
		res.Unhealthy = err.Error()
		n.event("not healthy after %v: %v", cfg.Recover, err)
	} else {
		n.event("healthy")
	}
	cancel()
	n.pause(ctx, cfg.Settle)
	// A writer may still be sitting out a Retry-After (up to
	// maxRetryAfter) it was given just before: the clients go on until
	// every writer has had a write acknowledged after the heal, for at
	// most cfg.Recover from the heal.
	for deadline := healed.Add(cfg.Recover); ctx.Err() == nil && time.Now().Before(deadline); {
		if !slices.ContainsFunc(n.users, func(u *nemUser) bool { return u.lastAck().Before(healed) }) {
			break
		}
		n.pause(ctx, 100*time.Millisecond)
	}
	stop()
	n.event("clients stopped")
	for _, u := range n.users {
		first := u.firstAckAfter(healed)
		if first.IsZero() {
			doing, since := u.state()
			res.NoAckAfterHeal = append(res.NoAckAfterHeal, fmt.Sprintf("%s (last acknowledgement %+.2fs; at the end %s since %+.2fs)",
				u.name, n.since(u.lastAck()).Seconds(), doing, n.since(since).Seconds()))
			continue
		}
		res.WritesResumed = max(res.WritesResumed, first.Sub(healed))
	}
	n.check(ctx, res)
	n.event("checked")
	res.Unconfirmed, res.LeaverWaits = n.ackLogCountsSince(logs)
	n.mu.Lock()
	res.Schedule = slices.Clone(n.schedule)
	n.mu.Unlock()
	return res, nil
}

// nemesis is one run's state.
type nemesis struct {
	tn    *Testnet
	cfg   NemesisConfig
	log   *slog.Logger
	begin time.Time
	rng   *rand.Rand // the schedule's; used by the nemesis goroutine only
	hc    *http.Client

	voters    []string // ids
	voterURLs []string
	nodes     []string // short names
	users     []*nemUser
	st        faultState // the nemesis goroutine's

	mu       sync.Mutex
	schedule []NemesisEvent
	stats    nemStats
	regs     []registration
}

// nemStats counts the clients' requests; n.mu held.
type nemStats struct {
	acked        int
	writeErrors  map[string]int
	lookups      int
	lookupErrors map[string]int
	reads        int
	readErrors   map[string]int
	stale        []StaleRead
	regErrors    map[string]int
}

// since is the time since the run started.
func (n *nemesis) since(t time.Time) time.Duration {
	return t.Sub(n.begin).Round(10 * time.Millisecond)
}

// event appends a step to the schedule and logs it.
func (n *nemesis) event(format string, args ...any) {
	n.record(nil, format, args...)
}

// record appends a step with its outcome.
func (n *nemesis) record(err error, format string, args ...any) {
	e := NemesisEvent{At: n.since(time.Now()), What: fmt.Sprintf(format, args...)}
	if err != nil {
		e.Err = err.Error()
	}
	n.mu.Lock()
	n.schedule = append(n.schedule, e)
	n.mu.Unlock()
	if err != nil {
		n.log.Warn("nemesis: "+e.What, "at", e.At, "err", err)
	} else {
		n.log.Info("nemesis: "+e.What, "at", e.At)
	}
}

// count adds one to m[key] under n.mu, creating m.
func (n *nemesis) count(m *map[string]int, key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[key]++
}

// pause waits d or until ctx ends.
func (n *nemesis) pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
