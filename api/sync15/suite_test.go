package sync15_test

import (
	"testing"
	"time"

	"github.com/hce-sync/hce/api/sync15"
	"github.com/hce-sync/hce/api/sync15/sync15test"
)

// TestConformance runs the conformance suite over the reference
// in-memory store, so that the suite itself is checked against the
// semantics the Store interface documents.
func TestConformance(t *testing.T) {
	sync15test.Run(t, func(t *testing.T, clock func() time.Time, quota int64) sync15.Store {
		return sync15.NewMemStore(clock, quota)
	})
}
