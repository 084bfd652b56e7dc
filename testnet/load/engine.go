package load

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/testnet/load/mix"
	"github.com/hce-sync/hce/testnet/load/procstat"
	"github.com/hce-sync/hce/testnet/load/report"
)

// ErrConfig is wrapped by EngineConfig.Validate's errors.
var ErrConfig = errors.New("load: bad configuration")

// Target says where a run's requests go and which processes on this
// machine serve them.
type Target struct {
	// Kind is "serve", "url" or "testnet" (recorded in results).
	Kind string
	// UserURLs are base URLs (ending in "/") of the Weave user API: the
	// server itself, or a testnet's voters (used round-robin). Required.
	UserURLs []string
	// StorageURL, when set, serves every user's storage API (hce serve);
	// when empty each user's storage node is read from node/weave.
	StorageURL string
	// AdminURL and AdminToken, when set, let the generator read each
	// user's replica set from the directory's admin API and probe
	// replication lag (write on the primary, read on another replica).
	AdminURL   string
	AdminToken string
	// Nodes are a testnet's storage node URLs (recorded in results).
	Nodes []string
	// Procs are the target's processes on this machine, sampled during
	// the run (PID 0: only the data folder is measured).
	Procs []procstat.Proc
	// InProcess is true when the server runs inside this process.
	InProcess bool
	// NoAccounts sends requests for made-up users without registering or
	// prefilling them (for the minimal baseline handler and test servers).
	NoAccounts bool
}

// GeneratorProc names the load generator's own process in samples.
const GeneratorProc = report.GeneratorProc

// Defaults of EngineConfig.
const (
	DefaultProfiles     = 100
	DefaultTimeout      = 10 * time.Second
	DefaultMaxConns     = 1024
	DefaultMaxPending   = 20000
	DefaultPrefillConns = 4
	DefaultLagEvery     = time.Second
	DefaultSampleEvery  = time.Second
	DefaultPassword     = "load-test-password"
)

// EngineConfig configures an Engine. A zero field takes its default.
type EngineConfig struct {
	// Target is what to load. Required.
	Target Target
	// Mix is what simulated users send and hold. Required.
	Mix *mix.Mix
	// Profiles is the number of accounts (browser profiles) registered,
	// prefilled and driven (default 100). Active users beyond it are
	// spread over them.
	Profiles int
	// PrefillScale scales the mix's prefill record counts (default 1).
	PrefillScale float64
	// Seed fixes account names, payloads, the request sequence and the
	// arrival times (default 1).
	Seed uint64
	// Password of every generated account (default DefaultPassword).
	Password string
	// Timeout bounds each request (default 10 s); a request that takes
	// longer counts as a timeout.
	Timeout time.Duration
	// MaxConns bounds the connections to each host (default 1024);
	// requests beyond wait for one, and in an open loop that wait counts
	// in their latency.
	MaxConns int
	// MaxPending bounds the syncs started but not finished (default
	// 20000); beyond it the generator drops arrivals and counts them.
	MaxPending int
	// PrefillConns is the number of concurrent registrations and
	// prefill writers (default 4).
	PrefillConns int
	// LagEvery is the interval between replication lag probes (default
	// 1 s; only with Target.AdminToken).
	LagEvery time.Duration
	// SampleEvery is the interval between samples of the target's
	// processes (default 1 s).
	SampleEvery time.Duration
	// Progress, when set, receives a live progress line every second;
	// ProgressCR rewrites one line with "\r" (a terminal) instead of
	// printing a line per update.
	Progress   io.Writer
	ProgressCR bool
	// Logger receives the engine's logs (default: discard).
	Logger *slog.Logger
	// API is the storage protocol the storage requests speak: API11
	// (default) or API15 (sync15.go).
	API string
}

// DefaultEngineConfig returns the defaults; Target and Mix must still be
// set.
func DefaultEngineConfig() EngineConfig {
	return EngineConfig{Profiles: DefaultProfiles, PrefillScale: 1, Seed: 1, Password: DefaultPassword,
		Timeout: DefaultTimeout, MaxConns: DefaultMaxConns, MaxPending: DefaultMaxPending,
		PrefillConns: DefaultPrefillConns, LagEvery: DefaultLagEvery, SampleEvery: DefaultSampleEvery}
}

