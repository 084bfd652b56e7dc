package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/testnet"
)

// TestTestnetCLI runs `hce testnet up` (3 voters, 4 nodes as child
// processes) and drives it from "another shell": status, kill of a node
// (status shows it down), restart (a detached child the `up` process
// adopts), and SIGINT to `up`, after which no child process is left.
// Then `up` on the same folder resumes the testnet with its data.
func TestTestnetCLI(t *testing.T) {
	bin := hceBinary(t)
	dir := t.TempDir()
	begin := time.Now()
	up, exited, stderr := startUp(t, bin, "ready", "testnet", "up", "--dir", dir, "--directories", "3", "--nodes", "4",
		"--down-after", "2s", "--heartbeat", "250ms")
	t.Logf("hce testnet up (3 directories, 4 nodes) ready %v after start", time.Since(begin))

	m, err := testnet.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Directories) != 3 || len(m.Nodes) != 4 || m.AdminToken == "" {
		t.Fatalf("testnet.json: %+v", m)
	}
	for _, n := range m.Nodes {
		if n.PID <= 0 || n.ID == "" || n.HTTP == "" || n.Operator == "" || n.Data == "" || n.P2P == "" {
			t.Fatalf("node entry %+v", n)
		}
	}
	for _, v := range m.Directories {
		if v.PID <= 0 || v.HTTP == "" || v.Raft == "" || v.P2P == "" || v.Data == "" {
			t.Fatalf("voter entry %+v", v)
		}
	}
	ctx := context.Background()
	status := func() (string, error) {
		var out bytes.Buffer
		err := run(ctx, []string{"testnet", "status", "--dir", dir}, &out, &out)
		return out.String(), err
	}
	nodeLine := regexp.MustCompile(`(?m)^n1\s.*$`)
	out, err := status()
	if err != nil || !strings.Contains(out, "leader") || strings.Count(out, "active") != 4 {
		t.Fatalf("status: %v\n%s", err, out)
	}
	reg := []byte(`{"password":"correct horse battery","email":"me@example.com"}`)
	if code, body := call(t, &http.Client{Timeout: 30 * time.Second}, http.MethodPut,
		m.Directories[1].HTTP+"user/1.0/"+exampleUser, reg, ""); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}

	// Kill n1: its process is gone at once and the directory marks it
	// down after --down-after.
	var killOut bytes.Buffer
	if err := run(ctx, []string{"testnet", "kill", "--dir", dir, "n1"}, &killOut, &killOut); err != nil {
		t.Fatalf("kill: %v %s", err, killOut.String())
	}
	if killed := m.Nodes[0].PID; syscall.Kill(killed, 0) == nil && !isZombie(killed) {
		t.Fatalf("pid %d of n1 still runs", killed)
	}
	testkit.Eventually(t, 15*time.Second, func() string {
		out, err := status()
		line := nodeLine.FindString(out)
		if err == nil && strings.Contains(line, "dead") && strings.Contains(line, "down") {
			return ""
		}
		return fmt.Sprintf("status does not show n1 down: %v\n%s", err, out)
	})

	// Restart n1 from "another shell"; it comes back active.
	var rs bytes.Buffer
	if err := run(ctx, []string{"testnet", "restart", "--dir", dir, "n1"}, &rs, &rs); err != nil {
		t.Fatalf("restart: %v %s", err, rs.String())
	}
	testkit.Eventually(t, 15*time.Second, func() string {
		out, err := status()
		line := nodeLine.FindString(out)
		if err == nil && !strings.Contains(line, "dead") && strings.Contains(line, "active") {
			return ""
		}
		return fmt.Sprintf("status does not show n1 back: %v\n%s", err, out)
	})
	if m, err = testnet.ReadManifest(dir); err != nil {
		t.Fatal(err)
	}

	// SIGINT stops `up` and every child, the restarted one included.
	if err := up.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("hce testnet up: %v %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("hce testnet up did not stop on SIGINT")
	}
	var pids []int
	for _, v := range m.Directories {
		pids = append(pids, v.PID)
	}
	for _, n := range m.Nodes {
		pids = append(pids, n.PID)
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
				return fmt.Sprintf("pid %d still runs after up stopped", pid)
			}
		}
		return ""
	})

	// up on the stopped testnet's folder resumes it: the same members,
	// ports and data (the account registered before is still there).
	up, exited, stderr = startUp(t, bin, "resumed", "testnet", "up", "--dir", dir)
	out, err = status()
	if err != nil || !strings.Contains(out, "leader") || strings.Count(out, "active") != 4 {
		t.Fatalf("status after resume: %v\n%s", err, out)
	}
	resumed, err := testnet.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range resumed.Directories {
		if v.HTTP != m.Directories[i].HTTP || v.PID == m.Directories[i].PID {
			t.Fatalf("voter %s after resume: %+v, before %+v", v.ID, v, m.Directories[i])
		}
	}
	if code, body := call(t, &http.Client{Timeout: 10 * time.Second}, http.MethodGet,
		resumed.Directories[0].HTTP+"user/1.0/"+exampleUser, nil, ""); code != 200 || string(body) != "1" {
		t.Fatalf("account registered before the stop, after resume: %d %s", code, body)
	}
	if err := up.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("resumed hce testnet up: %v %s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("resumed hce testnet up did not stop on SIGINT")
	}
}

// startUp runs `hce args...` (testnet up) and waits for its "HCE testnet
// <word>" line; it returns the command, a channel with its exit and its
// standard error. A test failure leaves nothing running.
func startUp(t *testing.T, bin, word string, args ...string) (*exec.Cmd, chan error, *lockedBuffer) {
	t.Helper()
	up := exec.Command(bin, args...)
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	up.Stderr = stderr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- up.Wait() }()
	dir := args[len(args)-1]
	for i, a := range args {
		if a == "--dir" && i+1 < len(args) {
			dir = args[i+1]
		}
	}
	t.Cleanup(func() {
		// On failure, leave nothing running.
		_ = up.Process.Signal(syscall.SIGKILL)
		if m, err := testnet.ReadManifest(dir); err == nil {
			for _, v := range m.Directories {
				if v.PID > 0 {
					_ = syscall.Kill(v.PID, syscall.SIGKILL)
				}
			}
			for _, n := range m.Nodes {
				if n.PID > 0 {
					_ = syscall.Kill(n.PID, syscall.SIGKILL)
				}
			}
		}
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "HCE testnet "+word) {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("hce testnet up exited: %v %s", err, stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("hce testnet up not ready: %s", stderr.String())
	}
	return up, exited, stderr
}

// isZombie says whether pid has exited but was not reaped yet.
func isZombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
