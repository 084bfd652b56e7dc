package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
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
	// Start returns once exec has begun; the new command line shows a
	// moment later (before, /proc shows it empty, which pidAlive takes
	// for a process on its way out and trusts kill(0)).
	testkit.WaitFor(t, 10*time.Second, "cat's command line", func() bool {
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return bytes.Contains(cl, []byte(dir))
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
	testkit.WaitFor(t, 10*time.Second, "the killed process a zombie", func() bool { return state(pid) == 'Z' })
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("a zombie refuses kill(0)")
	}
	if pidAlive(pid, "") || pidAlive(pid, dir) {
		t.Fatalf("zombie %d alive", pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
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

// TestPIDAliveZombieLeader: a process whose main thread has exited while
// another thread still runs shows its leader as a zombie; it still runs
// (and may hold its ports and files), so pidAlive must say so. Building
// such a process takes a C compiler; Go never ends its main thread.
func TestPIDAliveZombieLeader(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "leader.c")
	const prog = `#include <pthread.h>
#include <unistd.h>
static void *rest(void *a) { sleep(2); return 0; }
int main(void) { pthread_t t; pthread_create(&t, 0, rest, 0); pthread_exit(0); }
`
	if err := os.WriteFile(src, []byte(prog), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "leader")
	if out, err := exec.Command(cc, "-o", bin, src, "-lpthread").CombinedOutput(); err != nil {
		t.Skipf("cc: %v %s", err, out)
	}
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	testkit.WaitFor(t, 10*time.Second, "the main thread a zombie", func() bool { return state(pid) == 'Z' })
	select {
	case <-done:
		t.Skip("the process ended before it could be checked")
	default:
	}
	if !pidAlive(pid, "") {
		t.Fatalf("pid %d with a zombie leader and a live thread reads as gone", pid)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if pidAlive(pid, "") {
		t.Fatalf("reaped pid %d alive", pid)
	}
}
