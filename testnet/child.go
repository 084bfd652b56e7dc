package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The lines `hce directory` and `hce node` print once they serve.
var (
	voterReadyLine = regexp.MustCompile(`HCE directory voter \S+ ready at https?://\S+/ \(raft \S+, p2p (\S+),`)
	nodeReadyLine  = regexp.MustCompile(`HCE storage node (\S+) ready at (https?://\S+/)`)
)

// child is a member's `hce` child process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process is reaped
	err  error         // Wait's result, set before done closes
	data string
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits until the process is reaped.
func (c *child) kill() error {
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil && !c.exited() {
		return fmt.Errorf("testnet: kill %d: %w", c.pid(), err)
	}
	<-c.done
	return nil
}

// stop sends SIGINT and waits for the exit; SIGKILL once ctx ends.
func (c *child) stop(ctx context.Context) error {
	if c.exited() {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.done
		return fmt.Errorf("testnet: pid %d ignored SIGINT; killed", c.pid())
	}
}

// childArgs returns the command line of m's child (without the binary).
func (t *Testnet) childArgs(m *member, join string, first bool, dirURL string) ([]string, error) {
	args, err := t.memberArgs(m, join, first, dirURL)
	if err != nil || !t.cfg.TLS {
		return args, err
	}
	cert, key, err := memberHTTPS(t.https, m.data, m.name)
	if err != nil {
		return nil, fmt.Errorf("testnet: %s HTTPS certificate: %w", m.name, err)
	}
	return append(args, "--tls-cert", cert, "--tls-key", key,
		"--tls-ca", filepath.Join(t.cfg.Dir, HTTPSCADir, "ca.pem")), nil
}

// memberArgs is childArgs without the TLS flags.
func (t *Testnet) memberArgs(m *member, join string, first bool, dirURL string) ([]string, error) {
	if m.voter {
		args := []string{"directory", "--log-level", t.cfg.ChildLogLevel, "--id", m.id, "--data", m.data,
			"--http", m.httpAddr, "--raft", m.raftAddr, "--p2p", m.p2pAddr, "--ca", filepath.Join(t.cfg.Dir, "ca"),
			"--replicas", strconv.Itoa(t.cfg.Replicas), "--auto-approve", "--down-after", t.cfg.DownAfter.String(),
			"--blocklist", filepath.Join(m.data, BlocklistFile),
			"--fxa-local", "--fxa-local-key", filepath.Join(t.cfg.Dir, LocalIssuerKeyFile)}
		switch {
		case first && join == "":
			args = append(args, "--bootstrap")
		case first:
			args = append(args, "--join", join)
		}
		return args, nil
	}
	return append([]string{"node", "--log-level", t.cfg.ChildLogLevel, "--data", m.data, "--http", m.httpAddr,
		"--p2p", m.p2pAddr, "--directory", dirURL, "--operator", m.operator, "--heartbeat", t.cfg.Heartbeat.String(),
		"--sweep", t.cfg.Sweep.String(), "--blocklist", filepath.Join(m.data, BlocklistFile)}, t.cfg.Store.args()...), nil
}

// spawn starts m as a child process writing to DIR/logs/<name>.log and
// waits for its ready line; it returns the child and its libp2p peer ID
// (for a node, also its directory ID).
// The admin token travels in the environment, not on the command line.
// Children of an owning testnet get their own process group (a terminal's
// Ctrl-C reaches only the parent, which stops them in order); detached
// ones (Attach) their own session.
func (t *Testnet) spawn(ctx context.Context, m *member, join string, first bool, dirURL string) (*child, string, error) {
	logDir := filepath.Join(t.cfg.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, "", err
	}
	logPath := filepath.Join(logDir, m.name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, "", err
	}
	defer lf.Close()
	fi, err := lf.Stat()
	if err != nil {
		return nil, "", err
	}
	offset := fi.Size()
	args, err := t.childArgs(m, join, first, dirURL)
	if err != nil {
		return nil, "", err
	}
	bin := t.cfg.Binary
	if t.cfg.BinaryFor != nil {
		if b := t.cfg.BinaryFor(m.name); b != "" {
			bin = b
			args = olderBuildArgs(b, args)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(childEnv(), "HCE_ADMIN_TOKEN="+t.token)
	cmd.Stdout, cmd.Stderr = lf, lf
	if t.owner {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("testnet: start %s: %w", m.name, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{}), data: m.data}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	re := nodeReadyLine
	if m.voter {
		re = voterReadyLine
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		out := readFrom(logPath, offset)
		if sub := re.FindSubmatch(out); sub != nil {
			return c, string(sub[1]), nil
		}
		select {
		case <-c.done:
			return nil, "", fmt.Errorf("testnet: %s exited (%v): %s", m.name, c.err, tail(readFrom(logPath, offset)))
		case <-ctx.Done():
			_ = c.kill()
			return nil, "", fmt.Errorf("testnet: %s not ready: %w: %s", m.name, ctx.Err(), tail(out))
		case <-tick.C:
		}
	}
}

// childEnv is this process's environment without its HCE_* variables:
// every hce flag reads one (HCE_DATA, HCE_DIRECTORY, ...), and a child's
// settings are the testnet's, given on its command line, not whatever
// the shell that runs hce testnet exported.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HCE_") {
			env = append(env, kv)
		}
	}
	return env
}

