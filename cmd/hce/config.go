package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The configuration layer. Every command's FlagSet goes through
// parseFlags, which gives each flag three more sources besides the
// command line, in this order of precedence:
//
//	flag > environment (HCE_<NAME>) > file (--config FILE, TOML) > default
//
// The environment variable of a flag is HCE_ followed by its name in
// upper case with dashes as underscores (--max-in-flight: HCE_MAX_IN_FLIGHT).
// An empty variable counts as unset. The file is TOML: top-level keys are
// the running command's flags; a table named after a command ([serve],
// [node], [directory], [testnet.up], ...) holds settings for that command
// only and overrides the top level, so one file can serve several
// commands. A key the running command does not know is an error (at the
// top level and in its own table). --print-config prints the effective
// value of every setting and where it came from, as TOML, secrets masked.

// posMode says what a command does with positional arguments.
type posMode int

const (
	// noPositionals: the command takes flags only; a positional argument
	// is an error (never silently ignored, nor does it stop the parsing
	// of the flags after it).
	noPositionals posMode = iota
	// interspersed: flags and positional arguments may come in any order;
	// "--" ends the flags.
	interspersed
	// leading: flags come first; the first positional argument and
	// everything after it belong to a subcommand (hce client put ...).
	leading
)

// parseOpts configures parseFlags.
type parseOpts struct {
	mode posMode
	// stdout receives --print-config; nil: the FlagSet's output.
	stdout io.Writer
	// envAliases names extra environment variables of a flag, read when
	// HCE_<NAME> is unset (admin's --token also reads HCE_ADMIN_TOKEN).
	envAliases map[string][]string
	// usage, when set, is the help text's head (default "Usage: hce
	// <command> [flags]").
	usage string
}

// errConfigPrinted is returned by parseFlags after --print-config: the
// command stops and hce exits with status 0.
var errConfigPrinted = errors.New("configuration printed")

// The flags parseFlags adds to every command.
const (
	configFlag      = "config"
	printConfigFlag = "print-config"
)

// Where a setting's value came from.
const (
	srcDefault = "default"
	srcFlag    = "flag"
	srcEnv     = "env"
	srcFile    = "file"
)

// source records where one setting's value came from.
type source struct {
	kind   string // srcDefault, srcFlag, srcEnv, srcFile
	detail string // the variable, or the file and table
}

func (s source) String() string {
	if s.detail == "" {
		return s.kind
	}
	return s.kind + " " + s.detail
}

