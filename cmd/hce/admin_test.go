package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
)

// TestAdminVoters drives voter membership from the command line: a
// voter started with --await-add is added with hce admin voter add
// (through a list of directories whose first is dead), listed in a
// table, and removed; the removed voter's process stops with an error
// that says so. --directory-file and --json work too.
func TestAdminVoters(t *testing.T) {
	const token = "cli-test-admin-token-of-32-chars-at-least"
	bin, ca, voter := cliDirectoryCA(t, token)
	first := voter("d1", "--bootstrap")
	second := voter("d2", "--join", first)

	// d3 waits to be added; it prints its ready line only once added.
	tmp := t.TempDir()
	raftAddr := testkit.FreeAddr(t)
	httpAddr := testkit.FreeAddr(t)
	d3 := exec.Command(bin, "directory", "--log-level", "warn", "--id", "d3", "--data", filepath.Join(tmp, "d3"),
		"--http", httpAddr, "--raft", raftAddr, "--ca", ca, "--admin-token", token, "--await-add")
	var d3out lockedBuffer
	d3.Stdout, d3.Stderr = &d3out, &d3out
	if err := d3.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d3.Wait() }()
	t.Cleanup(func() { d3.Process.Kill(); <-exited })

	admin := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"admin", "--token", token}, args...), &out, &out)
		return out.String(), err
	}
	dead := "http://127.0.0.1:1/"
	testkit.Eventually(t, 60*time.Second, func() string {
		out, err := admin("--directory", dead+","+second, "voter", "add", "d3", "--raft", raftAddr, "--url", "http://"+httpAddr+"/")
		if err != nil {
			return "voter add: " + err.Error() + " " + out
		}
		return ""
	})
	testkit.WaitFor(t, 30*time.Second, "d3 ready", func() bool { return strings.Contains(d3out.String(), "ready at") })

	file := filepath.Join(tmp, "voters")
	if err := os.WriteFile(file, []byte("# the voters\n"+dead+"\n"+first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := admin("--directory-file", file, "voter", "list")
	if err != nil || !strings.Contains(out, "VOTER") || !strings.Contains(out, "leader") ||
		!strings.Contains(out, "d1") || !strings.Contains(out, "d2") || !strings.Contains(out, "d3") {
		t.Fatalf("voter list: %v\n%s", err, out)
	}
	t.Logf("hce admin voter list:\n%s", out)
	if out, err = admin("--directory", first, "status"); err != nil || !strings.Contains(out, "SUFFRAGE") {
		t.Fatalf("status table: %v\n%s", err, out)
	}

	begin := time.Now()
	if out, err = admin("--directory", first, "voter", "remove", "d3"); err != nil {
		t.Fatalf("voter remove: %v %s", err, out)
	}
	t.Logf("voter remove: %v", time.Since(begin))
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(d3out.String(), "removed from the cluster") {
			t.Fatalf("removed voter exited with %v: %s", err, d3out.String())
		}
		exited <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("removed voter still runs: %s", d3out.String())
	}
	out, err = admin("--json", "--directory", second, "voter", "list")
	var vv struct {
		Voters []struct{ ID string } `json:"voters"`
	}
	if err != nil || json.Unmarshal([]byte(out), &vv) != nil || len(vv.Voters) != 2 {
		t.Fatalf("voter list --json after remove: %v %s", err, out)
	}
	// A second start of the removed voter refuses at once.
	again := exec.Command(bin, "directory", "--log-level", "warn", "--id", "d3", "--data", filepath.Join(tmp, "d3"),
		"--http", httpAddr, "--raft", raftAddr, "--ca", ca, "--admin-token", token)
	b, err := again.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "removed from the cluster") {
		t.Fatalf("restart of a removed voter: %v %s", err, b)
	}
}
