package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hce-sync/hce/testnet"
)

// runTestnetChaos runs `hce testnet chaos`: the randomized fault test
// (testnet.RunNemesis) against the running testnet in --dir.
func runTestnetChaos(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("testnet chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "./hce-testnet", "folder of the running testnet (holds testnet.json)")
	duration := fs.Duration("duration", 10*time.Minute, "how long to inject faults")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()%1_000_000), "seed of the fault schedule (printed; pass it again to replay)")
	users := fs.Int("users", testnet.DefaultNemesisUsers, "users written and read (one writer and one reader each)")
	minGap := fs.Duration("min-gap", 2*time.Second, "shortest pause after a fault step")
	maxGap := fs.Duration("max-gap", 8*time.Second, "longest pause after a fault step")
	settle := fs.Duration("settle", testnet.DefaultNemesisSettle, "how long clients go on after the heal, before the checks")
	recoverWait := fs.Duration("recover", 2*time.Minute, "longest wait for a healthy testnet after the heal, and for the replicas to converge")
	quiet := fs.Bool("quiet", false, "inject no faults (a run that must pass: checks the checker)")
	verbose := fs.Bool("v", false, "print each fault as it happens")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	tn, err := testnet.Attach(*dir)
	if err != nil {
		return err
	}
	defer tn.Close()
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	what := "faults"
	if *quiet {
		what = "clients without faults"
	}
	fmt.Fprintf(stdout, "chaos against %s: seed %d, %v of %s; replay: hce testnet chaos --dir %s --duration %v --seed %d\n",
		*dir, *seed, *duration, what, *dir, *duration, *seed)
	res, err := testnet.RunNemesis(ctx, tn, testnet.NemesisConfig{Seed: *seed, Duration: *duration, Users: *users,
		MinGap: *minGap, MaxGap: *maxGap, Settle: *settle, Recover: *recoverWait, Quiet: *quiet, Logger: logger})
	if err != nil {
		return err
	}
	res.Print(stdout)
	if !res.OK() {
		fmt.Fprintf(stdout, "replay: hce testnet chaos --dir %s --duration %v --seed %d\n", *dir, *duration, *seed)
		return errors.Join(res.Err(), errChaosFailed)
	}
	return nil
}

// errChaosFailed marks a chaos run whose checks failed (exit status 1).
var errChaosFailed = errors.New("chaos checks failed")