// envName is the environment variable of flag name.
func envName(name string) string {
	return "HCE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseFlags parses args into fs through the configuration layer and
// returns the positional arguments (per opts.mode). It adds --config and
// --print-config to fs. With --print-config it prints the settings and
// returns errConfigPrinted.
func parseFlags(fs *flag.FlagSet, args []string, opts parseOpts) ([]string, error) {
	if fs.Lookup(configFlag) == nil {
		fs.String(configFlag, "", "read settings from this TOML file (env HCE_CONFIG); precedence: flag > env HCE_<NAME> > file > default")
	}
	if fs.Lookup(printConfigFlag) == nil {
		fs.Bool(printConfigFlag, false, "print the effective value of every setting and where it came from (secrets masked), then exit")
	}
	if opts.usage == "" {
		opts.usage = commandUsages[fs.Name()]
	}
	fs.Usage = func() { printUsage(fs, opts) }
	pos, err := parseCommandLine(fs, args, opts.mode)
	if err != nil {
		return nil, err
	}
	srcs := map[string]source{}
	fs.Visit(func(f *flag.Flag) { srcs[f.Name] = source{kind: srcFlag, detail: "--" + f.Name} })
	fs.Visit(func(f *flag.Flag) { noteAlias(f, srcs) })
	// The file first, then the environment over it; neither touches a
	// flag the command line set.
	file := fs.Lookup(configFlag).Value.String()
	if _, set := srcs[configFlag]; !set {
		if v := os.Getenv(envName(configFlag)); v != "" {
			file = v
			_ = fs.Set(configFlag, v)
			srcs[configFlag] = source{kind: srcEnv, detail: envName(configFlag)}
		}
	}
	if file != "" {
		if err := applyFile(fs, file, srcs); err != nil {
			return nil, err
		}
	}
	if err := applyEnv(fs, srcs, opts.envAliases); err != nil {
		return nil, err
	}
	if print, _ := fs.Lookup(printConfigFlag).Value.(flag.Getter).Get().(bool); print {
		out := opts.stdout
		if out == nil {
			out = fs.Output()
		}
		printConfig(out, fs, srcs)
		return nil, errConfigPrinted
	}
	return pos, nil
}

// parseCommandLine parses the command line per mode.
func parseCommandLine(fs *flag.FlagSet, args []string, mode posMode) ([]string, error) {
	if mode == leading {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		return fs.Args(), nil
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...) // "--" ends the flags
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if mode == noPositionals && len(pos) > 0 {
		return nil, fmt.Errorf("unexpected argument %q: this command takes flags only (see hce %s -h)", pos[0], fs.Name())
	}
	return pos, nil
}

// applyEnv sets every flag the command line did not set from its
// environment variable (or an alias), recording the source.
func applyEnv(fs *flag.FlagSet, srcs map[string]source, aliases map[string][]string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || f.Name == printConfigFlag || f.Name == configFlag {
			return
		}
		if s, ok := srcs[target(f)]; ok && s.kind == srcFlag {
			return
		}
		for _, name := range append([]string{envName(f.Name)}, aliases[f.Name]...) {
			v := os.Getenv(name)
			if v == "" {
				continue
			}
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("environment %s=%q: %w", name, maskIf(f.Name, v), serr)
				return
			}
			srcs[f.Name] = source{kind: srcEnv, detail: name}
			noteAlias(f, srcs)
			return
		}
	})
	return err
}

// applyFile sets the flags the command line did not set from the TOML
// file: its top-level keys, then the running command's table.
func applyFile(fs *flag.FlagSet, path string, srcs map[string]source) error {
	var doc map[string]any
	if _, err := toml.DecodeFile(path, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	table := strings.Fields(fs.Name()) // "testnet up" -> [testnet.up]
	layers := []struct {
		name string
		keys map[string]any
	}{{"", doc}}
	cur := doc
	for i, part := range table {
		sub, ok := cur[part]
		if !ok {
			break
		}
		m, ok := sub.(map[string]any)
		if !ok {
			return fmt.Errorf("config file %s: %s is a setting, not a table of hce %s's settings", path, part, fs.Name())
		}
		layers = append(layers, struct {
			name string
			keys map[string]any
		}{strings.Join(table[:i+1], "."), m})
		cur = m
	}
	for i, l := range layers {
		// Only the top level and the command's own table must consist of
		// this command's settings; tables on the way ([testnet] for
		// testnet up) may hold other commands' settings.
		strict := i == 0 || i == len(layers)-1 && len(layers)-1 == len(table)
		names := make([]string, 0, len(l.keys))
		for k := range l.keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			v := l.keys[k]
			if _, isTable := v.(map[string]any); isTable {
				continue // another command's settings (or a sub-command's)
			}
			f := fs.Lookup(k)
			if f == nil || k == configFlag || k == printConfigFlag {
				if strict {
					return fmt.Errorf("config file %s: %s is not a setting of hce %s (see hce %s -h)", path, where(l.name, k), fs.Name(), fs.Name())
				}
				continue
			}
			if s, ok := srcs[target(f)]; ok && s.kind == srcFlag {
				continue
			}
			str, err := tomlString(v)
			if err == nil {
				err = fs.Set(k, str)
			}
			if err != nil {
				return fmt.Errorf("config file %s: %s: %w", path, where(l.name, k), err)
			}
			detail := path
			if l.name != "" {
				detail += " [" + l.name + "]"
			}
			srcs[k] = source{kind: srcFile, detail: detail}
			noteAlias(f, srcs)
		}
	}
	return nil
}

