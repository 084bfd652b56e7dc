package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
)

// Sentinel errors of the client.
var (
	// ErrNoNode means the directory assigned the user no storage node
	// (node/weave answered null) or no directory is configured to ask.
	ErrNoNode = errors.New("weave: no storage node assigned")
	// ErrNoPassword means a call needs the account password (Basic auth
	// on the user API, or fetching a token) and none is configured.
	ErrNoPassword = errors.New("weave: no password configured")
)

// Error is a non-2xx answer from a server.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the Weave error code of a bare-number body, or 0.
	Code int
	// Body is the start of the response body (at most 4 KiB).
	Body string
}

// Error describes the answer, with the Weave error code when there is one.
func (e *Error) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("weave: HTTP %d, error code %d", e.Status, e.Code)
	}
	if b := strings.TrimSpace(e.Body); b != "" {
		return fmt.Sprintf("weave: HTTP %d: %.200s", e.Status, b)
	}
	return fmt.Sprintf("weave: HTTP %d", e.Status)
}

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// CodeOf returns the Weave error code of an *Error in err's chain, or 0.
func CodeOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// unreachableError marks a request that got no HTTP answer (connection
// refused or reset, DNS failure, ...) while its context was still live.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return "weave: unreachable: " + e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// Unreachable reports whether err means a server gave no HTTP answer at
// all (as opposed to an error status or a cancelled context).
func Unreachable(err error) bool {
	var u *unreachableError
	return errors.As(err, &u)
}

// Config configures a Client. A zero field takes its default.
type Config struct {
	// Directory is the base URL of the user API (a directory voter, or
	// `hce serve`); a missing trailing "/" is added. It may be empty when
	// the storage node is pinned with SetNode and a static Token or a
	// password is set; the reassignment flow then cannot run.
	Directory string
	// User is the account name; when empty, Email names the account as
	// api.AccountName(Email). One of the two is required.
	User string
	// Email is the account's e-mail address (sent on Register).
	Email string
	// Password is the account password: Basic auth on the user API and,
	// without tokens, on the storage API.
	Password string
	// Token, when set, is a bearer token sent to the storage node instead
	// of Basic credentials. It is bound to one node; the client does not
	// renew it.
	Token string
	// UseTokens makes the client fetch tokens itself with Password (GET
	// /user/1.0/{user}/token), send them as Bearer to the node the token
	// names, and fetch a new one before it expires or when a node answers
	// 401.
	UseTokens bool
	// FailoverWait bounds how long a storage call keeps asking the
	// directory for a new node while the user's node is unreachable.
	// Default 30 s; negative turns the wait off (one node/weave look-up).
	FailoverWait time.Duration
	// Backoff is the first pause between those look-ups; it doubles up to
	// 1 s. Default 100 ms.
	Backoff time.Duration
	// TokenSlack is how long before its expiry a token is renewed.
	// Default 30 s.
	TokenSlack time.Duration
	// HTTP is the HTTP client used. Default: a new http.Client with no
	// timeout (calls are bounded by their ctx).
	HTTP *http.Client
	// API is the storage protocol: API11 (Weave 1.1, the default) or
	// API15 (Sync 1.5: tokenserver credentials and Hawk, see sync15.go).
	API string
	// FxAToken is the Firefox Accounts access token the 1.5 client
	// trades at the tokenserver; empty: one from the directory's local
	// issuer, with Password.
	FxAToken string
	// KeyID is the X-KeyID of the 1.5 client's token requests
	// ("<keys_changed_at>-<client state>"). Default DefaultKeyID(User).
	KeyID string
}

// DefaultConfig returns the defaults; Directory, User or Email and
// Password still need to be set.
func DefaultConfig() Config {
	return Config{FailoverWait: 30 * time.Second, Backoff: 100 * time.Millisecond, TokenSlack: 30 * time.Second}
}

