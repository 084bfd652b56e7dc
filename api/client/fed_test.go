package client_test

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

// The tests of this package run the client against a small federation of
// httptest servers that answer with the real handlers of package api: a
// directory (api.NewUserHandler over fed, which is the account database
// and the token issuer) and storage nodes (api.NewStorageHandler over an
// in-memory store, with an authenticator that, like a real node, accepts
// only the users the directory assigned to it). So status codes, Weave
// error code bodies, Retry-After and the X-Weave headers are exactly what
// the client meets in production; the test moves users between nodes,
// revokes tokens, breaks stores and kills nodes.

// fed is the federation's directory state: accounts, assignments and the
// tokens it issued. Safe for concurrent use.
type fed struct {
	mu       sync.Mutex
	accounts map[string]*account
	nodes    []*testNode
	tokens   map[string]tokenGrant // token -> grant
	tokenTTL time.Duration
	// With moveTo >= 0, a user looked up (node/weave or a token) more than
	// moveAfter times in all moves to node moveTo: a directory that
	// notices a dead node only after a while.
	moveAfter int64
	moveTo    int
	// weaveAnswer, when set, is node/weave's answer for every user.
	weaveAnswer string

	weaveAsks atomic.Int64 // node/weave look-ups
	tokenAsks atomic.Int64 // token requests
}

type account struct {
	password, email string
	node            int // index into fed.nodes; -1: none
}

type tokenGrant struct {
	user string
	node int
}

// testNode is one storage node of the federation.
type testNode struct {
	srv      *httptest.Server
	store    *memStore
	requests atomic.Int64
	// last is the Authorization scheme of the last request ("basic",
	// "bearer" or "").
	last atomic.Value
}

func (n *testNode) url() string { return n.srv.URL + "/" }

// newFed starts a directory and nodes storage nodes and returns the
// federation and the directory's URL; all stop when the test ends.
func newFed(t *testing.T, nodes int) (*fed, string) {
	t.Helper()
	f := &fed{accounts: map[string]*account{}, tokens: map[string]tokenGrant{}, tokenTTL: time.Hour, moveTo: -1}
	for i := range nodes {
		n := &testNode{store: newMemStore()}
		scfg := api.DefaultStorageConfig()
		scfg.Store = n.store
		scfg.Auth = nodeAuth{f, i}
		h, err := api.NewStorageHandler(scfg)
		if err != nil {
			t.Fatal(err)
		}
		n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.requests.Add(1)
			c, _ := api.ParseAuthorization(r.Header.Get("Authorization"))
			n.last.Store(c.Scheme)
			h.ServeHTTP(w, r)
		}))
		t.Cleanup(n.srv.Close)
		f.nodes = append(f.nodes, n)
	}
	ucfg := api.DefaultUserConfig()
	ucfg.Accounts = f
	ucfg.Tokens = f
	uh, err := api.NewUserHandler(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/node/weave") {
			f.weaveAsks.Add(1)
		}
		uh.ServeHTTP(w, r)
	}))
	t.Cleanup(dir.Close)
	return f, dir.URL + "/"
}

// addUser creates an account held by node (-1: none).
func (f *fed) addUser(user, password string, node int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accounts[user] = &account{password: password, node: node}
}

// move assigns user to node.
func (f *fed) move(user string, node int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accounts[user].node = node
}

// revokeTokens makes every token issued so far invalid.
func (f *fed) revokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.tokens)
}

// holder returns the node index holding user, or -1.
func (f *fed) holder(user string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.accounts[user]; a != nil {
		return a.node
	}
	return -1
}

// UserExists implements api.Accounts.
func (f *fed) UserExists(_ context.Context, user string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accounts[user] != nil, nil
}

// CreateUser implements api.Accounts: new users go to node 0.
func (f *fed) CreateUser(_ context.Context, user, password, email string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.accounts[user] != nil {
		return api.ErrUserExists
	}
	f.accounts[user] = &account{password: password, email: email, node: 0}
	return nil
}

// DeleteUser implements api.Accounts.
func (f *fed) DeleteUser(_ context.Context, user string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.accounts, user)
	return nil
}

