package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/testkit"
	"github.com/hce-sync/hce/directory/state"
)

// cheapHash keeps argon2 fast in tests.
var cheapHash = HashParams{Time: 1, MemoryKiB: 64, Threads: 1}

func testConfig(t testing.TB, dir string) Config {
	cfg := Config{Dir: dir, Logger: testkit.Logger(t, slog.LevelWarn)}
	cfg.Accounts.NodeURL = "http://node1.example:8080"
	cfg.Accounts.PasswordHash = cheapHash
	cfg.Raft.HeartbeatTimeout = 50 * time.Millisecond
	cfg.Raft.ElectionTimeout = 50 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.Raft.CommitTimeout = 5 * time.Millisecond
	return cfg
}

func openDir(t testing.TB, cfg Config) *Directory {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

type sentMail struct{ to, subject, body string }

// captureMailer records mails; it fails with err when set.
type captureMailer struct {
	mu    sync.Mutex
	mails []sentMail
	err   error
}

func (m *captureMailer) Send(ctx context.Context, to, subject, body string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.mails = append(m.mails, sentMail{to, subject, body})
	return nil
}

var codeRE = regexp.MustCompile(`\b[0-9a-f]{32}\b`)

func (m *captureMailer) lastCode(t *testing.T, to string) string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.mails) == 0 {
		t.Fatal("no mail sent")
	}
	last := m.mails[len(m.mails)-1]
	if last.to != to {
		t.Fatalf("mail to %q, want %q", last.to, to)
	}
	code := codeRE.FindString(last.body)
	if code == "" {
		t.Fatalf("no code in mail body %q", last.body)
	}
	return code
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil && err != nil || !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func TestAccountLifecycle(t *testing.T) {
	ctx := context.Background()
	mailer := &captureMailer{}
	cfg := testConfig(t, t.TempDir())
	cfg.Accounts.Mailer = mailer
	cfg.Accounts.Resets.PerAccount = 10 // this test asks for many
	d := openDir(t, cfg)

	ok, err := d.UserExists(ctx, "alice")
	if err != nil || ok {
		t.Fatalf("UserExists before create = %v, %v", ok, err)
	}
	wantErr(t, "create", d.CreateUser(ctx, "alice", "correct horse", "alice@example.org"), nil)
	wantErr(t, "create again", d.CreateUser(ctx, "alice", "other password", ""), api.ErrUserExists)
	if ok, err := d.UserExists(ctx, "alice"); err != nil || !ok {
		t.Fatalf("UserExists = %v, %v", ok, err)
	}
	node, err := d.StorageNode(ctx, "alice")
	if err != nil || node != "http://node1.example:8080/" {
		t.Fatalf("StorageNode = %q, %v", node, err)
	}
	_, err = d.StorageNode(ctx, "nobody")
	wantErr(t, "StorageNode unknown", err, api.ErrUserNotFound)

	wantErr(t, "check", d.CheckPassword(ctx, "alice", "correct horse"), nil)
	wantErr(t, "check wrong", d.CheckPassword(ctx, "alice", "correct horsE"), api.ErrUnauthorized)
	wantErr(t, "check unknown", d.CheckPassword(ctx, "nobody", "correct horse"), api.ErrUnauthorized)

	wantErr(t, "set email", d.SetEmail(ctx, "alice", "alice2@example.org"), nil)
	wantErr(t, "set email unknown", d.SetEmail(ctx, "nobody", "x@example.org"), api.ErrUserNotFound)
	wantErr(t, "set password", d.SetPassword(ctx, "alice", "battery staple"), nil)
	wantErr(t, "set password unknown", d.SetPassword(ctx, "nobody", "battery staple"), api.ErrUserNotFound)
	wantErr(t, "old password", d.CheckPassword(ctx, "alice", "correct horse"), api.ErrUnauthorized)
	wantErr(t, "new password", d.CheckPassword(ctx, "alice", "battery staple"), nil)

	// Reset flow: the code goes to the current address.
	wantErr(t, "request reset", d.RequestPasswordReset(ctx, "alice"), nil)
	code := mailer.lastCode(t, "alice2@example.org")
	wantErr(t, "reset bad code", d.ResetPassword(ctx, "alice", "0123456789abcdef0123456789abcdef", "new pass 1"), api.ErrBadResetCode)
	wantErr(t, "reset empty code", d.ResetPassword(ctx, "alice", "", "new pass 1"), api.ErrBadResetCode)
	wantErr(t, "reset unknown user", d.ResetPassword(ctx, "nobody", code, "new pass 1"), api.ErrUserNotFound)
	wantErr(t, "reset", d.ResetPassword(ctx, "alice", " "+code+"\n", "new pass 1"), nil)
	wantErr(t, "check after reset", d.CheckPassword(ctx, "alice", "new pass 1"), nil)
	wantErr(t, "reuse code", d.ResetPassword(ctx, "alice", code, "new pass 2"), api.ErrBadResetCode)

	// A new request replaces the old code; clearing drops it.
	wantErr(t, "request reset 2", d.RequestPasswordReset(ctx, "alice"), nil)
	code1 := mailer.lastCode(t, "alice2@example.org")
	wantErr(t, "request reset 3", d.RequestPasswordReset(ctx, "alice"), nil)
	code2 := mailer.lastCode(t, "alice2@example.org")
	wantErr(t, "replaced code", d.ResetPassword(ctx, "alice", code1, "new pass 2"), api.ErrBadResetCode)
	wantErr(t, "clear", d.ClearPasswordReset(ctx, "alice"), nil)
	wantErr(t, "cleared code", d.ResetPassword(ctx, "alice", code2, "new pass 2"), api.ErrBadResetCode)
	wantErr(t, "clear unknown", d.ClearPasswordReset(ctx, "nobody"), api.ErrUserNotFound)

	// Changing the password drops a pending code.
	wantErr(t, "request reset 4", d.RequestPasswordReset(ctx, "alice"), nil)
	code3 := mailer.lastCode(t, "alice2@example.org")
	wantErr(t, "set password 2", d.SetPassword(ctx, "alice", "battery staple 2"), nil)
	wantErr(t, "code after password change", d.ResetPassword(ctx, "alice", code3, "x2345678"), api.ErrBadResetCode)

	wantErr(t, "reset unknown", d.RequestPasswordReset(ctx, "nobody"), api.ErrUserNotFound)
	wantErr(t, "create bob", d.CreateUser(ctx, "bob", "bobs password", ""), nil)
	wantErr(t, "reset no email", d.RequestPasswordReset(ctx, "bob"), api.ErrNoEmail)

	mailer.mu.Lock()
	mailer.err = errors.New("smtp down")
	mailer.mu.Unlock()
	wantErr(t, "reset mail failure", d.RequestPasswordReset(ctx, "alice"), api.ErrUnavailable)

	wantErr(t, "delete", d.DeleteUser(ctx, "alice"), nil)
	wantErr(t, "delete again", d.DeleteUser(ctx, "alice"), api.ErrUserNotFound)
	if ok, _ := d.UserExists(ctx, "alice"); ok {
		t.Fatal("alice exists after delete")
	}
	wantErr(t, "check deleted", d.CheckPassword(ctx, "alice", "battery staple 2"), api.ErrUnauthorized)
	_, err = d.StorageNode(ctx, "alice")
	wantErr(t, "node deleted", err, api.ErrUserNotFound)
	wantErr(t, "recreate", d.CreateUser(ctx, "alice", "fresh password", ""), nil)
}

