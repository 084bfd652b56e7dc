package directory

import (
	"context"
	"slices"
	"sync"
	"testing"
)

// TestCredentialsChanged checks that every committed change that
// invalidates credentials is announced, and nothing else is.
func TestCredentialsChanged(t *testing.T) {
	var mu sync.Mutex
	var got []string
	mailer := &captureMailer{}
	cfg := testConfig(t, t.TempDir())
	cfg.Accounts.Mailer = mailer
	cfg.Accounts.CredentialsChanged = func(user string) {
		mu.Lock()
		got = append(got, user)
		mu.Unlock()
	}
	d := openDir(t, cfg)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.CreateUser(ctx, "alice", "password-one", "alice@example.com"))
	must(d.CreateUser(ctx, "bob", "password-two", "bob@example.com"))
	must(d.SetEmail(ctx, "alice", "alice2@example.com"))
	must(d.SetPassword(ctx, "alice", "password-three"))
	must(d.RequestPasswordReset(ctx, "bob"))
	must(d.ResetPassword(ctx, "bob", mailer.lastCode(t, "bob@example.com"), "password-four"))
	must(d.DeleteUser(ctx, "alice"))
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"alice", "bob", "alice"}; !slices.Equal(got, want) {
		t.Fatalf("CredentialsChanged calls = %q, want %q", got, want)
	}
}
