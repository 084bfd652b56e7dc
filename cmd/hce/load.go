package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hce-sync/hce/testnet"
	"github.com/hce-sync/hce/testnet/load"
	"github.com/hce-sync/hce/testnet/load/mix"
	"github.com/hce-sync/hce/testnet/load/procstat"
	"github.com/hce-sync/hce/testnet/load/report"
)

const loadUsage = `Usage:
  hce load [flags]                 drive a Weave server with a mix: a closed loop (--concurrency,
                                   the default, beside a minimal net/http handler) or an open loop
                                   at a fixed arrival rate (--rate)
  hce load capacity [flags]        raise the offered load step by step until a failure mode
                                   appears; report the last healthy step in req/s and active users
  hce load compare A.json B.json   two runs' result.json side by side, with changes in percent
  hce load baseline [--addr A]     serve the minimal net/http handler the ratios are taken
                                   against, for an external driver (wrk; testnet/load/wrk)

Targets: an in-process hce serve in a temp folder (default), --url of a server, or --testnet DIR
of a running 'hce testnet up'. Mixes: weave-mix-v1 (real Sync clients, docs/mix-format.md),
post100, get100, info, nodeweave, or a mix file. Accounts the run registers are deleted
afterwards unless --keep-users; writing to a server that is not on this machine asks first
unless --yes. Run "hce load -h" or "hce load capacity -h" for the flags.

Columns of hce load: cpu/req is the CPU time the target's processes on this machine used per
answered request, read from /proc at each window's ends: in process the server and the generator
together, with --url the server's process when it listens on this machine, with --testnet every
voter and node; "-" when no process could be read. It moves much less than req/s and the ratio
with what else the machine runs: compare builds by it, interleaved, on a busy machine.
`

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "capacity":
			return runLoadCapacity(ctx, args[1:], stdout, stderr)
		case "compare":
			return runLoadCompare(args[1:], stdout, stderr)
		case "baseline":
			return runLoadBaseline(ctx, args[1:], stdout, stderr)
		case "help":
			fmt.Fprint(stdout, loadUsage)
			return nil
		}
	}
	return runLoadRun(ctx, args, stdout, stderr)
}

// startCPUProfile profiles the process into path until the returned
// function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("load: --cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("load: --cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// loadFlags are the flags `hce load` and `hce load capacity` share.
type loadFlags struct {
	url, testnetDir, mixes      string
	users, prefillConns, maxCon int
	prefillScale                float64
	seed                        uint64
	timeout, lagEvery           time.Duration
	reportDir                   string
	keepUsers, yes, quiet       bool
	pid                         int
	data                        string
	baseline                    bool
	arrival                     string
	// apis is --api (a comma list); api the protocol of the engine being
	// configured.
	apis, api string
}

func (f *loadFlags) register(fs *flag.FlagSet, defMix string, defUsers int) {
	fs.StringVar(&f.url, "url", "", "base URL of the server to load (default: an in-process hce serve in a temp folder)")
	fs.StringVar(&f.testnetDir, "testnet", "", "folder of a running hce testnet up: users register at its directory and follow node/weave")
	fs.StringVar(&f.mixes, "mix", defMix, "mix name (weave-mix-v1, post100, get100, info, nodeweave) or mix file; comma-separated runs each")
	fs.StringVar(&f.mixes, "scenarios", defMix, "old name of --mix")
	fs.IntVar(&f.users, "users", defUsers, "simulated users (accounts, each a browser profile with its devices) registered, prefilled and driven")
	fs.Float64Var(&f.prefillScale, "prefill-scale", 1, "fraction of the mix's prefill records each user gets (1 = as the mix says)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed for account names, payloads, the request sequence and arrival times")
	fs.DurationVar(&f.timeout, "timeout", load.DefaultTimeout, "per-request timeout; a slower answer counts as a timeout")
	fs.IntVar(&f.maxCon, "max-conns", load.DefaultMaxConns, "most connections to each host")
	fs.IntVar(&f.prefillConns, "prefill-conns", load.DefaultPrefillConns, "concurrent registrations and prefill writers")
	fs.DurationVar(&f.lagEvery, "lag-every", load.DefaultLagEvery, "with --testnet: interval between replication probes (a write on a user's primary, then reads of another replica until it has it); the report's replication figures")
	fs.StringVar(&f.reportDir, "report", "", "write result.json and a self-contained report.html into this folder")
	fs.BoolVar(&f.keepUsers, "keep-users", false, "keep the accounts afterwards (the next run with the same --seed reuses them and their prefill)")
	fs.BoolVar(&f.yes, "yes", false, "do not ask before writing to a server that is not on this machine")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress line")
	fs.IntVar(&f.pid, "pid", 0, "process id of the --url server to sample (default: the process listening on its port, when on this machine)")
	fs.StringVar(&f.data, "data", "", "data folder of the --url server to measure (default: its --data flag)")
	fs.BoolVar(&f.baseline, "baseline", true, "also measure a minimal net/http handler with the same mix and generator, for scale")
	fs.StringVar(&f.arrival, "arrival", "users", "open loop arrivals: users (each user's own think times), poisson, uniform")
	fs.StringVar(&f.apis, "api", load.API11, "storage protocol of the mix's storage requests: 1.1 (Weave) or 1.5 (Sync 1.5: the local issuer's tokens, the tokenserver, Hawk); comma-separated runs each mix over each")
}

