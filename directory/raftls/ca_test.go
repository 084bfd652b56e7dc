package raftls

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestCASaveLoad(t *testing.T) {
	ca, err := NewCA("hce test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ca")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
	if err := ca.Save(dir); !errors.Is(err, ErrCAExists) {
		t.Fatalf("second Save: %v, want ErrCAExists", err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(loaded.CertPEM(), ca.CertPEM()) {
		t.Fatal("loaded CA certificate differs")
	}
	// A certificate issued by the loaded CA verifies under the original.
	certPEM, keyPEM, err := loaded.Issue("v1", []string{"127.0.0.1", "voter1.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ServerClientTLS(ca.CertPEM(), certPEM, keyPEM, "v1"); err != nil {
		t.Fatal(err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].IsLoopback() || !slices.Equal(cert.DNSNames, []string{"voter1.example"}) {
		t.Fatalf("SANs: %v %v", cert.IPAddresses, cert.DNSNames)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("ext key usage %v", cert.ExtKeyUsage)
	}
	if cert.NotAfter.After(ca.Certificate().NotAfter) {
		t.Fatal("leaf outlives CA")
	}
	if id, err := PeerID(cert); err != nil || id != "v1" {
		t.Fatalf("PeerID = %q, %v", id, err)
	}
}

func TestLoadCARejectsMismatchedKey(t *testing.T) {
	a, _ := NewCA("a", time.Hour)
	b, _ := NewCA("b", time.Hour)
	da, db := t.TempDir(), t.TempDir()
	if err := a.Save(da); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(db); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(db, CAKeyFile))
	if err := os.WriteFile(filepath.Join(da, CAKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(da); err == nil {
		t.Fatal("mismatched key accepted")
	}
	if _, err := LoadCA(t.TempDir()); err == nil {
		t.Fatal("empty dir accepted")
	}
}

func TestIssueAndConfigErrors(t *testing.T) {
	ca, _ := NewCA("ca", time.Hour)
	other, _ := NewCA("other", time.Hour)
	for _, id := range []string{"", "a/b", "x y", string(make([]byte, 129))} {
		if _, _, err := ca.Issue(id, nil, time.Hour); !errors.Is(err, ErrBadID) {
			t.Errorf("Issue(%q): %v, want ErrBadID", id, err)
		}
	}
	if _, _, err := ca.Issue("v", nil, 0); err == nil {
		t.Error("zero validity accepted")
	}
	certPEM, keyPEM, err := ca.Issue("v1", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ca.Issue("v2", nil, time.Hour)
	tests := []struct {
		name             string
		caPEM, cert, key []byte
		id               string
	}{
		{"wrong id", ca.CertPEM(), certPEM, keyPEM, "v2"},
		{"other CA", other.CertPEM(), certPEM, keyPEM, "v1"},
		{"key mismatch", ca.CertPEM(), certPEM, otherKey, "v1"},
		{"garbage CA", []byte("nope"), certPEM, keyPEM, "v1"},
		{"bad id", ca.CertPEM(), certPEM, keyPEM, "a b"},
	}
	for _, tc := range tests {
		if _, err := ServerClientTLS(tc.caPEM, tc.cert, tc.key, tc.id); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := NewCA("", time.Hour); err == nil {
		t.Error("empty CA name accepted")
	}
}

func TestPeerID(t *testing.T) {
	ca, _ := NewCA("ca", time.Hour)
	tests := []struct {
		name string
		uris []string
		want string
		ok   bool
	}{
		{"voter", []string{"hce://directory/v1"}, "v1", true},
		{"other uris ignored", []string{"spiffe://x/y", "hce://directory/v1"}, "v1", true},
		{"node role", []string{"hce://node/v1"}, "", false},
		{"none", nil, "", false},
		{"two voters", []string{"hce://directory/a", "hce://directory/b"}, "", false},
		{"bad id", []string{"hce://directory/a/b"}, "", false},
		{"query", []string{"hce://directory/a?x=1"}, "", false},
	}
	for _, tc := range tests {
		cert := mustCert(t, ca, tc.uris)
		got, err := PeerID(cert)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: PeerID = %q, %v", tc.name, got, err)
		}
		if err != nil && !errors.Is(err, ErrNotVoter) {
			t.Errorf("%s: err %v does not wrap ErrNotVoter", tc.name, err)
		}
	}
	if _, err := PeerID(nil); !errors.Is(err, ErrNotVoter) {
		t.Error("nil cert accepted")
	}
}
