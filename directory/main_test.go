package directory

import (
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// TestMain fails the run if a goroutine outlives the tests: every
// Directory, test cluster, HTTP server and libp2p host a test starts must
// be stopped by the time it ends.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