// parseAPIs returns the protocols of --api.
func (f *loadFlags) parseAPIs() ([]string, error) {
	var out []string
	for _, a := range strings.Split(f.apis, ",") {
		switch a = strings.TrimSpace(a); a {
		case "":
		case load.API11, load.API15:
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		default:
			return nil, fmt.Errorf("load: --api %q: want 1.1 or 1.5", a)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("load: no --api given")
	}
	return out, nil
}

// setup is a resolved target and what to undo afterwards.
type setup struct {
	target  load.Target
	remote  string // the non-loopback host, "" when local
	closers []func()
}

func (s *setup) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// resolveTarget builds the target from --url, --testnet or an in-process
// server.
func (f *loadFlags) resolveTarget(ctx context.Context, stderr io.Writer) (*setup, error) {
	s := &setup{}
	switch {
	case f.url != "" && f.testnetDir != "":
		return nil, errors.New("load: give --url or --testnet, not both")
	case f.testnetDir != "":
		man, err := testnet.ReadManifest(f.testnetDir)
		if err != nil {
			return nil, err
		}
		t := load.Target{Kind: "testnet", AdminToken: man.AdminToken}
		for _, v := range man.Directories {
			t.UserURLs = append(t.UserURLs, slash(v.HTTP))
			t.Procs = append(t.Procs, procstat.Proc{Name: v.ID, PID: v.PID, Data: v.Data})
			s.checkHost(v.HTTP)
		}
		for _, n := range man.Nodes {
			t.Nodes = append(t.Nodes, slash(n.HTTP))
			t.Procs = append(t.Procs, procstat.Proc{Name: n.Name, PID: n.PID, Data: n.Data})
			s.checkHost(n.HTTP)
		}
		if len(t.UserURLs) == 0 {
			return nil, fmt.Errorf("load: %s lists no directory voter", filepath.Join(f.testnetDir, testnet.ManifestFile))
		}
		t.AdminURL = t.UserURLs[0]
		s.target = t
	case f.url != "":
		u := slash(f.url)
		t := load.Target{Kind: "url", UserURLs: []string{u}, StorageURL: u}
		if !s.checkHost(u) {
			pid := f.pid
			if pid == 0 {
				pid = listenerPID(u)
			}
			data := f.data
			if data == "" && pid > 0 {
				data = procstat.DataFlag(pid)
			}
			if pid > 0 || data != "" {
				t.Procs = []procstat.Proc{{Name: "server", PID: pid, Data: data}}
			}
			if pid == 0 {
				fmt.Fprintf(stderr, "hce load: found no process listening for %s; its CPU and memory are not sampled (--pid)\n", u)
			}
		}
		s.target = t
	default:
		dir, err := os.MkdirTemp("", "hce-load-")
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { os.RemoveAll(dir) })
		// The Hawk replay cache of the in-process server holds 64 MiB of
		// nonces (49,152 requests/s), so that a run measures the server,
		// not the default cache's 12,288 requests/s.
		scfg := testnet.StandaloneConfig{Addr: "127.0.0.1:0", DataDir: dir, FxA: testnet.FxAConfig{Local: true}}
		scfg.Sync15.Hawk.ReplayCacheSize = 1 << 23
		srv, err := testnet.StartStandalone(ctx, scfg)
		if err != nil {
			s.close()
			return nil, err
		}
		s.closers = append(s.closers, func() { srv.Shutdown(context.Background()) })
		s.target = load.Target{Kind: "serve", UserURLs: []string{srv.URL()}, StorageURL: srv.URL(), InProcess: true,
			Procs: []procstat.Proc{{Name: "serve (in process)", PID: os.Getpid(), Data: dir}}}
	}
	return s, nil
}

