package main

import (
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// TestMain fails the run if a goroutine outlives the tests: the commands
// run in process (admin, testnet status/kill/restart, the child-process
// Testnet of the stories) must stop all they started.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }
