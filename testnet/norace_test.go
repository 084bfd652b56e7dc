//go:build !race

package testnet

// raceEnabled says the race detector is on: timings measure it, not the
// code, so latency bounds are not asserted.
const raceEnabled = false
