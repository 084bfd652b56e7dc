// Package report holds the result of an `hce load` run (Result, stored as
// result.json), draws it as a self-contained HTML page with inline SVG
// charts (WriteHTML: latency and throughput over time, latency against
// offered load, errors by kind, per-operation tables, the server
// processes' CPU, memory and disk), and compares two runs (Compare).
package report
