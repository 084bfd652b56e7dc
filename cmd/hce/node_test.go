package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
)

var nodeReady = regexp.MustCompile(`storage node (\S+) ready at (http://\S+/)`)

// TestNodeCLI runs one `hce directory` voter (auto-approve) and one
// `hce node` as child processes and checks that `hce admin nodes` lists
// the node as active.
func TestNodeCLI(t *testing.T) {
	const token = "cli-node-admin-token-of-32-chars-at-least"
	bin, voter := cliDirectory(t, token)
	dir := voter("d1", "--p2p", "127.0.0.1:0", "--bootstrap", "--auto-approve")
	tmp := t.TempDir()

	_, m := startChild(t, nodeReady, bin, "node", "--log-level", "warn", "--data", filepath.Join(tmp, "n1"),
		"--http", "127.0.0.1:0", "--directory", dir, "--operator", "cli-op", "--capacity", "10", "--heartbeat", "500ms")
	id := m[1]
	testkit.Eventually(t, 30*time.Second, func() string {
		var out bytes.Buffer
		err := run(context.Background(), []string{"admin", "--json", "--directory", dir, "--token", token, "nodes"}, &out, &out)
		if err == nil && strings.Contains(out.String(), id) && strings.Contains(out.String(), `"active"`) {
			return ""
		}
		return fmt.Sprintf("admin nodes does not list %s as active: %v %s", id, err, out.String())
	})
}
