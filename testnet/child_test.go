package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestPIDAlive covers the states a member's process passes through when
// another shell kills it: running, exited but not reaped (a zombie),
// reaped; and a live PID whose command line does not name the member's
// data (a reused PID).
func TestPIDAlive(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	dir := t.TempDir()
	// cat blocks reading the pipe; dir is on its command line.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := exec.Command("cat", "-", dir)
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		t.Skip("no cat:", err)
	}
	r.Close()
	pid := cmd.Process.Pid
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	if !pidAlive(pid, "") || !pidAlive(pid, dir) {
		t.Fatalf("running pid %d not alive", pid)
	}
	if pidAlive(pid, "/some/other/member") {
		t.Fatalf("pid %d alive for data its command line does not name", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: wait until /proc shows the zombie.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for state(pid) != 'Z' {
		if ctx.Err() != nil {
			t.Fatalf("pid %d never became a zombie (state %q)", pid, state(pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("a zombie refuses kill(0)")
	}
	if pidAlive(pid, "") || pidAlive(pid, dir) {
		t.Fatalf("zombie %d alive", pid)
	}
	if err := waitGone(ctx, pid, ""); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	reaped = true
	if pidAlive(pid, "") {
		t.Fatalf("reaped pid %d alive", pid)
	}
	if err := killPID(pid, ""); err == nil {
		t.Fatalf("killPID of reaped pid %d succeeded", pid)
	}
}

// state is the state letter /proc shows for pid, 0 if none.
func state(pid int) byte {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2]
	}
	return 0
}