func TestResetCodeExpires(t *testing.T) {
	ctx := context.Background()
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix())
	mailer := &captureMailer{}
	cfg := testConfig(t, t.TempDir())
	cfg.Accounts.Mailer = mailer
	cfg.Accounts.ResetCodeTTL = time.Hour
	cfg.Clock = func() time.Time { return time.Unix(now.Load(), 0) }
	d := openDir(t, cfg)

	wantErr(t, "create", d.CreateUser(ctx, "u", "password1", "u@example.org"), nil)
	wantErr(t, "request", d.RequestPasswordReset(ctx, "u"), nil)
	code := mailer.lastCode(t, "u@example.org")
	now.Add(3600)
	wantErr(t, "expired", d.ResetPassword(ctx, "u", code, "password2"), api.ErrBadResetCode)
	now.Add(-1)
	wantErr(t, "last second", d.ResetPassword(ctx, "u", code, "password2"), nil)
	wantErr(t, "check", d.CheckPassword(ctx, "u", "password2"), nil)
}

func TestNonASCIIPasswords(t *testing.T) {
	ctx := context.Background()
	d := openDir(t, testConfig(t, t.TempDir()))
	for i, pw := range []string{"ééééééééé", "пароль-секрет", "密码密码密码", "🔑🔑🔑🔑", "tab\tand\x00nul"} {
		user := fmt.Sprintf("u%d", i)
		wantErr(t, "create "+pw, d.CreateUser(ctx, user, pw, ""), nil)
		wantErr(t, "check "+pw, d.CheckPassword(ctx, user, pw), nil)
		wantErr(t, "check mangled "+pw, d.CheckPassword(ctx, user, pw[:len(pw)-1]), api.ErrUnauthorized)
	}
	// A NFC/NFD difference is a different password: bytes are hashed as given.
	wantErr(t, "create nfc", d.CreateUser(ctx, "nfc", "caf\u00e9-caf\u00e9", ""), nil)
	wantErr(t, "check nfd", d.CheckPassword(ctx, "nfc", "cafe\u0301-cafe\u0301"), api.ErrUnauthorized)
}