func slash(u string) string {
	if !strings.HasSuffix(u, "/") {
		return u + "/"
	}
	return u
}

// checkHost records a host that is not this machine's loopback; it
// reports whether rawURL is remote.
func (s *setup) checkHost(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		s.remote = rawURL
		return true
	}
	h := u.Hostname()
	if h == "localhost" {
		return false
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return false
	}
	s.remote = h
	return true
}

// listenerPID finds the process listening on the URL's port on this
// machine (0 when none is found).
func listenerPID(rawURL string) int {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		port = 80
		if u.Scheme == "https" {
			port = 443
		}
	}
	pid, err := procstat.FindListener(port)
	if err != nil {
		return 0
	}
	return pid
}

// confirm asks before writing to a server that is not on this machine.
func (f *loadFlags) confirm(s *setup, m *mix.Mix, stderr io.Writer) error {
	if s.remote == "" || f.yes {
		return nil
	}
	_, per := mix.NewGenerator(m, f.prefillScale).PrefillTotal()
	keep := "deletes them afterwards"
	if f.keepUsers {
		keep = "keeps them (--keep-users)"
	}
	fmt.Fprintf(stderr, "hce load will register %d accounts on %s, prefill each with about %s of records, send them load, and %s.\nContinue? [y/N] ",
		f.users, s.remote, humanBytes(per), keep)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return fmt.Errorf("load: not confirmed; %s is not on this machine (--yes skips the question)", s.remote)
}

func humanBytes(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.1f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.0f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// engineConfig is the engine configuration for mix m against t.
func (f *loadFlags) engineConfig(t load.Target, m *mix.Mix, stderr io.Writer) load.EngineConfig {
	cfg := load.EngineConfig{Target: t, Mix: m, Profiles: f.users, PrefillScale: f.prefillScale, Seed: f.seed,
		Timeout: f.timeout, MaxConns: f.maxCon, PrefillConns: f.prefillConns, API: f.api, LagEvery: f.lagEvery}
	if !f.quiet {
		cfg.Progress = stderr
		cfg.ProgressCR = stderr == io.Writer(os.Stderr) && isTerminal(os.Stderr)
	}
	return cfg
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runLoadBaseline serves the minimal handler until ctx ends (SIGINT,
// SIGTERM), so that an external load driver can measure it beside a
// server in the same round.
func runLoadBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address of the minimal handler")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	url, stop, err := startBaseline(*addr)
	if err != nil {
		return fmt.Errorf("load baseline: %w", err)
	}
	defer stop()
	fmt.Fprintf(stdout, "hce load baseline: serving the minimal handler at %s until interrupted\n", url)
	<-ctx.Done()
	return nil
}

// startBaseline serves the minimal handler on addr (a loopback port for
// the in-process comparisons) and returns its base URL.
func startBaseline(addr string) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	bs := &http.Server{Handler: load.Baseline(), ReadHeaderTimeout: 10 * time.Second}
	go bs.Serve(ln)
	return "http://" + ln.Addr().String() + "/", func() { bs.Close() }, nil
}

// parseRate reads "500", "500rps" (requests/s) or "20000users" (active
// users) and returns requests/s for generator g.
func parseRate(s string, g *mix.Generator) (float64, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	users := false
	for _, suf := range []string{"users", "user", "u"} {
		if strings.HasSuffix(s, suf) {
			s, users = strings.TrimSpace(strings.TrimSuffix(s, suf)), true
			break
		}
	}
	for _, suf := range []string{"req/s", "rps", "/s"} {
		s = strings.TrimSpace(strings.TrimSuffix(s, suf))
	}
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "k"):
		s, mult = strings.TrimSuffix(s, "k"), 1e3
	case strings.HasSuffix(s, "m"):
		s, mult = strings.TrimSuffix(s, "m"), 1e6
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v > 0) {
		return 0, fmt.Errorf("load: rate %q: want requests/s (500, 500rps) or active users (20000users, 20k users)", s)
	}
	v *= mult
	if users {
		v *= g.RatePerUser()
	}
	return v, nil
}

