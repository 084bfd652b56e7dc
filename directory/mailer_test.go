package directory

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpMsg is what the test server received for one message.
type smtpMsg struct {
	from, to string
	auth     string // decoded AUTH PLAIN response
	tls      bool
	data     string
}

// smtpServer is a minimal SMTP server on 127.0.0.1 for tests: EHLO,
// STARTTLS (when tlsCfg is set), AUTH PLAIN, MAIL, RCPT, DATA, RSET, QUIT.
type smtpServer struct {
	t      *testing.T
	ln     net.Listener
	tlsCfg *tls.Config
	wg     sync.WaitGroup

	mu   sync.Mutex
	msgs []smtpMsg
}

func newSMTPServer(t *testing.T, tlsCfg *tls.Config) *smtpServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{t: t, ln: ln, tlsCfg: tlsCfg}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *smtpServer) messages() []smtpMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]smtpMsg(nil), s.msgs...)
}

func (s *smtpServer) serve(c net.Conn) {
	defer func() { c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(lines ...string) {
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		w.Flush()
	}
	var cur smtpMsg
	reply("220 test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			if s.tlsCfg != nil && !cur.tls {
				reply("250-test", "250-AUTH PLAIN", "250 STARTTLS")
			} else {
				reply("250-test", "250 AUTH PLAIN")
			}
		case "STARTTLS":
			if s.tlsCfg == nil || cur.tls {
				reply("502 no")
				continue
			}
			reply("220 go ahead")
			tc := tls.Server(c, s.tlsCfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			c = tc
			r, w = bufio.NewReader(tc), bufio.NewWriter(tc)
			cur = smtpMsg{tls: true}
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			b, err := base64.StdEncoding.DecodeString(resp)
			if mech != "PLAIN" || err != nil {
				reply("504 unsupported")
				continue
			}
			cur.auth = string(b)
			reply("235 ok")
		case "MAIL":
			cur.from = strings.Trim(strings.TrimPrefix(arg, "FROM:"), "<>")
			reply("250 ok")
		case "RCPT":
			cur.to = strings.Trim(strings.TrimPrefix(arg, "TO:"), "<>")
			if strings.HasPrefix(cur.to, "reject") {
				reply("550 no such mailbox")
				continue
			}
			reply("250 ok")
		case "DATA":
			reply("354 send")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			cur.data = data.String()
			s.mu.Lock()
			s.msgs = append(s.msgs, cur)
			s.mu.Unlock()
			cur = smtpMsg{tls: cur.tls, auth: cur.auth}
			reply("250 queued")
		case "RSET", "NOOP":
			reply("250 ok")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("500 what")
		}
	}
}

// selfSigned returns a server config and a client pool for 127.0.0.1.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test smtp"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func decodeBody(t *testing.T, data string) (*mail.Message, string) {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatalf("parse message: %v\n%s", err, data)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatal(err)
	}
	return m, string(body)
}

func TestSMTPMailerPlainAuth(t *testing.T) {
	srv := newSMTPServer(t, nil)
	m := &SMTPMailer{Addr: srv.ln.Addr().String(), From: "Weave <noreply@example.org>", Username: "u", Password: "p"}
	body := "Héllo,\nyour code is 0123456789abcdef0123456789abcdef\n" + strings.Repeat("long line ", 20) + "\n.\n"
	if err := m.Send(context.Background(), "alice@example.org", "Réinitialisation", body); err != nil {
		t.Fatal(err)
	}
	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("got %d messages", len(msgs))
	}
	got := msgs[0]
	if got.from != "noreply@example.org" || got.to != "alice@example.org" || got.auth != "\x00u\x00p" || got.tls {
		t.Fatalf("envelope %+v", got)
	}
	msg, text := decodeBody(t, got.data)
	if subj, _ := new(mimeDecoder).decode(msg.Header.Get("Subject")); subj != "Réinitialisation" {
		t.Errorf("subject %q", msg.Header.Get("Subject"))
	}
	if want := strings.ReplaceAll(body, "\n", "\r\n"); text != want {
		t.Errorf("body %q, want %q", text, want)
	}
	if msg.Header.Get("Message-Id") == "" || msg.Header.Get("Date") == "" {
		t.Errorf("headers %v", msg.Header)
	}
}

func TestSMTPMailerSTARTTLS(t *testing.T) {
	srvCfg, pool := selfSigned(t)
	srv := newSMTPServer(t, srvCfg)
	m := &SMTPMailer{
		Addr: srv.ln.Addr().String(), From: "noreply@example.org",
		Username: "u", Password: "p", RequireTLS: true,
		TLSConfig: &tls.Config{RootCAs: pool},
	}
	if err := m.Send(context.Background(), "bob@example.org", "s", "b"); err != nil {
		t.Fatal(err)
	}
	if msgs := srv.messages(); len(msgs) != 1 || !msgs[0].tls || msgs[0].auth != "\x00u\x00p" {
		t.Fatalf("messages %+v", msgs)
	}
	// An untrusted certificate fails the send.
	m.TLSConfig = nil
	if err := m.Send(context.Background(), "bob@example.org", "s", "b"); err == nil {
		t.Fatal("send with untrusted certificate succeeded")
	}
}

func TestSMTPMailerErrors(t *testing.T) {
	srv := newSMTPServer(t, nil)
	addr := srv.ln.Addr().String()
	ctx := context.Background()
	tests := []struct {
		name    string
		m       *SMTPMailer
		to, sub string
		header  bool
	}{
		{"bad to", &SMTPMailer{Addr: addr, From: "a@x"}, "not an address", "s", true},
		{"header injection", &SMTPMailer{Addr: addr, From: "a@x"}, "b@x", "s\r\nBcc: evil@x", true},
		{"bad from", &SMTPMailer{Addr: addr, From: ""}, "b@x", "s", true},
		{"rejected rcpt", &SMTPMailer{Addr: addr, From: "a@x"}, "reject@x", "s", false},
		{"require tls", &SMTPMailer{Addr: addr, From: "a@x", RequireTLS: true}, "b@x", "s", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Send(ctx, tt.to, tt.sub, "body")
			if err == nil || errors.Is(err, ErrMailHeader) != tt.header {
				t.Fatalf("err = %v (header=%v)", err, tt.header)
			}
		})
	}
	if n := len(srv.messages()); n != 0 {
		t.Fatalf("%d messages delivered", n)
	}

	// A server that never answers: ctx bounds the send.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := (&SMTPMailer{Addr: silent.Addr().String(), From: "a@x"}).Send(cctx, "b@x", "s", "b"); err == nil {
		t.Fatal("send to silent server succeeded")
	}
}

func TestLogMailer(t *testing.T) {
	var buf bytes.Buffer
	m := &LogMailer{Logger: slogTo(&buf)}
	if err := m.Send(context.Background(), "a@x", "subj", "code 1234"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "code 1234") || !strings.Contains(buf.String(), "a@x") {
		t.Fatalf("log %q", buf.String())
	}
}
