package testnet

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFreePortIsReservedAcrossProcesses: a port freePort hands out stays
// locked in the machine-wide folder while this process lives, so another
// process drawing testnet ports (it would open the file afresh, as this
// second open does) skips it even while nothing listens on it, as when a
// member is down between a kill and its restart.
func TestFreePortIsReservedAcrossProcesses(t *testing.T) {
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "hce-testnet-ports", port), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("no lock file for %s: %v", addr, err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("a second lock on %s's file: %v, want EWOULDBLOCK", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the port itself must stay free for the member: %v", err)
	}
	ln.Close()
}
