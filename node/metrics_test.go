package node

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/hce-sync/hce/api"
)

// TestNanosToSeconds checks the re-bucketing of Pebble's nanosecond
// histogram.
func TestNanosToSeconds(t *testing.T) {
	h := &dto.Histogram{SampleCount: proto.Uint64(5), SampleSum: proto.Float64(3e9), Bucket: []*dto.Bucket{
		{UpperBound: proto.Float64(1e5), CumulativeCount: proto.Uint64(1)},
		{UpperBound: proto.Float64(2e5), CumulativeCount: proto.Uint64(2)},
		{UpperBound: proto.Float64(3e5), CumulativeCount: proto.Uint64(3)},
		{UpperBound: proto.Float64(2e9), CumulativeCount: proto.Uint64(4)},
	}}
	count, sum, b := nanosToSeconds(h, []float64{0.0001, 0.00025, 1, 5})
	want := map[float64]uint64{0.0001: 1, 0.00025: 2, 1: 3, 5: 4}
	if count != 5 || sum != 3 {
		t.Fatalf("count %d sum %v", count, sum)
	}
	for k, v := range want {
		if b[k] != v {
			t.Errorf("bucket %v: %d, want %d", k, b[k], v)
		}
	}
}

// TestStoreCollector checks the store's metrics after synced writes: the
// WAL sync histogram has observations and every name is present; a
// closed store reports nothing.
func TestStoreCollector(t *testing.T) {
	s := openTest(t, t.TempDir(), newFakeClock(), 0)
	for i := range 3 {
		mustPut(t, s, "u", "c", api.WBO{ID: string(rune('a' + i)), Payload: "x", Has: api.FieldPayload})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	for _, name := range []string{"hce_store_wal_sync_seconds", "hce_store_wal_bytes_written_total", "hce_store_compaction_debt_bytes",
		"hce_store_read_amplification", "hce_store_memtable_bytes", "hce_store_writes_unacknowledged_total"} {
		if got[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if h := got["hce_store_wal_sync_seconds"]; h == nil || h.Metric[0].GetHistogram().GetSampleCount() < 3 {
		t.Errorf("WAL syncs after 3 synced writes: %v", h)
	}
	s.Close()
	if fams, err := reg.Gather(); err != nil || len(fams) != 0 {
		t.Errorf("closed store: %d metric families, %v", len(fams), err)
	}
}