// CheckPassword implements api.Accounts.
func (f *fed) CheckPassword(_ context.Context, user, password string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.accounts[user]; a != nil && a.password == password {
		return nil
	}
	return api.ErrUnauthorized
}

// StorageNode implements api.Accounts, moving the user once moveAfter
// look-ups have been made.
func (f *fed) StorageNode(_ context.Context, user string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.accounts[user]
	if a == nil {
		return "", api.ErrUserNotFound
	}
	f.maybeMove(a)
	if f.weaveAnswer != "" {
		return f.weaveAnswer, nil
	}
	if a.node < 0 {
		return "", nil
	}
	return f.nodes[a.node].url(), nil
}

// lookups is the number of node/weave and token requests so far.
func (f *fed) lookups() int64 { return f.weaveAsks.Load() + f.tokenAsks.Load() }

// moveAfterLookups makes the directory move users to node after n more
// look-ups.
func (f *fed) moveAfterLookups(n int64, node int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.moveAfter, f.moveTo = f.lookups()+n, node
}

// maybeMove applies moveAfter to a; f.mu held.
func (f *fed) maybeMove(a *account) {
	if f.moveTo >= 0 && f.lookups() > f.moveAfter {
		a.node = f.moveTo
	}
}

// setWeaveAnswer makes node/weave answer u for every user.
func (f *fed) setWeaveAnswer(u string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.weaveAnswer = u
}

// setTokenTTL sets the lifetime of the tokens issued from now on.
func (f *fed) setTokenTTL(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokenTTL = d
}

// SetEmail implements api.Accounts.
func (f *fed) SetEmail(_ context.Context, user, email string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accounts[user].email = email
	return nil
}

// SetPassword implements api.Accounts.
func (f *fed) SetPassword(_ context.Context, user, password string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accounts[user].password = password
	return nil
}

// RequestPasswordReset implements api.Accounts (no mail in these tests).
func (f *fed) RequestPasswordReset(context.Context, string) error { return api.ErrNoEmail }

// ClearPasswordReset implements api.Accounts.
func (f *fed) ClearPasswordReset(context.Context, string) error { return nil }

// ResetPassword implements api.Accounts.
func (f *fed) ResetPassword(context.Context, string, string, string) error {
	return api.ErrBadResetCode
}

// IssueToken implements api.TokenIssuer: a token for the user's node.
func (f *fed) IssueToken(_ context.Context, user, password, _ string) (string, string, time.Time, error) {
	f.tokenAsks.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.accounts[user]
	if a == nil || a.password != password {
		return "", "", time.Time{}, api.ErrUnauthorized
	}
	f.maybeMove(a)
	if a.node < 0 {
		return "", "", time.Time{}, api.ErrUnavailable
	}
	tok := fmt.Sprintf("tok-%s-%d-%d", user, a.node, f.tokenAsks.Load())
	f.tokens[tok] = tokenGrant{user: user, node: a.node}
	return tok, f.nodes[a.node].url(), time.Now().Add(f.tokenTTL), nil
}

// nodeAuth is node i's authenticator: Basic with the account's password
// or a token issued for this node, and only for users the directory
// assigned to this node (a real node answers 401 for any other user).
type nodeAuth struct {
	f *fed
	i int
}

// Authenticate implements api.Authenticator.
func (a nodeAuth) Authenticate(_ context.Context, user string, c api.Credentials) error {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	acct := a.f.accounts[user]
	if acct == nil || acct.node != a.i {
		return api.ErrUnauthorized
	}
	switch c.Scheme {
	case "basic":
		if c.User == user && c.Password == acct.password {
			return nil
		}
	case "bearer":
		if g, ok := a.f.tokens[c.Token]; ok && g.user == user && g.node == a.i {
			return nil
		}
	}
	return api.ErrUnauthorized
}

// memStore is an in-memory api.Store of one user's records, enough for the
// client's calls (queries are ignored but full). fail, when set, is
// returned by every call.
type memStore struct {
	mu   sync.Mutex
	now  api.Stamp
	recs map[string]map[string]api.WBO // coll -> id -> record
	fail error
}

