// Package load is HCE's load generator. An Engine drives one target — an
// `hce serve`, any Weave server, or a federation whose users follow
// node/weave to their storage nodes — with simulated users described by a
// mix (package mix): it registers and prefills the accounts, runs phases
// in an open loop (syncs start at their intended times, latency counts
// from the intended send time, so queueing is not hidden) or a closed
// loop, searches for the capacity (the highest offered load that meets a
// latency and error objective, in requests/s and active users, and the
// failure mode above it), probes replication lag in a federation, samples
// the target's processes from /proc (package procstat) and deletes the
// accounts afterwards. Results are report.Result values (package report),
// which `hce load --report` writes as JSON and HTML.
//
// Runner is the older closed-loop micro-benchmark (fixed scenarios, ratio
// to a minimal handler) kept for the Go benchmarks of package testnet;
// Baseline is that minimal handler, which `hce load` also measures for
// scale.
package load
