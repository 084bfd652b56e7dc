package couch

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
)

// mutableDir is the directory reduced to one account whose password and
// credential generation a test changes.
type mutableDir struct {
	mu  sync.Mutex
	pw  string
	gen uint64
}

func (d *mutableDir) CheckPassword(_ context.Context, user, password string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if user == alice && password == d.pw {
		return nil
	}
	return api.ErrUnauthorized
}

func (d *mutableDir) Credentials(context.Context, string) (api.CredentialState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return api.CredentialState{Exists: true, Gen: d.gen}, nil
}

func (d *mutableDir) change(pw string) {
	d.mu.Lock()
	d.pw, d.gen = pw, d.gen+1
	d.mu.Unlock()
}

// TestFeedEndsOnRevocation: a continuous _changes feed opened with a
// password ends when the password changes: at once when the node is told
// (the account event's Forget), and within Config.Recheck when it is not
// (the event lost: the credential generation changed at the directory).
// The old password then opens no feed.
func TestFeedEndsOnRevocation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(a *node.Authenticator, d *mutableDir)
	}{
		{"account event", func(a *node.Authenticator, d *mutableDir) { d.change("new-pw"); a.Forget(alice) }},
		{"event lost", func(_ *node.Authenticator, d *mutableDir) { d.change("new-pw") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := &mutableDir{pw: alicePW, gen: 1}
			a, err := node.NewAuthenticator(node.AuthConfig{Checker: dir, Credentials: dir})
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, func(c *Config) { c.Auth, c.Recheck = a, 100*time.Millisecond })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/alice/_changes?feed=continuous&heartbeat=20&timeout=60000", nil)
			req.Header.Set("Authorization", basicAuth(alice, alicePW))
			res, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("feed: %d", res.StatusCode)
			}
			rd := bufio.NewReader(res.Body)
			if _, err := rd.ReadByte(); err != nil { // a heartbeat: the feed is open
				t.Fatal(err)
			}
			revoked := time.Now()
			tc.revoke(a, dir)
			ended := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, rd)
				ended <- err
			}()
			select {
			case err := <-ended:
				if err != nil {
					t.Fatalf("feed ended with %v", err)
				}
				t.Logf("feed ended %v after the revocation", time.Since(revoked).Round(time.Millisecond))
			case <-time.After(5 * time.Second):
				t.Fatal("feed still open 5 s after the revocation")
			}
			r := e.do(t, "GET", "/alice/_changes?feed=continuous&timeout=100", nil)
			if r.status != http.StatusUnauthorized {
				t.Fatalf("old password opened a feed: %d", r.status)
			}
		})
	}
}

// throttledAuth refuses every check with a back-off.
type throttledAuth struct{}

func (throttledAuth) Authenticate(context.Context, string, api.Credentials) error {
	return api.TooManyRequests(nil, 3*time.Second)
}

// TestThrottledLogin: a login the directory holds back is a 429 with
// Retry-After on the CouchDB endpoint, not a 401 or 503.
func TestThrottledLogin(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Auth = throttledAuth{} })
	r := e.do(t, "GET", "/alice", nil)
	wantError(t, r, http.StatusTooManyRequests, "too_many_requests")
	if r.header.Get("Retry-After") != "3" {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
}
