package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestIssueCertAndHealthcheck serves HTTPS with a certificate from `hce
// directory issue-cert` and probes it with `hce healthcheck`, as the
// compose file does: trusted through --tls-ca, refused without it, and a
// dead address fails.
func TestIssueCertAndHealthcheck(t *testing.T) {
	bin := hceBinary(t)
	dir := t.TempDir()
	ca, certs := filepath.Join(dir, "ca"), filepath.Join(dir, "certs")
	ctx := context.Background()
	for _, args := range [][]string{
		{"directory", "init-ca", "--ca", ca},
		{"directory", "issue-cert", "--ca", ca, "--name", "web", "--hosts", "localhost,127.0.0.1", "--out", certs},
	} {
		if err := run(ctx, args, io.Discard, io.Discard); err != nil {
			t.Fatalf("hce %s: %v", strings.Join(args, " "), err)
		}
	}
	_, m := startChild(t, regexp.MustCompile(`ready at https://127\.0\.0\.1:(\d+)/`), bin, "serve", "--addr", "127.0.0.1:0",
		"--data", filepath.Join(dir, "data"), "--log-level", "warn",
		"--tls-cert", filepath.Join(certs, "web.pem"), "--tls-key", filepath.Join(certs, "web-key.pem"))
	url := "https://localhost:" + m[1] + "/__lbheartbeat__"
	var out bytes.Buffer
	if err := run(ctx, []string{"healthcheck", "--healthcheck-url", url, "--tls-ca", filepath.Join(ca, "ca.pem")}, &out, io.Discard); err != nil {
		t.Fatalf("healthcheck with the CA: %v", err)
	}
	if !strings.Contains(out.String(), "200") {
		t.Errorf("healthcheck output %q", out.String())
	}
	if err := run(ctx, []string{"healthcheck", "--healthcheck-url", url}, io.Discard, io.Discard); err == nil {
		t.Error("healthcheck trusted a private CA it was not given")
	}
	if err := run(ctx, []string{"healthcheck", "--healthcheck-url", "http://127.0.0.1:1/__lbheartbeat__"}, io.Discard, io.Discard); err == nil {
		t.Error("healthcheck of a dead address succeeded")
	}
}
