package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/hce-sync/hce/testnet"
	"github.com/hce-sync/hce/testnet/load"
)

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "", "base URL of the server to measure (default: start an in-process hce serve in a temp folder)")
	scenarios := fs.String("scenarios", "post100,get100,info", "comma-separated scenarios: post100, get100, info, nodeweave")
	users := fs.Int("users", 16, "concurrent users (one connection each)")
	dur := fs.Duration("duration", 10*time.Second, "measured time per scenario (split over --rounds windows)")
	rounds := fs.Int("rounds", 5, "interleaved baseline/server window pairs per scenario; the ratio printed is their median")
	seed := fs.Uint64("seed", 1, "seed for user names and payloads")
	baseline := fs.Bool("baseline", true, "also measure a minimal net/http handler with the same generator, and print ratios")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	var scs []load.Scenario
	for _, s := range strings.Split(*scenarios, ",") {
		sc, err := load.ParseScenario(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		scs = append(scs, sc)
	}
	url := *target
	if url == "" {
		dir, err := os.MkdirTemp("", "hce-load-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := testnet.StartStandalone(ctx, testnet.StandaloneConfig{Addr: "127.0.0.1:0", DataDir: dir})
		if err != nil {
			return err
		}
		defer srv.Shutdown(context.Background())
		url = srv.URL()
	}
	var baseURL string
	if *baseline {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		bs := &http.Server{Handler: load.Baseline()}
		go bs.Serve(ln)
		defer bs.Close()
		baseURL = "http://" + ln.Addr().String() + "/"
	}
	if *rounds < 1 {
		*rounds = 1
	}
	cfg := load.Config{URL: url, Users: *users, Duration: *dur / time.Duration(*rounds), Seed: *seed}
	r := load.NewRunner(cfg)
	defer r.Close()
	if err := r.Prepare(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "hce load: %d users, %s per scenario in %d interleaved windows, GOMAXPROCS=%d, target %s\n", *users, *dur, *rounds, runtime.GOMAXPROCS(0), url)
	results, bases := map[load.Scenario]load.Result{}, map[load.Scenario]load.Result{}
	ratios := map[load.Scenario]float64{}
	for _, sc := range scs {
		// Baseline and server windows alternate, so a change in the
		// machine's load hits both; the figure is the median ratio.
		var rs, bs []load.Result
		for round := 0; round < *rounds; round++ {
			if baseURL != "" {
				bcfg := cfg
				bcfg.URL = baseURL
				br := load.NewRunner(bcfg)
				res, err := br.Run(ctx, sc)
				br.Close()
				if err != nil {
					return err
				}
				bs = append(bs, res)
			}
			res, err := r.Run(ctx, sc)
			if err != nil {
				return err
			}
			rs = append(rs, res)
		}
		results[sc] = load.Merge(rs...)
		if res := results[sc]; res.Errors > 0 {
			fmt.Fprintf(stdout, "%s: %d errors, first: %s\n", sc, res.Errors, res.FirstError)
		}
		if len(bs) > 0 {
			bases[sc] = load.Merge(bs...)
			ratios[sc] = load.MedianRatio(rs, bs)
		}
	}
	fmt.Fprint(stdout, load.FormatTable(results, bases, ratios))
	return nil
}
