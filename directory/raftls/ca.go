package raftls

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names used by CA.Save and LoadCA inside the CA directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// clockSkew is how far before "now" issued certificates become valid, so that
// voters whose clocks lag slightly accept a fresh certificate.
const clockSkew = 5 * time.Minute

// Errors returned by the CA functions; match them with errors.Is.
var (
	// ErrCAExists is returned by Save when the directory already holds a CA:
	// overwriting it would orphan every certificate it issued.
	ErrCAExists = errors.New("raftls: CA files already exist")
	// ErrBadID is returned for a voter ID that is empty, longer than 128
	// bytes, or contains characters other than ASCII letters, digits, '.',
	// '_' and '-'.
	ErrBadID = errors.New("raftls: invalid voter id")
	// ErrBadPEM is returned when PEM input does not hold the expected block.
	ErrBadPEM = errors.New("raftls: bad PEM data")
)

// CA is a directory certificate authority: a self-signed Ed25519 root that
// issues voter certificates. A CA is safe for concurrent use; it is immutable
// after creation.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     ed25519.PrivateKey
}

// NewCA creates a CA with a fresh Ed25519 key and a self-signed certificate
// named commonName, valid from a few minutes ago for validity.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("raftls: empty CA common name")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("raftls: CA validity %v must be positive", validity)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("raftls: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("raftls: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("raftls: parse CA certificate: %w", err)
	}
	return &CA{cert: cert, certPEM: encodePEM("CERTIFICATE", der), key: key}, nil
}

// Certificate returns the CA's certificate. The caller must not modify it.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// CertPEM returns the CA certificate in PEM form, the trust anchor that every
// voter passes to ServerClientTLS.
func (c *CA) CertPEM() []byte { return bytes.Clone(c.certPEM) }

// Save writes the CA to dir (created with mode 0700 if missing): CACertFile
// (mode 0644) and CAKeyFile (PKCS#8, mode 0600). It refuses to overwrite an
// existing CA with ErrCAExists. Files are written to a temporary name and
// renamed, so a crash leaves no half-written key.
func (c *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("raftls: create CA dir: %w", err)
	}
	for _, name := range []string{CACertFile, CAKeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%w: %s", ErrCAExists, filepath.Join(dir, name))
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("raftls: stat %s: %w", name, err)
		}
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		return fmt.Errorf("raftls: marshal CA key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), encodePEM("PRIVATE KEY", keyDER), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, CACertFile), c.certPEM, 0o644)
}

// LoadCA reads a CA written by Save from dir. It checks that the certificate
// is a CA certificate and that the key matches it.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("raftls: read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("raftls: read CA key: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("raftls: CA certificate is not a CA")
	}
	key, err := parseEd25519KeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	if !key.Public().(ed25519.PublicKey).Equal(cert.PublicKey) {
		return nil, errors.New("raftls: CA key does not match CA certificate")
	}
	return &CA{cert: cert, certPEM: encodePEM("CERTIFICATE", cert.Raw), key: key}, nil
}

// Issue creates a directory-voter certificate for id with a fresh Ed25519
// key, valid from a few minutes ago for validity (capped at the CA's own
// expiry). hosts lists the IP addresses and DNS names the voter is dialed at;
// each entry is put in the certificate as an IP SAN if it parses as an IP, a
// DNS SAN otherwise. The certificate carries the role URI
// hce://directory/<id> and is usable as both TLS server and TLS client
// certificate. It returns the certificate and the PKCS#8 key in PEM form.
func (c *CA) Issue(id string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if err := checkID(id); err != nil {
		return nil, nil, err
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("raftls: certificate validity %v must be positive", validity)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("raftls: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{VoterURI(id)},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, nil, fmt.Errorf("raftls: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("raftls: marshal key: %w", err)
	}
	return encodePEM("CERTIFICATE", der), encodePEM("PRIVATE KEY", keyDER), nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("raftls: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: want CERTIFICATE", ErrBadPEM)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("raftls: parse certificate: %w", err)
	}
	return cert, nil
}

func parseEd25519KeyPEM(data []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: want PRIVATE KEY", ErrBadPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("raftls: parse key: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("raftls: key is %T, want Ed25519", k)
	}
	return key, nil
}

// writeFileAtomic writes data to a temporary file in path's directory with
// mode perm, syncs it and renames it over path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("raftls: create %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("raftls: chmod %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("raftls: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("raftls: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("raftls: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("raftls: rename %s: %w", path, err)
	}
	ok = true
	return nil
}
