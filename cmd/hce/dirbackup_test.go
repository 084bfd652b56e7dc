package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// TestDirectoryBackupRecoverCLI: hce directory backup copies a running
// voter's state into a file; after the voter is stopped, recover
// --dry-run reports its log and recover rewrites its configuration; the
// voter starts again alone with its users; restore puts the backup back.
func TestDirectoryBackupRecoverCLI(t *testing.T) {
	const token = "cli-test-admin-token-of-32-chars-at-least"
	bin, ca, _ := cliDirectoryCA(t, token)
	tmp := t.TempDir()
	data := filepath.Join(tmp, "d1")
	raftAddr := testkit.FreeAddr(t)
	args := []string{"directory", "--log-level", "warn", "--id", "d1", "--data", data, "--http", "127.0.0.1:0",
		"--raft", raftAddr, "--ca", ca, "--admin-token", token}
	cmd, m := startChild(t, readyLine, bin, append(args, "--bootstrap")...)
	url := m[1]
	c := &http.Client{Timeout: 30 * time.Second}
	var names []string
	for i := range 3 {
		email := fmt.Sprintf("b%d@example.com", i)
		name := api.AccountName(email)
		if code, body := call(t, c, "PUT", url+"user/1.0/"+name, []byte(fmt.Sprintf(`{"password":"cli-password-1","email":%q}`, email)), ""); code != 200 {
			t.Fatalf("register: %d %s", code, body)
		}
		names = append(names, name)
	}
	hce := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, &out); err != nil {
			t.Fatalf("hce %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	file := filepath.Join(tmp, "dir.backup")
	out := hce("directory", "backup", "--to", file, "--directory", "http://127.0.0.1:1/,"+url, "--token", token)
	t.Log(strings.TrimSpace(out))
	if !strings.Contains(out, "of 3 users") {
		t.Fatalf("backup: %s", out)
	}
	// A restore without --yes says what it would do and does nothing.
	var o bytes.Buffer
	if err := run(context.Background(), []string{"directory", "restore", "--from", file, "--directory", url, "--token", token}, &o, &o); err == nil ||
		!strings.Contains(err.Error(), "--yes") {
		t.Fatalf("restore without --yes: %v", err)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	out = hce("directory", "recover", "--data", data, "--dry-run")
	if !strings.Contains(out, "3 users") {
		t.Fatalf("recover --dry-run: %s", out)
	}
	out = hce("directory", "recover", "--data", data, "--id", "d1", "--voters", "d1="+raftAddr)
	t.Log(strings.TrimSpace(out))
	// The recovered voter starts alone.
	_, m = startChild(t, readyLine, bin, args...)
	url = m[1]
	for _, n := range names {
		code, body := call(t, c, "GET", url+"user/1.0/"+n, nil, "")
		if code != 200 || strings.TrimSpace(string(body)) != "1" {
			t.Fatalf("user %s after recovery: %d %s", n, code, body)
		}
	}
	out = hce("directory", "restore", "--from", file, "--directory", url, "--token", token, "--yes")
	t.Log(strings.TrimSpace(out))
}
