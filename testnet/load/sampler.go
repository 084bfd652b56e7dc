package load

import (
	"sync"
	"time"

	"github.com/hce-sync/hce/testnet/load/procstat"
	"github.com/hce-sync/hce/testnet/load/report"
)

// sampler reads the target's processes every interval until stopped.
type sampler struct {
	procs []procstat.Proc
	start time.Time
	done  chan struct{}
	wg    sync.WaitGroup

	mu   sync.Mutex
	last []procstat.Sample
	data []report.ProcSeries
}

func startSampler(procs []procstat.Proc, every time.Duration, start time.Time) *sampler {
	s := &sampler{procs: procs, start: start, done: make(chan struct{}), last: make([]procstat.Sample, len(procs))}
	for _, p := range procs {
		s.data = append(s.data, report.ProcSeries{Name: p.Name, PID: p.PID})
	}
	if len(procs) == 0 {
		return s
	}
	s.take()
	s.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.take()
			}
		}
	})
	return s
}

// take samples every process once.
func (s *sampler) take() {
	samples := make([]procstat.Sample, len(s.procs))
	for i, p := range s.procs {
		samples[i] = procstat.Read(p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, cur := range samples {
		prev := s.last[i]
		ps := report.ProcSample{T: cur.At.Sub(s.start).Seconds(), RSS: cur.RSS, Disk: cur.Disk}
		if prev.Alive && cur.Alive {
			if dt := cur.At.Sub(prev.At).Seconds(); dt > 0 {
				ps.CPU = (cur.CPU - prev.CPU).Seconds() / dt
			}
		}
		if !prev.At.IsZero() {
			s.data[i].Samples = append(s.data[i].Samples, ps)
		}
		s.last[i] = cur
	}
}

// stop ends sampling; it is safe to call more than once.
func (s *sampler) stop() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
}

// series returns a copy of the samples so far.
func (s *sampler) series() []report.ProcSeries {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]report.ProcSeries, len(s.data))
	for i, d := range s.data {
		out[i] = report.ProcSeries{Name: d.Name, PID: d.PID, Samples: append([]report.ProcSample(nil), d.Samples...)}
	}
	return out
}

// totals reads every process now and returns the sum of their data
// folders and of their resident memory.
func (s *sampler) totals() (disk, rss int64) {
	for _, p := range s.procs {
		if p.Name == GeneratorProc {
			continue
		}
		smp := procstat.Read(p)
		disk += smp.Disk
		rss += smp.RSS
	}
	return disk, rss
}

// summary is each process's figures over [from, to] (seconds from the
// start): mean CPU, largest RSS, last disk size.
func (s *sampler) summary(from, to float64) []report.ProcSummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []report.ProcSummary
	for _, d := range s.data {
		ps := report.ProcSummary{Name: d.Name}
		n := 0
		for _, smp := range d.Samples {
			if smp.T < from || smp.T > to+0.5 {
				continue
			}
			ps.CPU += smp.CPU
			n++
			ps.RSS = max(ps.RSS, smp.RSS)
			ps.Disk = smp.Disk
		}
		if n > 0 {
			ps.CPU /= float64(n)
		}
		out = append(out, ps)
	}
	return out
}

// readCPU reads the CPU time so far of each process of procs on this
// machine (index-aligned; -1 where it could not be read or the process
// is not on this machine).
func readCPU(procs []procstat.Proc) []time.Duration {
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		out[i] = -1
		if p.PID > 0 {
			if c, err := procstat.CPUTime(p.PID); err == nil {
				out[i] = c
			}
		}
	}
	return out
}

// cpuBetween is the CPU time the processes used between two readCPU
// readings, summed over those read both times (0 when none was).
func cpuBetween(a, b []time.Duration) time.Duration {
	var t time.Duration
	for i := range min(len(a), len(b)) {
		if a[i] >= 0 && b[i] >= a[i] {
			t += b[i] - a[i]
		}
	}
	return t
}
