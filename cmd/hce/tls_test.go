package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/testnet"
)

// TestTLSTestnetChildren runs a testnet with TLS on as child processes
// (2 voters, 2 nodes), so every flag of the platform's HTTPS is used as
// an operator would: --tls-cert and --tls-key on every member, --tls-ca
// for the second voter's join and the nodes' registration over HTTPS.
// A Weave client then registers and syncs over HTTPS only, and `hce
// testnet status` reads the HTTPS testnet from its manifest.
func TestTLSTestnetChildren(t *testing.T) {
	bin := hceBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tn, err := testnet.Start(ctx, testnet.Config{Dir: t.TempDir(), Directories: 2, Nodes: 2, Mode: testnet.ChildProcess,
		Binary: bin, TLS: true, Heartbeat: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	_, dir := tn.Leader()
	if !strings.HasPrefix(dir, "https://") {
		t.Fatalf("leader URL %q", dir)
	}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tn.RootCAs()}}}
	cfg := client.DefaultConfig()
	cfg.Directory, cfg.Email, cfg.Password, cfg.HTTP = dir, "tls-children@example.com", "a password over tls", hc
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "bookmarks", client.Record{ID: "b1", Payload: ptr("https all the way")}, 0); err != nil {
		t.Fatal(err)
	}
	if node := c.Node(); !strings.HasPrefix(node, "https://") {
		t.Fatalf("node/weave gave %q", node)
	}
	r, _, err := c.Get(ctx, "bookmarks", "b1")
	if err != nil || *r.Payload != "https all the way" {
		t.Fatalf("read back: %+v %v", r, err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"testnet", "status", "--dir", tn.Dir()}, &out, &out); err != nil || !strings.Contains(out.String(), "https://") {
		t.Fatalf("testnet status over HTTPS: %v %s", err, out.String())
	}
}

func ptr[T any](v T) *T { return &v }
