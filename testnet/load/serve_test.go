package load_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/testnet"
	"github.com/hce-sync/hce/testnet/load"
	"github.com/hce-sync/hce/testnet/load/mix"
	"github.com/hce-sync/hce/testnet/load/procstat"
)

func cheapHash(c *directory.Config) {
	c.Accounts.PasswordHash = directory.HashParams{Time: 1, MemoryKiB: 64, Threads: 1}
}

// TestWeaveMixAgainstServe runs weave-mix-v1 against a real `hce serve`
// (in process): registration, prefill (at 2 % of the model's records),
// an open loop, and cleanup. Every request must succeed (or find a record
// a wipe removed), the realised mix must follow the weights (each op with
// 2 % or more within a third of its weight over about 2,000 requests), the
// data folder is measured, and cleanup deletes every account.
func TestWeaveMixAgainstServe(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := testnet.StartStandalone(ctx, testnet.StandaloneConfig{Addr: "127.0.0.1:0", DataDir: dir, Directory: cheapHash})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(ctx)
	m, err := mix.Builtin("weave-mix-v1")
	if err != nil {
		t.Fatal(err)
	}
	e, err := load.New(load.EngineConfig{
		Target: load.Target{Kind: "serve", UserURLs: []string{srv.URL()}, StorageURL: srv.URL(), InProcess: true,
			Procs: []procstat.Proc{{Name: "serve", PID: os.Getpid(), Data: dir}}},
		Mix: m, Profiles: 6, PrefillScale: 0.02, Seed: 3, Logger: testkit.Logger(t, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	res := e.Result()
	if res.Users.Registered != 6 || res.Users.Prefilled != 6 || res.Users.DiskAfter <= res.Users.DiskBefore {
		t.Fatalf("prepare: %+v", res.Users)
	}
	// The counts are there: a second Prepare reuses every profile.
	if err := e.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if u := e.Result().Users; u.Reused != 6 || u.Registered != 0 {
		t.Fatalf("second prepare: %+v", u)
	}
	st, err := e.Run(ctx, load.Phase{Label: "mix", Rate: 500, Arrival: load.ArrivalPoisson, Duration: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests, %.0f/s answered, p50 %.1f ms p99 %.1f ms, errors %v", st.Requests, st.Achieved, st.Latency.P50, st.Latency.P99, st.ErrorKinds)
	if st.Errors > 0 {
		t.Fatalf("%d errors: %v", st.Errors, st.ErrorKinds)
	}
	// The server is this process: its CPU time over the step was read at
	// both ends, and it cannot exceed the step's length on every core.
	if st.CPU <= 0 || st.CPU > st.Duration*float64(runtime.NumCPU()) || st.CPUPerRequest() <= 0 {
		t.Fatalf("step CPU %.3f s over %.1f s (%d cores), %.3f ms per request", st.CPU, st.Duration, runtime.NumCPU(), st.CPUPerRequest())
	}
	var syncReqs int64
	byName := map[string]int64{}
	for _, o := range st.Ops {
		byName[o.Name] = o.Requests
		if m.Op(o.Name) != nil && !isBackground(m, o.Name) {
			syncReqs += o.Requests
		}
	}
	for _, o := range m.Ops {
		want := o.Weight / 100 * float64(syncReqs)
		if o.Weight >= 2 && math.Abs(float64(byName[o.Name])-want) > want/3 {
			t.Errorf("%s: %d requests, want about %.0f", o.Name, byName[o.Name], want)
		}
	}
	for _, o := range st.Ops {
		if o.Name == "history-post" && o.WBOsOut == 0 || o.Name == "tabs-get" && o.WBOsIn == 0 {
			t.Errorf("%s moved no WBOs: %+v", o.Name, o)
		}
	}
	res = e.Result()
	if len(res.Procs) != 1 || len(res.Procs[0].Samples) == 0 {
		t.Fatalf("no samples of the server process: %+v", res.Procs)
	}
	n, err := e.Cleanup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n < 6 {
		t.Fatalf("cleanup deleted %d accounts, want at least 6", n)
	}
	// The accounts are gone.
	resp, err := http.Get(srv.URL() + "user/1.0/" + accountOf("load-3-0@hce.invalid"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "0" {
		t.Fatalf("profile 0 still exists after cleanup: %q", b)
	}
	var js map[string]any
	raw, _ := json.Marshal(e.Result())
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
}

func isBackground(m *mix.Mix, name string) bool {
	for _, o := range m.Background {
		if o.Name == name {
			return true
		}
	}
	return false
}

func accountOf(email string) string { return api.AccountName(email) }