// parseFraction reads "1%" or "0.01".
func parseFraction(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		return v / 100, err
	}
	return strconv.ParseFloat(s, 64)
}

func loadMixes(names string) ([]*mix.Mix, error) {
	var out []*mix.Mix
	for _, n := range strings.Split(names, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		m, err := mix.Load(n)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("load: no mix given")
	}
	return out, nil
}

// cleanup deletes the accounts of the engines (unless --keep-users) and
// records the count in res.
func (f *loadFlags) cleanup(es []*load.Engine, res []*report.Result, stdout io.Writer) error {
	if f.keepUsers {
		if len(res) > 0 && res[0].Users.Profiles > 0 && res[0].Target.Kind != "serve" {
			fmt.Fprintf(stdout, "kept %d accounts (--keep-users): load-%d-0@hce.invalid ... load-%d-%d@hce.invalid, password %q\n",
				res[0].Users.Profiles, f.seed, f.seed, res[0].Users.Profiles-1, load.DefaultPassword)
		}
		return nil
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var errs []error
	total := 0
	done := map[string]bool{} // engines of one run share their accounts
	for i, e := range es {
		n, err := e.CleanupSkipping(cctx, done)
		total += n
		if i < len(res) {
			res[i].Users.Deleted = n
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("load: cleanup: %w", err))
		}
	}
	if total > 0 {
		fmt.Fprintf(stdout, "deleted %d load-test accounts\n", total)
	}
	return errors.Join(errs...)
}

// writeReport writes result<suffix>.json and report<suffix>.html into the
// report folder, if one was asked for.
func (f *loadFlags) writeReport(res *report.Result, suffix string, stdout io.Writer) error {
	if f.reportDir == "" {
		return nil
	}
	if err := os.MkdirAll(f.reportDir, 0o755); err != nil {
		return err
	}
	jsonPath := filepath.Join(f.reportDir, "result"+suffix+".json")
	htmlPath := filepath.Join(f.reportDir, "report"+suffix+".html")
	if err := res.Write(jsonPath); err != nil {
		return err
	}
	hf, err := os.Create(htmlPath)
	if err != nil {
		return err
	}
	if err := errors.Join(report.WriteHTML(hf, res), hf.Close()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "report: %s (data: %s)\n", htmlPath, jsonPath)
	return nil
}

// finish deletes the accounts and writes the report of one engine.
func (f *loadFlags) finish(e *load.Engine, res *report.Result, suffix string, stdout io.Writer) error {
	return errors.Join(f.cleanup([]*load.Engine{e}, []*report.Result{res}, stdout), f.writeReport(res, suffix, stdout))
}

func runLoadRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, loadUsage, "\nFlags of hce load:\n"); fs.PrintDefaults() }
	var f loadFlags
	f.register(fs, "post100,get100,info", 16)
	rate := fs.String("rate", "", "open loop at this arrival rate: requests/s (500, 500rps) or active users (20000users); default: a closed loop")
	conc := fs.Int("concurrency", 16, "closed loop: concurrent connections")
	dur := fs.Duration("duration", 10*time.Second, "measured time per mix (a closed loop splits it over --rounds windows)")
	rounds := fs.Int("rounds", 5, "closed loop: interleaved baseline/target window pairs per mix; the ratio printed is their median")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (the generator, and the in-process server when there is one) to this file; read it with go tool pprof")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	arrival, err := load.ParseArrival(f.arrival)
	if err != nil {
		return err
	}
	mixes, err := loadMixes(f.mixes)
	if err != nil {
		return err
	}
	apis, err := f.parseAPIs()
	if err != nil {
		return err
	}
	s, err := f.resolveTarget(ctx, stderr)
	if err != nil {
		return err
	}
	defer s.close()
	if err := f.confirm(s, mixes[0], stderr); err != nil {
		return err
	}
	var baseURL string
	if f.baseline && *rate == "" {
		u, stop, err := startBaseline("127.0.0.1:0")
		if err != nil {
			return err
		}
		defer stop()
		baseURL = u
	}
	*rounds = max(*rounds, 1)
	loop := fmt.Sprintf("closed loop, %d connections, %s per mix in %d interleaved windows", *conc, *dur, *rounds)
	if *rate != "" {
		loop = fmt.Sprintf("open loop at %s, %s arrivals, %s per mix", *rate, arrival, *dur)
	}
	fmt.Fprintf(stdout, "hce load: %s target %s, %d users, %s, seed %d\n", s.target.Kind, s.target.UserURLs[0], f.users, loop, f.seed)
	fmt.Fprintf(stdout, "%-14s %10s %10s %9s %9s %11s %8s %7s %9s\n", "mix", "req/s", "WBO/s", "p50", "p99", "base req/s", "ratio", "errors", "cpu/req")
	var errs []error
	var engines []*load.Engine
	var results []*report.Result
	var suffixes []string
	defer func() {
		for _, e := range engines {
			e.Close()
		}
	}()
runs:
	for _, m := range mixes {
		for _, a := range apis {
			f.api = a
			label, suffix := m.Name, ""
			if len(mixes) > 1 {
				suffix = "-" + m.Name
			}
			if len(apis) > 1 || a != load.API11 {
				label += " " + a
				suffix += "-" + a
			}
			e, res, err := f.runOneMix(ctx, s, m, label, baseURL, *rate, arrival, *conc, *dur, *rounds, args, stdout, stderr)
			if e != nil {
				engines, results, suffixes = append(engines, e), append(results, res), append(suffixes, suffix)
			}
			if err != nil {
				errs = append(errs, err)
				if ctx.Err() != nil {
					break runs
				}
			}
		}
	}
	errs = append(errs, f.cleanup(engines, results, stdout))
	for i, res := range results {
		errs = append(errs, f.writeReport(res, suffixes[i], stdout))
	}
	return errors.Join(errs...)
}

