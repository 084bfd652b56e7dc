package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	if killed := m.Nodes[0].PID; runs(killed) {
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

	// Partition voter d3 off from everyone (n1 is down, named anyway): every member's blocklist
	// names the other side (libp2p peer IDs; raft IDs and HTTP addresses
	// between voters); d3 soon knows no leader. Heal empties them.
	var pout bytes.Buffer
	if err := run(ctx, []string{"testnet", "partition", "--dir", dir, "d3", "d1,d2,n1,n2,n3,n4"}, &pout, &pout); err != nil {
		t.Fatalf("partition: %v %s", err, pout.String())
	}
	d3, _ := os.ReadFile(filepath.Join(m.Directories[2].Data, testnet.BlocklistFile))
	n2, _ := os.ReadFile(filepath.Join(m.Nodes[1].Data, testnet.BlocklistFile))
	if m.Directories[0].PeerID == "" || !strings.Contains(string(d3), "raft:d1") || !strings.Contains(string(d3), m.Directories[0].PeerID) ||
		!strings.Contains(string(d3), "http:"+strings.TrimSuffix(strings.TrimPrefix(m.Directories[1].HTTP, "http://"), "/")) ||
		!strings.Contains(string(d3), m.Nodes[1].ID) || strings.TrimSpace(string(n2)) != m.Directories[2].PeerID {
		t.Fatalf("blocklists after `partition d3 d1,d2,n1,n2,n3,n4`:\nd3: %s\nn2: %s", d3, n2)
	}
	testkit.Eventually(t, 15*time.Second, func() string {
		var s struct{ Leader struct{ ID string } }
		code, body := httpGetJSON(t, m.Directories[2].HTTP+"admin/v1/status", m.AdminToken, &s)
		if code != 200 || s.Leader.ID != "" {
			return fmt.Sprintf("isolated d3 answers %d %s", code, body)
		}
		return ""
	})
	if err := run(ctx, []string{"testnet", "heal", "--dir", dir}, &pout, &pout); err != nil {
		t.Fatalf("heal: %v %s", err, pout.String())
	}
	if _, err := os.Stat(filepath.Join(m.Directories[2].Data, testnet.BlocklistFile)); !os.IsNotExist(err) {
		t.Fatalf("heal left d3's blocklist: %v", err)
	}

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
			if runs(pid) {
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

// httpGetJSON GETs url with the admin token and decodes a JSON body into
// out; it returns the status and the body.
func httpGetJSON(t *testing.T, url, token string, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, out)
	return resp.StatusCode, string(b)
}

// runs says whether pid still runs: it exists and is neither a zombie
// nor being reaped. A /proc entry that vanished after kill(0) succeeded
// is a process its parent reaped in between, not one that runs.
func runs(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || (stat[i+2] != 'Z' && stat[i+2] != 'X')
}
