package httpserve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoTLS is ReloadTLS's answer on a server without TLS.
var ErrNoTLS = errors.New("httpserve: TLS is not configured")

// certStore holds the certificate being served and reloads it from its
// files.
type certStore struct {
	certFile, keyFile string
	s                 *Server
	cert              atomic.Pointer[tls.Certificate]
	mu                sync.Mutex // serialises loads
	stamp             string     // modification times and sizes of the last load attempt
}

// fileStamp identifies the files' current versions.
func (c *certStore) fileStamp() string {
	var st string
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			st += "missing;"
			continue
		}
		st += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return st
}

// load reads the files; on failure the previous certificate stays.
func (c *certStore) load() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stamp = c.fileStamp()
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err == nil && len(cert.Certificate) > 0 {
		cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
	}
	if err != nil {
		c.s.m.tlsReloads.WithLabelValues("error").Inc()
		return fmt.Errorf("httpserve: loading %s and %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert.Store(&cert)
	c.s.m.tlsReloads.WithLabelValues("ok").Inc()
	c.s.m.tlsExpiry.Set(float64(cert.Leaf.NotAfter.Unix()))
	return nil
}

// get is tls.Config.GetCertificate.
func (c *certStore) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

// watch reloads the files when their stamp changes, until ctx ends.
func (c *certStore) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		changed := c.fileStamp() != c.stamp
		c.mu.Unlock()
		if !changed {
			continue
		}
		if err := c.load(); err != nil {
			c.s.cfg.Logger.Error("TLS certificate changed on disk but cannot be loaded; still serving the previous one", "err", err)
			continue
		}
		c.s.cfg.Logger.Info("TLS certificate reloaded", "cert", c.certFile, "not_after", c.cert.Load().Leaf.NotAfter)
	}
}

// tlsConfig is the server side of HTTPS: TLS 1.2 or later, HTTP/1.1 (the
// platform's deadlines and connection caps are per connection).
func (c *certStore) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.get,
		NextProtos:     []string{"http/1.1"},
	}
}
