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
	"strings"
	"syscall"
)

const usage = `hce: a federated Firefox Sync (Weave 1.0/1.1) storage system

Usage:
  hce serve [flags]              run a Weave server (user API + storage API) on one port
  hce directory [flags]          run a directory voter (--bootstrap a new cluster or --join one)
  hce directory init-ca --ca DIR create the directory CA the voters' raft certificates come from
  hce directory issue-cert ...   an HTTPS certificate from that CA (private deployments, compose)
  hce directory backup|restore|recover
                                 the directory's state: copy it off, put it back, recover a lost quorum
  hce node [flags]               run a storage node that registers with a directory
  hce node backup|restore        a running node's store copied into a folder; a data folder made from it
  hce admin [flags] <command>    ask a directory: status, nodes, user <name>,
                                 node approve|drain|undrain|retire <id>, voter add|remove|list
  hce testnet <command>          a local federation of child processes: up, status, kill,
                                 restart, drain, partition, cut, heal, chaos (randomized fault test)
  hce client [flags] <command>   talk to a Weave server as one account: register, node, info,
                                 ids, get, put, post, delete, wipe, token, passwd
  hce load [flags]               load a Weave server or testnet with a traffic mix (open or closed loop);
  hce load capacity [flags]      find how many users it holds (last healthy step, failure mode)
  hce load compare A.json B.json two runs side by side
  hce config print <command> [flags]
                                 print the effective settings of a command and their sources
  hce version                    print the version, commit and build time as JSON (/__version__)
  hce healthcheck [flags]        GET a health endpoint (default /__lbheartbeat__ on :8080); exit 0 on 2xx

Run "hce <command> -h" for the flags of a command. Every flag can also be set
in the environment as HCE_<NAME> (--max-conns: HCE_MAX_CONNS) or in a TOML
file given with --config; precedence: flag > environment > file > default.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, errorLine(os.Args[1:], err))
		os.Exit(1)
	}
}

// errorLine is the one line a failing command prints: "hce <command>:
// <error>", the command named once even when the error names it too.
func errorLine(args []string, err error) string {
	msg := err.Error()
	if len(args) == 0 || !knownCommand(args[0]) {
		return "hce: " + msg
	}
	if !strings.HasPrefix(msg, args[0]+":") && !strings.HasPrefix(msg, args[0]+" ") {
		msg = args[0] + ": " + msg
	}
	return "hce " + msg
}

// knownCommand reports whether name is one of hce's commands.
func knownCommand(name string) bool {
	switch name {
	case "serve", "load", "directory", "node", "admin", "testnet", "client", "config", "version", "healthcheck":
		return true
	}
	return false
}

// run runs the command args name. A command stopped by --print-config
// returns nil.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := dispatch(ctx, args, stdout, stderr); !errors.Is(err, errConfigPrinted) {
		return err
	}
	return nil
}

// dispatch runs the command args[0] names.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
	case "config":
		return runConfig(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, args[1:], stdout, stderr)
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
// through the configuration layer (parseFlags; the command takes no
// positional arguments) and returns the loggers, writing to stderr.
// --print-config goes to stdout.
func parseWithLogger(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (loggers, error) {
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text (logfmt) or json (one object per line)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return loggers{}, err
	}
	app, err := newLogger(stderr, *level, *format)
	if err != nil {
		return loggers{}, err
	}
	access, err := newLogger(stderr, "info", *format)
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
