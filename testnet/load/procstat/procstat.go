package procstat

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrUnsupported is returned where /proc cannot be read.
var ErrUnsupported = errors.New("procstat: /proc not available")

// ErrNotFound is returned when no process listens on a port.
var ErrNotFound = errors.New("procstat: no process found")

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// Proc names a process to watch and the data folder it writes.
type Proc struct {
	// Name labels the process in results (serve, n1, d1, ...).
	Name string `json:"name"`
	// PID is the process id; 0 means the process is not on this machine
	// (only Data is then sampled, if set).
	PID int `json:"pid"`
	// Data is the folder whose disk use is measured ("" for none).
	Data string `json:"data,omitempty"`
}

// Sample is one observation of a process.
type Sample struct {
	// At is when the sample was taken.
	At time.Time
	// CPU is the process's user+system CPU time so far.
	CPU time.Duration
	// RSS is the resident set size in bytes.
	RSS int64
	// Disk is the space the data folder's files take, in bytes (allocated
	// blocks, as du counts).
	Disk int64
	// Alive is false when the process could not be read (exited).
	Alive bool
}

// Read samples p now.
func Read(p Proc) Sample {
	s := Sample{At: time.Now()}
	if p.PID > 0 {
		cpu, err1 := CPUTime(p.PID)
		rss, err2 := rssBytes(p.PID)
		if err1 == nil && err2 == nil {
			s.CPU, s.RSS, s.Alive = cpu, rss, true
		}
	}
	if p.Data != "" {
		s.Disk, _ = DiskUsage(p.Data)
	}
	return s
}

// CPUTime returns the user and system CPU time process pid has used so
// far (utime+stime from /proc/PID/stat, in ticks of 10 ms), without
// Read's other figures.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, wrap(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("procstat: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("procstat: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("procstat: /proc/%d/stat: bad times", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// rssBytes reads VmRSS from /proc/PID/status.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, wrap(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("procstat: VmRSS %q", v)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("procstat: /proc/%d/status has no VmRSS", pid)
}

func wrap(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		if _, e := os.Stat("/proc/self"); e != nil {
			return ErrUnsupported
		}
	}
	return err
}

// DiskUsage is the space the files under dir take (allocated 512-byte
// blocks), as `du -s` counts it. Files that vanish during the walk are
// skipped.
func DiskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != dir {
				return nil
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// FindListener returns the id of the process listening on the TCP port
// (any local address, IPv4 or IPv6). Only processes whose descriptors
// this user may read are found.
func FindListener(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fs[1], ":")
			if !ok {
				continue
			}
			p, err := strconv.ParseInt(hexPort, 16, 32)
			if err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		if _, err := os.Stat("/proc/net/tcp"); err != nil {
			return 0, ErrUnsupported
		}
		return 0, fmt.Errorf("%w: nothing listens on port %d", ErrNotFound, port)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, ErrUnsupported
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && inodes[link] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: port %d is listened on by a process this user cannot see", ErrNotFound, port)
}

// DataFlag returns the value of a --data (or -data) flag on the process's
// command line, made absolute against the process's working folder; ""
// when it has none.
func DataFlag(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	val := ""
	for i, a := range args {
		switch {
		case a == "--data" || a == "-data":
			if i+1 < len(args) {
				val = args[i+1]
			}
		case strings.HasPrefix(a, "--data="), strings.HasPrefix(a, "-data="):
			_, val, _ = strings.Cut(a, "=")
		}
	}
	if val == "" || filepath.IsAbs(val) {
		return val
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return ""
	}
	return filepath.Join(cwd, val)
}

// LoadAvg returns the 1, 5 and 15 minute load averages of the machine.
func LoadAvg() ([3]float64, error) {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out, ErrUnsupported
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out, nil
}

// MemTotal returns the machine's memory in bytes.
func MemTotal() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, ErrUnsupported
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("procstat: no MemTotal in /proc/meminfo")
}
