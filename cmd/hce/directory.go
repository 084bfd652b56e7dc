package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/directory/raftls"
)

const directoryUsage = `Usage:
  hce directory init-ca --ca DIR            create the directory CA (ca.pem, ca-key.pem)
  hce directory [flags]                     run a directory voter

Run "hce directory -h" for the voter's flags.
`

func runDirectory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "init-ca" {
		return runInitCA(args[1:], stdout, stderr)
	}
	if len(args) > 0 && (args[0] == "help" || args[0] == "--help") {
		fmt.Fprint(stdout, directoryUsage)
		return nil
	}
	fs := flag.NewFlagSet("directory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "dir1", "voter id (raft server id; also the certificate's identity)")
	data := fs.String("data", "./hce-directory", "data folder (raft log, snapshots, signing key, TLS certificate)")
	httpAddr := fs.String("http", "127.0.0.1:8090", "HTTP listen address: user API, token endpoint, admin API, voter-to-voter endpoints")
	publicURL := fs.String("public-url", "", "base URL other voters and clients reach this voter at (default http://<http address>/)")
	raftAddr := fs.String("raft", "127.0.0.1:8091", "raft listen address (mutual TLS)")
	caDir := fs.String("ca", "", "directory CA folder (from `hce directory init-ca`); this voter's certificate is issued from it into DATA/tls on first start")
	bootstrap := fs.Bool("bootstrap", false, "bootstrap a new cluster with this voter as its first member (once)")
	join := fs.String("join", "", "HTTP URL of any voter of the cluster to join")
	token := fs.String("admin-token", os.Getenv("HCE_ADMIN_TOKEN"), "admin token (admin API, join, forwarding); the same on every voter (env HCE_ADMIN_TOKEN)")
	replicas := fs.Int("replicas", 2, "replica set size R for new users")
	autoApprove := fs.Bool("auto-approve", false, "admit registering storage nodes without an admin's approval")
	downAfter := fs.Duration("down-after", 15*time.Second, "mark a storage node down after this much heartbeat silence")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *level)
	if err != nil {
		return err
	}
	if *caDir == "" {
		return errors.New("--ca is required (create one with `hce directory init-ca --ca DIR`)")
	}
	if *token == "" {
		return errors.New("--admin-token (or HCE_ADMIN_TOKEN) is required")
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	defer ln.Close()
	url := *publicURL
	if url == "" {
		url = "http://" + ln.Addr().String() + "/"
	}
	caPEM, certPEM, keyPEM, err := voterTLS(*caDir, filepath.Join(*data, "tls"), *id, *raftAddr)
	if err != nil {
		return err
	}
	cfg := directory.DefaultConfig()
	cfg.ID = *id
	cfg.Dir = *data
	cfg.Logger = logger
	cfg.Bootstrap = *bootstrap
	cfg.Join = *join
	cfg.RaftAddr = *raftAddr
	cfg.HTTPURL = url
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = caPEM, certPEM, keyPEM
	cfg.AdminToken = *token
	cfg.AutoApprove = *autoApprove
	cfg.DownAfter = *downAfter
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	d, err := directory.Open(octx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer d.Close()
	if d.IsLeader() {
		s := d.Settings()
		if s.Replicas != *replicas || s.AutoApprove != *autoApprove {
			s.Replicas, s.AutoApprove = *replicas, *autoApprove
			if err := d.SetSettings(ctx, s); err != nil {
				logger.Warn("could not apply settings", "err", err)
			}
		}
	}
	srv, err := directoryHTTP(d)
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	fmt.Fprintf(stdout, "HCE directory voter %s ready at %s (raft %s, data %s)\n", *id, url, *raftAddr, *data)
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	return srv.Shutdown(sctx)
}

// directoryHTTP serves a voter's HTTP API: the Weave user API with the
// token endpoint, and the directory's admin and voter-to-voter routes.
func directoryHTTP(d *directory.Directory) (*http.Server, error) {
	ucfg := api.DefaultUserConfig()
	ucfg.Accounts = d
	ucfg.Tokens = d
	users, err := api.NewUserHandler(ucfg)
	if err != nil {
		return nil, err
	}
	return &http.Server{
		Handler:           api.NewHandler(d.HTTPHandler(), users),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}, nil
}

// voterTLS returns the CA certificate and this voter's certificate and key,
// issuing them from the CA into tlsDir on first start.
func voterTLS(caDir, tlsDir, id, raftAddr string) (caPEM, certPEM, keyPEM []byte, err error) {
	ca, err := raftls.LoadCA(caDir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loading CA from %s: %w", caDir, err)
	}
	caPEM = ca.CertPEM()
	certPath, keyPath := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	certPEM, err1 := os.ReadFile(certPath)
	keyPEM, err2 := os.ReadFile(keyPath)
	if err1 == nil && err2 == nil {
		return caPEM, certPEM, keyPEM, nil
	}
	host, _, err := net.SplitHostPort(raftAddr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--raft %q: %w", raftAddr, err)
	}
	certPEM, keyPEM, err = ca.Issue(id, []string{host}, 365*24*time.Hour)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return nil, nil, nil, err
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, nil, nil, err
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, nil, err
	}
	return caPEM, certPEM, keyPEM, nil
}

func runInitCA(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("directory init-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("ca", "./hce-ca", "folder to write ca.pem and ca-key.pem (0600) into")
	name := fs.String("name", "HCE directory CA", "CA common name")
	validity := fs.Duration("validity", 10*365*24*time.Hour, "CA validity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ca, err := raftls.NewCA(*name, *validity)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if err := ca.Save(*dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "directory CA written to %s\n", *dir)
	return nil
}