// runOneMix prepares the users of mix m and measures it; the caller
// closes the engine, deletes the accounts and writes the report.
func (f *loadFlags) runOneMix(ctx context.Context, s *setup, m *mix.Mix, label, baseURL, rate string, arrival load.Arrival,
	conc int, dur time.Duration, rounds int, args []string, stdout, stderr io.Writer) (*load.Engine, *report.Result, error) {
	e, err := load.New(f.engineConfig(s.target, m, stderr))
	if err != nil {
		return nil, nil, err
	}
	partial := func(err error) (*load.Engine, *report.Result, error) {
		res := e.Result()
		res.Command, res.Mode = append([]string{"hce", "load"}, args...), "run"
		return e, res, err
	}
	if err := e.Prepare(ctx); err != nil {
		return partial(err)
	}
	var steps, bases []report.Step
	if rate != "" {
		rps, err := parseRate(rate, e.Generator())
		if err != nil {
			return partial(err)
		}
		st, err := e.Run(ctx, load.Phase{Label: label, Rate: rps, Arrival: arrival, Duration: dur})
		steps = append(steps, st)
		if err != nil {
			return partial(err)
		}
	} else {
		var be *load.Engine
		if baseURL != "" {
			cfg := f.engineConfig(load.Target{Kind: "baseline", UserURLs: []string{baseURL}, StorageURL: baseURL, NoAccounts: true}, m, stderr)
			be, err = load.New(cfg)
			if err != nil {
				return partial(err)
			}
			defer be.Close()
		}
		// Baseline and target windows alternate, so a change in the
		// machine's load hits both; the figure is the median ratio.
		for r := 0; r < rounds; r++ {
			if be != nil {
				bst, err := be.Run(ctx, load.Phase{Label: fmt.Sprintf("baseline %d", r+1), Concurrency: conc, Duration: dur / time.Duration(rounds)})
				if err != nil {
					return partial(err)
				}
				bases = append(bases, bst)
			}
			st, err := e.Run(ctx, load.Phase{Label: fmt.Sprintf("%s %d", label, r+1), Concurrency: conc, Duration: dur / time.Duration(rounds)})
			steps = append(steps, st)
			if err != nil {
				return partial(err)
			}
		}
	}
	res := e.Result()
	res.Command = append([]string{"hce", "load"}, args...)
	res.Mode = "run"
	res.SLO = load.SLO{}.Report(f.timeout)
	var wbos, errsN int64
	var answered, secs, cpu float64
	cpuKnown := true
	for _, st := range steps {
		answered += st.Achieved * st.Duration
		errsN += st.Errors
		secs += st.Duration
		cpu += st.CPU
		cpuKnown = cpuKnown && st.CPU > 0
		for _, o := range st.Ops {
			wbos += o.WBOsOut + o.WBOsIn
		}
	}
	last := steps[len(steps)-1]
	base, ratio := "-", "-"
	if len(bases) > 0 {
		i := medianPair(steps, bases)
		res.Baseline, res.Reference = &bases[i], &steps[i]
		var bsum, bsecs float64
		for _, b := range bases {
			bsum += float64(b.Requests)
			bsecs += b.Duration
		}
		base = fmt.Sprintf("%.0f", bsum/bsecs)
		ratio = fmt.Sprintf("%.1f%%", 100*steps[i].Achieved/bases[i].Achieved)
	}
	if !cpuKnown {
		cpu = 0
	}
	cpuReq := report.Step{CPU: cpu, Achieved: answered / secs, Duration: secs}.CPUPerRequest()
	fmt.Fprintf(stdout, "%-14s %10.0f %10.0f %9s %9s %11s %8s %7d %9s\n", label, answered/secs, float64(wbos)/secs,
		msStr(last.Latency.P50), msStr(last.Latency.P99), base, ratio, errsN, cpuStr(cpuReq))
	for _, st := range steps {
		if st.Errors > 0 {
			fmt.Fprintf(stdout, "  %s: %d errors: %s\n", st.Label, st.Errors, kindsLine(st.ErrorKinds))
		}
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stdout, "  note: %s\n", n)
	}
	return e, res, nil
}

// medianPair returns the index of the window pair whose target/baseline
// throughput ratio is the median.
func medianPair(steps, bases []report.Step) int {
	type pr struct {
		i int
		r float64
	}
	var ps []pr
	for i := range min(len(steps), len(bases)) {
		if bases[i].Achieved > 0 {
			ps = append(ps, pr{i, steps[i].Achieved / bases[i].Achieved})
		}
	}
	if len(ps) == 0 {
		return 0
	}
	slices.SortFunc(ps, func(a, b pr) int {
		switch {
		case a.r < b.r:
			return -1
		case a.r > b.r:
			return 1
		}
		return 0
	})
	return ps[len(ps)/2].i
}

