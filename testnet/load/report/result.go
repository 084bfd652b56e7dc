package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hce-sync/hce/testnet/load/procstat"
	"github.com/hce-sync/hce/testnet/load/stats"
)

// Version is the version of the result format; Read refuses others.
const Version = 1

// GeneratorProc names the load generator's own process among the sampled
// processes (ProcSeries, ProcSummary): it is shown, never counted in the
// server's figures.
const GeneratorProc = "generator"

// Result is everything one `hce load` run measured: the JSON a report
// folder holds (result.json) and the HTML report is drawn from.
type Result struct {
	// Version is the result format's version (Version).
	Version int `json:"version"`
	// Command is the command line that made the run.
	Command []string `json:"command"`
	// Mode is "run" (one open- or closed-loop phase per mix) or
	// "capacity" (a capacity search).
	Mode string `json:"mode"`
	// Started and Finished bound the run.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Host describes the machine the generator ran on.
	Host Host `json:"host"`
	// Target is what was measured.
	Target Target `json:"target"`
	// Mix describes the mix; Seed the run's seed.
	Mix  MixInfo `json:"mix"`
	Seed uint64  `json:"seed"`
	// Users describes the simulated users and their prefill.
	Users Users `json:"users"`
	// SLO is what a capacity step had to meet.
	SLO SLO `json:"slo"`
	// Steps are the measured phases in the order they ran.
	Steps []Step `json:"steps"`
	// Series is one point per second of measurement.
	Series []Point `json:"series"`
	// Procs are the samples of the target's processes on this machine.
	Procs []ProcSeries `json:"procs,omitempty"`
	// Capacity is the answer of a capacity search.
	Capacity *Capacity `json:"capacity,omitempty"`
	// Baseline is the minimal net/http handler measured in the same run
	// with the same mix and generator (closed loop), beside Reference, the
	// target measured the same way.
	Baseline  *Step `json:"baseline,omitempty"`
	Reference *Step `json:"reference,omitempty"`
	// Replication summarises the replication lag probes (federation).
	Replication *Lag `json:"replication,omitempty"`
	// Notes are warnings and remarks a reader needs (time compression,
	// a saturated generator, a busy machine).
	Notes []string `json:"notes,omitempty"`
}

// Host describes the generator's machine.
type Host struct {
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	MemTotal   int64  `json:"mem_total"`
	// LoadStart and LoadEnd are the 1/5/15-minute load averages when the
	// run began and ended.
	LoadStart [3]float64 `json:"load_start"`
	LoadEnd   [3]float64 `json:"load_end"`
}

// Target is what a run measured.
type Target struct {
	// Kind is "serve" (hce serve, in process or at --url), "url" (any
	// server at --url) or "testnet" (a running `hce testnet up`).
	Kind string `json:"kind"`
	// URL is the user API's base URL (the first voter's for a testnet).
	URL string `json:"url"`
	// Nodes are a testnet's storage node URLs.
	Nodes []string `json:"nodes,omitempty"`
	// Procs are the target's processes on this machine that were sampled.
	Procs []procstat.Proc `json:"procs,omitempty"`
	// InProcess is true when the server ran inside the generator's
	// process (its CPU and memory figures then include the generator).
	InProcess bool `json:"in_process,omitempty"`
	// API is the storage protocol the run spoke ("1.1", "1.5"); empty
	// in results from before it was recorded (1.1).
	API string `json:"api,omitempty"`
}

// MixInfo describes the mix of a run.
type MixInfo struct {
	Name string `json:"name"`
	// RequestsPerSync is the mean number of requests of a sync; Think the
	// mean time between a user's syncs in seconds; RatePerUser the
	// requests/s of one active user (syncs and background ops).
	RequestsPerSync float64 `json:"requests_per_sync"`
	Think           float64 `json:"think_s"`
	RatePerUser     float64 `json:"rate_per_user"`
	// Ops are the mix's op names and their weights (sync ops in percent
	// of sync requests, background ops per active user-hour).
	Ops []OpWeight `json:"ops"`
	// Source is the mix file.
	Source string `json:"source"`
}

// OpWeight is an op's weight in a mix.
type OpWeight struct {
	Name       string  `json:"name"`
	Weight     float64 `json:"weight"`
	Background bool    `json:"background,omitempty"`
}