// readFrom returns the file's bytes after offset (nil on error).
func readFrom(path string, offset int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := f.Seek(offset, 0); err != nil {
		return nil
	}
	_, _ = buf.ReadFrom(f)
	return buf.Bytes()
}

// tail returns the last lines of a log for error messages.
func tail(b []byte) string {
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// pidAlive says whether pid runs (a zombie does not) and, where /proc
// shows command lines, is an hce child using data (a reused PID is not).
func pidAlive(pid int, data string) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		// With /proc, a vanished entry is a process reaped after kill(0);
		// without it, trust kill(0).
		_, noProc := os.Stat("/proc/self/stat")
		return noProc != nil
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
		// Exited: a zombie, or being reaped. A zombie leader whose other
		// threads are still exiting may yet hold its files and ports.
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		return err == nil && len(tasks) > 1
	}
	// An exiting process shows an empty command line until it is a zombie.
	if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && data != "" && len(cl) > 0 {
		return bytes.Contains(cl, []byte(data))
	}
	return true
}

// killPID sends SIGKILL to a member's process that is not our child and
// waits until it is gone.
func killPID(pid int, data string) error {
	if !pidAlive(pid, data) {
		return fmt.Errorf("%w: pid %d", ErrNotRunning, pid)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("testnet: kill %d: %w", pid, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The process was ours a moment ago: wait for the PID itself to go
	// (or be a zombie), not for its command line to stop naming data,
	// which a process being torn down need not show either way.
	return waitGone(ctx, pid, "")
}

// stopPID sends SIGINT to a member's process that is not our child and
// waits for it to go; SIGKILL once ctx ends.
func stopPID(ctx context.Context, pid int, data string) error {
	if !pidAlive(pid, data) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGINT)
	if err := waitGone(ctx, pid, data); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return err
	}
	return nil
}

// waitGone polls until pid no longer runs or ctx ends.
func waitGone(ctx context.Context, pid int, data string) error {
	err, _ := pollUntil(ctx, 20*time.Millisecond, func() error {
		if pidAlive(pid, data) {
			return errStillRuns
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("testnet: pid %d still runs: %w", pid, err)
	}
	return nil
}

// errStillRuns is waitGone's check failing.
var errStillRuns = errors.New("still runs")

// helpCache remembers which binaries know the Sync 1.5 flags.
var helpCache sync.Map // binary path -> bool

// olderBuildArgs drops from a voter's args the flags a binary of an
// earlier release does not know (the Sync 1.5 local issuer, added after
// it), so a mixed-version testnet can run it; it asks the binary's
// `directory --help` once per path.
func olderBuildArgs(bin string, args []string) []string {
	if len(args) == 0 || args[0] != "directory" {
		return args
	}
	knows, ok := helpCache.Load(bin)
	if !ok {
		out, _ := exec.Command(bin, "directory", "--help").CombinedOutput()
		knows = bytes.Contains(out, []byte("-fxa-local"))
		helpCache.Store(bin, knows)
	}
	if knows.(bool) {
		return args
	}
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--fxa-local":
			continue
		case "--fxa-local-key":
			i++ // and its value
			continue
		}
		out = append(out, args[i])
	}
	return out
}
