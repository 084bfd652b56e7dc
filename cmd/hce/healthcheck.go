package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// runHealthcheck is `hce healthcheck`: one GET of a health endpoint,
// success on a 2xx answer. It is the HEALTHCHECK of the container image
// (which has no curl) and fits systemd or any supervisor.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("healthcheck-url", "http://127.0.0.1:8080/__lbheartbeat__", "URL to GET; success is a 2xx answer")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on the whole request")
	ca := fs.String("tls-ca", "", "PEM file of extra roots to trust for an https URL (a private CA)")
	insecure := fs.Bool("tls-insecure", false, "do not verify the server's certificate (a local probe of a certificate issued for another name)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	tc := &tls.Config{InsecureSkipVerify: *insecure}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			return fmt.Errorf("--tls-ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--tls-ca: no certificate in %s", *ca)
		}
		tc.RootCAs = pool
	}
	c := &http.Client{Timeout: *timeout, Transport: &http.Transport{TLSClientConfig: tc}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", *url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s %s", *url, resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s: %s\n", *url, resp.Status)
	return nil
}
