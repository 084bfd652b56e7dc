package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
)

// TestRegistrationPolicyCLI runs `hce directory --registration invite`
// and drives it with `hce admin`: without a code registration is refused
// (403), `hce admin invite` makes a code that admits one account, the
// admin secret bypasses the policy, and `hce admin settings` shows and
// changes the node capacity limits (10,000 per node by default).
func TestRegistrationPolicyCLI(t *testing.T) {
	const token = "cli-test-admin-token-registration"
	_, voter := cliDirectory(t, token)
	url := voter("d1", "--bootstrap", "--registration", "invite", "--admin-secret", "cli-admin-secret")
	ctx := context.Background()
	admin := func(args ...string) []byte {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, append([]string{"admin", "--json", "--directory", url, "--token", token}, args...), &out, &out); err != nil {
			t.Fatalf("hce admin %v: %v %s", args, err, out.String())
		}
		return out.Bytes()
	}
	c := &http.Client{Timeout: 30 * time.Second}
	register := func(email, invite string, secret bool) int {
		body := fmt.Sprintf(`{"password":"cli-password-1","email":%q,"invite":%q}`, email, invite)
		req, _ := http.NewRequest("PUT", url+"user/1.0/"+api.AccountName(email), strings.NewReader(body))
		if secret {
			req.Header.Set("X-Weave-Secret", "cli-admin-secret")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testkit.Eventually(t, 30*time.Second, func() string {
		if code := register("nobody@example.com", "", false); code != 403 {
			return fmt.Sprintf("registration without an invite: %d", code)
		}
		return ""
	})
	var inv struct{ Code string }
	if err := json.Unmarshal(admin("invite", "--ttl", "24h"), &inv); err != nil || len(inv.Code) != 32 {
		t.Fatalf("hce admin invite: %+v %v", inv, err)
	}
	if code := register("a@example.com", inv.Code, false); code != 200 {
		t.Fatalf("registration with the invite: %d", code)
	}
	if code := register("b@example.com", inv.Code, false); code != 403 {
		t.Fatalf("second registration with the invite: %d", code)
	}
	if code := register("b@example.com", "", true); code != 200 {
		t.Fatalf("registration with the admin secret: %d", code)
	}
	var s struct {
		MaxNode int  `json:"max_node_capacity"`
		Auto    bool `json:"auto_approve"`
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		if err := json.Unmarshal(admin("settings"), &s); err != nil || s.MaxNode != 10000 || s.Auto {
			return fmt.Sprintf("settings %+v %v", s, err)
		}
		return ""
	})
	admin("settings", "set", "max_node_capacity=500")
	if err := json.Unmarshal(admin("settings"), &s); err != nil || s.MaxNode != 500 {
		t.Fatalf("settings after set: %+v %v", s, err)
	}
	// A mail server without a sender is refused at start.
	var out bytes.Buffer
	err := run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--smtp-host", "127.0.0.1"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "--smtp-from") {
		t.Fatalf("serve with --smtp-host and no --smtp-from: %v", err)
	}
}
