package testnet

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestReadmePouchDBExample runs the README's PouchDB example exactly as
// written (the first js block of README.md) against a live hce serve, as
// the README tells a reader to run it: a file in a folder where the
// packages are installed, node, three environment variables. The record
// it writes must appear in the Weave API, and the Weave record written
// before must have reached PouchDB (the script prints the doc count).
func TestReadmePouchDBExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```js\n(.*?)```").FindSubmatch(readme)
	if m == nil || !bytes.Contains(m[1], []byte("PouchDB")) {
		t.Fatal("README.md has no js block with the PouchDB example")
	}
	dir := pouchDir(t)
	script := filepath.Join(dir, "readme-sync.js")
	if err := os.WriteFile(script, m[1], 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(script) })
	srv := startServer(t)
	a := srv.newAccount(t)
	a.put(t, "bookmarks", "b1", map[string]any{"payload": `{"title":"from weave"}`})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WEAVE_URL="+srv.s.URL(), "WEAVE_USER="+a.Name, "WEAVE_PASSWORD="+a.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node README example: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "2 docs") {
		t.Errorf("README example output %q, want 2 docs (b1 from Weave, b9 from PouchDB)", out)
	}
	r := a.do(t, "GET", "storage/bookmarks/b9", nil)
	var wbo struct{ Payload string }
	if r.Status != 200 || json.Unmarshal(r.Body, &wbo) != nil || wbo.Payload != `{"title":"from pouch"}` {
		t.Fatalf("b9 through the Weave API after the README example: %v", r)
	}
}
