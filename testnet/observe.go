package testnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hce-sync/hce/api/httpserve"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/dirclient"
)

// What each process's /__heartbeat__ checks and what its /metrics shows
// beyond the HTTP platform's own metrics: the components' collectors
// (node.Store, replication.Replicator and directory.Directory each have a
// Collector method) and what the wiring reads from them.

// registry returns hc's registry, creating it (with the Go runtime and
// process collectors, as hce_go_* and hce_process_*) when unset.
func (hc *HTTPConfig) registry() *prometheus.Registry {
	if hc.Server.Registry == nil {
		reg := prometheus.NewRegistry()
		wrapped := prometheus.WrapRegistererWithPrefix(httpserve.Namespace+"_", reg)
		wrapped.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		hc.Server.Registry = reg
	}
	return hc.Server.Registry
}

// storeWritable checks a node's store: Pebble answers a read, and the
// data folder takes a small synced write (a full or read-only disk
// fails it).
func storeWritable(store *node.Store, dataDir string) httpserve.Checker {
	probe := filepath.Join(dataDir, ".health-probe")
	return httpserve.CheckFunc(func(ctx context.Context) error {
		if err := store.Healthy(ctx); err != nil {
			return err
		}
		f, err := os.OpenFile(probe, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("write probe: %w", err)
		}
		_, err = f.Write([]byte("ok\n"))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write probe: %w", err)
		}
		return nil
	})
}

// raftLeaderKnown checks that a voter knows a raft leader.
func raftLeaderKnown(d *directory.Directory) httpserve.Checker {
	return httpserve.CheckFunc(func(context.Context) error {
		if id, _ := d.Leader(); id == "" {
			return errors.New("no raft leader known")
		}
		return nil
	})
}

// directoryReachable checks that a node reaches the directory's leader:
// one heartbeat (the heartbeat goes to the leader, through any voter).
func directoryReachable(dc *dirclient.Client) httpserve.Checker {
	return httpserve.CheckFunc(func(ctx context.Context) error {
		if err := dc.Heartbeat(ctx); err != nil {
			return fmt.Errorf("directory leader unreachable: %w", err)
		}
		return nil
	})
}

// registerStoreMetrics adds a node store's metrics: its size on disk
// (read at scrape time), the writes acknowledged before any replica
// confirmed them, the replicated batches that left a user over quota, and
// the store's own (Pebble: WAL sync latency, compaction debt, ...).
func registerStoreMetrics(reg prometheus.Registerer, store *node.Store, storeDir string) error {
	return registerAll(reg, store.Collector(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: httpserve.Namespace, Subsystem: "store", Name: "size_bytes",
			Help: "Bytes the node's Pebble store takes on disk (all files of its folder).",
		}, func() float64 { return float64(dirSize(storeDir)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: httpserve.Namespace, Subsystem: "store", Name: "writes_unconfirmed_total",
			Help: "Client writes acknowledged without a replica's confirmation within the replica wait.",
		}, func() float64 { return float64(store.UnconfirmedWrites()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: httpserve.Namespace, Subsystem: "store", Name: "replicated_over_quota_total",
			Help: "Replicated batches stored although they left their user over quota (replication never refuses for a quota).",
		}, func() float64 { return float64(store.ReplicatedOverQuota()) }),
	)
}

// dirSize sums the sizes of the files under dir (0 on error).
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// raftStates are the values of hce_raft_state's state label.
var raftStates = []string{"Follower", "Candidate", "Leader", "Shutdown"}

// directoryCollector reads a voter's raft and directory figures at
// scrape time (directory.Directory.Stats).
type directoryCollector struct {
	d                                      *directory.Directory
	state, applied, leader, users, batches *prometheus.Desc
	commands, undecodable                  *prometheus.Desc
}

func newDirectoryCollector(d *directory.Directory) *directoryCollector {
	desc := func(sub, name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(httpserve.Namespace, sub, name), help, labels, nil)
	}
	return &directoryCollector{
		d:           d,
		state:       desc("raft", "state", "1 for the raft state this voter is in, 0 for the others.", "state"),
		applied:     desc("raft", "applied_index", "Last raft index applied to the state machine."),
		leader:      desc("raft", "leader_known", "1 when this voter knows a raft leader."),
		users:       desc("directory", "users", "Accounts in the directory."),
		batches:     desc("directory", "commit_batches_total", "Raft entries proposed by the group-commit loop."),
		commands:    desc("directory", "commit_commands_total", "Commands carried by those entries."),
		undecodable: desc("directory", "undecodable_entries_total", "Log entries the state machine could not decode."),
	}
}

// Describe implements prometheus.Collector.
func (c *directoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.applied, c.leader, c.users, c.batches, c.commands, c.undecodable} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *directoryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.Stats()
	for _, s := range raftStates {
		v := 0.0
		if s == st.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, s)
	}
	leader := 0.0
	if id, _ := c.d.Leader(); id != "" {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(st.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(c.users, prometheus.GaugeValue, float64(st.Users))
	ch <- prometheus.MustNewConstMetric(c.batches, prometheus.CounterValue, float64(st.Batches))
	ch <- prometheus.MustNewConstMetric(c.commands, prometheus.CounterValue, float64(st.Commands))
	ch <- prometheus.MustNewConstMetric(c.undecodable, prometheus.CounterValue, float64(st.UndecodableEntries))
}

// registerAll registers every collector.
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
