package node

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// MetricsNamespace prefixes every metric name the store reports (the
// namespace of every hce process's /metrics).
const MetricsNamespace = "hce"

// walSyncBuckets are the upper bounds, in seconds, of the WAL sync
// latency histogram the store reports.
var walSyncBuckets = []float64{0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10}

// Collector returns a prometheus.Collector of the store's metrics, read
// from Pebble at scrape time: WAL sync latency (hce_store_wal_sync_seconds,
// from Pebble's own histogram; each bucket counts the syncs at or below
// the nearest of Pebble's bounds under it), WAL bytes written, compaction
// debt, read amplification, memtable bytes, and the client writes that
// the ReplicaWaiter acknowledged without every replica's confirmation or
// refused. A closed store reports nothing. Register it with one registry.
func (s *Store) Collector() prometheus.Collector { return &storeCollector{s: s, d: newStoreDescs()} }

type storeDescs struct {
	walSync, walBytes, debt, readAmp, memtable, unacked *prometheus.Desc
}

func newStoreDescs() storeDescs {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(MetricsNamespace, "store", name), help, nil, nil)
	}
	return storeDescs{
		walSync:  d("wal_sync_seconds", "Latency of the WAL fsyncs that make writes durable (Pebble's measurement)."),
		walBytes: d("wal_bytes_written_total", "Bytes written to the write-ahead log."),
		debt:     d("compaction_debt_bytes", "Bytes Pebble estimates it must compact to bring the LSM to shape."),
		readAmp:  d("read_amplification", "Sorted runs a read may have to consult (L0 sublevels plus non-empty levels)."),
		memtable: d("memtable_bytes", "Bytes held by memtables."),
		unacked:  d("writes_unacknowledged_total", "Client writes committed here but answered 503 because the replicas' confirmation or its report to the directory failed."),
	}
}

type storeCollector struct {
	s *Store
	d storeDescs
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.d.walSync, c.d.walBytes, c.d.debt, c.d.readAmp, c.d.memtable, c.d.unacked} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if s.enter() != nil {
		return
	}
	m := s.db.Metrics()
	s.leave()
	ch <- prometheus.MustNewConstMetric(c.d.walBytes, prometheus.CounterValue, float64(m.WAL.BytesWritten))
	ch <- prometheus.MustNewConstMetric(c.d.debt, prometheus.GaugeValue, float64(m.Compact.EstimatedDebt))
	ch <- prometheus.MustNewConstMetric(c.d.readAmp, prometheus.GaugeValue, float64(m.ReadAmp()))
	ch <- prometheus.MustNewConstMetric(c.d.memtable, prometheus.GaugeValue, float64(m.MemTable.Size))
	ch <- prometheus.MustNewConstMetric(c.d.unacked, prometheus.CounterValue, float64(s.UnacknowledgedWrites()))
	if h := m.LogWriter.FsyncLatency; h != nil {
		var pm dto.Metric
		if h.Write(&pm) == nil && pm.Histogram != nil {
			count, sum, buckets := nanosToSeconds(pm.Histogram, walSyncBuckets)
			ch <- prometheus.MustNewConstHistogram(c.d.walSync, count, sum, buckets)
		}
	}
}

// nanosToSeconds re-buckets a histogram observed in nanoseconds onto
// bounds in seconds: each bound gets the cumulative count of the largest
// source bound at or below it.
func nanosToSeconds(h *dto.Histogram, bounds []float64) (count uint64, sum float64, out map[float64]uint64) {
	out = make(map[float64]uint64, len(bounds))
	src := h.GetBucket()
	i := 0
	var cum uint64
	for _, b := range bounds {
		limit := b * 1e9 * (1 + 1e-9)
		for i < len(src) && src[i].GetUpperBound() <= limit {
			cum = src[i].GetCumulativeCount()
			i++
		}
		out[b] = cum
	}
	return h.GetSampleCount(), h.GetSampleSum() / 1e9, out
}
