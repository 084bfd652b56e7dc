package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api/httpserve"
)

// TestVersionCommand checks `hce version`: the JSON /__version__ serves.
func TestVersionCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var v httpserve.Version
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Go == "" || v.Version == "" {
		t.Fatalf("hce version: %v %s", err, out.String())
	}
}

// TestLogFlags checks --log-format and the access logger: JSON lines,
// access lines at INFO whatever --log-level says, and bad values refused.
func TestLogFlags(t *testing.T) {
	var buf bytes.Buffer
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	logs, err := parseWithLogger(fs, []string{"--log-format", "json", "--log-level", "warn"}, io.Discard, &buf)
	if err != nil {
		t.Fatal(err)
	}
	logs.app.Info("hidden")
	logs.access.Info("request", "route", "/x")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["log"] != "access" || strings.Contains(buf.String(), "hidden") {
		t.Fatalf("log output %q (%v)", buf.String(), err)
	}
	for _, bad := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}} {
		if _, err := parseWithLogger(flag.NewFlagSet("x", flag.ContinueOnError), bad, io.Discard, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	f := addHTTPFlags(flag.NewFlagSet("x", flag.ContinueOnError), true)
	*f.tlsCert = "cert.pem"
	if _, err := f.config(nil); err == nil {
		t.Error("--tls-cert without --tls-key accepted")
	}
}
