package sync15

import "time"

// NewMemStore returns the reference in-memory store of the tests, with a
// quota (0: none), for the conformance suite (sync15test).
func NewMemStore(clock func() time.Time, quota int64) Store {
	s := newMemStore(clock)
	s.quota = quota
	return s
}
