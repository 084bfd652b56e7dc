package raftls

import (
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// TestMain fails the run if a goroutine outlives the tests: every
// listener, connection and raft cluster a test starts must be closed by
// the time it ends.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
