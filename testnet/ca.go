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

// loadOrCreateCA loads DIR from an earlier run or creates a new CA there.
func loadOrCreateCA(dir string) (*raftls.CA, error) {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
		return raftls.LoadCA(dir)
	}
	ca, err := raftls.NewCA("HCE testnet CA", DefaultCAValidity)
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
		return nil, nil, nil, fmt.Errorf("testnet: raft address %q: %w", raftAddr, err)
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