// Validate reports a configuration New cannot use.
func (c Config) Validate() error {
	switch {
	case c.User == "" && c.Email == "":
		return errors.New("weave: Config.User or Config.Email is required")
	case c.User != "" && (strings.ContainsAny(c.User, "/?#% ") || c.User == "." || c.User == ".."):
		return fmt.Errorf("weave: bad user name %q", c.User)
	case c.UseTokens && c.Password == "":
		return fmt.Errorf("%w: UseTokens needs Config.Password", ErrNoPassword)
	case c.UseTokens && c.Token != "":
		return errors.New("weave: Config.Token and Config.UseTokens are exclusive")
	case c.UseTokens && c.Directory == "":
		return errors.New("weave: UseTokens needs Config.Directory")
	case c.API != "" && c.API != API11 && c.API != API15:
		return fmt.Errorf("weave: API %q is neither %s nor %s", c.API, API11, API15)
	case c.API == API15 && c.Directory == "":
		return errors.New("weave: the 1.5 API needs Config.Directory (the tokenserver)")
	case c.API == API15 && c.FxAToken == "" && c.Password == "":
		return fmt.Errorf("%w: the 1.5 API needs Config.FxAToken or Config.Password", ErrNoPassword)
	}
	for _, u := range []string{c.Directory} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("weave: bad directory URL %q", u)
		}
	}
	return nil
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.User == "" {
		c.User = api.AccountName(c.Email)
	}
	if c.Directory != "" && !strings.HasSuffix(c.Directory, "/") {
		c.Directory += "/"
	}
	if c.FailoverWait == 0 {
		c.FailoverWait = d.FailoverWait
	}
	if c.Backoff <= 0 {
		c.Backoff = d.Backoff
	}
	if c.TokenSlack <= 0 {
		c.TokenSlack = d.TokenSlack
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{}
	}
	if c.API == "" {
		c.API = API11
	}
	return c
}

// Client talks to one account's directory and storage node. It is safe for
// concurrent use; credential and node changes made by one call are seen by
// the calls that start after it.
type Client struct {
	cfg  Config // immutable after New except under mu: Password, Email, Token
	http *http.Client

	mu      sync.Mutex
	node    string    // current storage node base URL, "" until looked up
	expires time.Time // expiry of cfg.Token when fetched by UseTokens
	hawk    hawkCreds // Sync 1.5 credentials (API15)
}

// New returns a client for cfg, or the error of cfg.Validate.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Client{cfg: cfg, http: cfg.HTTP}, nil
}

// User is the account name.
func (c *Client) User() string { return c.cfg.User }

// Email is the account's e-mail address as last configured or changed.
func (c *Client) Email() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Email
}

// SetNode pins the storage node base URL (skipping node/weave until a 401
// or an unreachable node makes the client ask the directory again).
func (c *Client) SetNode(base string) {
	c.mu.Lock()
	c.node = withSlash(base)
	c.mu.Unlock()
}

// Node returns the storage node currently used ("" before the first
// storage call, NodeWeave or Token).
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

func withSlash(u string) string {
	if u != "" && !strings.HasSuffix(u, "/") {
		u += "/"
	}
	return u
}

func (c *Client) userURL(suffix string) string {
	return c.cfg.Directory + "user/1.0/" + c.cfg.User + suffix
}

// auth says which credentials a request carries.
type auth int

const (
	authNone    auth = iota
	authBasic        // Basic with the password (user API)
	authStorage      // Bearer when a token is set, else Basic
	authHawk         // Hawk with the Sync 1.5 credentials
)

// userCall runs a user API request and returns the trimmed text body.
func (c *Client) userCall(ctx context.Context, method, suffix string, body []byte, a auth, h http.Header) (string, error) {
	if c.cfg.Directory == "" {
		return "", errors.New("weave: no directory configured")
	}
	if a == authBasic && c.password() == "" {
		return "", ErrNoPassword
	}
	var out []byte
	err := c.send(ctx, method, c.userURL(suffix), body, a, h, func(resp *http.Response) error {
		var err error
		out, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return err
	})
	return strings.TrimSpace(string(out)), err
}

func (c *Client) password() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Password
}

