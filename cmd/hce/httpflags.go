package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hce-sync/hce/api/httpserve"
	"github.com/hce-sync/hce/testnet"
)

// httpFlags are the HTTP platform's flags, the same on every command that
// serves HTTP (serve, node, directory).
type httpFlags struct {
	tlsCert, tlsKey, tlsCA, metricsAddr         *string
	insecureBasic, accessLog                    *bool
	maxConns, maxConnsPerAddr                   *int
	maxInFlight, maxInFlightPerUser, minRateKiB *int
	headerTimeout, bodyTimeout, writeTimeout    *time.Duration
	idleTimeout, drainDelay                     *time.Duration
}

// addHTTPFlags registers the platform's flags on fs; withCA adds --tls-ca
// (a process that calls other members over HTTPS).
func addHTTPFlags(fs *flag.FlagSet, withCA bool) *httpFlags {
	d := httpserve.DefaultConfig()
	f := &httpFlags{
		tlsCert:            fs.String("tls-cert", "", "serve HTTPS with this PEM certificate chain (with --tls-key; reloaded on SIGHUP and when the file changes)"),
		tlsKey:             fs.String("tls-key", "", "PEM private key of --tls-cert"),
		insecureBasic:      fs.Bool("insecure-basic", false, "accept HTTP Basic passwords over plain HTTP from any address (behind a TLS-terminating proxy); without it only loopback clients may"),
		metricsAddr:        fs.String("metrics-addr", "", "serve /metrics on this address (plain HTTP) instead of on the main listener"),
		accessLog:          fs.Bool("access-log", false, "log one line per request: method, route, status, bytes, duration, request id, client address"),
		maxConns:           fs.Int("max-conns", d.MaxConns, "most open client connections (-1: no cap)"),
		maxConnsPerAddr:    fs.Int("max-conns-per-addr", d.MaxConnsPerAddr, "most open connections from one client address, an IPv6 /64 (-1: no cap)"),
		maxInFlight:        fs.Int("max-in-flight", d.MaxInFlight, "most requests served at once; beyond, 503 with Retry-After (-1: no bound)"),
		maxInFlightPerUser: fs.Int("max-in-flight-per-user", d.MaxInFlightPerClient, "most requests served at once for one user's credentials (-1: no bound)"),
		headerTimeout:      fs.Duration("header-timeout", d.HeaderTimeout, "time to read a request's headers (and the TLS handshake)"),
		bodyTimeout:        fs.Duration("body-timeout", d.BodyTimeout, "time a request body may take before it must keep up --min-rate-kib"),
		writeTimeout:       fs.Duration("write-timeout", d.WriteTimeout, "time a client may take to accept each response write, beyond --min-rate-kib"),
		minRateKiB:         fs.Int("min-rate-kib", int(d.MinBodyRate>>10), "slowest legitimate transfer rate in KiB/s: each KiB received or sent extends the body and write deadlines by 1/rate s"),
		idleTimeout:        fs.Duration("idle-timeout", d.IdleTimeout, "close keep-alive connections idle this long"),
		drainDelay:         fs.Duration("drain-delay", 0, "on shutdown, answer /__lbheartbeat__ with 503 this long before closing the listener"),
	}
	if withCA {
		f.tlsCA = fs.String("tls-ca", "", "PEM file of extra roots to trust when calling other voters or the directory over HTTPS (a private CA)")
	}
	return f
}

// config maps the flags onto a testnet.HTTPConfig.
func (f *httpFlags) config(access *slog.Logger) (testnet.HTTPConfig, error) {
	if (*f.tlsCert == "") != (*f.tlsKey == "") {
		return testnet.HTTPConfig{}, errors.New("--tls-cert and --tls-key go together")
	}
	c := testnet.HTTPConfig{MetricsAddr: *f.metricsAddr}
	s := &c.Server
	s.TLSCertFile, s.TLSKeyFile = *f.tlsCert, *f.tlsKey
	s.InsecureBasic = *f.insecureBasic
	s.MaxConns, s.MaxConnsPerAddr = *f.maxConns, *f.maxConnsPerAddr
	s.MaxInFlight, s.MaxInFlightPerClient = *f.maxInFlight, *f.maxInFlightPerUser
	s.HeaderTimeout, s.BodyTimeout, s.WriteTimeout, s.IdleTimeout = *f.headerTimeout, *f.bodyTimeout, *f.writeTimeout, *f.idleTimeout
	s.MinBodyRate = int64(*f.minRateKiB) << 10
	s.MinWriteRate = s.MinBodyRate
	s.DrainDelay = *f.drainDelay
	s.Version = version()
	if *f.accessLog {
		s.AccessLog = access
	}
	if f.tlsCA != nil && *f.tlsCA != "" {
		pem, err := os.ReadFile(*f.tlsCA)
		if err != nil {
			return c, fmt.Errorf("--tls-ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return c, fmt.Errorf("--tls-ca: no certificate in %s", *f.tlsCA)
		}
		c.RootCAs = pool
	}
	return c, nil
}

// reloadOnHUP reloads srv's TLS certificate on every SIGHUP until ctx
// ends. Without TLS it does nothing (SIGHUP keeps its default action).
func reloadOnHUP(ctx context.Context, srv *httpserve.Server, logger *slog.Logger) {
	if srv.Scheme() != "https" {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := srv.ReloadTLS(); err != nil {
					logger.Error("SIGHUP: TLS certificate not reloaded; still serving the previous one", "err", err)
				}
			}
		}
	}()
}

// Build information, settable with -ldflags "-X main.buildVersion=..."
// when the build records no VCS information.
var buildVersion, buildCommit, buildTime string

// version is the running binary's version (build info, overridden by
// the -X values when set).
func version() httpserve.Version {
	v := httpserve.ReadVersion()
	if buildVersion != "" {
		v.Version = buildVersion
	}
	if buildCommit != "" {
		v.Commit = buildCommit
	}
	if buildTime != "" {
		v.BuildTime = buildTime
	}
	return v
}

// runVersion is `hce version`: the version as JSON (what /__version__
// serves).
func runVersion(stdout io.Writer) error {
	b, err := json.MarshalIndent(version(), "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}
