package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFile is the file in a data folder that a running hce process holds
// an exclusive lock on (and writes its pid into).
const lockFile = "hce.lock"

// lockDataDir creates dir if needed and takes an exclusive lock on
// dir/hce.lock for as long as the process runs (the kernel drops it when
// the process dies, kill -9 included); release gives it up. A folder
// another process holds fails at once, naming that process's pid.
func lockDataDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data folder %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data folder %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := "?"
			if p, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && p > 0 {
				pid = strconv.Itoa(p)
			}
			return nil, fmt.Errorf("data folder %s is in use by another hce process (pid %s): stop it, or give this one another --data", dir, pid)
		}
		return nil, fmt.Errorf("data folder %s: lock %s: %w", dir, path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