// Users describes the simulated users (profiles) of a run.
type Users struct {
	// Profiles is the number of accounts the run registered (or reused)
	// and drove; active users beyond it are spread over them (each
	// profile then stands for Compression users).
	Profiles int `json:"profiles"`
	// PrefillScale scales the prefill record counts of the mix.
	PrefillScale float64 `json:"prefill_scale"`
	// PrefillRecords and PrefillPayload are the records and payload bytes
	// prefill writes per profile (expected).
	PrefillRecords int     `json:"prefill_records"`
	PrefillPayload float64 `json:"prefill_payload_bytes"`
	// Registered, Prefilled and Reused count what Prepare did: accounts
	// created, profiles filled (fully or partly), profiles already full.
	Registered int `json:"registered"`
	Prefilled  int `json:"prefilled"`
	Reused     int `json:"reused"`
	// PrepareSeconds is how long registration and prefill took.
	PrepareSeconds float64 `json:"prepare_s"`
	// DiskBefore and DiskAfter are the target's data folders' total
	// size before registration and after prefill; RSSBefore and RSSAfter
	// the target processes' total resident memory. 0 when not measured.
	DiskBefore int64 `json:"disk_before,omitempty"`
	DiskAfter  int64 `json:"disk_after,omitempty"`
	RSSBefore  int64 `json:"rss_before,omitempty"`
	RSSAfter   int64 `json:"rss_after,omitempty"`
	// Deleted is the number of accounts removed after the run (0 with
	// --keep-users).
	Deleted int `json:"deleted"`
}

// SLO is what a healthy capacity step meets.
type SLO struct {
	// P99 is the latency bound, in milliseconds.
	P99 float64 `json:"p99_ms"`
	// MaxErrors is the largest healthy fraction of failed requests
	// (errors and refused connections); MaxTimeouts that of timeouts.
	MaxErrors   float64 `json:"max_errors"`
	MaxTimeouts float64 `json:"max_timeouts"`
	// DiskBudget and RSSBudget bound a process's data folder and
	// resident memory in bytes (0: no bound).
	DiskBudget int64 `json:"disk_budget,omitempty"`
	RSSBudget  int64 `json:"rss_budget,omitempty"`
	// Timeout is the per-request timeout in milliseconds.
	Timeout float64 `json:"timeout_ms"`
}

// Step is one measured phase.
type Step struct {
	// Index numbers the steps from 0; Label says what the step was.
	Index int    `json:"index"`
	Label string `json:"label"`
	// Loop is "open" or "closed".
	Loop string `json:"loop"`
	// Arrival is the open loop's arrival process (users, poisson,
	// uniform).
	Arrival string `json:"arrival,omitempty"`
	// Offered is the offered rate in requests/s (open loop) and
	// OfferedUsers the same in active users; Concurrency the closed
	// loop's connections.
	Offered      float64 `json:"offered_rps,omitempty"`
	OfferedUsers float64 `json:"offered_users,omitempty"`
	Concurrency  int     `json:"concurrency,omitempty"`
	// Start is the step's start in seconds from the run's start;
	// Duration its length.
	Start    float64 `json:"start_s"`
	Duration float64 `json:"duration_s"`
	// Sent is the number of requests sent; Requests those answered or
	// failed (every sent request ends up counted once); Errors the
	// failed ones (Timeouts of them timed out); Dropped the requests the
	// generator could not start (its own backlog limit).
	Sent     int64 `json:"sent"`
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	Timeouts int64 `json:"timeouts"`
	Dropped  int64 `json:"dropped,omitempty"`
	// Achieved is the answers received per second during the step.
	Achieved float64 `json:"achieved_rps"`
	// Latency is measured from each request's intended send time (open
	// loop) or from its send (closed loop).
	Latency Percentiles `json:"latency"`
	// SendLag is how late the generator sent the first request of a sync
	// compared with its intended time (its own lateness; large values
	// mean the generator, not the server, is saturated).
	SendLag Percentiles `json:"send_lag"`
	// ErrorKinds counts failures by kind ("timeout", "refused", "reset",
	// "http 503", "failed wbos", ...).
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	// Ops are the per-operation figures.
	Ops []OpStats `json:"ops"`
	// Procs summarise the target processes during the step.
	Procs []ProcSummary `json:"procs,omitempty"`
	// CPU is the CPU time (user and system, seconds) the target's
	// processes on this machine used from the step's start to its end,
	// read from /proc at both ends (10 ms ticks), so unlike Procs' means
	// it holds no time from before or after the step; with the server in
	// the generator's process it includes the generator. 0 when no
	// process could be read at both ends. CPUPerRequest divides it by
	// the requests answered in the step.
	CPU float64 `json:"cpu_s,omitempty"`
	// Failure is "" for a healthy step, else the failure mode that ended
	// it ("latency", "errors", "timeouts", "disk", "memory",
	// "generator") with its figures in FailureDetail.
	Failure       string `json:"failure,omitempty"`
	FailureDetail string `json:"failure_detail,omitempty"`
}

