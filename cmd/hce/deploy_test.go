package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// deployDir is the repository's deploy folder, seen from cmd/hce.
const deployDir = "../../deploy"

// checkArgs runs hce with args and --print-config: every flag must be
// one of the command's and no argument stray.
func checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	var errb bytes.Buffer
	if err := run(context.Background(), append(slices.Clone(args), "--print-config"), io.Discard, &errb); err != nil {
		t.Errorf("%s: hce %s: %v %s", where, strings.Join(args, " "), err, errb.String())
	}
}

// jsonArrays returns the JSON arrays that follow key (a YAML flow
// sequence or a Dockerfile exec form written as JSON) in text.
func jsonArrays(t *testing.T, text, key string) [][]string {
	t.Helper()
	re := regexp.MustCompile(`(?s)` + regexp.QuoteMeta(key) + `\s*(\[[^\]]*\])`)
	var out [][]string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		var a []string
		if err := json.Unmarshal([]byte(m[1]), &a); err != nil {
			t.Fatalf("%s %s is not a JSON array of strings: %v", key, m[1], err)
		}
		out = append(out, a)
	}
	return out
}

// TestComposeFile checks deploy/compose/compose.yaml: 3 voters and 4
// nodes, every one on HTTPS with a health check, every command and health
// check a valid hce command line; and, where a compose CLI is installed,
// that it accepts the file.
func TestComposeFile(t *testing.T) {
	path := filepath.Join(deployDir, "compose", "compose.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	t.Setenv("HCE_CONFIG", "")
	t.Setenv("HCE_ADMIN_TOKEN", "compose-test-admin-token-0123456789abcdef")
	dir := t.TempDir()
	var voters, nodes int
	for _, cmd := range jsonArrays(t, text, "command:") {
		// The commands name files of the tls volume: only flags are checked,
		// so give init-ca and issue-cert a folder of their own.
		args := slices.Clone(cmd)
		for i, a := range args {
			if strings.HasPrefix(a, "/tls/") || a == "/data" {
				args[i] = filepath.Join(dir, strings.TrimPrefix(a, "/"))
			}
		}
		switch cmd[0] {
		case "directory":
			if len(cmd) > 1 && (cmd[1] == "init-ca" || cmd[1] == "issue-cert") {
				if err := run(context.Background(), args, io.Discard, io.Discard); err != nil {
					t.Errorf("hce %s: %v", strings.Join(cmd, " "), err)
				}
				continue
			}
			voters++
		case "node":
			nodes++
		}
		if !slices.Contains(cmd, "--tls-cert") {
			t.Errorf("%s serves plain HTTP: %v", cmd[0], cmd)
		}
		checkArgs(t, path, args)
	}
	if voters != 3 || nodes != 4 {
		t.Errorf("%d voters and %d nodes, want 3 and 4", voters, nodes)
	}
	checks := jsonArrays(t, text, "test:")
	if len(checks) != voters+nodes {
		t.Errorf("%d health checks for %d voters and nodes", len(checks), voters+nodes)
	}
	for _, c := range checks {
		if len(c) < 3 || c[0] != "CMD" || c[1] != "/usr/local/bin/hce" || !strings.HasPrefix(c[len(c)-1], "https://") {
			t.Errorf("health check %v", c)
			continue
		}
		checkArgs(t, path, c[2:])
	}
	for _, cli := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		if _, err := exec.LookPath(cli[0]); err != nil {
			continue
		}
		cmd := exec.Command(cli[0], append(cli[1:], "-f", path, "config", "-q")...)
		out, err := cmd.CombinedOutput()
		if err != nil && cli[0] == "docker" && strings.Contains(string(out), "unknown") {
			continue // a docker CLI without the compose plugin
		}
		if err != nil {
			t.Errorf("%s config: %v %s", strings.Join(cli, " "), err, out)
		}
		t.Logf("%s config -q accepts %s", strings.Join(cli, " "), path)
	}
}

// TestDockerfile checks the image's default command and health check
// are valid hce command lines.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	t.Setenv("HCE_CONFIG", "")
	for _, key := range []string{"CMD", "ENTRYPOINT"} {
		if len(jsonArrays(t, text, "\n"+key)) != 1 {
			t.Errorf("Dockerfile: want one exec-form %s", key)
		}
	}
	checkArgs(t, "Dockerfile CMD", jsonArrays(t, text, "\nCMD")[0])
	hc := jsonArrays(t, text, "\n  CMD") // HEALTHCHECK's, on a continuation line
	if len(hc) != 1 || len(hc[0]) < 2 || hc[0][0] != "/usr/local/bin/hce" {
		t.Fatalf("Dockerfile HEALTHCHECK command %v", hc)
	}
	checkArgs(t, "Dockerfile HEALTHCHECK", hc[0][1:])
	for _, want := range []string{"CGO_ENABLED=0", "USER 65532", "HEALTHCHECK", "healthcheck"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
}

// TestSystemdUnits checks the units' ExecStart lines with the example
// configuration files, and has systemd-analyze verify them when it is
// installed.
func TestSystemdUnits(t *testing.T) {
	t.Setenv("HCE_CONFIG", "")
	t.Setenv("HCE_ADMIN_TOKEN", "")
	units, err := filepath.Glob(filepath.Join(deployDir, "systemd", "*.service"))
	if err != nil || len(units) != 3 {
		t.Fatalf("units %v %v", units, err)
	}
	bin := ""
	if _, err := exec.LookPath("systemd-analyze"); err == nil && !testing.Short() {
		bin = hceBinary(t)
	}
	tmp := t.TempDir()
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=", "PrivateTmp=yes", "ProtectHome=yes"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %s", u, want)
			}
		}
		m := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/hce (.*)$`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("%s: no ExecStart of /usr/local/bin/hce", u)
		}
		args := strings.Fields(m[1])
		for i, a := range args {
			if strings.HasPrefix(a, "/etc/hce/") && strings.HasSuffix(a, ".toml") {
				args[i] = filepath.Join(deployDir, "config", filepath.Base(a))
			}
		}
		checkArgs(t, u, args)
		if bin == "" {
			continue
		}
		// Verify a copy that runs the test binary and tolerates the
		// missing environment file.
		text = strings.ReplaceAll(text, "/usr/local/bin/hce", bin)
		text = strings.ReplaceAll(text, "EnvironmentFile=/", "EnvironmentFile=-/")
		copyPath := filepath.Join(tmp, filepath.Base(u))
		if err := os.WriteFile(copyPath, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("systemd-analyze", "verify", copyPath).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v %s", u, err, out)
		}
	}
}
