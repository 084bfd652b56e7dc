//go:build race

package couch

// raceEnabled is set when the tests run under the race detector.
const raceEnabled = true
