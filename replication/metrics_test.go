package replication

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// gather returns r's metrics by name (series of one family in order).
func gather(t *testing.T, reg *prometheus.Registry) map[string][]*dto.Metric {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*dto.Metric{}
	for _, f := range fams {
		out[f.GetName()] = f.Metric
	}
	return out
}

// TestCollectorLag checks the per-peer metrics: a pull that cannot reach
// its peer shows as lag and a queued pull for that peer, and both fall
// to 0 once the peer is back and the pull succeeds.
func TestCollectorLag(t *testing.T) {
	c := newCluster(t, 2, clusterOpts{mem: true})
	c.share("alice", 0, 1)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.nodes[1].repl.Collector())
	if _, err := c.nodes[0].store.PutItem(bg, "alice", "c", testkit.WBO("a", "x"), api.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[1].repl.Sync(bg, "alice"); err != nil {
		t.Fatal(err)
	}
	c.partition(0, 1)
	if err := c.nodes[1].repl.Sync(bg, "alice"); err == nil {
		t.Fatal("Sync across a partition succeeded")
	}
	peer := c.nodes[0].id.String()
	series := func(name string) (float64, bool) {
		for _, m := range gather(t, reg)[name] {
			if len(m.Label) == 1 && m.Label[0].GetValue() == peer {
				return m.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		lag, ok := series("hce_replication_lag_seconds")
		queue, _ := series("hce_replication_pull_queue")
		if ok && lag > 0.05 && queue == 1 {
			return ""
		}
		return fmt.Sprintf("lag %v (%v), queue %v during the partition", lag, ok, queue)
	})
	c.heal(0, 1)
	testkit.Eventually(t, 10*time.Second, func() string {
		lag, ok := series("hce_replication_lag_seconds")
		queue, _ := series("hce_replication_pull_queue")
		if ok && lag == 0 && queue == 0 {
			return ""
		}
		return fmt.Sprintf("lag %v (%v), queue %v after healing", lag, ok, queue)
	})
	got := gather(t, reg)
	for _, name := range []string{"hce_replication_pulls_total", "hce_replication_errors_total", "hce_replication_handoff_backlog_users",
		"hce_replication_unconfirmed_reported_total", "hce_replication_unconfirmed_failed_total", "hce_replication_leaver_writes_total", "hce_replication_pulled_revisions_total"} {
		if len(got[name]) != 1 {
			t.Errorf("%s: %v", name, got[name])
		}
	}
	if v := got["hce_replication_errors_total"][0].GetCounter().GetValue(); v < 1 {
		t.Errorf("errors_total %v after a failed pull", v)
	}
}