func TestConcurrentCreateCoalesced(t *testing.T) {
	ctx := context.Background()
	d := openDir(t, testConfig(t, t.TempDir()))
	const n = 200
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		errs    = make([]error, n)
		dupWins atomic.Int32
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = d.CreateUser(ctx, fmt.Sprintf("user%03d", i), fmt.Sprintf("password %d", i), "")
		}()
	}
	// Eight goroutines race for one name: exactly one wins.
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			switch err := d.CreateUser(ctx, "contested", "password x", ""); {
			case err == nil:
				dupWins.Add(1)
			case !errors.Is(err, api.ErrUserExists):
				t.Errorf("contested create: %v", err)
			}
		}()
	}
	before := d.Stats()
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create user%03d: %v", i, err)
		}
	}
	if dupWins.Load() != 1 {
		t.Fatalf("contested name created %d times", dupWins.Load())
	}
	st := d.Stats()
	if st.Users != n+1 {
		t.Fatalf("users = %d, want %d", st.Users, n+1)
	}
	batches, cmds := st.Batches-before.Batches, st.Commands-before.Commands
	t.Logf("%d commands in %d raft entries", cmds, batches)
	if batches >= cmds {
		t.Fatalf("no coalescing: %d commands in %d entries", cmds, batches)
	}
	for i := 0; i < n; i += 37 {
		wantErr(t, "check", d.CheckPassword(ctx, fmt.Sprintf("user%03d", i), fmt.Sprintf("password %d", i)), nil)
	}
}

// populate makes a state that exercises every field.
func populate(t *testing.T, d *Directory, prefix string, mailer *captureMailer) (resetUser, code string) {
	t.Helper()
	ctx := context.Background()
	for i := range 20 {
		wantErr(t, "create", d.CreateUser(ctx, fmt.Sprintf("%s%02d", prefix, i), "pw-"+prefix+fmt.Sprint(i), fmt.Sprintf("%s%d@example.org", prefix, i)), nil)
	}
	wantErr(t, "delete", d.DeleteUser(ctx, prefix+"03"), nil)
	wantErr(t, "email", d.SetEmail(ctx, prefix+"04", "changed@example.org"), nil)
	wantErr(t, "password", d.SetPassword(ctx, prefix+"05", "changed password"), nil)
	wantErr(t, "reset", d.RequestPasswordReset(ctx, prefix+"06"), nil)
	return prefix + "06", mailer.lastCode(t, prefix+"6@example.org")
}

func checkPopulated(t *testing.T, d *Directory, prefix, resetUser, code string) {
	t.Helper()
	ctx := context.Background()
	for i := range 20 {
		u := fmt.Sprintf("%s%02d", prefix, i)
		ok, _ := d.UserExists(ctx, u)
		if ok != (i != 3) {
			t.Fatalf("%s exists = %v", u, ok)
		}
	}
	wantErr(t, "old password", d.CheckPassword(ctx, prefix+"00", "pw-"+prefix+"0"), nil)
	wantErr(t, "changed password", d.CheckPassword(ctx, prefix+"05", "changed password"), nil)
	if node, err := d.StorageNode(ctx, prefix+"07"); err != nil || node != "http://node1.example:8080/" {
		t.Fatalf("node = %q, %v", node, err)
	}
	a, _ := d.state.Account(prefix + "04")
	if a.Email != "changed@example.org" || a.Created == 0 {
		t.Fatalf("account %+v", a)
	}
	// The pending reset code survived: it still works, exactly once.
	wantErr(t, "reset after restart", d.ResetPassword(ctx, resetUser, code, "after restart"), nil)
	wantErr(t, "check reset", d.CheckPassword(ctx, resetUser, "after restart"), nil)
}

