package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// failingAccounts answers every UserExists with err.
type failingAccounts struct {
	*fakeAccounts
	err error
}

func (a failingAccounts) UserExists(context.Context, string) (bool, error) { return false, a.err }

// TestRetryHints checks that a 503's Retry-After and X-Weave-Backoff come
// from the error (issue 11, finding 8: every 503 said 1800), and that the
// crash id is the platform's request id when there is one.
func TestRetryHints(t *testing.T) {
	blip := errors.New("backend timed out")
	tests := []struct {
		name        string
		err         error
		retry, back string // "" = header absent
		level       string
	}{
		{"no hint", blip, "10", "", "ERROR"},
		{"bare ErrUnavailable", ErrUnavailable, "10", "", "WARN"},
		{"wrapped ErrUnavailable", fmt.Errorf("dirclient: %w", ErrUnavailable), "10", "", "WARN"},
		{"election", Unavailable(blip, RetryElection), "5", "", "WARN"},
		{"busy", Busy(nil, RetryBusy), "10", "10", "WARN"},
		{"maintenance", Unavailable(nil, RetryMaintenance), "1800", "", "WARN"},
		{"wrapped hint", fmt.Errorf("outer: %w", Unavailable(blip, 2500*time.Millisecond)), "3", "", "WARN"},
		{"sub-second rounds up to 1", Unavailable(nil, time.Millisecond), "1", "", "WARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg := DefaultUserConfig()
			cfg.Accounts = failingAccounts{newFakeAccounts(), tt.err}
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			h, err := NewUserHandler(cfg)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/user/1.0/alice", nil)
			rec := httptest.NewRecorder()
			rec.Header().Set("X-Request-Id", "req-42")
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("status %d", rec.Code)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retry {
				t.Errorf("Retry-After %q, want %q", got, tt.retry)
			}
			if got := rec.Header().Get("X-Weave-Backoff"); got != tt.back {
				t.Errorf("X-Weave-Backoff %q, want %q", got, tt.back)
			}
			if !strings.Contains(rec.Body.String(), "crash id req-42") {
				t.Errorf("body %q does not name the request id", rec.Body.String())
			}
			line := logs.String()
			if !strings.Contains(line, "level="+tt.level) || !strings.Contains(line, "crash_id=req-42") || strings.Count(line, "\n") != 1 {
				t.Errorf("log %q: want one %s line with the crash id", line, tt.level)
			}
		})
	}
	if !errors.Is(Busy(nil, time.Second), ErrUnavailable) || !errors.Is(Unavailable(blip, time.Second), blip) {
		t.Fatal("RetryError does not match its causes")
	}
}

// TestCreateBodyCap checks that an account creation body, read before any
// authentication is possible, is capped at a few KB.
func TestCreateBodyCap(t *testing.T) {
	_, h := newUserFixture(t, nil)
	big := `{"password":"` + strings.Repeat("x", DefaultMaxCreateBodyBytes) + `"}`
	if r := doReq(h, "PUT", "/user/1.0/someone", big); r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized create body: %d %q", r.code, r.body)
	}
	// Without a declared length the cap holds while reading.
	req := httptest.NewRequest("PUT", "/user/1.0/someone", struct{ *strings.Reader }{strings.NewReader(big)})
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("streamed oversized create body: %d", rec.Code)
	}
}
