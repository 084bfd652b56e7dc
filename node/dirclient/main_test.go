package dirclient

import (
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// TestMain fails the run if a goroutine outlives the tests: every Client
// and host a test starts is closed by its cleanup.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
