// Command hce runs the parts of HCE, a federated Firefox Sync (Weave
// 1.0/1.1) storage system: `hce serve` runs a whole Weave server (user API
// and storage API) in one process; `hce load` measures one (or a testnet)
// under a traffic mix and finds its capacity.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `hce: a federated Firefox Sync (Weave 1.0/1.1) storage system

Usage:
  hce serve [flags]   run a Weave server (user API + storage API) on one port
  hce load ...        load a Weave server or testnet with a traffic mix (open or closed loop);
                      hce load capacity finds how many users it holds; hce load compare A.json B.json
  hce directory ...   run a directory voter (or create its CA: hce directory init-ca)
  hce node [flags]    run a storage node that registers with a directory
  hce admin ...       ask a directory about its voters, nodes and users; approve, drain, retire nodes
  hce testnet ...     run a local federation (voters and nodes as child processes); status, kill, restart, drain
  hce client ...      talk to a Weave server as one account: register, put, get, ids, delete, token

Run "hce <command> -h" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "hce:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "load":
		return runLoad(ctx, args[1:], stdout, stderr)
	case "directory":
		return runDirectory(ctx, args[1:], stdout, stderr)
	case "node":
		return runNode(ctx, args[1:], stdout, stderr)
	case "admin":
		return runAdmin(ctx, args[1:], stdout, stderr)
	case "testnet":
		return runTestnet(ctx, args[1:], stdout, stderr)
	case "client":
		return runClient(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// parseWithLogger adds --log-level to fs, parses args and returns the
// process logger at that level, writing to w.
func parseWithLogger(fs *flag.FlagSet, args []string, w io.Writer) (*slog.Logger, error) {
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return newLogger(w, *level)
}

// newLogger builds the process logger from a level name.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
