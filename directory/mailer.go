package directory

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/url"
	"strings"
	"time"
)

// Mailer sends one plain-text e-mail. Implementations must be safe for
// concurrent use and must respect ctx. An error means the mail was not
// accepted for delivery.
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// LogMailer "sends" mail by logging it, body included, at INFO level.
// It is meant for development and tests only: in production the log would
// hold password reset codes. A nil Logger logs to slog.Default().
type LogMailer struct {
	Logger *slog.Logger
}

// Send logs the mail and never fails.
func (m *LogMailer) Send(ctx context.Context, to, subject, body string) error {
	l := m.Logger
	if l == nil {
		l = slog.Default()
	}
	l.InfoContext(ctx, "directory: mail (LogMailer, development only)", "to", to, "subject", subject, "body", body)
	return nil
}

// ErrMailHeader means a recipient, sender or subject would have broken
// the message headers (a line break, or an unparsable address).
var ErrMailHeader = errors.New("directory: invalid mail header value")

// SMTPMailer sends mail through an SMTP server with net/smtp. It upgrades
// the connection with STARTTLS whenever the server offers it, and
// authenticates with PLAIN when Username is set (net/smtp refuses PLAIN
// over an unencrypted connection except to localhost). The zero value is
// not usable: Addr and From are required. Each Send uses one connection.
type SMTPMailer struct {
	// Addr is the server's host:port, e.g. "smtp.example.org:587".
	Addr string
	// From is the envelope sender and From header, e.g.
	// "Weave <noreply@example.org>".
	From string
	// Username and Password enable AUTH PLAIN when Username is non-empty.
	Username, Password string
	// TLSConfig is used for STARTTLS; nil means a default config with
	// ServerName set to the host of Addr.
	TLSConfig *tls.Config
	// RequireTLS makes Send fail when the server does not offer STARTTLS.
	RequireTLS bool
	// HelloName is the name sent in EHLO. Default "localhost".
	HelloName string
	// Timeout bounds a whole Send when ctx has no earlier deadline.
	// Default 30 s.
	Timeout time.Duration
}

// Send delivers one message to a single recipient.
func (m *SMTPMailer) Send(ctx context.Context, to, subject, body string) (err error) {
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return fmt.Errorf("%w: from %q: %v", ErrMailHeader, m.From, err)
	}
	rcpt, err := mail.ParseAddress(to)
	if err != nil {
		return fmt.Errorf("%w: to %q: %v", ErrMailHeader, to, err)
	}
	if strings.ContainsAny(subject, "\r\n") {
		return fmt.Errorf("%w: subject contains a line break", ErrMailHeader)
	}
	msg, err := buildMessage(from, rcpt, subject, body)
	if err != nil {
		return err
	}

	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host, _, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return fmt.Errorf("directory: smtp addr %q: %w", m.Addr, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m.Addr)
	if err != nil {
		return fmt.Errorf("directory: smtp dial: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Unblock any read or write when ctx ends early.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("directory: smtp greeting: %w", err)
	}
	defer func() {
		if err != nil {
			c.Close()
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
		}
	}()
	hello := m.HelloName
	if hello == "" {
		hello = "localhost"
	}
	if err := c.Hello(hello); err != nil {
		return fmt.Errorf("directory: smtp EHLO: %w", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		cfg := m.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		if err := c.StartTLS(cfg); err != nil {
			return fmt.Errorf("directory: smtp STARTTLS: %w", err)
		}
	} else if m.RequireTLS {
		return errors.New("directory: smtp server does not offer STARTTLS")
	}
	if m.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.Username, m.Password, host)); err != nil {
			return fmt.Errorf("directory: smtp AUTH: %w", err)
		}
	}
	if err := c.Mail(from.Address); err != nil {
		return fmt.Errorf("directory: smtp MAIL FROM: %w", err)
	}
	if err := c.Rcpt(rcpt.Address); err != nil {
		return fmt.Errorf("directory: smtp RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("directory: smtp DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("directory: smtp message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("directory: smtp message: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("directory: smtp QUIT: %w", err)
	}
	return nil
}

// resetMail renders the mail carrying a password reset code; with
// resetURL set it also holds a link to the reset page.
func resetMail(resetURL, user, code string, expires time.Time) (subject, body string) {
	var b strings.Builder
	fmt.Fprintf(&b, "Someone (hopefully you) asked to reset the password of the Weave account %q.\n\n", user)
	fmt.Fprintf(&b, "Your reset code is: %s\n", code)
	if resetURL != "" {
		sep := "?"
		if strings.Contains(resetURL, "?") {
			sep = "&"
		}
		fmt.Fprintf(&b, "Or open: %s%susername=%s&key=%s\n", resetURL, sep, url.QueryEscape(user), code)
	}
	fmt.Fprintf(&b, "\nThe code expires at %s. If you did not ask for this, ignore this mail.\n",
		expires.UTC().Format(time.RFC1123))
	return "Weave password reset", b.String()
}

// buildMessage renders a text/plain UTF-8 message with quoted-printable
// body and an RFC 2047 encoded subject.
func buildMessage(from, to *mail.Address, subject, body string) ([]byte, error) {
	var id [12]byte
	_, _ = rand.Read(id[:])
	domain := "localhost"
	if _, d, ok := strings.Cut(from.Address, "@"); ok && d != "" {
		domain = d
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", from.String())
	fmt.Fprintf(&b, "To: %s\r\n", to.String())
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", subject))
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", hex.EncodeToString(id[:]), domain)
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n"))); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	return b.Bytes(), nil
}
