package node

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
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
// debt, level-0 sublevels, read amplification, memtable bytes, write
// stalls (their number and time), and the client writes that
// the ReplicaWaiter acknowledged without every replica's confirmation or
// refused. A closed store reports nothing. Register it with one registry.
func (s *Store) Collector() prometheus.Collector { return &storeCollector{s: s, d: newStoreDescs()} }

type storeDescs struct {
	walSync, walBytes, debt, readAmp, memtable, unacked *prometheus.Desc
	l0, stalls, stallSecs                               *prometheus.Desc
}

func newStoreDescs() storeDescs {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(MetricsNamespace, "store", name), help, nil, nil)
	}
	return storeDescs{
		walSync:   d("wal_sync_seconds", "Latency of the WAL fsyncs that make writes durable (Pebble's measurement)."),
		walBytes:  d("wal_bytes_written_total", "Bytes written to the write-ahead log."),
		debt:      d("compaction_debt_bytes", "Bytes Pebble estimates it must compact to bring the LSM to shape."),
		readAmp:   d("read_amplification", "Sorted runs a read may have to consult (L0 sublevels plus non-empty levels)."),
		memtable:  d("memtable_bytes", "Bytes held by memtables."),
		l0:        d("l0_sublevels", "Level-0 sublevels (writes stall at 12)."),
		stalls:    d("write_stalls_total", "Times Pebble stopped writes (memtables full or level 0 at its limit)."),
		stallSecs: d("write_stall_seconds_total", "Time writes were stopped by Pebble."),
		unacked:   d("writes_unacknowledged_total", "Client writes committed here but answered 503 because the replicas' confirmation or its report to the directory failed."),
	}
}

type storeCollector struct {
	s *Store
	d storeDescs
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.d.walSync, c.d.walBytes, c.d.debt, c.d.readAmp, c.d.memtable, c.d.unacked, c.d.l0, c.d.stalls, c.d.stallSecs} {
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
	ch <- prometheus.MustNewConstMetric(c.d.l0, prometheus.GaugeValue, float64(m.Levels[0].Sublevels))
	n, d := s.stalls.read()
	ch <- prometheus.MustNewConstMetric(c.d.stalls, prometheus.CounterValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.d.stallSecs, prometheus.CounterValue, d.Seconds())
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

// stallCounter counts Pebble's write stalls (EventListener.WriteStallBegin
// and End) and their time.
type stallCounter struct {
	mu    sync.Mutex
	n     uint64
	total time.Duration
	since time.Time // start of the stall in progress (zero: none)
}

func (c *stallCounter) begin(pebble.WriteStallBeginInfo) {
	c.mu.Lock()
	c.n++
	c.since = time.Now()
	c.mu.Unlock()
}

func (c *stallCounter) end() {
	c.mu.Lock()
	if !c.since.IsZero() {
		c.total += time.Since(c.since)
		c.since = time.Time{}
	}
	c.mu.Unlock()
}

// read returns the stalls so far and their time (the one in progress
// included).
func (c *stallCounter) read() (uint64, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.total
	if !c.since.IsZero() {
		d += time.Since(c.since)
	}
	return c.n, d
}

// WriteStalls returns how many times Pebble stopped writes since the
// store opened, and for how long in all.
func (s *Store) WriteStalls() (n uint64, d time.Duration) { return s.stalls.read() }

// LSMState is a summary of Pebble's tree: level-0 sublevels and files,
// the compaction debt in bytes and the compactions running.
type LSMState struct {
	L0Sublevels, L0Files int
	DebtBytes            uint64
	Compacting           int64
}

// LSM returns the store's LSMState.
func (s *Store) LSM() (LSMState, error) {
	if err := s.enter(); err != nil {
		return LSMState{}, err
	}
	m := s.db.Metrics()
	s.leave()
	return LSMState{L0Sublevels: int(m.Levels[0].Sublevels), L0Files: int(m.Levels[0].TablesCount),
		DebtBytes: m.Compact.EstimatedDebt, Compacting: m.Compact.NumInProgress}, nil
}