// Validate reports a configuration New cannot run.
func (c EngineConfig) Validate() error {
	switch {
	case c.Mix == nil:
		return fmt.Errorf("%w: no mix", ErrConfig)
	case len(c.Target.UserURLs) == 0:
		return fmt.Errorf("%w: Target.UserURLs is empty", ErrConfig)
	case c.Profiles < 0 || c.PrefillScale < 0 || c.Timeout < 0 || c.MaxConns < 0 || c.MaxPending < 0 || c.LagEvery < 0 || c.SampleEvery < 0 || c.PrefillConns < 0:
		return fmt.Errorf("%w: negative setting", ErrConfig)
	case c.API != "" && c.API != API11 && c.API != API15:
		return fmt.Errorf("%w: API %q", ErrConfig, c.API)
	}
	for _, u := range append(append([]string{}, c.Target.UserURLs...), c.Target.StorageURL) {
		if u != "" && !strings.HasSuffix(u, "/") {
			return fmt.Errorf("%w: base URL %q must end in /", ErrConfig, u)
		}
	}
	return nil
}

func (c EngineConfig) withDefaults() EngineConfig {
	d := DefaultEngineConfig()
	if c.Profiles == 0 {
		c.Profiles = d.Profiles
	}
	if c.PrefillScale == 0 {
		c.PrefillScale = d.PrefillScale
	}
	if c.Seed == 0 {
		c.Seed = d.Seed
	}
	if c.Password == "" {
		c.Password = d.Password
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxPending == 0 {
		c.MaxPending = d.MaxPending
	}
	if c.PrefillConns == 0 {
		c.PrefillConns = d.PrefillConns
	}
	if c.LagEvery == 0 {
		c.LagEvery = d.LagEvery
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = d.SampleEvery
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.API == "" {
		c.API = API11
	}
	return c
}

// Engine drives one target with one mix: Prepare registers and prefills
// the profiles, Run measures a phase (open or closed loop), Capacity
// searches for the largest healthy load, Cleanup deletes the accounts, and
// Result gathers what was measured. An Engine runs one phase at a time;
// its methods are not for concurrent use.
type Engine struct {
	cfg      EngineConfig
	gen      *mix.Generator
	client   *http.Client
	profiles []*profile
	payload  []byte // random base64 text payloads are cut from
	start    time.Time
	log      *slog.Logger
	sampler  *sampler

	mu       sync.Mutex
	res      report.Result
	newUsers []*profile // accounts registered by the mix (body=register)
	newSeq   int
	phases   int
	maxUsers float64
	lag      lagStats
}

// New returns an engine for cfg and starts sampling the target's
// processes. Close releases it.
func New(cfg EngineConfig) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     cfg.MaxConns,
		MaxIdleConns:        cfg.MaxConns * 4,
		MaxIdleConnsPerHost: cfg.MaxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	e := &Engine{
		cfg:    cfg,
		gen:    mix.NewGenerator(cfg.Mix, cfg.PrefillScale),
		client: &http.Client{Transport: tr},
		start:  time.Now(),
		log:    cfg.Logger,
	}
	e.payload = randomText(rand.New(rand.NewPCG(cfg.Seed, 0x9a1)), 4<<20)
	for i := range cfg.Profiles {
		e.profiles = append(e.profiles, e.newProfile(fmt.Sprintf("load-%d-%d@hce.invalid", cfg.Seed, i), i))
	}
	e.res = report.Result{Version: report.Version, Started: e.start, Seed: cfg.Seed}
	e.res.Mix = mixInfo(cfg.Mix, e.gen)
	e.res.Target = report.Target{Kind: cfg.Target.Kind, URL: cfg.Target.UserURLs[0], Nodes: cfg.Target.Nodes,
		Procs: cfg.Target.Procs, InProcess: cfg.Target.InProcess, API: cfg.API}
	recs, bytes := e.gen.PrefillTotal()
	e.res.Users = report.Users{Profiles: cfg.Profiles, PrefillScale: cfg.PrefillScale, PrefillRecords: recs, PrefillPayload: bytes}
	if cfg.Target.NoAccounts {
		e.res.Users.PrefillRecords, e.res.Users.PrefillPayload = 0, 0
	}
	e.res.Host = hostInfo()
	procs := cfg.Target.Procs
	if !cfg.Target.InProcess && len(procs) > 0 {
		// The generator shares the machine: its own CPU and memory are
		// shown beside the server's (and left out of the server's totals).
		procs = append(slices.Clone(procs), procstat.Proc{Name: GeneratorProc, PID: os.Getpid()})
	}
	e.sampler = startSampler(procs, cfg.SampleEvery, e.start)
	return e, nil
}

func mixInfo(m *mix.Mix, g *mix.Generator) report.MixInfo {
	mi := report.MixInfo{Name: m.Name, RequestsPerSync: g.RequestsPerSync(), Think: m.Think.Mean(),
		RatePerUser: g.RatePerUser(), Source: m.Source}
	total := 0.0
	for _, o := range m.Ops {
		total += o.Weight
	}
	for _, o := range m.Ops {
		mi.Ops = append(mi.Ops, report.OpWeight{Name: o.Name, Weight: 100 * o.Weight / total})
	}
	for _, o := range m.Background {
		mi.Ops = append(mi.Ops, report.OpWeight{Name: o.Name, Weight: o.Weight, Background: true})
	}
	return mi
}

func hostInfo() report.Host {
	h := report.Host{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version()}
	h.LoadStart, _ = procstat.LoadAvg()
	h.MemTotal, _ = procstat.MemTotal()
	return h
}

// Generator returns the engine's request generator.
func (e *Engine) Generator() *mix.Generator { return e.gen }

// Close stops the sampler and closes idle connections. It does not delete
// accounts (Cleanup does).
func (e *Engine) Close() {
	e.sampler.stop()
	e.client.CloseIdleConnections()
}

// Result returns what the engine measured so far: steps, the per-second
// series, the processes' samples, the users and notes. The caller adds
// the command line, mode, SLO and capacity.
func (e *Engine) Result() *report.Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.res
	r.Finished = time.Now()
	r.Host.LoadEnd, _ = procstat.LoadAvg()
	r.Procs = e.sampler.series()
	r.Steps = append([]report.Step(nil), e.res.Steps...)
	r.Series = append([]report.Point(nil), e.res.Series...)
	r.Notes = append([]string(nil), e.res.Notes...)
	if n := e.compressionNote(); n != "" {
		r.Notes = append(r.Notes, n)
	}
	r.Replication = e.lag.result()
	return &r
}

