package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/testnet"
	"github.com/hce-sync/hce/testnet/load/report"
)

func cheapHash(c *directory.Config) {
	c.Accounts.PasswordHash = directory.HashParams{Time: 1, MemoryKiB: 64, Threads: 1}
}

// runHCE runs the hce command in process and returns its output.
func runHCE(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, &out, &errOut)
	if err != nil {
		t.Logf("hce %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String(), err
}

// TestLoadCapacityReport runs a short capacity search of weave-mix-v1
// against an in-process hce serve, checks result.json, and opens
// report.html in headless Chromium as a person would: the page renders
// without console errors, every chart that should hold data drew it (the
// page's own check, read from the rendered DOM), and a screenshot shows
// a page that is not blank.
func TestLoadCapacityReport(t *testing.T) {
	dir := t.TempDir()
	if d := os.Getenv("HCE_REPORT_DIR"); d != "" {
		dir = d // keep the report for a person to look at
	}
	out, err := runHCE(t, "load", "capacity", "--mix", "weave-mix-v1", "--users", "4", "--prefill-scale", "0.01",
		"--start", "30", "--growth", "2", "--max-steps", "3", "--step", "1500ms", "--cooldown", "1ms", "--min-requests", "10",
		"--baseline-duration", "1s", "--baseline-concurrency", "4", "--quiet", "--report", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out)
	for _, want := range []string{"capacity: ", "closed loop, 4 connections: minimal handler", "deleted 4 load-test accounts", "report: "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	res, err := report.Read(filepath.Join(dir, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "capacity" || res.Capacity == nil || len(res.Steps) < 3 || res.Baseline == nil || res.Reference == nil ||
		len(res.Procs) != 1 || len(res.Series) == 0 || res.Users.Registered != 4 || res.Users.Deleted < 4 {
		t.Fatalf("result: mode %s capacity %+v, %d steps, baseline %v, %d procs, %d points, users %+v",
			res.Mode, res.Capacity, len(res.Steps), res.Baseline != nil, len(res.Procs), len(res.Series), res.Users)
	}
	checkReportInChromium(t, filepath.Join(dir, "report.html"), filepath.Join(dir, "report.png"))

	// compare the run with itself: no change.
	cmp, err := runHCE(t, "load", "compare", filepath.Join(dir, "result.json"), filepath.Join(dir, "result.json"))
	if err != nil || !strings.Contains(cmp, "capacity req/s") || !strings.Contains(cmp, "+0.0 %") {
		t.Fatalf("compare: %v\n%s", err, cmp)
	}
}

// checkReportInChromium renders page in Debian's headless chromium.
func checkReportInChromium(t *testing.T, page, shot string) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("HCE_REQUIRE_CHROMIUM") != "" {
			t.Fatal("chromium not found and HCE_REQUIRE_CHROMIUM is set (apt-get install chromium)")
		}
		t.Skip("chromium not installed: the report is not rendered (apt-get install chromium; HCE_REQUIRE_CHROMIUM=1 makes this fail)")
	}
	browse := func(action ...string) (stdout, stderr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0", "--window-size=1100,4200"}
		args = append(append(args, action...), "file://"+page)
		cmd := exec.CommandContext(ctx, bin, args...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", action, err, e.String())
		}
		return o.String(), e.String()
	}
	consoleLines := func(stderr string) []string {
		var out []string
		for _, l := range strings.Split(stderr, "\n") {
			if strings.Contains(l, "CONSOLE") {
				out = append(out, l)
			}
		}
		return out
	}
	dom, stderr := browse("--dump-dom")
	if c := consoleLines(stderr); len(c) > 0 {
		t.Errorf("the page logged to the console:\n%s", strings.Join(c, "\n"))
	}
	m := regexp.MustCompile(`data-check="([^"]*)"`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("the page's check did not run (no data-check on <body>); DOM starts %.300s", dom)
	}
	t.Logf("rendered: %s", m[1])
	if !strings.HasPrefix(m[1], "ok ") {
		t.Fatalf("the page's check: %s", m[1])
	}
	for _, id := range []string{"latency-time", "throughput-time", "latency-load", "proc-cpu", "proc-rss", "proc-disk"} {
		if !regexp.MustCompile(id + `=[1-9]`).MatchString(m[1]) {
			t.Errorf("chart %s has no data: %s", id, m[1])
		}
	}
	_, stderr = browse("--screenshot=" + shot)
	if c := consoleLines(stderr); len(c) > 0 {
		t.Errorf("the page logged to the console:\n%s", strings.Join(c, "\n"))
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	ink := 0
	for y := b.Min.Y; y < b.Max.Y; y += 4 {
		for x := b.Min.X; x < b.Max.X; x += 4 {
			if r, g, bl, _ := img.At(x, y).RGBA(); r+g+bl < 3*0xe000 {
				ink++
			}
		}
	}
	if b.Dx() < 1000 || ink < b.Dx()*b.Dy()/16/100 {
		t.Fatalf("screenshot %s: %v, %d dark samples: blank?", shot, b, ink)
	}
	t.Logf("screenshot %s: %dx%d", shot, b.Dx(), b.Dy())
}

// TestLoadAsksBeforeRemoteWrites: a server that is not on this machine is
// not written to without a yes (the test's standard input gives none).
func TestLoadAsksBeforeRemoteWrites(t *testing.T) {
	_, err := runHCE(t, "load", "--url", "http://192.0.2.1:9/", "--duration", "1s", "--quiet")
	if err == nil || !strings.Contains(err.Error(), "not confirmed") {
		t.Fatalf("hce load against 192.0.2.1: %v, want a refusal", err)
	}
	_, err = runHCE(t, "load", "capacity", "--url", "http://192.0.2.1:9/", "--quiet")
	if err == nil || !strings.Contains(err.Error(), "not confirmed") {
		t.Fatalf("hce load capacity against 192.0.2.1: %v, want a refusal", err)
	}
}

// TestLoadKeepUsers: against a running server (--url), the accounts stay
// with --keep-users and the next run with the same seed reuses them and
// their prefill; without it they are deleted. The server's process (this
// test's) is found through its listening port and sampled.
func TestLoadKeepUsers(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	srv, err := testnet.StartStandalone(ctx, testnet.StandaloneConfig{Addr: "127.0.0.1:0", DataDir: data, Directory: cheapHash})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(ctx)
	exists := func(i int) string {
		resp, err := http.Get(srv.URL() + "user/1.0/" + api.AccountName("load-5-"+string(rune('0'+i))+"@hce.invalid"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	rep := t.TempDir()
	args := []string{"load", "--url", srv.URL(), "--mix", "weave-mix-v1", "--users", "3", "--prefill-scale", "0.01", "--seed", "5",
		"--rate", "60", "--duration", "1s", "--quiet", "--data", data, "--report", rep}
	out, err := runHCE(t, append(args, "--keep-users")...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kept 3 accounts") || exists(0) != "1" || exists(2) != "1" {
		t.Fatalf("after --keep-users: %q %q\n%s", exists(0), exists(2), out)
	}
	res, err := report.Read(filepath.Join(rep, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Target.Procs) != 1 || res.Target.Procs[0].PID != os.Getpid() || res.Users.DiskAfter == 0 {
		t.Fatalf("the server process was not found: %+v, users %+v", res.Target.Procs, res.Users)
	}
	out, err = runHCE(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	res, err = report.Read(filepath.Join(rep, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Users.Reused != 3 || res.Users.Registered != 0 {
		t.Fatalf("second run did not reuse the kept users: %+v", res.Users)
	}
	if !strings.Contains(out, "deleted 3 load-test accounts") || exists(0) != "0" || exists(2) != "0" {
		t.Fatalf("after the second run: %q %q\n%s", exists(0), exists(2), out)
	}
}

// TestLoadTestnet drives a running testnet through its folder (--testnet):
// users register at the directory, follow node/weave to their nodes, and
// replication lag probes see their records on another replica.
func TestLoadTestnet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	tn, err := testnet.Start(ctx, testnet.Config{Dir: dir, Directories: 1, Nodes: 2, Replicas: 2, Directory: cheapHash})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	rep := t.TempDir()
	out, err := runHCE(t, "load", "--testnet", dir, "--mix", "weave-mix-v1", "--users", "3", "--prefill-scale", "0.01",
		"--rate", "40", "--duration", "2500ms", "--quiet", "--report", rep)
	if err != nil {
		t.Fatal(err)
	}
	res, err := report.Read(filepath.Join(rep, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res.Replication)
	t.Logf("%s\nreplication: %s", out, b)
	if res.Target.Kind != "testnet" || len(res.Target.Nodes) != 2 || len(res.Steps) != 1 || res.Steps[0].Errors > 0 {
		t.Fatalf("result: %+v", res.Steps)
	}
	if res.Replication == nil || res.Replication.Seen == 0 || res.Replication.Lost > 0 {
		t.Fatalf("replication probes: %s", b)
	}
	if res.Users.Deleted < 3 {
		t.Fatalf("accounts not deleted: %+v", res.Users)
	}
}

// TestLoadBaselineAndProfile: `hce load baseline` serves the minimal
// handler an external driver compares with (an answer of {} to any
// request, until interrupted), and `hce load --cpuprofile` writes a CPU
// profile that go tool pprof reads.
func TestLoadBaselineAndProfile(t *testing.T) {
	addr := testkit.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"load", "baseline", "--addr", addr}, &out, io.Discard) }()
	var body []byte
	testkit.WaitFor(t, 10*time.Second, "the baseline answering", func() bool {
		resp, err := http.Post("http://"+addr+"/1.1/u/storage/history", "application/json", strings.NewReader(`[{"id":"a"}]`))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	if string(body) != "{}" {
		t.Errorf("baseline answered %q, want {}", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("hce load baseline: %v", err)
	}
	if !strings.Contains(out.String(), addr) {
		t.Errorf("hce load baseline printed %q, want its address %s", out.String(), addr)
	}

	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	if _, err := runHCE(t, "load", "--mix", "info", "--duration", "1s", "--rounds", "1", "--baseline=false", "--quiet", "--users", "2", "--cpuprofile", prof); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "tool", "pprof", "-top", "-nodecount=5", prof)
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "Type: cpu") {
		t.Fatalf("go tool pprof %s: %v\n%s", prof, err, b)
	}
}

// TestWrkDriver runs the external driver (testnet/load/wrk/run.sh) for one
// short round against the hce binary: hce serve and hce load baseline in
// their own processes, 16 users registered and prefilled, post100 and
// get100 from wrk, every request answered 200 and both ratios printed.
// It needs wrk; without it the test is skipped, unless HCE_REQUIRE_WRK is
// set (.ci/run installs wrk and sets it).
func TestWrkDriver(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		if os.Getenv("HCE_REQUIRE_WRK") != "" {
			t.Fatal("wrk not found and HCE_REQUIRE_WRK is set")
		}
		t.Skip("wrk not installed")
	}
	bin := hceBinary(t)
	port := func() string {
		_, p, err := net.SplitHostPort(testkit.FreeAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cmd := exec.Command("../../testnet/load/wrk/run.sh", bin, "1", "1")
	cmd.Env = append(os.Environ(), "HCE_WRK_PORT="+port(), "HCE_WRK_BASELINE_PORT="+port())
	out, err := cmd.CombinedOutput()
	t.Logf("run.sh:\n%s", out)
	if err != nil {
		t.Fatalf("run.sh: %v", err)
	}
	if strings.Contains(string(out), "status") {
		t.Errorf("some requests were not answered 200")
	}
	for _, sc := range []string{"post100", "get100"} {
		m := regexp.MustCompile(sc + ` +median ratio ([0-9.]+)%`).FindStringSubmatch(string(out))
		if m == nil || m[1] == "0" || m[1] == "0.0" {
			t.Errorf("no %s ratio in the output", sc)
		}
	}
}