// Percentiles are latency figures in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// FromHistogram reads percentiles from a histogram.
func FromHistogram(h *stats.Histogram) Percentiles {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Percentiles{P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()), Mean: ms(h.Mean())}
}

// OpStats are one op's figures in a step.
type OpStats struct {
	Name     string           `json:"name"`
	Requests int64            `json:"requests"`
	Errors   int64            `json:"errors"`
	NotFound int64            `json:"not_found,omitempty"`
	Latency  Percentiles      `json:"latency"`
	WBOsOut  int64            `json:"wbos_out,omitempty"`
	WBOsIn   int64            `json:"wbos_in,omitempty"`
	BytesOut int64            `json:"bytes_out"`
	BytesIn  int64            `json:"bytes_in"`
	Kinds    map[string]int64 `json:"error_kinds,omitempty"`
}

// ProcSummary is a process's figures over a step.
type ProcSummary struct {
	Name string `json:"name"`
	// CPU is the mean CPU use in cores; RSS the largest resident set and
	// Disk the data folder at the step's end, in bytes.
	CPU  float64 `json:"cpu_cores"`
	RSS  int64   `json:"rss_max"`
	Disk int64   `json:"disk"`
}

// Point is one second of a run.
type Point struct {
	// T is the end of the second in seconds from the run's start.
	T float64 `json:"t"`
	// Step is the index of the step the second belongs to.
	Step int `json:"step"`
	// Offered is the step's offered rate (0 in a closed loop); Sent the
	// requests sent and Achieved the answers received in this second.
	Offered  float64 `json:"offered"`
	Sent     float64 `json:"sent"`
	Achieved float64 `json:"achieved"`
	// Errors in this second; InFlight at its end.
	Errors   int64 `json:"errors"`
	InFlight int64 `json:"in_flight"`
	// Latency percentiles of the answers received in this second, ms.
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// ProcSeries are the samples of one process.
type ProcSeries struct {
	Name    string       `json:"name"`
	PID     int          `json:"pid"`
	Samples []ProcSample `json:"samples"`
}

// ProcSample is one sample: CPU in cores over the preceding interval,
// resident memory and data folder size in bytes.
type ProcSample struct {
	T    float64 `json:"t"`
	CPU  float64 `json:"cpu_cores"`
	RSS  int64   `json:"rss"`
	Disk int64   `json:"disk"`
}

// Capacity is the answer of a capacity search.
type Capacity struct {
	// RPS and Users are the last healthy step's offered load in
	// requests/s and active users; Step its index (-1: no step was
	// healthy).
	RPS   float64 `json:"rps"`
	Users float64 `json:"users"`
	Step  int     `json:"step"`
	// Failure is the failure mode of the lowest failed step above it,
	// FailedRPS that step's rate and FailedStep its index (-1: the search
	// ended at its maximum rate without a failure).
	Failure       string  `json:"failure"`
	FailureDetail string  `json:"failure_detail,omitempty"`
	FailedRPS     float64 `json:"failed_rps,omitempty"`
	FailedStep    int     `json:"failed_step"`
	// DiskPerUser and RSSPerUser are the target's data folders per
	// profile after prefill and its resident memory per active user at the
	// healthy step, in bytes (0 when not measured).
	DiskPerUser float64 `json:"disk_per_profile,omitempty"`
	RSSPerUser  float64 `json:"rss_per_active_user,omitempty"`
}

// Lag summarises replication lag probes: a record written on a user's
// primary node and read back from another replica.
type Lag struct {
	// Probes were sent; Seen were observed on the replica; Lost were not
	// within the probe timeout; Failed could not be written.
	Probes int `json:"probes"`
	Seen   int `json:"seen"`
	Lost   int `json:"lost"`
	Failed int `json:"failed"`
	// Write is the primary's answer time; Lag the time from that answer
	// until the replica served the record (0 when it already did at the
	// first look), both in ms.
	Write Percentiles `json:"write"`
	Lag   Percentiles `json:"lag"`
}

// Write stores r as indented JSON at path.
func (r *Result) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Read loads a result file.
func Read(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("report: %s: %w", path, err)
	}
	if r.Version != Version {
		return nil, fmt.Errorf("report: %s: %w (version %d, want %d)", path, ErrVersion, r.Version, Version)
	}
	return &r, nil
}

// ErrVersion is returned by Read for a result of another format version.
var ErrVersion = errors.New("report: unsupported result version")

// CPUPerRequest is the target's CPU time per answered request in
// milliseconds (Step.CPU over the requests answered), 0 when either is
// unknown.
func (s Step) CPUPerRequest() float64 {
	n := s.Achieved * s.Duration
	if s.CPU <= 0 || n < 1 {
		return 0
	}
	return 1000 * s.CPU / n
}
