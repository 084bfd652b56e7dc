package procstat

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestReadSelfAndFindListener(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 100_000), 0o600); err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the counter (in clock ticks) is above zero: a fixed
	// loop can finish within one tick on a fast machine.
	x := 0
	var s Sample
	for range 1000 {
		for i := range 5_000_000 {
			x += i % 7
		}
		if s = Read(Proc{Name: "self", PID: os.Getpid(), Data: dir}); s.CPU > 0 {
			break
		}
	}
	if !s.Alive || s.RSS < 1<<20 || s.CPU <= 0 || s.Disk < 100_000 || x == 0 {
		t.Fatalf("sample of this process: %+v", s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	pid, err := FindListener(port)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("FindListener(%d) = %d, %v; want %d", port, pid, err, os.Getpid())
	}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	free := ln2.Addr().(*net.TCPAddr).Port
	ln2.Close()
	if _, err := FindListener(free); err == nil {
		t.Fatalf("FindListener(%d) found a process on a closed port", free)
	}
	if got := Read(Proc{PID: 1 << 30}); got.Alive {
		t.Fatal("a missing process reads as alive")
	}
	if c, err := CPUTime(os.Getpid()); err != nil || c < s.CPU {
		t.Fatalf("CPUTime(self) = %v, %v; an earlier sample read %v", c, err, s.CPU)
	}
	if _, err := CPUTime(1 << 30); err == nil {
		t.Fatal("CPUTime of a missing process returned no error")
	}
	if la, err := LoadAvg(); err != nil || la[0] < 0 {
		t.Fatalf("LoadAvg = %v, %v", la, err)
	}
	if m, err := MemTotal(); err != nil || m < 1<<20 {
		t.Fatalf("MemTotal = %v, %v", m, err)
	}
}