func TestRestartRestoresState(t *testing.T) {
	dir := t.TempDir()
	mailer := &captureMailer{}
	cfg := testConfig(t, dir)
	cfg.Accounts.Mailer = mailer
	open := func() *Directory {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		d, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// 1. From log replay only.
	d := open()
	ru, code := populate(t, d, "log", mailer)
	if snaps, _ := d.stores.snaps.List(); len(snaps) != 0 {
		t.Fatalf("unexpected snapshots %v", snaps)
	}
	before := d.Stats().Users
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = open()
	if got := d.Stats().Users; got != before {
		t.Fatalf("users after replay = %d, want %d", got, before)
	}
	checkPopulated(t, d, "log", ru, code)

	// 2. From a snapshot plus the log after it.
	ru2, code2 := populate(t, d, "snap", mailer)
	if err := d.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	snaps, err := d.stores.snaps.List()
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots = %v, %v", snaps, err)
	}
	ru3, code3 := populate(t, d, "tail", mailer)
	before = d.Stats().Users
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = open()
	defer d.Close()
	if got := d.Stats().Users; got != before {
		t.Fatalf("users after snapshot restore = %d, want %d", got, before)
	}
	checkPopulated(t, d, "snap", ru2, code2)
	checkPopulated(t, d, "tail", ru3, code3)
	a, _ := d.state.Account("log00")
	if a.Name != "log00" {
		t.Fatal("state from before the first restart lost")
	}
}

func TestRestartFromSnapshotOnClose(t *testing.T) {
	dir := t.TempDir()
	mailer := &captureMailer{}
	cfg := testConfig(t, dir)
	cfg.Accounts.Mailer = mailer
	cfg.Raft.SnapshotOnClose = true
	d := openDir(t, cfg)
	ru, code := populate(t, d, "c", mailer)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openDir(t, cfg)
	if snaps, _ := d.stores.snaps.List(); len(snaps) != 1 {
		t.Fatalf("snapshots after close = %d, want 1", len(snaps))
	}
	checkPopulated(t, d, "c", ru, code)
}

