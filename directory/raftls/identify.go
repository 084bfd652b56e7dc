package raftls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
)

// Identify dials address as Dial does (the server verified against the
// CA, the dialed host name and the voter role, this voter's certificate
// presented), reads the voter ID the server's certificate names (PeerID)
// and closes the connection before any raft traffic. The directory uses
// it to admit a voter: the raft address it is asked to add must answer
// with a certificate of the directory CA for that very ID.
func (s *StreamLayer) Identify(ctx context.Context, address string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	d := tls.Dialer{Config: s.cfg.TLS}
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return "", fmt.Errorf("raftls: identify %s: %w", address, err)
	}
	defer c.Close()
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("raftls: identify " + address + ": no certificate")
	}
	id, err := PeerID(certs[0])
	if err != nil {
		return "", fmt.Errorf("raftls: identify %s: %w", address, err)
	}
	return id, nil
}
