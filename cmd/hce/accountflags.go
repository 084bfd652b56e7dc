package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory"
	"github.com/hce-sync/hce/testnet"
)

// accountFlags are the flags of a public service's account policy, the
// same on the processes that serve the Weave user API (directory, serve):
// who may register, the captcha, and how reset codes are mailed.
type accountFlags struct {
	registration                         *string
	adminSecret                          *string // nil where the command has its own
	captchaURL, captchaSecretFile        *string
	captchaSiteKey, captchaHTMLFile      *string
	smtpHost, smtpUser, smtpPassword     *string
	smtpPasswordFile, smtpFrom, smtpHelo *string
	smtpPort                             *int
	smtpStartTLS                         *bool
	resetURL                             *string
	maxNodeCapacity, maxOperatorCapacity *int // directory only
	withAdmission                        bool
}

// addAccountFlags registers the account-policy flags on fs; withSecret
// adds --admin-secret, withAdmission the node capacity limits (a voter's).
func addAccountFlags(fs *flag.FlagSet, withSecret, withAdmission bool) *accountFlags {
	f := &accountFlags{
		registration:      fs.String("registration", "open", "who may create accounts: open, closed (only with the admin secret) or invite (with a code from 'hce admin invite', or the admin secret)"),
		captchaURL:        fs.String("captcha-verify-url", "", "verify URL of a captcha service speaking the siteverify protocol (reCAPTCHA, hCaptcha, Turnstile); turns captchas on for registrations and reset requests"),
		captchaSecretFile: fs.String("captcha-secret-file", "", "file holding the captcha service's secret key (env HCE_CAPTCHA_SECRET instead)"),
		captchaSiteKey:    fs.String("captcha-site-key", "", "the captcha service's site key, put into /misc/1.0/captcha_html"),
		captchaHTMLFile:   fs.String("captcha-html-file", "", "HTML served at /misc/1.0/captcha_html (the service's widget); default: reCAPTCHA v1 markup with --captcha-site-key"),
		smtpHost:          fs.String("smtp-host", "", "SMTP server for password-reset mail; without it reset codes are written to the log (development only)"),
		smtpPort:          fs.Int("smtp-port", 587, "SMTP server port"),
		smtpUser:          fs.String("smtp-user", "", "SMTP user name (AUTH PLAIN, only over TLS or to localhost)"),
		smtpPassword:      fs.String("smtp-password", "", "SMTP password (prefer --smtp-password-file or env HCE_SMTP_PASSWORD: flags show in ps)"),
		smtpPasswordFile:  fs.String("smtp-password-file", "", "file holding the SMTP password"),
		smtpFrom:          fs.String("smtp-from", "", "sender of reset mail, e.g. 'Sync <noreply@example.org>' (required with --smtp-host)"),
		smtpHelo:          fs.String("smtp-helo", "", "name sent in EHLO (default localhost)"),
		smtpStartTLS:      fs.Bool("smtp-starttls", true, "require STARTTLS (a server that does not offer it gets no mail); false still upgrades when offered"),
		resetURL:          fs.String("reset-url", "", "base URL of the password-reset form put into reset mails (e.g. https://sync.example.org/weave-password-reset)"),
		withAdmission:     withAdmission,
	}
	if withSecret {
		f.adminSecret = fs.String("admin-secret", "", "X-Weave-Secret value that bypasses the captcha and the registration policy (env HCE_ADMIN_SECRET)")
	}
	if withAdmission {
		f.maxNodeCapacity = fs.Int("max-node-capacity", testnet.DefaultMaxNodeCapacity, "most users placement counts for one storage node, whatever it declares (-1: no cap)")
		f.maxOperatorCapacity = fs.Int("max-operator-capacity", testnet.DefaultMaxOperatorCapacity, "most users placement counts for all the nodes of one operator together (-1: no cap)")
	}
	return f
}

// readSecret returns the first line of file, or env's value when file is
// empty.
func readSecret(file, env string) (string, error) {
	if file == "" {
		return os.Getenv(env), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	s, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(s), nil
}

// directory maps the flags onto the directory configuration (its
// Accounts, which also configure the user API), reading the secret files
// now so that a missing one fails the start.
func (f *accountFlags) directory() (func(*directory.Config), error) {
	reg, err := api.ParseRegistration(*f.registration)
	if err != nil {
		return nil, fmt.Errorf("--registration: %w", err)
	}
	var captcha api.CaptchaVerifier
	var captchaHTML string
	if *f.captchaURL != "" {
		secret, err := readSecret(*f.captchaSecretFile, "HCE_CAPTCHA_SECRET")
		if err != nil {
			return nil, fmt.Errorf("--captcha-secret-file: %w", err)
		}
		if secret == "" {
			return nil, errors.New("--captcha-verify-url needs the service's secret: --captcha-secret-file or HCE_CAPTCHA_SECRET")
		}
		captcha = &api.SiteVerifier{URL: *f.captchaURL, Secret: secret}
		if *f.captchaHTMLFile != "" {
			b, err := os.ReadFile(*f.captchaHTMLFile)
			if err != nil {
				return nil, fmt.Errorf("--captcha-html-file: %w", err)
			}
			captchaHTML = string(b)
		}
	}
	var mailer directory.Mailer
	if *f.smtpHost != "" {
		if *f.smtpFrom == "" {
			return nil, errors.New("--smtp-host needs --smtp-from")
		}
		pw := *f.smtpPassword
		if pw == "" {
			if pw, err = readSecret(*f.smtpPasswordFile, "HCE_SMTP_PASSWORD"); err != nil {
				return nil, fmt.Errorf("--smtp-password-file: %w", err)
			}
		}
		mailer = &directory.SMTPMailer{
			Addr: net.JoinHostPort(*f.smtpHost, strconv.Itoa(*f.smtpPort)), From: *f.smtpFrom,
			Username: *f.smtpUser, Password: pw, RequireTLS: *f.smtpStartTLS, HelloName: *f.smtpHelo,
		}
	}
	secret := ""
	if f.adminSecret != nil {
		secret = *f.adminSecret
		if secret == "" {
			secret = os.Getenv("HCE_ADMIN_SECRET")
		}
	}
	return func(c *directory.Config) {
		a := &c.Accounts
		a.Registration = reg
		a.Captcha, a.CaptchaSiteKey, a.CaptchaHTML = captcha, *f.captchaSiteKey, captchaHTML
		if mailer != nil {
			a.Mailer = mailer
		}
		if *f.resetURL != "" {
			a.ResetURL = *f.resetURL
		}
		if secret != "" {
			a.AdminSecret = secret
		}
	}, nil
}

// capacities returns the capacity limits for testnet.VoterConfig.
func (f *accountFlags) capacities() (node, operator int) {
	if !f.withAdmission {
		return 0, 0
	}
	return *f.maxNodeCapacity, *f.maxOperatorCapacity
}
