package raftls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Role URI of a directory voter: scheme hce, host directory, path /<id>.
const (
	roleScheme = "hce"
	roleHost   = "directory"
	maxIDLen   = 128
)

// ErrNotVoter is returned (wrapped) when a certificate does not carry the
// directory-voter role URI.
var ErrNotVoter = errors.New("raftls: certificate is not a directory voter certificate")

// VoterURI returns the role URI hce://directory/<id> that CA.Issue puts in a
// voter certificate. id is not validated.
func VoterURI(id string) *url.URL {
	return &url.URL{Scheme: roleScheme, Host: roleHost, Path: "/" + id}
}

// PeerID returns the voter id named by cert's role URI, or an error wrapping
// ErrNotVoter if cert has no valid role URI (exactly one is allowed).
func PeerID(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no certificate", ErrNotVoter)
	}
	id := ""
	for _, u := range cert.URIs {
		if u.Scheme != roleScheme || u.Host != roleHost {
			continue
		}
		cand := strings.TrimPrefix(u.Path, "/")
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || checkID(cand) != nil {
			return "", fmt.Errorf("%w: malformed role URI %q", ErrNotVoter, u)
		}
		if id != "" {
			return "", fmt.Errorf("%w: more than one role URI", ErrNotVoter)
		}
		id = cand
	}
	if id == "" {
		return "", fmt.Errorf("%w: no hce://directory/ URI", ErrNotVoter)
	}
	return id, nil
}

// checkID validates a voter id: 1 to 128 bytes of ASCII letters, digits, '.',
// '_' and '-' (raft server IDs and libp2p peer IDs fit).
func checkID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%w: %q", ErrBadID, id)
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: %q", ErrBadID, id)
		}
	}
	return nil
}

// ServerClientTLS builds the mutual-TLS configuration of voter id from the CA
// certificate and the voter's certificate and key (all PEM, as written by
// CA.CertPEM and CA.Issue). The same *tls.Config serves both directions:
//
//   - TLS 1.3 only;
//   - as server it requires a client certificate and verifies it against the
//     CA (RequireAndVerifyClientCert), as client it verifies the server
//     against the CA and the dialed host name;
//   - on both sides VerifyConnection then requires the peer's leaf to carry
//     a directory-voter role URI (see PeerID).
//
// It fails if the voter certificate does not chain to the CA, does not carry
// the role URI of id, or does not match the key. The returned config may be
// shared by any number of connections; do not modify it after use begins.
func ServerClientTLS(caPEM, certPEM, keyPEM []byte, id string) (*tls.Config, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	caCert, err := parseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("raftls: CA certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("raftls: voter key pair: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("raftls: voter certificate: %w", err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:     pool,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("raftls: voter certificate not valid under the CA: %w", err)
	}
	got, err := PeerID(leaf)
	if err != nil {
		return nil, err
	}
	if got != id {
		return nil, fmt.Errorf("%w: certificate names voter %q, not %q", ErrNotVoter, got, id)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: peer sent no certificate", ErrNotVoter)
			}
			_, err := PeerID(cs.PeerCertificates[0])
			return err
		},
	}, nil
}
