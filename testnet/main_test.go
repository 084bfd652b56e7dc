package testnet

import (
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// TestMain fails the run if a goroutine outlives the tests: every voter,
// node, Standalone and Testnet they start must stop all it started when
// it is closed. (Without testkit's ignore list only Pebble's process-wide
// cache goroutine remains; no other library goroutine needs ignoring.)
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
