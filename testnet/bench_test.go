package testnet

import (
	"context"
	"net"
	"net/http"
	"testing"

	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/testnet/load"
)

// BenchmarkWeaveHTTP measures the three scenarios of issue 2 through real
// HTTP with durable writes, 16 concurrent users, beside the minimal
// net/http handler measured by the same generator in the same run. The
// ratio (reported as pct_of_baseline) is the figure; absolute numbers drift.
//
//	go test -run '^$' -bench WeaveHTTP -benchtime 2000x ./testnet/
func BenchmarkWeaveHTTP(b *testing.B) {
	ctx := context.Background()
	srv, err := StartStandalone(ctx, StandaloneConfig{
		Addr:      "127.0.0.1:0",
		DataDir:   b.TempDir(),
		Directory: func(c *directory.Config) { cheapHash(c) },
	})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bs := &http.Server{Handler: load.Baseline()}
	go bs.Serve(ln)
	defer bs.Close()
	baseURL := "http://" + ln.Addr().String() + "/"

	prepared := load.NewRunner(load.Config{URL: srv.URL(), Users: 16})
	if err := prepared.Prepare(ctx); err != nil {
		b.Fatal(err)
	}
	prepared.Close()
	for _, sc := range load.Scenarios {
		var base load.Result
		b.Run(string(sc)+"/baseline", func(b *testing.B) {
			r := load.NewRunner(load.Config{URL: baseURL, Users: 16, Requests: int64(b.N)})
			defer r.Close()
			b.ResetTimer()
			res, err := r.Run(ctx, sc)
			if err != nil {
				b.Fatal(err)
			}
			base = res
			report(b, res, load.Result{})
		})
		b.Run(string(sc)+"/hce", func(b *testing.B) {
			r := load.NewRunner(load.Config{URL: srv.URL(), Users: 16, Requests: int64(b.N)})
			defer r.Close()
			b.ResetTimer()
			res, err := r.Run(ctx, sc)
			if err != nil {
				b.Fatal(err)
			}
			if res.Errors > 0 {
				b.Fatalf("%d errors; first: %s", res.Errors, res.FirstError)
			}
			report(b, res, base)
		})
	}
}

func report(b *testing.B, res, base load.Result) {
	b.ReportMetric(res.RPS(), "req/s")
	b.ReportMetric(res.WBOps(), "WBO/s")
	b.ReportMetric(float64(res.P50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
	if base.Requests > 0 {
		b.ReportMetric(100*res.RPS()/base.RPS(), "pct_of_baseline")
	}
}
