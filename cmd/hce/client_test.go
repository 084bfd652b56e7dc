package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestClientCommand runs the real binary's `hce client` against a child
// `hce serve`: register, put, get, ids, post, info, token, delete,
// passwd, and a failing call's exit status and Weave error.
func TestClientCommand(t *testing.T) {
	bin := hceBinary(t)
	srv, base := startServe(t, bin, t.TempDir())
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	password := "client-command-password"
	env := append(os.Environ(), "HCE_DIRECTORY="+base, "HCE_EMAIL=cli@example.com", "HCE_PASSWORD="+password)
	hce := func(stdin string, args ...string) (string, string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"client"}, args...)...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	ok := func(args ...string) string {
		t.Helper()
		out, stderr, err := hce("", args...)
		if err != nil {
			t.Fatalf("hce client %q: %v\n%s", args, err, stderr)
		}
		return out
	}

	if out := ok("register"); !strings.HasPrefix(out, "registered ") {
		t.Fatalf("register: %q", out)
	}
	if out := ok("node"); strings.TrimSpace(out) != base {
		t.Fatalf("node: %q, want %q", out, base)
	}
	if out := ok("put", "bookmarks", "a", `{"ciphertext":"x"}`, "--sortindex", "7", "--ttl", "3600"); !strings.Contains(out, ".") {
		t.Fatalf("put: %q", out)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(ok("get", "bookmarks", "a")), &rec); err != nil || rec["payload"] != `{"ciphertext":"x"}` || rec["sortindex"] != 7.0 {
		t.Fatalf("get: %v %v", rec, err)
	}
	out, stderr, err := hce(`[{"id":"b","payload":"pb","sortindex":9},{"id":"c","payload":"pc"}]`, "post", "bookmarks", "-")
	var res struct{ Success []string }
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || !reflect.DeepEqual(res.Success, []string{"b", "c"}) {
		t.Fatalf("post: %q %s %v", out, stderr, err)
	}
	var ids []string
	if err := json.Unmarshal([]byte(ok("ids", "bookmarks", "--sort", "index", "--limit", "2")), &ids); err != nil || !reflect.DeepEqual(ids, []string{"b", "a"}) {
		t.Fatalf("ids: %v %v", ids, err)
	}
	var info struct{ Counts map[string]int }
	if err := json.Unmarshal([]byte(ok("info")), &info); err != nil || info.Counts["bookmarks"] != 3 {
		t.Fatalf("info: %+v %v", info, err)
	}
	var tok struct{ Token, Node string }
	if err := json.Unmarshal([]byte(ok("token")), &tok); err != nil || tok.Token == "" || tok.Node != base {
		t.Fatalf("token: %+v %v", tok, err)
	}
	if out := ok("delete", "bookmarks", "a"); strings.TrimSpace(out) != "deleted" {
		t.Fatalf("delete: %q", out)
	}
	if err := json.Unmarshal([]byte(ok("ids", "bookmarks")), &ids); err != nil || !reflect.DeepEqual(ids, []string{"b", "c"}) {
		t.Fatalf("ids after delete: %v %v", ids, err)
	}

	// A missing record: non-zero exit and the Weave status on stderr.
	_, stderr, err = hce("", "get", "bookmarks", "a")
	if exit, isExit := err.(*exec.ExitError); !isExit || exit.ExitCode() == 0 || !strings.Contains(stderr, "HTTP 404") {
		t.Fatalf("get of a deleted record: %v %q", err, stderr)
	}

	ok("delete", "bookmarks")
	ok("wipe")
	ok("passwd", "a-second-password")
	_, stderr, err = hce("", "info")
	if err == nil || !strings.Contains(stderr, "HTTP 401") {
		t.Fatalf("old password after passwd: %v %q", err, stderr)
	}
	if out := ok("--password", "a-second-password", "ids", "bookmarks"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("ids after wipe: %q", out)
	}

	// Sync 1.5 with the same account, through serve's local issuer and
	// tokenserver: a storage of its own.
	v15 := []string{"--password", "a-second-password", "--api", "1.5"}
	if out := ok(append(v15, "fxa-token")...); strings.Count(out, ".") != 2 {
		t.Fatalf("fxa-token: %q", out)
	}
	var tr struct {
		UID         uint64 `json:"uid"`
		APIEndpoint string `json:"api_endpoint"`
	}
	if err := json.Unmarshal([]byte(ok(append(v15, "token")...)), &tr); err != nil || tr.UID == 0 || !strings.HasPrefix(tr.APIEndpoint, strings.TrimSuffix(base, "/")+"/1.5/") {
		t.Fatalf("1.5 token: %+v %v", tr, err)
	}
	ok(append(v15, "put", "tabs", "t1", "p1", "--sortindex", "2")...)
	ok(append(v15, "put", "tabs", "t2", "p2", "--sortindex", "5")...)
	if err := json.Unmarshal([]byte(ok(append(v15, "ids", "tabs", "--sort", "index")...)), &ids); err != nil || !reflect.DeepEqual(ids, []string{"t2", "t1"}) {
		t.Fatalf("1.5 ids: %v %v", ids, err)
	}
	if err := json.Unmarshal([]byte(ok(append(v15, "get", "tabs", "t1")...)), &rec); err != nil || rec["payload"] != "p1" {
		t.Fatalf("1.5 get: %v %v", rec, err)
	}
	if err := json.Unmarshal([]byte(ok("--password", "a-second-password", "ids", "tabs")), &ids); err != nil || len(ids) != 0 {
		t.Fatalf("the Weave view of tabs: %v %v", ids, err)
	}
}

// TestClientCommandArgs checks the argument errors of `hce client` that
// need no server.
func TestClientCommandArgs(t *testing.T) {
	t.Setenv("HCE_DIRECTORY", "")
	t.Setenv("HCE_EMAIL", "")
	t.Setenv("HCE_PASSWORD", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "no command"},
		{[]string{"--email", "a@b.c", "node"}, "--directory"},
		{[]string{"--directory", "http://127.0.0.1:1/", "node"}, "User or Config.Email"},
		{[]string{"--directory", "http://127.0.0.1:1/", "--user", "u", "frob"}, "unknown command"},
		{[]string{"--directory", "http://127.0.0.1:1/", "--user", "u", "get", "c"}, "takes 2"},
		{[]string{"--directory", "http://127.0.0.1:1/", "--user", "u", "register"}, "needs --email"},
		{[]string{"--directory", "http://127.0.0.1:1/", "--user", "u", "ids", "c", "--newer", "soon"}, "bad --newer"},
		{[]string{"--directory", "http://127.0.0.1:1/", "--user", "u", "delete"}, "delete takes"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"client"}, tc.args...), &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hce client %q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