// cpuStr formats a CPU time per request in milliseconds, with three
// significant digits below 10 ms; "-" for 0 (not measured).
func cpuStr(v float64) string {
	switch {
	case v <= 0:
		return "-"
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	case v >= 1:
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.3fms", v)
}

func msStr(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.2fms", v)
}

func kindsLine(k map[string]int64) string {
	var parts []string
	for kind, n := range k {
		parts = append(parts, fmt.Sprintf("%s %d", kind, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func runLoadCapacity(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load capacity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, loadUsage, "\nFlags of hce load capacity:\n"); fs.PrintDefaults() }
	var f loadFlags
	f.register(fs, "weave-mix-v1", load.DefaultProfiles)
	start := fs.String("start", "", "first step's offered load: requests/s or active users (default: 30 % of the closed-loop reference, or 50 req/s)")
	growth := fs.Float64("growth", load.DefaultGrowth, "factor between steps until one fails; then the steps bisect")
	maxRate := fs.String("max", "", "highest offered load to try (requests/s or users; default none)")
	precision := fs.Float64("precision", load.DefaultPrecision, "stop when the lowest failed step is within this fraction above the highest healthy one")
	maxSteps := fs.Int("max-steps", load.DefaultMaxSteps, "most steps")
	step := fs.Duration("step", load.DefaultStep, "duration of each step")
	cooldown := fs.Duration("cooldown", load.DefaultCooldown, "pause between steps")
	minReqs := fs.Int("min-requests", load.DefaultMinRequests, "lengthen a step at a low rate until it offers this many requests (at most 5 x --step)")
	sloP99 := fs.Duration("slo-p99", load.DefaultSLOP99, "latency objective: p99 of each step at or below this")
	maxErrs := fs.String("max-errors", "1%", "largest healthy share of failed requests (errors, refused connections)")
	maxTimeouts := fs.String("max-timeouts", "0.1%", "largest healthy share of timed-out requests")
	diskBudget := fs.String("disk-budget", "0", "largest healthy data folder of any server process (e.g. 50GB; 0 = none)")
	rssBudget := fs.String("rss-budget", "0", "largest healthy resident memory of any server process (e.g. 4GiB; 0 = none)")
	refConc := fs.Int("baseline-concurrency", 16, "connections of the closed-loop measurements of the minimal handler and of the target")
	refDur := fs.Duration("baseline-duration", 10*time.Second, "duration of each closed-loop measurement")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	arrival, err := load.ParseArrival(f.arrival)
	if err != nil {
		return err
	}
	mixes, err := loadMixes(f.mixes)
	if err != nil {
		return err
	}
	if len(mixes) != 1 {
		return errors.New("load capacity: give one mix")
	}
	m := mixes[0]
	apis, err := f.parseAPIs()
	if err != nil {
		return err
	}
	if len(apis) != 1 {
		return errors.New("load capacity: give one --api")
	}
	f.api = apis[0]
	slo := load.SLO{P99: *sloP99}
	if slo.MaxErrors, err = parseFraction(*maxErrs); err != nil {
		return fmt.Errorf("load capacity: --max-errors: %w", err)
	}
	if slo.MaxTimeouts, err = parseFraction(*maxTimeouts); err != nil {
		return fmt.Errorf("load capacity: --max-timeouts: %w", err)
	}
	for _, b := range []struct {
		s   string
		dst *int64
	}{{*diskBudget, &slo.DiskBudget}, {*rssBudget, &slo.RSSBudget}} {
		v, err := mix.ParseValue(b.s, mix.Bytes)
		if err != nil {
			return fmt.Errorf("load capacity: budget: %w", err)
		}
		*b.dst = int64(v)
	}
	s, err := f.resolveTarget(ctx, stderr)
	if err != nil {
		return err
	}
	defer s.close()
	if err := f.confirm(s, m, stderr); err != nil {
		return err
	}
	e, err := load.New(f.engineConfig(s.target, m, stderr))
	if err != nil {
		return err
	}
	defer e.Close()
	g := e.Generator()
	fmt.Fprintf(stdout, "hce load capacity: %s target %s, mix %s (one active user = %.5f req/s), %d users, seed %d, p99 objective %s\n",
		s.target.Kind, s.target.UserURLs[0], m.Name, g.RatePerUser(), f.users, f.seed, *sloP99)
	if err := e.Prepare(ctx); err != nil {
		return errors.Join(err, f.finish(e, e.Result(), "", stdout))
	}
	u := e.Result().Users
	fmt.Fprintf(stdout, "users ready in %.0f s: %d registered, %d prefilled, %d reused\n", u.PrepareSeconds, u.Registered, u.Prefilled, u.Reused)
	var base, ref *report.Step
	if f.baseline {
		url, stop, err := startBaseline("127.0.0.1:0")
		if err != nil {
			return err
		}
		defer stop()
		be, err := load.New(f.engineConfig(load.Target{Kind: "baseline", UserURLs: []string{url}, StorageURL: url, NoAccounts: true}, m, stderr))
		if err != nil {
			return err
		}
		bst, err := be.Run(ctx, load.Phase{Label: "minimal handler", Concurrency: *refConc, Duration: *refDur})
		be.Close()
		if err != nil {
			return err
		}
		rst, err := e.Run(ctx, load.Phase{Label: "closed loop", Concurrency: *refConc, Duration: *refDur})
		if err != nil {
			return errors.Join(err, f.finish(e, e.Result(), "", stdout))
		}
		base, ref = &bst, &rst
		fmt.Fprintf(stdout, "closed loop, %d connections: minimal handler %.0f req/s, target %.0f req/s (%.1f %%), p99 %s\n",
			*refConc, bst.Achieved, rst.Achieved, 100*rst.Achieved/bst.Achieved, msStr(rst.Latency.P99))
	}
	cfg := load.CapacityConfig{Growth: *growth, Precision: *precision, MaxSteps: *maxSteps, Step: *step,
		Cooldown: *cooldown, MinRequests: *minReqs, Arrival: arrival, SLO: slo}
	switch {
	case *start != "":
		if cfg.Start, err = parseRate(*start, g); err != nil {
			return err
		}
	case ref != nil:
		cfg.Start = max(1, 0.3*ref.Achieved)
	}
	if *maxRate != "" {
		if cfg.Max, err = parseRate(*maxRate, g); err != nil {
			return err
		}
	}
	cfg.OnStep = func(st report.Step) {
		verdict := "healthy"
		if st.Failure != "" {
			verdict = st.FailureDetail
		}
		fmt.Fprintf(stdout, "%-8s %8.0f req/s %10.0f users: answered %7.0f/s p50 %8s p99 %8s errors %5.2f%% cpu/req %8s | %s\n", st.Label,
			st.Offered, st.OfferedUsers, st.Achieved, msStr(st.Latency.P50), msStr(st.Latency.P99), 100*float64(st.Errors)/float64(max(st.Requests, 1)), cpuStr(st.CPUPerRequest()), verdict)
	}
	capy, capErr := e.Capacity(ctx, cfg)
	res := e.Result()
	res.Command = append([]string{"hce", "load", "capacity"}, args...)
	res.Mode = "capacity"
	res.SLO = slo.Report(f.timeout)
	res.Baseline, res.Reference = base, ref
	if capy != nil {
		res.Capacity = capy
		if capy.Step >= 0 {
			fmt.Fprintf(stdout, "capacity: %.0f req/s = %.0f active users of %s at p99 <= %s\n", capy.RPS, capy.Users, m.Name, *sloP99)
		} else {
			fmt.Fprintln(stdout, "capacity: no step was healthy")
		}
		if capy.FailedStep >= 0 {
			fmt.Fprintf(stdout, "ended by: %s at %.0f req/s (%s)\n", capy.Failure, capy.FailedRPS, capy.FailureDetail)
		} else {
			fmt.Fprintln(stdout, "ended by: no failure up to the last step")
		}
		if capy.DiskPerUser > 0 {
			fmt.Fprintf(stdout, "disk per prefilled user: %s", humanBytes(capy.DiskPerUser))
			if capy.RSSPerUser > 0 {
				fmt.Fprintf(stdout, "; resident memory per active user at capacity: %s", humanBytes(capy.RSSPerUser))
			}
			fmt.Fprintln(stdout)
		}
	}
	for _, n := range res.Notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	return errors.Join(capErr, f.finish(e, res, "", stdout))
}

func runLoadCompare(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	files, err := parseFlags(fs, args, parseOpts{mode: interspersed, stdout: stdout})
	if err != nil {
		return err
	}
	if len(files) != 2 {
		fmt.Fprint(stderr, loadUsage)
		return errors.New("load compare: give two result.json files")
	}
	a, err := report.Read(files[0])
	if err != nil {
		return err
	}
	b, err := report.Read(files[1])
	if err != nil {
		return err
	}
	return report.Compare(stdout, a, b, "A", "B")
}