func newMemStore() *memStore {
	return &memStore{now: api.Stamp(1_800_000_000_00), recs: map[string]map[string]api.WBO{}}
}

// failWith makes every call fail with err (nil: succeed again).
func (s *memStore) failWith(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

// tick advances the store clock; s.mu held.
func (s *memStore) tick() api.Stamp {
	s.now++
	return s.now
}

func (s *memStore) Healthy(context.Context) error { return nil }

func (s *memStore) CollectionTimestamps(context.Context, string) (map[string]api.Stamp, api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]api.Stamp{}
	for c, rs := range s.recs {
		for _, w := range rs {
			out[c] = max(out[c], w.Modified)
		}
	}
	return out, s.now, s.fail
}

func (s *memStore) CollectionCounts(context.Context, string) (map[string]int64, api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for c, rs := range s.recs {
		out[c] = int64(len(rs))
	}
	return out, s.now, s.fail
}

func (s *memStore) CollectionUsage(context.Context, string) (map[string]int64, api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for c, rs := range s.recs {
		for _, w := range rs {
			out[c] += int64(len(w.Payload))
		}
	}
	return out, s.now, s.fail
}

func (s *memStore) Quota(context.Context, string) (int64, int64, api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return 0, 0, s.now, s.fail
}

func (s *memStore) GetCollection(_ context.Context, _, coll string, _ *api.Query, start func(int, api.Stamp) error, emit func(*api.WBO) error) error {
	s.mu.Lock()
	var out []api.WBO
	for _, w := range s.recs[coll] {
		out = append(out, w)
	}
	now, fail := s.now, s.fail
	s.mu.Unlock()
	if fail != nil {
		return fail
	}
	slices.SortFunc(out, func(a, b api.WBO) int { return cmp.Compare(a.ID, b.ID) })
	return api.EmitRecords(out, now, start, emit)
}

func (s *memStore) GetItem(_ context.Context, _, coll, id string) (api.WBO, api.Stamp, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return api.WBO{}, 0, s.fail
	}
	w, ok := s.recs[coll][id]
	if !ok {
		return api.WBO{}, 0, api.ErrNotFound
	}
	return w, s.now, nil
}

func (s *memStore) CheckWrite(context.Context, string, string, api.Precondition) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail
}

// put stores w; s.mu held.
func (s *memStore) put(coll string, w api.WBO, now api.Stamp) {
	if s.recs[coll] == nil {
		s.recs[coll] = map[string]api.WBO{}
	}
	w.Modified = now
	s.recs[coll][w.ID] = w
}

func (s *memStore) PutItem(_ context.Context, _, coll string, w api.WBO, _ api.Precondition) (api.WriteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return api.WriteResult{}, s.fail
	}
	now := s.tick()
	s.put(coll, w, now)
	return api.WriteResult{Timestamp: now, Modified: now, QuotaRemaining: -1}, nil
}

func (s *memStore) PostItems(_ context.Context, _, coll string, ws []api.WBO, _ api.Precondition) (api.BatchResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return api.BatchResult{}, s.fail
	}
	now := s.tick()
	res := api.BatchResult{Timestamp: now, QuotaRemaining: -1}
	for _, w := range ws {
		s.put(coll, w, now)
		res.Success = append(res.Success, w.ID)
	}
	return res, nil
}

func (s *memStore) DeleteCollection(_ context.Context, _, coll string, _ *api.Query, _ api.Precondition) (api.WriteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, coll)
	return api.WriteResult{Timestamp: s.tick(), QuotaRemaining: -1}, s.fail
}

func (s *memStore) DeleteItem(_ context.Context, _, coll, id string, _ api.Precondition) (api.WriteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs[coll], id)
	return api.WriteResult{Timestamp: s.tick(), QuotaRemaining: -1}, s.fail
}

func (s *memStore) DeleteStorage(context.Context, string) (api.WriteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.recs)
	return api.WriteResult{Timestamp: s.tick(), QuotaRemaining: -1}, s.fail
}
