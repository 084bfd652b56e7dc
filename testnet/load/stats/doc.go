// Package stats holds the load generator's latency histograms: fixed
// memory, about 0.4 % relative precision from 1 ns to 2^42 ns (73
// minutes), mergeable, with quantiles read from the bucket counts. A
// Histogram is not safe for concurrent use; the generator guards its own.
package stats
