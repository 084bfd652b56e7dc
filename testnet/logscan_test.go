package testnet

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/client"
	"github.com/hce-sync/hce/api/testkit"
)

// lineBuffer collects log lines; safe for concurrent use.
type lineBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lineBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

// secret returns a random marker no code could log by accident.
func secret(kind string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return kind + "-" + hex.EncodeToString(b)
}

// TestLogsHoldNoSecrets runs a realistic session through an in-process
// testnet with every member logging at debug level and the access log on
// (issue 12: never a password, token, cookie or payload in any log line):
// registration, Basic and token requests, writes with payloads, a wrong
// password, a CouchDB read and a refused CouchDB edit, a password change
// and requests with the new password, an account deletion. It captures
// every line every member logs and scans them for the session's
// passwords (also as Basic credentials), tokens and payload strings. It
// also checks that the session logged no ERROR (a client's mistake is
// not the server's error) and that the access log named routes.
func TestLogsHoldNoSecrets(t *testing.T) {
	ctx := storyContext(t, 90*time.Second)
	var logs lineBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tn := storyNet(t, ctx, 2, func(c *Config) {
		c.Logger = logger
		c.HTTP = func(_ string, h *HTTPConfig) { h.Server.AccessLog = logger.With("log", "access") }
	})
	pw1, pw2, wrong := secret("first-password"), secret("second-password"), secret("wrong-password")
	var payloads []string
	for range 5 {
		payloads = append(payloads, secret("payload"))
	}
	_, dir := tn.Leader()
	c := newClient(t, dir, func(cc *client.Config) { cc.Password = pw1 })
	user := c.User()
	if err := c.Register(ctx); err != nil {
		t.Fatal(err)
	}
	recs := make([]client.Record, 0, 4)
	for i := range 4 {
		recs = append(recs, client.Record{ID: fmt.Sprintf("r%d", i), Payload: strp(payloads[i])})
	}
	storyPost(t, ctx, c, "bookmarks", recs)
	if _, err := c.Put(ctx, "tabs", client.Record{ID: "t1", Payload: strp(payloads[4])}, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Records(ctx, "bookmarks", client.Options{}); err != nil {
		t.Fatal(err)
	}

	tc := newClient(t, dir, func(cc *client.Config) { cc.Email, cc.Password, cc.UseTokens = c.Email(), pw1, true })
	grant, err := tc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []string{grant.Token}
	if _, _, err := tc.Get(ctx, "tabs", "t1"); err != nil {
		t.Fatal(err)
	}
	node := grant.Node

	// A wrong password, a CouchDB feed read and a CouchDB edit the
	// endpoint does not serve (501), each with credentials.
	call := func(method, url, auth, body string) int {
		req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Cookie", "session="+pw1)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call("GET", node+"1.1/"+user+"/info/collections", testkit.BasicAuth(user, wrong), ""); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	if code := call("GET", node+"couch/"+user+"/_changes?include_docs=true", "Bearer "+grant.Token, ""); code != 200 {
		t.Fatalf("couch changes: %d", code)
	}
	edit := fmt.Sprintf(`{"docs":[{"_id":"bookmarks/r9","payload":%q}]}`, payloads[0])
	if code := call("POST", node+"couch/"+user+"/_bulk_docs", testkit.BasicAuth(user, pw1), edit); code != 501 {
		t.Fatalf("couch new_edits=true: %d", code)
	}

	if err := c.ChangePassword(ctx, pw2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Get(ctx, "tabs", "t1"); err != nil {
		t.Fatalf("read with the new password: %v", err)
	}
	tc2 := newClient(t, dir, func(cc *client.Config) { cc.Email, cc.Password, cc.UseTokens = c.Email(), pw2, true })
	grant2, err := tc2.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tokens = append(tokens, grant2.Token)
	if _, _, err := tc2.Get(ctx, "bookmarks", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteAccount(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tn.Close(); err != nil {
		t.Fatal(err)
	}

	forbidden := map[string]string{"first password": pw1, "second password": pw2, "wrong password": wrong}
	for _, pw := range []string{pw1, pw2, wrong} {
		forbidden["Basic credentials of "+pw] = base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
	}
	for i, tok := range tokens {
		forbidden[fmt.Sprintf("token %d", i)] = tok
		// A token's signature alone is as good as a leak.
		if j := strings.LastIndexByte(tok, '.'); j > 0 {
			forbidden[fmt.Sprintf("token %d signature", i)] = tok[j+1:]
		}
	}
	for i, p := range payloads {
		forbidden[fmt.Sprintf("payload %d", i)] = p
	}
	lines := logs.lines()
	access := 0
	for _, line := range lines {
		for what, s := range forbidden {
			if strings.Contains(line, s) {
				t.Errorf("a log line holds the %s: %s", what, line)
			}
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON log line: %s", line)
			continue
		}
		if rec["level"] == "ERROR" {
			t.Errorf("the session logged an error: %s", line)
		}
		if rec["log"] == "access" {
			access++
			if r, _ := rec["route"].(string); strings.Contains(r, user) {
				t.Errorf("an access line names the raw path: %s", line)
			}
		}
	}
	if testing.Verbose() {
		for _, l := range lines {
			t.Log(l)
		}
	}
	t.Logf("scanned %d log lines (%d access lines) for %d secrets", len(lines), access, len(forbidden))
	if access < 10 || len(lines) < 50 {
		t.Fatalf("only %d lines (%d access lines): the scan saw too little", len(lines), access)
	}

}
