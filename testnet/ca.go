package testnet

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hce-sync/hce/directory/raftls"
)

// DefaultCAValidity is how long a new directory CA is valid: the testnet's
// and `hce directory init-ca`'s.
const DefaultCAValidity = 10 * 365 * 24 * time.Hour

// loadOrCreateCA loads DIR from an earlier run or creates a new CA named
// name there.
func loadOrCreateCA(dir, name string) (*raftls.CA, error) {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
		return raftls.LoadCA(dir)
	}
	ca, err := raftls.NewCA(name, DefaultCAValidity)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return ca, ca.Save(dir)
}

// VoterTLS returns the CA certificate and a voter's certificate and key,
// issuing them from ca into tlsDir on first start (the certificate names
// the host of raftAddr).
func VoterTLS(ca *raftls.CA, tlsDir, id, raftAddr string) (caPEM, certPEM, keyPEM []byte, err error) {
	caPEM = ca.CertPEM()
	certPath, keyPath := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	certPEM, err1 := os.ReadFile(certPath)
	keyPEM, err2 := os.ReadFile(keyPath)
	if err1 == nil && err2 == nil {
		return caPEM, certPEM, keyPEM, nil
	}
	h, _, err := net.SplitHostPort(raftAddr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("raft address %q: %w", raftAddr, err)
	}
	certPEM, keyPEM, err = ca.Issue(id, []string{h}, 365*24*time.Hour)
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

// HTTPSCADir is the folder, inside a testnet's, of the CA that issues its
// members' HTTPS certificates (Config.TLS): DIR/https-ca/ca.pem is what a
// client trusts (for `hce client`, SSL_CERT_FILE=DIR/https-ca/ca.pem).
// It is not the raft CA: an HTTPS key never opens the voters' raft.
const HTTPSCADir = "https-ca"

// memberHTTPS returns the files of a member's HTTPS certificate for
// 127.0.0.1 and localhost in DATA/https, issuing them from ca on first
// start.
func memberHTTPS(ca *raftls.CA, data, name string) (certFile, keyFile string, err error) {
	dir := filepath.Join(data, "https")
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_, err1 := os.Stat(certFile)
	_, err2 := os.Stat(keyFile)
	if err1 == nil && err2 == nil {
		return certFile, keyFile, nil
	}
	certPEM, keyPEM, err := ca.Issue(name, []string{"127.0.0.1", "localhost"}, 365*24*time.Hour)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(certFile, certPEM, 0o644)
}
