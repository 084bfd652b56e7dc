package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe to write from the exec package's
// copying goroutine while a failing test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startChild runs `hce args...` as a child process and waits until a line
// of its standard output matches ready; it returns the command and that
// line's submatches. The child is killed when the test ends; a test may
// kill it earlier.
func startChild(t *testing.T, ready *regexp.Regexp, bin string, args ...string) (*exec.Cmd, []string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	matches := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case matches <- m:
				default:
				}
			}
		}
		close(matches)
	}()
	select {
	case m, ok := <-matches:
		if !ok {
			t.Fatalf("hce %s exited before it was ready: %s", args[0], stderr)
		}
		return cmd, m
	case <-time.After(60 * time.Second):
		t.Fatalf("hce %s not ready after 60 s: %s", args[0], stderr)
	}
	return nil, nil
}

// buildHCE compiles the hce binary once per test binary run.
var buildHCE = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "hce-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "hce")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// hceBinary skips the test under -short and returns the hce binary.
func hceBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the hce binary")
	}
	bin, err := buildHCE()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var readyLine = regexp.MustCompile(`ready at (http://\S+/)`)

// startServe runs `hce serve` as a child process on a free loopback port
// and returns its base URL once it is ready.
func startServe(t *testing.T, bin, data string) (*exec.Cmd, string) {
	t.Helper()
	cmd, m := startChild(t, readyLine, bin, "serve", "--addr", "127.0.0.1:0", "--data", data, "--log-level", "warn")
	return cmd, m[1]
}
