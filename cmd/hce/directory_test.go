package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// startVoter runs `hce directory` as a child process and waits until it
// prints its URL.
func startVoter(t *testing.T, bin string, args ...string) string {
	t.Helper()
	_, m := startChild(t, readyLine, bin, append([]string{"directory", "--log-level", "warn"}, args...)...)
	return m[1]
}

// cliDirectory builds hce, creates a directory CA with `hce directory
// init-ca` in a temp folder and returns the binary and a function that
// starts a voter (child process) with that CA and admin token on free
// ports (port 0: the voter binds them and advertises what it got),
// returning its URL. It skips the test under -short.
func cliDirectory(t *testing.T, token string) (string, func(id string, extra ...string) string) {
	t.Helper()
	bin, _, voter := cliDirectoryCA(t, token)
	return bin, voter
}

// cliDirectoryCA is cliDirectory that also returns the CA folder.
func cliDirectoryCA(t *testing.T, token string) (string, string, func(id string, extra ...string) string) {
	t.Helper()
	bin := hceBinary(t)
	tmp := t.TempDir()
	ca := filepath.Join(tmp, "ca")
	if out, err := exec.Command(bin, "directory", "init-ca", "--ca", ca).CombinedOutput(); err != nil {
		t.Fatalf("init-ca: %v %s", err, out)
	}
	return bin, ca, func(id string, extra ...string) string {
		args := []string{"--id", id, "--data", filepath.Join(tmp, id), "--http", "127.0.0.1:0",
			"--raft", "127.0.0.1:0", "--ca", ca, "--admin-token", token}
		return startVoter(t, bin, append(args, extra...)...)
	}
}

// TestDirectoryCLI builds a 3-voter directory from the command line (init-ca,
// one --bootstrap, two --join) and checks with `hce admin status` that
// every voter is a member and that a voter's HTTP port serves the user API.
func TestDirectoryCLI(t *testing.T) {
	const token = "cli-test-admin-token-of-32-chars-at-least"
	_, voter := cliDirectory(t, token)
	first := voter("d1", "--bootstrap")
	voter("d2", "--join", first)
	third := voter("d3", "--join", first)

	ctx := context.Background()
	testkit.Eventually(t, 60*time.Second, func() string {
		var out bytes.Buffer
		err := run(ctx, []string{"admin", "--json", "--directory", third, "--token", token, "status"}, &out, &out)
		var st struct {
			Leader struct{ ID string } `json:"leader"`
			Voters []struct{ ID string }
		}
		if err == nil && json.Unmarshal(out.Bytes(), &st) == nil && len(st.Voters) == 3 && st.Leader.ID != "" {
			return ""
		}
		return fmt.Sprintf("cluster of 3 not formed: %v %s", err, out.String())
	})
	var out bytes.Buffer
	if err := run(ctx, []string{"admin", "--directory", third, "--token", "wrong", "status"}, &out, &out); err == nil {
		t.Fatal("admin status with a wrong token succeeded")
	}
	// The user API answers on any voter; a registration through a
	// follower is forwarded to the leader.
	c := &http.Client{Timeout: 30 * time.Second}
	code, body := call(t, c, "GET", third+"user/1.0/nobody", nil, "")
	if code != 200 || strings.TrimSpace(string(body)) != "0" {
		t.Fatalf("exists on a voter: %d %q", code, body)
	}
	email := "cli@example.com"
	name := api.AccountName(email)
	code, body = call(t, c, "PUT", third+"user/1.0/"+name, []byte(fmt.Sprintf(`{"password":"cli-password-1","email":%q}`, email)), "")
	if code != 200 {
		t.Fatalf("register through a voter: %d %s", code, body)
	}
}
