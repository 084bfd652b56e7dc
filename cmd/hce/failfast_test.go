package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// failFast runs `hce args...` and expects it to exit non-zero within
// limit, its last line of standard error a one-line error of the command
// "hce <args[0]>: " that matches want. It returns that line.
func failFast(t *testing.T, bin string, env []string, limit time.Duration, want string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	begin := time.Now()
	err := cmd.Run()
	took := time.Since(begin)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("hce %q: %v after %v, want a non-zero exit; stderr:\n%s", args, err, took, stderr.String())
	}
	if took > limit {
		t.Errorf("hce %q took %v to fail, want at most %v", args, took, limit)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "hce "+args[0]+": ") || !regexp.MustCompile(want).MatchString(last) {
		t.Fatalf("hce %q: last line %q, want \"hce %s: \" and %q; stderr:\n%s", args, last, args[0], want, stderr.String())
	}
	if strings.Contains(last, "testnet:") && args[0] != "testnet" {
		t.Errorf("hce %s names an inner layer: %q", args[0], last)
	}
	return last
}

// TestFailFast runs each setup mistake of issue #12 against the binary:
// each exits non-zero at once (or after its bounded wait) with one line
// naming the cause and the fix.
func TestFailFast(t *testing.T) {
	bin := hceBinary(t)
	tmp := t.TempDir()
	ca := filepath.Join(tmp, "ca")
	if out, err := exec.Command(bin, "directory", "init-ca", "--ca", ca).CombinedOutput(); err != nil {
		t.Fatalf("init-ca: %v %s", err, out)
	}
	const token = "fail-fast-admin-token-0123456789abcdef"
	tokenEnv := []string{"HCE_ADMIN_TOKEN=" + token}
	voterArgs := func(id string) []string {
		return []string{"directory", "--id", id, "--data", filepath.Join(tmp, id), "--http", "127.0.0.1:0",
			"--raft", "127.0.0.1:0", "--ca", ca, "--log-level", "error"}
	}

	t.Run("voter without bootstrap or join", func(t *testing.T) {
		failFast(t, bin, tokenEnv, 10*time.Second, `holds no cluster state.*--bootstrap.*--join`, voterArgs("lost")...)
	})
	t.Run("weak admin token", func(t *testing.T) {
		failFast(t, bin, []string{"HCE_ADMIN_TOKEN=x"}, 10*time.Second, `1 characters, fewer than 32`,
			append(voterArgs("weak"), "--bootstrap")...)
	})
	t.Run("missing admin token", func(t *testing.T) {
		failFast(t, bin, []string{"HCE_ADMIN_TOKEN="}, 10*time.Second, `--admin-token .* is required`,
			append(voterArgs("none"), "--bootstrap")...)
	})
	t.Run("join with a wrong admin token", func(t *testing.T) {
		first := startVoter(t, bin, append(voterArgs("d1")[1:], "--bootstrap", "--admin-token", token)...)
		failFast(t, bin, []string{"HCE_ADMIN_TOKEN=another-token-0123456789abcdefghijkl"}, 10*time.Second,
			`join refused: wrong admin token .*401.*give this voter the cluster's admin token`,
			append(voterArgs("d2"), "--join", first)...)
	})
	t.Run("node without operator", func(t *testing.T) {
		failFast(t, bin, nil, 10*time.Second, `--operator is required`,
			"node", "--data", filepath.Join(tmp, "n0"), "--directory", "http://127.0.0.1:1/")
	})
	t.Run("node with a dead directory", func(t *testing.T) {
		failFast(t, bin, nil, 15*time.Second, `directory unreachable: .*127\.0\.0\.1:1.*after [0-9.]+s.*check --directory`,
			"node", "--data", filepath.Join(tmp, "n1"), "--directory", "http://127.0.0.1:1/", "--operator", "op",
			"--http", "127.0.0.1:0", "--p2p", "127.0.0.1:0", "--directory-wait", "2s")
	})
	t.Run("locked data folder", func(t *testing.T) {
		data := filepath.Join(tmp, "serve")
		cmd, _ := startServe(t, bin, data)
		failFast(t, bin, nil, 10*time.Second,
			fmt.Sprintf(`data folder .*serve is in use by another hce process \(pid %d\): stop it, or give this one another --data`, cmd.Process.Pid),
			"serve", "--data", data, "--addr", "127.0.0.1:0")
	})
	t.Run("stray positional", func(t *testing.T) {
		failFast(t, bin, nil, 10*time.Second, `unexpected argument "extra": this command takes flags only`,
			"serve", "extra", "--data", filepath.Join(tmp, "x"), "--addr", "127.0.0.1:0")
	})
	t.Run("data folder not creatable", func(t *testing.T) {
		file := filepath.Join(tmp, "a-file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		failFast(t, bin, nil, 10*time.Second, `^hce serve: data folder .*a-file/sub: .*not a directory`,
			"serve", "--data", filepath.Join(file, "sub"), "--addr", "127.0.0.1:0")
	})
	t.Run("address in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		failFast(t, bin, nil, 10*time.Second, `^hce serve: HTTP listener: .*address already in use`,
			"serve", "--data", filepath.Join(tmp, "busy"), "--addr", ln.Addr().String())
	})
	t.Run("bad config file key", func(t *testing.T) {
		cfg := filepath.Join(tmp, "bad.toml")
		if err := os.WriteFile(cfg, []byte("[serve]\nmax-conn = 10\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		failFast(t, bin, nil, 10*time.Second, `config file .*bad.toml: \[serve\] max-conn is not a setting of hce serve`,
			"serve", "--config", cfg)
	})
}

