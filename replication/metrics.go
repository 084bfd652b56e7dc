package replication

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metricsNamespace prefixes every metric name the replicator reports.
const metricsNamespace = "hce"

// Collector returns a prometheus.Collector of the replicator's metrics,
// read at scrape time. Per peer (label peer, its libp2p peer ID):
// hce_replication_lag_seconds, the age of the oldest pull queued or
// running for that peer (0 when none is: its changes are all here, as
// far as notices and sweeps know); hce_replication_pull_queue, the users
// queued or being pulled from it; hce_replication_notice_queue, the users
// whose change notice waits to be sent to it. A peer has series while
// this node pulls from it (a pull goroutine lives IdleTimeout after its
// last work) or has notices for it. Then
// hce_replication_handoff_backlog_users (users this node still owes as a
// leaving member) and the counters of Stats as hce_replication_*_total.
// Register it with one registry.
func (r *Replicator) Collector() prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "replication", name), help, labels, nil)
	}
	c := &replCollector{
		r:       r,
		lag:     d("lag_seconds", "Age of the oldest pull queued or running for the peer (0: none).", "peer"),
		pulls:   d("pull_queue", "Users queued or being pulled from the peer.", "peer"),
		notices: d("notice_queue", "Users whose change notice waits to be sent to the peer.", "peer"),
		backlog: d("handoff_backlog_users", "Users this node holds as a leaving member at its last sweep: data it still owes their replica sets."),
	}
	for _, k := range []struct {
		name, help string
		get        func(Stats) uint64
	}{
		{"pulls_total", "Completed pulls of one user from one peer.", func(s Stats) uint64 { return s.Pulls }},
		{"pulled_revisions_total", "Revisions pulled and accepted by the store.", func(s Stats) uint64 { return s.PulledRevisions }},
		{"refused_revisions_total", "Revisions refused (bad hash, bad body, not asked for).", func(s Stats) uint64 { return s.RefusedRevisions }},
		{"notices_sent_total", "Change notices (one per user) sent to peers.", func(s Stats) uint64 { return s.NoticesSent }},
		{"notices_received_total", "Change notices accepted from peers.", func(s Stats) uint64 { return s.NoticesReceived }},
		{"requests_served_total", "Replication requests answered.", func(s Stats) uint64 { return s.RequestsServed }},
		{"requests_refused_total", "Replication requests refused (malformed, or about users not shared with the caller).", func(s Stats) uint64 { return s.RequestsRefused }},
		{"errors_total", "Failed pulls, notices and sweeps of a peer.", func(s Stats) uint64 { return s.Errors }},
		{"syncs_served_total", "Write confirmations a peer waited for and this node gave.", func(s Stats) uint64 { return s.SyncsServed }},
		{"unconfirmed_reported_total", "Client writes some member did not confirm in time, reported to the directory and then acknowledged.", func(s Stats) uint64 { return s.UnconfirmedReported }},
		{"sweeps_total", "Sweeps run (at start and every sweep interval), failed ones included.", func(s Stats) uint64 { return s.Sweeps }},
		{"leaver_writes_total", "Client writes that also asked nodes which had just left the user's set, or waited them out.", func(s Stats) uint64 { return s.LeaverWrites }},
		{"unconfirmed_failed_total", "Client writes some member did not confirm whose report failed (answered 503).", func(s Stats) uint64 { return s.UnconfirmedFailed }},
		{"report_errors_total", "Reports to the directory that failed.", func(s Stats) uint64 { return s.ReportErrors }},
		{"users_wiped_total", "Users whose data this node deleted because the directory no longer lists it for them.", func(s Stats) uint64 { return s.UsersWiped }},
	} {
		c.counters = append(c.counters, statCounter{d(k.name, k.help), k.get})
	}
	return c
}

type statCounter struct {
	desc *prometheus.Desc
	get  func(Stats) uint64
}

type replCollector struct {
	r                            *Replicator
	lag, pulls, notices, backlog *prometheus.Desc
	counters                     []statCounter
}

// Describe implements prometheus.Collector.
func (c *replCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lag, c.pulls, c.notices, c.backlog} {
		ch <- d
	}
	for _, k := range c.counters {
		ch <- k.desc
	}
}

// Collect implements prometheus.Collector.
func (c *replCollector) Collect(ch chan<- prometheus.Metric) {
	type peerState struct {
		lag     float64
		pulls   int
		notices int
	}
	now := time.Now()
	peers := map[string]*peerState{}
	get := func(p string) *peerState {
		if peers[p] == nil {
			peers[p] = &peerState{}
		}
		return peers[p]
	}
	r := c.r
	r.mu.Lock()
	for p, l := range r.loops {
		var oldest time.Time
		owed := func(t time.Time) {
			if oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		}
		for _, q := range l.dirty {
			owed(q.since)
		}
		for _, q := range l.running {
			owed(q.since)
		}
		for _, rt := range l.retry {
			owed(rt.since)
		}
		ps := get(p.String())
		ps.pulls = len(l.dirty) + len(l.running) + len(l.retry)
		if !oldest.IsZero() {
			ps.lag = now.Sub(oldest).Seconds()
		}
	}
	for p, ob := range r.outbox {
		if len(ob) > 0 {
			get(p.String()).notices = len(ob)
		}
	}
	r.mu.Unlock()
	for p, ps := range peers {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, ps.lag, p)
		ch <- prometheus.MustNewConstMetric(c.pulls, prometheus.GaugeValue, float64(ps.pulls), p)
		ch <- prometheus.MustNewConstMetric(c.notices, prometheus.GaugeValue, float64(ps.notices), p)
	}
	ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(r.HandoffBacklog()))
	st := r.Stats()
	for _, k := range c.counters {
		ch <- prometheus.MustNewConstMetric(k.desc, prometheus.CounterValue, float64(k.get(st)))
	}
}