// where names key k of table t for error messages.
func where(t, k string) string {
	if t == "" {
		return k
	}
	return "[" + t + "] " + k
}

// tomlString turns a TOML value into a flag's text form. Durations are
// strings ("10s"); arrays of strings are joined with commas.
func tomlString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			s, err := tomlString(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("a %T value cannot be a setting", v)
}

// secretWords mark the settings whose values are masked when printed.
var secretWords = []string{"token", "password", "secret"}

// isSecret reports whether flag name holds a secret.
func isSecret(name string) bool {
	return slices.ContainsFunc(secretWords, func(w string) bool { return strings.Contains(name, w) })
}

// maskIf masks v when flag name holds a secret.
func maskIf(name, v string) string {
	if isSecret(name) && v != "" {
		return "********"
	}
	return v
}

// printConfig writes every setting of fs as TOML with its source in a
// comment (deprecated aliases left out; secrets masked).
func printConfig(w io.Writer, fs *flag.FlagSet, srcs map[string]source) {
	fmt.Fprintf(w, "# hce %s: effective settings (precedence: flag > env HCE_<NAME> > file > default)\n", fs.Name())
	type row struct{ key, src string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == printConfigFlag || isDeprecated(f) {
			return
		}
		line := f.Name + " = " + tomlValue(f)
		width = max(width, len(line))
		s, ok := srcs[f.Name]
		if !ok {
			s = source{kind: srcDefault}
		}
		src := s.String()
		if isSecret(f.Name) && f.Value.String() != "" {
			src += ", masked"
		}
		rows = append(rows, row{line, src})
	})
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s  # %s\n", width, r.key, r.src)
	}
}

// tomlValue is f's current value as a TOML literal.
func tomlValue(f *flag.Flag) string {
	if isSecret(f.Name) && f.Value.String() != "" {
		return strconv.Quote("********")
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch v := g.Get().(type) {
		case bool:
			return strconv.FormatBool(v)
		case int, int64, uint, uint64:
			return fmt.Sprint(v)
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		case time.Duration:
			return strconv.Quote(v.String())
		}
	}
	return strconv.Quote(f.Value.String())
}

// printUsage is the help text of a command: its head, the flags, and how
// settings also come from the environment and a file.
func printUsage(fs *flag.FlagSet, opts parseOpts) {
	w := fs.Output()
	head := opts.usage
	if head == "" {
		head = "Usage: hce " + fs.Name() + " [flags]\n"
	}
	fmt.Fprint(w, head)
	fmt.Fprintln(w, "\nFlags:")
	fs.PrintDefaults()
	example := ""
	fs.VisitAll(func(f *flag.Flag) {
		if example == "" && f.Name != configFlag && f.Name != printConfigFlag && !isDeprecated(f) {
			example = f.Name
		}
	})
	fmt.Fprintf(w, "\nEvery flag can also be set in the environment as HCE_<NAME> (--%s: %s) or in a TOML\n"+
		"file given with --config (key %s, at the top level or in a [%s] table).\n"+
		"Precedence: flag > environment > file > default. --print-config shows the result.\n",
		example, envName(example), example, strings.ReplaceAll(fs.Name(), " ", "."))
}

// commandUsages are the help heads of the commands that have more to say
// than "Usage: hce <command> [flags]", by FlagSet name.
var commandUsages = map[string]string{
	"admin":      adminUsage,
	"client":     clientUsage,
	"directory":  directoryUsage,
	"node":       nodeUsage,
	"testnet up": testnetUsage,
}

// deprecatedValue is the flag.Value of an old flag name kept as an alias
// of a new one: setting it warns and sets the new flag, converted.
type deprecatedValue struct {
	fs       *flag.FlagSet
	old, new string
	convert  func(string) (string, error)
	warn     io.Writer
	val      string // as given
	setTo    string // the new flag's value it set
}

