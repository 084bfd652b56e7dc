package directory

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestCollector checks the directory's metrics after traffic: raft term
// and indexes, the apply histogram with the writes' observations, and
// the refused password and admin token counted.
func TestCollector(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.AdminToken = "metrics-test-admin-token-0123456789"
	d := openDir(t, cfg)
	ctx := context.Background()
	if err := d.CreateUser(ctx, "alice", "correct horse battery", "a@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckPassword(ctx, "alice", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/admin/v1/status", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	d.HTTPHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("admin with a wrong token: %d", rec.Code)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.Collector())
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	for _, name := range []string{"hce_raft_term", "hce_raft_commit_index", "hce_raft_last_log_index", "hce_raft_fsm_pending",
		"hce_raft_last_contact_seconds", "hce_raft_apply_duration_seconds", "hce_directory_auth_failures_total"} {
		if got[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if v := got["hce_raft_term"].Metric[0].GetGauge().GetValue(); v < 1 {
		t.Errorf("term %v", v)
	}
	if n := got["hce_raft_apply_duration_seconds"].Metric[0].GetHistogram().GetSampleCount(); n < 1 {
		t.Errorf("apply histogram has %d observations after a write", n)
	}
	for _, m := range got["hce_directory_auth_failures_total"].Metric {
		if m.GetCounter().GetValue() != 1 {
			t.Errorf("auth failures %s = %v, want 1", m.Label[0].GetValue(), m.GetCounter().GetValue())
		}
	}
}
