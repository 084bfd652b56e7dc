package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

// printed runs `hce config print args...` and returns the settings it
// prints: name -> "value # source".
func printed(t *testing.T, args ...string) (map[string]string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), append([]string{"config", "print"}, args...), &out, &errb); err != nil {
		t.Fatalf("hce config print %q: %v %s", args, err, errb.String())
	}
	m := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		k, v, ok := strings.Cut(line, " = ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		val, src, _ := strings.Cut(v, "#")
		m[k] = strings.TrimSpace(val) + " # " + strings.TrimSpace(src)
	}
	return m, errb.String()
}

// TestConfigPrecedence checks flag > env > file (command table over top
// level) > default for settings of every kind, the sources printed, and
// masked secrets.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hce.toml")
	toml := `
addr = "127.0.0.1:1111"
quota-kb = 1
admin-secret = "file-secret-value"
[serve]
quota-kb = 2
max-conns = 3
insecure-basic = true
header-timeout = "4s"
[node]
operator = "ignored by serve"
[testnet.up]
nodes = 5
`
	if err := os.WriteFile(file, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HCE_CONFIG", "")
	t.Setenv("HCE_MAX_CONNS", "30")
	t.Setenv("HCE_HEADER_TIMEOUT", "40s")
	t.Setenv("HCE_DATA", "")
	got, _ := printed(t, "serve", "--config", file, "--header-timeout", "400ms")
	want := map[string]string{
		"addr":           `"127.0.0.1:1111" # file ` + file,
		"quota-kb":       `2 # file ` + file + ` [serve]`,
		"max-conns":      `30 # env HCE_MAX_CONNS`,
		"header-timeout": `"400ms" # flag --header-timeout`,
		"insecure-basic": `true # file ` + file + ` [serve]`,
		"admin-secret":   `"********" # file ` + file + `, masked`,
		"data":           `"./hce-data" # default`,
		"config":         `"` + file + `" # flag --config`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
	var all bytes.Buffer
	_ = run(context.Background(), []string{"serve", "--config", file, "--print-config"}, &all, io.Discard)
	if strings.Contains(all.String(), "file-secret-value") {
		t.Error("--print-config shows a secret")
	}

	// HCE_CONFIG names the file; a sub-command's table applies to it.
	// (Top-level keys must be settings of the command reading the file.)
	file = filepath.Join(dir, "tn.toml")
	if err := os.WriteFile(file, []byte("[serve]\naddr = \"x\"\n[testnet.up]\nnodes = 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HCE_CONFIG", file)
	got, _ = printed(t, "testnet", "up", "--dir", filepath.Join(dir, "tn"))
	if got["nodes"] != `5 # file `+file+` [testnet.up]` || got["config"] != `"`+file+`" # env HCE_CONFIG` {
		t.Errorf("testnet up: nodes %s, config %s", got["nodes"], got["config"])
	}
	t.Setenv("HCE_CONFIG", "")

	// admin's --token also reads HCE_ADMIN_TOKEN, masked.
	t.Setenv("HCE_TOKEN", "")
	t.Setenv("HCE_ADMIN_TOKEN", "an-admin-token-from-the-environment")
	got, _ = printed(t, "admin", "--directory", "http://x/")
	if got["token"] != `"********" # env HCE_ADMIN_TOKEN, masked` {
		t.Errorf("admin token: %s", got["token"])
	}
}

// TestConfigErrors checks that a bad setting from any source is an error
// naming its source.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("HCE_CONFIG", "")
	for _, tc := range []struct {
		name string
		env  [2]string
		args []string
		want string
	}{
		{"unknown top-level key", [2]string{}, []string{"serve", "--config", write("a.toml", "nope = 1\n")}, "nope is not a setting of hce serve"},
		{"unknown key in the command's table", [2]string{}, []string{"node", "--config", write("b.toml", "[node]\nquota_kb = 1\n")}, "[node] quota_kb is not a setting of hce node"},
		{"bad value in the file", [2]string{}, []string{"serve", "--config", write("c.toml", "[serve]\nheader-timeout = 10\n")}, "[serve] header-timeout: parse error"},
		{"TOML syntax", [2]string{}, []string{"serve", "--config", write("d.toml", "addr = \n")}, "config file"},
		{"missing file", [2]string{}, []string{"serve", "--config", filepath.Join(dir, "none.toml")}, "no such file"},
		{"bad environment value", [2]string{"HCE_MAX_CONNS", "many"}, []string{"serve"}, `environment HCE_MAX_CONNS="many"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env[0] != "" {
				t.Setenv(tc.env[0], tc.env[1])
			}
			err := run(context.Background(), append(tc.args, "--print-config"), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%q: %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestQuotaUnits checks that serve and node take the quota in the same
// unit (--quota-kb) and that node's old --quota (bytes) still works,
// converted, with a warning.
func TestQuotaUnits(t *testing.T) {
	t.Setenv("HCE_CONFIG", "")
	t.Setenv("HCE_QUOTA", "")
	t.Setenv("HCE_QUOTA_KB", "")
	got, _ := printed(t, "serve", "--quota-kb", "7")
	if got["quota-kb"] != "7 # flag --quota-kb" {
		t.Errorf("serve: %s", got["quota-kb"])
	}
	got, warn := printed(t, "node", "--quota", "2049")
	if got["quota-kb"] != "3 # flag --quota (deprecated)" || !strings.Contains(warn, "--quota is deprecated") {
		t.Errorf("node --quota 2049: quota-kb %s, stderr %q", got["quota-kb"], warn)
	}
	if _, ok := got["quota"]; ok {
		t.Error("--print-config lists the deprecated alias")
	}
	got, _ = printed(t, "node", "--quota", "2048", "--quota-kb", "5")
	if got["quota-kb"] != "5 # flag --quota-kb" {
		t.Errorf("node --quota 2048 --quota-kb 5: %s", got["quota-kb"])
	}
	got, _ = printed(t, "node", "--quota-kb", "5", "--quota", "2048")
	if got["quota-kb"] != "2 # flag --quota (deprecated)" {
		t.Errorf("node --quota-kb 5 --quota 2048: %s", got["quota-kb"])
	}
}

// TestParseModes checks the three ways commands take positional
// arguments.
func TestParseModes(t *testing.T) {
	t.Setenv("HCE_CONFIG", "")
	for _, tc := range []struct {
		mode posMode
		args []string
		pos  []string
		err  bool
	}{
		{noPositionals, []string{"--n", "1"}, nil, false},
		{noPositionals, []string{"x", "--n", "1"}, nil, true},
		{interspersed, []string{"a", "--n", "1", "b"}, []string{"a", "b"}, false},
		{interspersed, []string{"a", "--", "--n", "b"}, []string{"a", "--n", "b"}, false},
		{leading, []string{"--n", "1", "put", "--ttl", "5"}, []string{"put", "--ttl", "5"}, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Int("n", 0, "")
		pos, err := parseFlags(fs, tc.args, parseOpts{mode: tc.mode})
		if (err != nil) != tc.err || !tc.err && !reflect.DeepEqual(pos, tc.pos) {
			t.Errorf("mode %d %q: %q %v", tc.mode, tc.args, pos, err)
		}
	}
}

// TestLimitsFromConfig runs `hce serve` with its POST and payload limits
// from a config file and the environment and checks the server applies
// them.
func TestLimitsFromConfig(t *testing.T) {
	bin := hceBinary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "hce.toml")
	if err := os.WriteFile(file, []byte("[serve]\nmax-post-records = 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HCE_CONFIG", file)
	t.Setenv("HCE_MAX_PAYLOAD_BYTES", "10")
	_, base := startServe(t, bin, filepath.Join(dir, "data"))
	const email, password = "limits@example.com", "limits-test-password"
	user := api.AccountName(email)
	c := &http.Client{Timeout: 30 * time.Second}
	reg, _ := json.Marshal(map[string]string{"password": password, "email": email})
	if code, body := call(t, c, http.MethodPut, base+"user/1.0/"+user, reg, ""); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	code, body := call(t, c, http.MethodPost, base+"1.1/"+user+"/storage/tabs",
		[]byte(`[{"id":"a","payload":"12345678901"},{"id":"b","payload":"x"},{"id":"c","payload":"y"},{"id":"d","payload":"z"}]`),
		user+":"+password)
	var res struct {
		Success []string            `json:"success"`
		Failed  map[string][]string `json:"failed"`
	}
	if err := json.Unmarshal(body, &res); err != nil || code != 200 {
		t.Fatalf("POST: %d %s", code, body)
	}
	// Records past the second of the POST (counting refused ones) wait
	// for the next request.
	want := map[string][]string{"a": {"payload too large"}, "c": {"retry wbo"}, "d": {"retry wbo"}}
	if !reflect.DeepEqual(res.Success, []string{"b"}) || !reflect.DeepEqual(res.Failed, want) {
		t.Fatalf("POST with max-post-records 2, max-payload-bytes 10: %s", body)
	}
}