// TestFlagsAfterPositionals checks that flags after a positional
// argument are parsed: the id of testnet kill before --dir, admin's
// command before its flags.
func TestFlagsAfterPositionals(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"testnet", "kill", "n1", "--dir", filepath.Join(t.TempDir(), "none")}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "testnet.json") {
		t.Fatalf("testnet kill n1 --dir: %v (want the missing manifest of --dir)", err)
	}
	t.Setenv("HCE_ADMIN_TOKEN", "")
	t.Setenv("HCE_TOKEN", "")
	err = run(context.Background(), []string{"admin", "status", "--directory", "http://127.0.0.1:1/", "--token", "t", "--linearizable"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("admin status --directory ...: %v (want the unreachable directory)", err)
	}
}

// TestHelpTexts checks the help the binary prints: the top-level usage
// names every command and verb, hce admin --help its subcommands, and no
// flag shows a placeholder taken from a quoted command in its text (the
// flag package names the argument after a backquoted word).
func TestHelpTexts(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"serve", "directory [flags]", "init-ca", "node [flags]", "admin", "approve|drain|undrain|retire", "voter add|remove|list",
		"testnet", "partition", "heal", "restart", "client", "register", "ids", "get", "put", "post", "delete",
		"wipe", "token", "passwd", "info", "load", "config print", "version", "healthcheck", "issue-cert"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("top-level usage lacks %q:\n%s", w, out.String())
		}
	}
	placeholder := regexp.MustCompile(`(?m)^\s+-[a-z-]+ hce `)
	for _, cmd := range [][]string{{"serve"}, {"node"}, {"directory"}, {"directory", "init-ca"}, {"admin"},
		{"client"}, {"load"}, {"testnet", "up"}, {"testnet", "status"}, {"testnet", "partition"}, {"healthcheck"}, {"directory", "issue-cert"}} {
		var help bytes.Buffer
		err := run(context.Background(), append(cmd, "-h"), &help, &help)
		if err == nil || !errors.Is(err, flag.ErrHelp) {
			t.Errorf("hce %s -h: %v", strings.Join(cmd, " "), err)
		}
		if m := placeholder.FindString(help.String()); m != "" {
			t.Errorf("hce %s -h shows a placeholder artefact %q", strings.Join(cmd, " "), m)
		}
		if !strings.Contains(help.String(), "HCE_") {
			t.Errorf("hce %s -h does not say flags come from the environment", strings.Join(cmd, " "))
		}
	}
	var admin bytes.Buffer
	_ = run(context.Background(), []string{"admin", "--help"}, &admin, &admin)
	for _, w := range []string{"status", "nodes", "user <name>", "node approve|drain|undrain|retire <id>", "voter add", "voter remove", "--accept-data-loss"} {
		if !strings.Contains(admin.String(), w) {
			t.Errorf("hce admin --help lacks %q:\n%s", w, admin.String())
		}
	}
}
