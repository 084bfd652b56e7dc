package load

import (
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// TestMain fails the run if a goroutine outlives the tests: engines stop
// their samplers, tickers and probes, and close their connections.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
