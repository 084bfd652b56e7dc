package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SiteVerifier is a CaptchaVerifier for the captcha services that check
// an answer with one form POST to a "siteverify" URL: the site's secret,
// the widget's response token and the client's IP address go in as the
// form fields secret, response and remoteip, and a JSON object whose
// boolean "success" is the verdict comes back. Google reCAPTCHA (v2,
// v3), hCaptcha and Cloudflare Turnstile all speak it; their verify URLs
// are in their documentation. The registration's "captcha-response"
// field carries the token ("captcha-challenge" is not used). The zero
// value is not usable: URL and Secret are required.
type SiteVerifier struct {
	// URL is the service's verify endpoint (https).
	URL string
	// Secret is the site's secret key.
	Secret string
	// Client makes the call. Default: a client with a 10 s timeout.
	Client *http.Client
}

var defaultVerifyClient = &http.Client{Timeout: 10 * time.Second}

// maxVerifyAnswer bounds the verify endpoint's answer that is read.
const maxVerifyAnswer = 64 << 10

// Verify implements CaptchaVerifier. An empty response is wrong without
// a call; a failed call, a non-200 answer or one that does not parse is
// an error (the registration is answered 503, not refused).
func (v *SiteVerifier) Verify(ctx context.Context, _, response, remoteAddr string) (bool, error) {
	if v.URL == "" || v.Secret == "" {
		return false, errors.New("api: SiteVerifier needs URL and Secret")
	}
	if response == "" {
		return false, nil
	}
	form := url.Values{"secret": {v.Secret}, "response": {response}}
	if remoteAddr != "" {
		form.Set("remoteip", remoteAddr)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.URL, strings.NewReader(form.Encode()))
	if err != nil {
		return false, fmt.Errorf("api: captcha verify: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	c := v.Client
	if c == nil {
		c = defaultVerifyClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, fmt.Errorf("api: captcha verify: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("api: captcha verify: %s", resp.Status)
	}
	var out struct {
		Success *bool `json:"success"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxVerifyAnswer)).Decode(&out); err != nil || out.Success == nil {
		return false, fmt.Errorf("api: captcha verify: answer without a success field (%v)", err)
	}
	return *out.Success, nil
}
