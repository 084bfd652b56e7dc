//go:build !race

package node

// raceEnabled is set when the tests run under the race detector.
const raceEnabled = false