// Exists reports whether the account name is taken.
func (c *Client) Exists(ctx context.Context) (bool, error) {
	body, err := c.userCall(ctx, http.MethodGet, "", nil, authNone, nil)
	if err != nil {
		return false, err
	}
	switch body {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("weave: unexpected answer %.50q to a name check", body)
}

// Register creates the account with the configured password and e-mail.
func (c *Client) Register(ctx context.Context) error {
	c.mu.Lock()
	req := map[string]string{"password": c.cfg.Password}
	if c.cfg.Email != "" {
		req["email"] = c.cfg.Email
	}
	c.mu.Unlock()
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = c.userCall(ctx, http.MethodPut, "", b, authNone, nil)
	return err
}

// DeleteAccount deletes the account (and, on our servers, its records).
func (c *Client) DeleteAccount(ctx context.Context) error {
	_, err := c.userCall(ctx, http.MethodDelete, "", nil, authBasic, nil)
	return err
}

// NodeWeave asks the directory for the user's storage node, remembers it
// and returns it. It returns ErrNoNode when the directory answers null and
// an *Error with Status 404 for an unknown user.
func (c *Client) NodeWeave(ctx context.Context) (string, error) {
	body, err := c.userCall(ctx, http.MethodGet, "/node/weave", nil, authNone, nil)
	if err != nil {
		return "", err
	}
	if body == "null" || body == "" {
		return "", ErrNoNode
	}
	if u, perr := url.Parse(body); perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("weave: node/weave answered %.100q, not a URL", body)
	}
	n := withSlash(body)
	c.mu.Lock()
	c.node = n
	c.mu.Unlock()
	return n, nil
}

// Grant is a bearer token from GET /user/1.0/{user}/token.
type Grant struct {
	// Token is the bearer token; it is valid on Node only.
	Token string `json:"token"`
	// Node is the base URL of the storage node the token is for.
	Node string `json:"node"`
	// Expires is when the token stops being accepted.
	Expires time.Time `json:"-"`
}

