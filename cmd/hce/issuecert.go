package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hce-sync/hce/directory/raftls"
)

// runIssueCert is `hce directory issue-cert`: a certificate and key from
// the directory CA (made by init-ca) for a voter's or node's HTTPS
// listener in a private deployment (compose, a lab). Public services use
// certificates from a public CA instead: Firefox does not know this one.
func runIssueCert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("directory issue-cert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caDir := fs.String("ca", "./hce-ca", "CA folder made by 'hce directory init-ca'")
	names := fs.String("name", "", "certificate name, or several separated by commas (letters, digits, '-', '_', '.'): the files are NAME.pem and NAME-key.pem, each valid for its name and --hosts")
	hosts := fs.String("hosts", "", "comma-separated DNS names and IP addresses every certificate is also valid for")
	out := fs.String("out", ".", "folder to write the certificates and keys (0600) into")
	validity := fs.Duration("validity", 365*24*time.Hour, "certificate validity (at most the CA's)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	list := func(s string) []string {
		var out []string
		for _, x := range strings.Split(s, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
		return out
	}
	if len(list(*names)) == 0 {
		return fmt.Errorf("--name is required (e.g. --name n1 --hosts n1.example.org,10.0.0.5)")
	}
	ca, err := raftls.LoadCA(*caDir)
	if err != nil {
		return fmt.Errorf("loading CA from %s: %w", *caDir, err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, name := range list(*names) {
		hs := append([]string{name}, list(*hosts)...)
		certPEM, keyPEM, err := ca.Issue(name, hs, *validity)
		if err != nil {
			return err
		}
		certFile, keyFile := filepath.Join(*out, name+".pem"), filepath.Join(*out, name+"-key.pem")
		if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "certificate %s and key %s for %s (trust %s)\n", certFile, keyFile, strings.Join(hs, ", "),
			filepath.Join(*caDir, "ca.pem"))
	}
	return nil
}