// note adds a remark to the result (once).
func (e *Engine) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.res.Notes {
		if n == s {
			return
		}
	}
	e.res.Notes = append(e.res.Notes, s)
}

// since is the time from the engine's start in seconds.
func (e *Engine) since(t time.Time) float64 { return t.Sub(e.start).Seconds() }

// profile is one simulated user: an account and its devices.
type profile struct {
	index   int
	email   string
	name    string
	auth    string // Authorization header value
	user    string // user API base URL
	storage string // storage API base URL ("" until resolved)
	replica string // another replica's base URL ("" when unknown)

	mu       sync.Mutex
	last     []api.Stamp // per device: the server time its last sync began
	filled   api.Stamp   // server time when prefill ended
	dirty    bool        // a wipe or collection delete removed prefilled data
	resolve  bool        // storage node must be read again (a 401)
	inFlight int
	s15      sync15Creds // Sync 1.5 credentials (API15)
}

func (e *Engine) newProfile(email string, index int) *profile {
	name := api.AccountName(email)
	p := &profile{index: index, email: email, name: name,
		auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+e.cfg.Password)),
		user: e.cfg.Target.UserURLs[index%len(e.cfg.Target.UserURLs)], storage: e.cfg.Target.StorageURL,
		last: make([]api.Stamp, e.cfg.Mix.Devices)}
	return p
}

// newAccount makes the profile of an account the mix registers during the
// run ({new}); Cleanup deletes it.
func (e *Engine) newAccount() *profile {
	e.mu.Lock()
	e.newSeq++
	n := e.newSeq
	e.mu.Unlock()
	p := e.newProfile(fmt.Sprintf("load-%d-new-%d-%d@hce.invalid", e.cfg.Seed, n, e.start.UnixNano()%1e6), n)
	e.mu.Lock()
	e.newUsers = append(e.newUsers, p)
	e.mu.Unlock()
	return p
}