// Token asks the directory for a bearer token for the user's node (Basic
// auth with the password). It does not change the client's credentials;
// see UseToken.
func (c *Client) Token(ctx context.Context) (Grant, error) {
	body, err := c.userCall(ctx, http.MethodGet, "/token", nil, authBasic, nil)
	if err != nil {
		return Grant{}, err
	}
	var raw struct {
		Token   string `json:"token"`
		Node    string `json:"node"`
		Expires int64  `json:"expires"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil || raw.Token == "" || raw.Node == "" {
		return Grant{}, fmt.Errorf("weave: malformed token answer %.100q", body)
	}
	return Grant{Token: raw.Token, Node: withSlash(raw.Node), Expires: time.Unix(raw.Expires, 0)}, nil
}

// UseToken makes the client send g.Token as Bearer to g.Node from now on.
func (c *Client) UseToken(g Grant) {
	c.mu.Lock()
	c.cfg.Token = g.Token
	c.expires = g.Expires
	c.node = withSlash(g.Node)
	c.mu.Unlock()
}

// ChangePassword sets a new password and uses it from then on.
func (c *Client) ChangePassword(ctx context.Context, password string) error {
	_, err := c.userCall(ctx, http.MethodPost, "/password", []byte(password), authBasic, textPlain)
	if err == nil {
		c.mu.Lock()
		c.cfg.Password = password
		c.mu.Unlock()
	}
	return err
}

// ChangeEmail sets a new e-mail address and returns the address the
// server stored.
func (c *Client) ChangeEmail(ctx context.Context, email string) (string, error) {
	body, err := c.userCall(ctx, http.MethodPost, "/email", []byte(email), authBasic, textPlain)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.cfg.Email = email
	c.mu.Unlock()
	return body, nil
}

// RequestPasswordReset asks the directory to mail a reset code to the
// address on file.
func (c *Client) RequestPasswordReset(ctx context.Context) error {
	_, err := c.userCall(ctx, http.MethodGet, "/password_reset", nil, authNone, nil)
	return err
}

// CancelPasswordReset clears a pending reset code (Basic auth).
func (c *Client) CancelPasswordReset(ctx context.Context) error {
	_, err := c.userCall(ctx, http.MethodDelete, "/password_reset", nil, authBasic, nil)
	return err
}

// ResetPassword sets a new password with a mailed reset code and uses it
// from then on.
func (c *Client) ResetPassword(ctx context.Context, code, password string) error {
	h := http.Header{"X-Weave-Password-Reset": {code}, "Content-Type": {"text/plain; charset=utf-8"}}
	_, err := c.userCall(ctx, http.MethodPost, "/password", []byte(password), authNone, h)
	if err == nil {
		c.mu.Lock()
		c.cfg.Password = password
		c.mu.Unlock()
	}
	return err
}

var textPlain = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}

// Meta is what a storage call reports besides its body.
type Meta struct {
	// Timestamp is X-Weave-Timestamp.
	Timestamp api.Stamp
	// Records is X-Weave-Records, or -1.
	Records int
	// LastModified is X-Last-Modified (Sync 1.5), or 0.
	LastModified api.Stamp
	// NextOffset is X-Weave-Next-Offset: the offset of the next page, ""
	// after the last one.
	NextOffset string
}

func metaOf(h http.Header) Meta {
	m := Meta{Records: -1}
	if ts, err := api.ParseStamp(h.Get("X-Weave-Timestamp")); err == nil {
		m.Timestamp = ts
	}
	if n, err := strconv.Atoi(h.Get("X-Weave-Records")); err == nil {
		m.Records = n
	}
	if ts, err := api.ParseStamp(h.Get("X-Last-Modified")); err == nil {
		m.LastModified = ts
	}
	m.NextOffset = h.Get("X-Weave-Next-Offset")
	return m
}

// InfoCollections returns collection -> last modified.
func (c *Client) InfoCollections(ctx context.Context) (map[string]api.Stamp, Meta, error) {
	var raw map[string]json.Number
	m, err := c.storageJSON(ctx, http.MethodGet, "info/collections", nil, nil, &raw)
	if err != nil {
		return nil, m, err
	}
	out := make(map[string]api.Stamp, len(raw))
	for k, v := range raw {
		ts, err := api.ParseStamp(v.String())
		if err != nil {
			return nil, m, fmt.Errorf("weave: bad timestamp %q for %s", v, k)
		}
		out[k] = ts
	}
	return out, m, nil
}

// InfoCounts returns collection -> number of records.
func (c *Client) InfoCounts(ctx context.Context) (map[string]int64, Meta, error) {
	var out map[string]int64
	m, err := c.storageJSON(ctx, http.MethodGet, "info/collection_counts", nil, nil, &out)
	return out, m, err
}

// InfoUsage returns collection -> KB of payload.
func (c *Client) InfoUsage(ctx context.Context) (map[string]float64, Meta, error) {
	var out map[string]float64
	m, err := c.storageJSON(ctx, http.MethodGet, "info/collection_usage", nil, nil, &out)
	return out, m, err
}

// InfoQuota returns used KB and the quota in KB (nil when off).
func (c *Client) InfoQuota(ctx context.Context) (used float64, quota *float64, m Meta, err error) {
	var out []*float64
	m, err = c.storageJSON(ctx, http.MethodGet, "info/quota", nil, nil, &out)
	if err != nil {
		return 0, nil, m, err
	}
	if len(out) != 2 || out[0] == nil {
		return 0, nil, m, errors.New("weave: malformed info/quota")
	}
	return *out[0], out[1], m, nil
}

// Record is a WBO as the server returns it.
type Record struct {
	ID            string     `json:"id"`
	Modified      *api.Stamp `json:"-"`
	Payload       *string    `json:"payload,omitempty"`
	SortIndex     *int64     `json:"sortindex,omitempty"`
	ParentID      *string    `json:"parentid,omitempty"`
	PredecessorID *string    `json:"predecessorid,omitempty"`
	// TTL is sent on writes only.
	TTL *int64 `json:"ttl,omitempty"`
}

// UnmarshalJSON reads a WBO keeping the 2-decimal modified exact.
func (r *Record) UnmarshalJSON(b []byte) error {
	type plain Record
	var aux struct {
		*plain
		Modified json.Number `json:"modified"`
	}
	aux.plain = (*plain)(r)
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	if aux.Modified != "" {
		ts, err := api.ParseStamp(aux.Modified.String())
		if err != nil {
			return err
		}
		r.Modified = &ts
	}
	return nil
}

// Options are the filters of GET and DELETE storage/{coll}, as url.Values
// (ids, newer, older, sort, limit, offset, full, index_above, ...).
type Options = url.Values

// IDs lists the ids matching opts.
func (c *Client) IDs(ctx context.Context, coll string, opts Options) ([]string, Meta, error) {
	var out []string
	m, err := c.storageJSON(ctx, http.MethodGet, "storage/"+url.PathEscape(coll)+query(opts, false), nil, nil, &out)
	return out, m, err
}

// Records fetches the full records matching opts.
func (c *Client) Records(ctx context.Context, coll string, opts Options) ([]Record, Meta, error) {
	var out []Record
	m, err := c.storageJSON(ctx, http.MethodGet, "storage/"+url.PathEscape(coll)+query(opts, true), nil, nil, &out)
	return out, m, err
}

// StreamRecords fetches the records matching opts in the
// application/newlines format and calls fn for each as it arrives.
func (c *Client) StreamRecords(ctx context.Context, coll string, opts Options, fn func(Record) error) (Meta, error) {
	h := http.Header{"Accept": {"application/newlines"}}
	var m Meta
	err := c.storage(ctx, http.MethodGet, "storage/"+url.PathEscape(coll)+query(opts, true), nil, h, func(resp *http.Response) error {
		m = metaOf(resp.Header)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 2<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				return fmt.Errorf("weave: bad newlines record: %w", err)
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		return sc.Err()
	})
	return m, err
}

// Get fetches one record (an *Error with Status 404 when absent).
func (c *Client) Get(ctx context.Context, coll, id string) (Record, Meta, error) {
	var r Record
	m, err := c.storageJSON(ctx, http.MethodGet, "storage/"+url.PathEscape(coll)+"/"+url.PathEscape(id), nil, nil, &r)
	return r, m, err
}

// Put writes one record and returns the server's answer (its modified).
func (c *Client) Put(ctx context.Context, coll string, r Record, ifUnmodifiedSince api.Stamp) (Meta, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return Meta{}, err
	}
	var ts json.RawMessage
	return c.storageJSON(ctx, http.MethodPut, "storage/"+url.PathEscape(coll)+"/"+url.PathEscape(r.ID), b, precondition(ifUnmodifiedSince), &ts)
}

// PostResult is the answer to a POST.
type PostResult struct {
	Modified api.Stamp
	Success  []string
	Failed   map[string][]string
}

// Post writes a batch of records.
func (c *Client) Post(ctx context.Context, coll string, rs []Record, ifUnmodifiedSince api.Stamp) (PostResult, Meta, error) {
	b, err := json.Marshal(rs)
	if err != nil {
		return PostResult{}, Meta{}, err
	}
	var out postAnswer
	m, err := c.storageJSON(ctx, http.MethodPost, "storage/"+url.PathEscape(coll), b, precondition(ifUnmodifiedSince), &out)
	if err != nil {
		return PostResult{}, m, err
	}
	res := PostResult{Success: out.Success, Failed: out.failed()}
	if out.Modified != "" {
		res.Modified, _ = api.ParseStamp(out.Modified.String())
	}
	return res, m, nil
}

// Delete deletes one record.
func (c *Client) Delete(ctx context.Context, coll, id string) (Meta, error) {
	var ts json.RawMessage
	return c.storageJSON(ctx, http.MethodDelete, "storage/"+url.PathEscape(coll)+"/"+url.PathEscape(id), nil, nil, &ts)
}

// DeleteCollection deletes the records of coll matching opts (all when
// opts is empty).
func (c *Client) DeleteCollection(ctx context.Context, coll string, opts Options) (Meta, error) {
	var ts json.RawMessage
	return c.storageJSON(ctx, http.MethodDelete, "storage/"+url.PathEscape(coll)+query(opts, false), nil, nil, &ts)
}

// DeleteStorage deletes all of the user's records.
func (c *Client) DeleteStorage(ctx context.Context) (Meta, error) {
	var ts json.RawMessage
	return c.storageJSON(ctx, http.MethodDelete, "storage", nil, http.Header{"X-Confirm-Delete": {"1"}}, &ts)
}

func query(opts Options, full bool) string {
	v := url.Values{}
	for k, vs := range opts {
		v[k] = vs
	}
	if full {
		v.Set("full", "1")
	} else {
		v.Del("full")
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

func precondition(ts api.Stamp) http.Header {
	if ts == 0 {
		return nil
	}
	return http.Header{"X-If-Unmodified-Since": {ts.String()}}
}

func (c *Client) storageJSON(ctx context.Context, method, path string, body []byte, h http.Header, out any) (Meta, error) {
	var m Meta
	err := c.storage(ctx, method, path, body, h, func(resp *http.Response) error {
		m = metaOf(resp.Header)
		dec := json.NewDecoder(resp.Body)
		dec.UseNumber()
		if err := dec.Decode(out); err != nil {
			return fmt.Errorf("weave: decoding %s %s: %w", method, path, err)
		}
		return nil
	})
	return m, err
}

// resolve returns the node to use: the remembered one, else (with
// UseTokens) the node of a fresh token, else node/weave's answer. With
// UseTokens it also renews a token that is about to expire.
func (c *Client) resolve(ctx context.Context) (string, error) {
	c.mu.Lock()
	node, tok, exp := c.node, c.cfg.Token, c.expires
	c.mu.Unlock()
	if c.cfg.UseTokens && (tok == "" || time.Until(exp) < c.cfg.TokenSlack) {
		return c.renew(ctx)
	}
	if node != "" {
		return node, nil
	}
	if c.cfg.Directory == "" {
		return "", ErrNoNode
	}
	return c.NodeWeave(ctx)
}

// renew fetches and installs a new token (UseTokens) and returns its node.
func (c *Client) renew(ctx context.Context) (string, error) {
	g, err := c.Token(ctx)
	if err != nil {
		return "", err
	}
	c.UseToken(g)
	return g.Node, nil
}

// relocate asks the directory again where the user lives after the
// storage call on node failed with cause. It returns the node to retry
// on, or "" when a retry is pointless. An unreachable node makes it poll,
// with backoff, until the directory names another node, FailoverWait
// passes or ctx ends.
func (c *Client) relocate(ctx context.Context, node string, cause error) string {
	unreachable := Unreachable(cause)
	if c.cfg.Directory == "" || (!unreachable && StatusOf(cause) != http.StatusUnauthorized) {
		return ""
	}
	deadline := time.Now().Add(c.cfg.FailoverWait)
	pause := c.cfg.Backoff
	for {
		var n string
		var err error
		if c.cfg.UseTokens {
			// A token names its node; a new one is also the cure for a
			// token the node no longer accepts.
			n, err = c.renew(ctx)
			if err == nil && (n != node || !unreachable) {
				return n
			}
		} else {
			n, err = c.NodeWeave(ctx)
			if err == nil && n != node {
				return n
			}
		}
		// 401 from a node node/weave still names: the credentials are
		// wrong (or the directory has not moved the user yet); report it.
		if !unreachable || ctx.Err() != nil || c.cfg.FailoverWait < 0 || time.Now().Add(pause).After(deadline) {
			return ""
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ""
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}

// storage runs a storage call on the user's node, following the Weave
// reassignment flow (see the package documentation). read is called at
// most once, with a 2xx answer.
func (c *Client) storage(ctx context.Context, method, path string, body []byte, h http.Header, read func(*http.Response) error) error {
	if c.cfg.API == API15 {
		return c.storage15(ctx, method, path, body, h, read)
	}
	node, err := c.resolve(ctx)
	if err != nil {
		return err
	}
	err = c.send(ctx, method, node+"1.1/"+c.cfg.User+"/"+path, body, authStorage, h, read)
	if err == nil {
		return nil
	}
	next := c.relocate(ctx, node, err)
	if next == "" {
		return err
	}
	return c.send(ctx, method, next+"1.1/"+c.cfg.User+"/"+path, body, authStorage, h, read)
}

// send runs one HTTP request. A 2xx answer goes to read; any other answer
// becomes an *Error; no answer at all an unreachableError.
func (c *Client) send(ctx context.Context, method, u string, body []byte, a auth, h http.Header, read func(*http.Response) error) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	c.mu.Lock()
	tok, pw := c.cfg.Token, c.cfg.Password
	c.mu.Unlock()
	switch {
	case a == authHawk:
		if err := c.signHawk(req); err != nil {
			return err
		}
	case a == authStorage && tok != "":
		req.Header.Set("Authorization", "Bearer "+tok)
	case a == authStorage || a == authBasic:
		req.SetBasicAuth(c.cfg.User, pw)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("weave: %s %s: %w", method, u, ctx.Err())
		}
		return &unreachableError{err}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		e := &Error{Status: resp.StatusCode, Body: string(b)}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			e.Code = n
		}
		return e
	}
	return read(resp)
}
