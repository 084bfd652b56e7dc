package directory

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// metricsNamespace prefixes every metric name the directory reports.
const metricsNamespace = "hce"

// applyBuckets are the upper bounds, in seconds, of the raft apply
// latency histogram.
var applyBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// newApplyHistogram is the committer's raft apply latency histogram.
func newApplyHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: "raft", Name: "apply_duration_seconds",
		Help:    "Time from proposing a group-commit entry to raft until this leader applied it (commit: replication to a quorum and fsync, then the state machine).",
		Buckets: applyBuckets,
	})
}

// authCounters count the directory's refused credentials.
type authCounters struct {
	password   atomic.Uint64 // CheckPassword: wrong password or unknown user
	adminToken atomic.Uint64 // admin and voter-to-voter routes: wrong or missing token
}

// Collector returns a prometheus.Collector of the directory's metrics:
// raft term, commit and last log index, FSM entries pending, the time
// since the last contact with the leader, the apply latency of group
// commits (hce_raft_apply_duration_seconds, observed on the leader), and
// the refused passwords and admin tokens
// (hce_directory_auth_failures_total{kind}). Raft values are read at
// scrape time. Register it with one registry.
func (d *Directory) Collector() prometheus.Collector {
	desc := func(sub, name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, sub, name), help, labels, nil)
	}
	return &dirCollector{
		d:       d,
		term:    desc("raft", "term", "Current raft term."),
		commit:  desc("raft", "commit_index", "Last raft index known committed."),
		last:    desc("raft", "last_log_index", "Last index in this voter's raft log."),
		pending: desc("raft", "fsm_pending", "Committed entries waiting to be applied to the state machine."),
		contact: desc("raft", "last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader)."),
		auth:    desc("directory", "auth_failures_total", "Credentials the directory refused: kind=password (user API and node password checks), kind=admin_token.", "kind"),
		absent:  desc("directory", "unconfirmed_lookups_total", "Negative answers this voter could not give from its own state (absent.go): outcome=no_leader (no leader confirmed them: 503), outcome=behind (the leader's state had what this voter's lacked); outcome=not_fresh: answers about who serves a user refused while out of touch with the leader.", "outcome"),
	}
}

type dirCollector struct {
	d                                                  *Directory
	term, commit, last, pending, contact, auth, absent *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *dirCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.term, c.commit, c.last, c.pending, c.contact, c.auth, c.absent} {
		ch <- d
	}
	c.d.commits.apply.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *dirCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	st := d.raft.Stats()
	num := func(k string) float64 {
		v, _ := strconv.ParseUint(st[k], 10, 64)
		return float64(v)
	}
	ch <- prometheus.MustNewConstMetric(c.term, prometheus.GaugeValue, num("term"))
	ch <- prometheus.MustNewConstMetric(c.commit, prometheus.GaugeValue, num("commit_index"))
	ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, num("last_log_index"))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, num("fsm_pending"))
	contact := 0.0
	if d.raft.State() != raft.Leader {
		if lc := d.raft.LastContact(); !lc.IsZero() {
			contact = time.Since(lc).Seconds()
		}
	}
	ch <- prometheus.MustNewConstMetric(c.contact, prometheus.GaugeValue, contact)
	ch <- prometheus.MustNewConstMetric(c.auth, prometheus.CounterValue, float64(d.auth.password.Load()), "password")
	ch <- prometheus.MustNewConstMetric(c.auth, prometheus.CounterValue, float64(d.auth.adminToken.Load()), "admin_token")
	ch <- prometheus.MustNewConstMetric(c.absent, prometheus.CounterValue, float64(d.absentUnconfirmed.Load()), "no_leader")
	ch <- prometheus.MustNewConstMetric(c.absent, prometheus.CounterValue, float64(d.absentBehind.Load()), "behind")
	ch <- prometheus.MustNewConstMetric(c.absent, prometheus.CounterValue, float64(d.staleAnswers.Load()), "not_fresh")
	d.commits.apply.Collect(ch)
}