// randomText returns n bytes of random base64 characters (as encrypted
// Sync payloads look).
func randomText(r *rand.Rand, n int) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	b := make([]byte, n)
	for i := 0; i < n; {
		v := r.Uint64()
		for k := 0; k < 10 && i < n; k++ {
			b[i] = alphabet[v&63]
			v >>= 6
			i++
		}
	}
	return b
}

// payloadOf returns size bytes of payload text chosen by seed.
func (e *Engine) payloadOf(size int, seed uint64) []byte {
	if size <= len(e.payload) {
		off := int(seed % uint64(len(e.payload)-size+1))
		return e.payload[off : off+size]
	}
	return bytes.Repeat(e.payload, size/len(e.payload)+1)[:size]
}

// wboBody writes a JSON array of WBOs.
func (e *Engine) wboBody(ws []mix.WBO, seed uint64) []byte {
	n := 2
	for _, w := range ws {
		n += w.Size + len(w.ID) + 64
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, w := range ws {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = append(b, w.ID...)
		b = append(b, `","sortindex":`...)
		b = strconv.AppendInt(b, int64(w.Sortindex), 10)
		if w.TTL > 0 {
			b = append(b, `,"ttl":`...)
			b = strconv.AppendInt(b, int64(w.TTL), 10)
		}
		b = append(b, `,"payload":"`...)
		b = append(b, e.payloadOf(w.Size, seed+uint64(i)*0x9e3779b97f4a7c15)...)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

// outcome is how one request ended.
type outcome struct {
	status   int
	kind     string // "" for success; the error kind otherwise
	notFound bool
	timeout  bool
	stamp    api.Stamp // X-Weave-Timestamp of the answer
	wbosIn   int64
	bytesIn  int64
	bytesOut int64
}

// send performs one HTTP request with the engine's timeout and classifies
// the result. A nil body sends none.
func (e *Engine) send(ctx context.Context, method, url, auth string, hdr []mix.Header, body []byte, checkFailed bool) outcome {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return outcome{kind: "bad request: " + err.Error()}
	}
	if auth != "" {
		req.Header["Authorization"] = []string{auth}
	}
	if body != nil {
		req.Header["Content-Type"] = []string{"application/json"}
	}
	for _, h := range hdr {
		req.Header.Set(h.Name, h.Value)
	}
	out := outcome{bytesOut: int64(len(body))}
	resp, err := e.client.Do(req)
	if err != nil {
		out.kind, out.timeout = classify(ctx, err)
		return out
	}
	defer resp.Body.Close()
	out.status = resp.StatusCode
	if ts := resp.Header.Get("X-Weave-Timestamp"); ts != "" {
		out.stamp, _ = api.ParseStamp(ts)
	}
	if n, err := strconv.ParseInt(resp.Header.Get("X-Weave-Records"), 10, 64); err == nil {
		out.wbosIn = n
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	if ok && !checkFailed {
		n, err := io.Copy(io.Discard, resp.Body)
		out.bytesIn = n
		if err != nil {
			out.kind, out.timeout = classify(ctx, err)
		}
		return out
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	out.bytesIn = int64(len(data))
	if err != nil {
		out.kind, out.timeout = classify(ctx, err)
		return out
	}
	if ok {
		var r struct {
			Failed map[string]json.RawMessage `json:"failed"`
		}
		if json.Unmarshal(data, &r) == nil && len(r.Failed) > 0 {
			out.kind = "failed wbos"
		}
		return out
	}
	out.kind = "http " + strconv.Itoa(resp.StatusCode)
	if code := strings.TrimSpace(string(data)); resp.StatusCode == http.StatusBadRequest && len(code) <= 3 && code != "" {
		out.kind += " (weave " + code + ")"
	}
	return out
}

// classify names a transport error: timeout, refused, reset or other.
func classify(ctx context.Context, err error) (kind string, timeout bool) {
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout", true
	case errors.Is(err, context.Canceled):
		return "canceled", false
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused", false
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return "reset", false
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE), errors.Is(err, syscall.EADDRNOTAVAIL):
		return "client out of sockets", false
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return "net " + oe.Op, false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "timeout", true
	}
	return "other", false
}