func TestContextAndClose(t *testing.T) {
	d := openDir(t, testConfig(t, t.TempDir()))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	wantErr(t, "create cancelled", d.CreateUser(cancelled, "x", "password", ""), context.Canceled)
	wantErr(t, "check cancelled", d.CheckPassword(cancelled, "x", "password"), context.Canceled)
	if ok, _ := d.UserExists(context.Background(), "x"); ok {
		t.Fatal("cancelled create was applied")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	wantErr(t, "create closed", d.CreateUser(ctx, "y", "password", ""), ErrClosed)
	wantErr(t, "delete closed", d.DeleteUser(ctx, "y"), ErrClosed)
	_, err := d.UserExists(ctx, "y")
	wantErr(t, "exists closed", err, ErrClosed)
}

func TestOpenRespectsContext(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	// Slow elections: the context ends before leadership.
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout = 10*time.Second, 10*time.Second
	cfg.Raft.LeaderLeaseTimeout, cfg.Raft.CommitTimeout = 0, 0
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if d, err := Open(ctx, cfg); !errors.Is(err, context.DeadlineExceeded) {
		if d != nil {
			d.Close()
		}
		t.Fatalf("Open = %v, want deadline exceeded", err)
	}
	// The folder is usable afterwards (the bolt file was closed).
	openDir(t, testConfig(t, cfg.Dir))
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no dir", func(c *Config) { c.Dir = "" }, false},
		{"node url without slash", func(c *Config) { c.Accounts.NodeURL = "https://n.example" }, true},
		{"node url relative", func(c *Config) { c.Accounts.NodeURL = "n.example/" }, false},
		{"node url ftp", func(c *Config) { c.Accounts.NodeURL = "ftp://n.example/" }, false},
		{"reset url relative", func(c *Config) { c.Accounts.ResetURL = "/reset" }, false},
		{"tiny salt", func(c *Config) { c.Accounts.PasswordHash.SaltLen = 4 }, false},
		{"huge argon2 time", func(c *Config) { c.Accounts.PasswordHash.Time = 1000 }, false},
		{"lease above heartbeat", func(c *Config) {
			c.Raft.HeartbeatTimeout, c.Raft.LeaderLeaseTimeout = time.Second, 2*time.Second
		}, false},
		{"batch too big", func(c *Config) { c.Raft.MaxBatch = 5000 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Dir = "/tmp/x"
			tt.mod(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if got := (Config{Accounts: AccountConfig{NodeURL: "http://a"}}).withDefaults().Accounts.NodeURL; got != "http://a/" {
		t.Fatalf("NodeURL normalised to %q", got)
	}
}

// BenchmarkCreateUser measures registrations per second through raft with
// fsync on (cheap argon2 parameters, so raft and bolt dominate).
func BenchmarkCreateUser(b *testing.B) {
	cfg := testConfig(b, b.TempDir())
	d := openDir(b, cfg)
	ctx := context.Background()
	var seq atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := d.CreateUser(ctx, fmt.Sprintf("bench%d", seq.Add(1)), "benchmark password", ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	st := d.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "registrations/s")
	if st.Batches > 0 {
		b.ReportMetric(float64(st.Commands)/float64(st.Batches), "cmds/entry")
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	leaks := testkit.NoLeaks(t)
	cfg := testConfig(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = d.CreateUser(ctx, fmt.Sprintf("g%d", i), "password", "")
		}()
	}
	wg.Wait()
	if err := d.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	leaks()
}

func TestUnknownEntryThroughRaft(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d := openDir(t, cfg)
	ctx := context.Background()
	wantErr(t, "create", d.CreateUser(ctx, "before", "password", ""), nil)
	f := d.raft.Apply([]byte{byte(state.CmdCreateUser), 9, '{', '}'}, time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	var ue *state.UnknownCommandError
	if err, _ := f.Response().(error); !errors.As(err, &ue) || ue.Version != 9 {
		t.Fatalf("response %#v, want UnknownCommandError", f.Response())
	}
	if n := d.Stats().UndecodableEntries; n != 1 {
		t.Fatalf("undecodable = %d", n)
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("not logged as error: %s", logs.String())
	}
	wantErr(t, "create after", d.CreateUser(ctx, "after", "password", ""), nil)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Replaying the log hits the entry again, reports it again, and goes on.
	d = openDir(t, cfg)
	if n := d.Stats().UndecodableEntries; n != 1 {
		t.Fatalf("undecodable after replay = %d", n)
	}
	for _, u := range []string{"before", "after"} {
		if ok, _ := d.UserExists(ctx, u); !ok {
			t.Fatalf("%s lost", u)
		}
	}
}

func TestNotLeader(t *testing.T) {
	d := openDir(t, testConfig(t, t.TempDir()))
	// A raft that is no longer leader (here: shut down underneath) refuses
	// writes with ErrNotLeader and still answers reads.
	if err := d.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	wantErr(t, "create", d.CreateUser(ctx, "x", "password", ""), ErrNotLeader)
	wantErr(t, "delete", d.DeleteUser(ctx, "x"), ErrNotLeader)
	if ok, err := d.UserExists(ctx, "x"); ok || err != nil {
		t.Fatalf("UserExists = %v, %v", ok, err)
	}
}

func TestMapRaftErr(t *testing.T) {
	for _, tt := range []struct{ in, want error }{
		{nil, nil},
		{raft.ErrNotLeader, ErrNotLeader},
		{raft.ErrLeadershipLost, ErrOutcomeUnknown},
		{raft.ErrRaftShutdown, ErrOutcomeUnknown},
		{raft.ErrEnqueueTimeout, raft.ErrEnqueueTimeout},
	} {
		if got := mapRaftErr(tt.in); !errors.Is(got, tt.want) || (tt.want == nil) != (got == nil) {
			t.Errorf("mapRaftErr(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