func (d *deprecatedValue) String() string { return d.val }

func (d *deprecatedValue) Set(s string) error {
	v, err := d.convert(s)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.warn, "hce %s: --%s is deprecated and will be removed; use --%s (set to %s)\n", d.fs.Name(), d.old, d.new, v)
	d.val, d.setTo = s, v
	return d.fs.Set(d.new, v)
}

// target is the name of the flag f sets: its own, or for a deprecated
// alias the new flag's.
func target(f *flag.Flag) string {
	if d, ok := f.Value.(*deprecatedValue); ok {
		return d.new
	}
	return f.Name
}

// noteAlias records, when f is a deprecated alias whose value its target
// still holds (the target was not given after it), that the target's
// value came from where f's did.
func noteAlias(f *flag.Flag, srcs map[string]source) {
	if d, ok := f.Value.(*deprecatedValue); ok && d.setTo == d.fs.Lookup(d.new).Value.String() {
		s := srcs[f.Name]
		s.detail += " (deprecated)"
		srcs[d.new] = s
	}
}

// isDeprecated reports whether f is a deprecated alias.
func isDeprecated(f *flag.Flag) bool {
	_, ok := f.Value.(*deprecatedValue)
	return ok
}

// deprecatedAlias defines flag old on fs as a deprecated alias of flag
// new (already defined), with convert turning old's value into new's.
// Using it (on the command line, in the environment or a file) writes a
// warning to warn.
func deprecatedAlias(fs *flag.FlagSet, old, new string, convert func(string) (string, error), warn io.Writer, usage string) {
	fs.Var(&deprecatedValue{fs: fs, old: old, new: new, convert: convert, warn: warn}, old,
		"DEPRECATED: use --"+new+". "+usage)
}

// bytesToKB converts a byte count to KB (1024 bytes), rounding up so a
// non-zero quota stays non-zero.
func bytesToKB(s string) (string, error) {
	b, err := strconv.ParseInt(s, 10, 64)
	if err != nil || b < 0 {
		return "", fmt.Errorf("want a byte count >= 0, got %q", s)
	}
	return strconv.FormatInt((b+1023)/1024, 10), nil
}

const configUsage = `Usage:
  hce config print <command> [flags]   print the effective settings of a command (what
                                       "hce <command> [flags] --print-config" prints)

Examples:
  hce config print serve --config /etc/hce/hce.toml
  HCE_QUOTA_KB=10240 hce config print node --directory https://dir.example/
  hce config print testnet up --dir ./tn
`

// runConfig is `hce config print <command> [flags]`: it runs the command
// with --print-config placed after the command's words.
func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "print" {
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, configUsage)
			return nil
		}
		fmt.Fprint(stderr, configUsage)
		return errors.New("config: want: hce config print <command> [flags]")
	}
	cmd := args[1:]
	if len(cmd) == 0 || !knownCommand(cmd[0]) || cmd[0] == "config" || cmd[0] == "version" {
		fmt.Fprint(stderr, configUsage)
		return errors.New("config print: name a command: serve, directory, node, admin, testnet <verb>, client, load")
	}
	words := 1
	if verbs := commandVerbs[cmd[0]]; len(cmd) > 1 && (verbs == nil && !strings.HasPrefix(cmd[1], "-") || slices.Contains(verbs, cmd[1])) {
		words = 2
	}
	if cmd[0] != "testnet" && cmd[0] != "directory" && cmd[0] != "load" && cmd[0] != "node" {
		words = 1
	}
	full := append(append(slices.Clone(cmd[:words]), "--"+printConfigFlag), cmd[words:]...)
	return run(ctx, full, stdout, stderr)
}

// commandVerbs lists the second words that select a sub-command with its
// own flags (nil: any second word that is not a flag does).
var commandVerbs = map[string][]string{
	"testnet":   nil,
	"directory": {"init-ca", "issue-cert", "backup", "restore", "recover"},
	"load":      {"capacity", "compare"},
	"node":      {"backup", "restore"},
}
