// Command hce runs the parts of HCE, a federated Firefox Sync (Weave
// 1.0/1.1) storage system: `hce serve` runs a whole Weave server (user API
// and storage API) in one process; `hce load` measures one.
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
  hce load [flags]    measure a Weave server beside a minimal net/http handler
  hce directory ...   run a directory voter (or create its CA: hce directory init-ca)
  hce node [flags]    run a storage node that registers with a directory
  hce admin ...       ask a directory about its voters, nodes and users; approve, drain, retire nodes
  hce testnet ...     run a local federation (voters and nodes as child processes); status, kill, restart,
                      drain, partition, cut, heal, chaos (randomized fault test)
  hce client ...      talk to a Weave server as one account: register, put, get, ids, delete, token
  hce version         print the version, commit and build time as JSON (what /__version__ serves)

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
	case "version", "--version":
		return runVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// loggers are a serving command's loggers: the process log and the
// access log (INFO lines whatever --log-level says, tagged log=access),
// both on the same writer in the same format.
type loggers struct {
	app, access *slog.Logger
}

// parseWithLogger adds --log-level and --log-format to fs, parses args
// and returns the loggers, writing to w.
func parseWithLogger(fs *flag.FlagSet, args []string, w io.Writer) (loggers, error) {
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text (logfmt) or json (one object per line)")
	if err := fs.Parse(args); err != nil {
		return loggers{}, err
	}
	app, err := newLogger(w, *level, *format)
	if err != nil {
		return loggers{}, err
	}
	access, err := newLogger(w, "info", *format)
	if err != nil {
		return loggers{}, err
	}
	return loggers{app: app, access: access.With("log", "access")}, nil
}

// newLogger builds a logger from a level and a format name.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("bad --log-format %q: want text or json", format)
}
