package testnet

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// portLocks keeps the lock files of the ports this process handed out open
// (and so locked) until it exits; the kernel releases them then, even
// after a kill -9.
var portLocks []*os.File

// portLockDir creates (once per process) and returns the lock folder, ""
// when it cannot be made.
var portLockDir = sync.OnceValue(func() string {
	dir := filepath.Join(os.TempDir(), "hce-testnet-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return ""
	}
	return dir
})

// lockPort takes an exclusive lock on port p's file in a folder shared by
// every process on this machine, and reports false when another process
// holds it. Without the folder (no writable temp dir) it reports true: the
// listen check alone then guards the port, as before. The caller holds
// portMu.
func lockPort(p int) bool {
	dir := portLockDir()
	if dir == "" {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	portLocks = append(portLocks, f)
	return true
}
