// Package client is a Weave 1.1 client: the user API (registration, node
// lookup, password and e-mail changes) and the storage API (every call of
// weave-api.md section 2), with HTTP Basic or Bearer credentials and the
// Weave reassignment flow done right: when a storage node answers 401 the
// client asks the directory's node/weave once for the user's current node
// and retries there. It is shared by the tests, `hce load` and `hce client`.
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

	"github.com/hce-sync/hce/api"
)

// Error is a non-2xx answer from a server.
type Error struct {
	Status int
	// Code is the Weave error code of a bare-number body, or 0.
	Code int
	Body string
}

func (e *Error) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("weave: HTTP %d, error code %d", e.Status, e.Code)
	}
	return fmt.Sprintf("weave: HTTP %d: %.200s", e.Status, e.Body)
}

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Config configures a Client.
type Config struct {
	// Directory is the base URL of the user API (the directory, or `hce
	// serve`), ending in "/".
	Directory string
	// User is the account name; Email, when User is empty, names the
	// account by api.AccountName(Email).
	User, Email string
	// Password for Basic auth.
	Password string
	// Token, when set, is sent as Bearer instead of Basic.
	Token string
	// HTTP is the client used (default: a new http.Client).
	HTTP *http.Client
}

// Client talks to one account's directory and storage node. It is safe for
// concurrent use.
type Client struct {
	cfg  Config
	http *http.Client

	mu   sync.Mutex
	node string // current storage node base URL, "" until looked up
}

// New returns a client for cfg.
func New(cfg Config) *Client {
	if cfg.User == "" && cfg.Email != "" {
		cfg.User = api.AccountName(cfg.Email)
	}
	if cfg.Directory != "" && !strings.HasSuffix(cfg.Directory, "/") {
		cfg.Directory += "/"
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{cfg: cfg, http: hc}
}

// User is the account name.
func (c *Client) User() string { return c.cfg.User }

// SetNode pins the storage node base URL (skipping node/weave).
func (c *Client) SetNode(base string) {
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	c.mu.Lock()
	c.node = base
	c.mu.Unlock()
}

// Node returns the storage node currently used ("" before the first
// storage call or NodeWeave).
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

func (c *Client) userURL(suffix string) string {
	return c.cfg.Directory + "user/1.0/" + c.cfg.User + suffix
}

// Exists reports whether the account name is taken.
func (c *Client) Exists(ctx context.Context) (bool, error) {
	body, _, err := c.roundTrip(ctx, http.MethodGet, c.userURL(""), nil, false, nil)
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(body)) == "1", nil
}

// Register creates the account with the configured password and e-mail.
func (c *Client) Register(ctx context.Context) error {
	req := map[string]string{"password": c.cfg.Password}
	if c.cfg.Email != "" {
		req["email"] = c.cfg.Email
	}
	b, _ := json.Marshal(req)
	_, _, err := c.roundTrip(ctx, http.MethodPut, c.userURL(""), b, false, nil)
	return err
}

// DeleteAccount deletes the account.
func (c *Client) DeleteAccount(ctx context.Context) error {
	_, _, err := c.roundTrip(ctx, http.MethodDelete, c.userURL(""), nil, true, nil)
	return err
}

// NodeWeave asks the directory for the user's storage node, remembers it
// and returns it ("" when none is assigned).
func (c *Client) NodeWeave(ctx context.Context) (string, error) {
	body, _, err := c.roundTrip(ctx, http.MethodGet, c.userURL("/node/weave"), nil, false, nil)
	if err != nil {
		return "", err
	}
	n := strings.TrimSpace(string(body))
	if n == "null" {
		n = ""
	}
	c.mu.Lock()
	c.node = n
	c.mu.Unlock()
	return n, nil
}

// ChangePassword sets a new password and uses it from then on.
func (c *Client) ChangePassword(ctx context.Context, password string) error {
	_, _, err := c.roundTrip(ctx, http.MethodPost, c.userURL("/password"), []byte(password), true, nil)
	if err == nil {
		c.mu.Lock()
		c.cfg.Password = password
		c.mu.Unlock()
	}
	return err
}

// ChangeEmail sets a new e-mail address.
func (c *Client) ChangeEmail(ctx context.Context, email string) error {
	_, _, err := c.roundTrip(ctx, http.MethodPost, c.userURL("/email"), []byte(email), true, nil)
	return err
}

// RequestPasswordReset asks the directory to mail a reset code.
func (c *Client) RequestPasswordReset(ctx context.Context) error {
	_, _, err := c.roundTrip(ctx, http.MethodGet, c.userURL("/password_reset"), nil, false, nil)
	return err
}

// ResetPassword sets a new password with a mailed reset code.
func (c *Client) ResetPassword(ctx context.Context, code, password string) error {
	h := http.Header{"X-Weave-Password-Reset": {code}}
	_, _, err := c.roundTrip(ctx, http.MethodPost, c.userURL("/password"), []byte(password), false, h)
	if err == nil {
		c.mu.Lock()
		c.cfg.Password = password
		c.mu.Unlock()
	}
	return err
}

// Meta is what a storage call reports besides its body.
type Meta struct {
	// Timestamp is X-Weave-Timestamp.
	Timestamp api.Stamp
	// Records is X-Weave-Records, or -1.
	Records int
}

func metaOf(h http.Header) Meta {
	m := Meta{Records: -1}
	if ts, err := api.ParseStamp(h.Get("X-Weave-Timestamp")); err == nil {
		m.Timestamp = ts
	}
	if n, err := strconv.Atoi(h.Get("X-Weave-Records")); err == nil {
		m.Records = n
	}
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
	m, err := c.storageJSON(ctx, http.MethodGet, "storage/"+coll+query(opts, false), nil, nil, &out)
	return out, m, err
}

// Records fetches the full records matching opts.
func (c *Client) Records(ctx context.Context, coll string, opts Options) ([]Record, Meta, error) {
	var out []Record
	m, err := c.storageJSON(ctx, http.MethodGet, "storage/"+coll+query(opts, true), nil, nil, &out)
	return out, m, err
}

// StreamRecords fetches the records matching opts in the
// application/newlines format and calls fn for each as it arrives.
func (c *Client) StreamRecords(ctx context.Context, coll string, opts Options, fn func(Record) error) (Meta, error) {
	h := http.Header{"Accept": {"application/newlines"}}
	var m Meta
	err := c.storage(ctx, http.MethodGet, "storage/"+coll+query(opts, true), nil, h, func(resp *http.Response) error {
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
	m, err := c.storageJSON(ctx, http.MethodGet, "storage/"+coll+"/"+url.PathEscape(id), nil, nil, &r)
	return r, m, err
}

// Put writes one record and returns the server's answer (its modified).
func (c *Client) Put(ctx context.Context, coll string, r Record, ifUnmodifiedSince api.Stamp) (Meta, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return Meta{}, err
	}
	var ts json.RawMessage
	return c.storageJSON(ctx, http.MethodPut, "storage/"+coll+"/"+url.PathEscape(r.ID), b, precondition(ifUnmodifiedSince), &ts)
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
	var out struct {
		Modified json.Number         `json:"modified"`
		Success  []string            `json:"success"`
		Failed   map[string][]string `json:"failed"`
	}
	m, err := c.storageJSON(ctx, http.MethodPost, "storage/"+coll, b, precondition(ifUnmodifiedSince), &out)
	if err != nil {
		return PostResult{}, m, err
	}
	res := PostResult{Success: out.Success, Failed: out.Failed}
	if out.Modified != "" {
		res.Modified, _ = api.ParseStamp(out.Modified.String())
	}
	return res, m, nil
}

// Delete deletes one record.
func (c *Client) Delete(ctx context.Context, coll, id string) (Meta, error) {
	var ts json.RawMessage
	return c.storageJSON(ctx, http.MethodDelete, "storage/"+coll+"/"+url.PathEscape(id), nil, nil, &ts)
}

// DeleteCollection deletes the records of coll matching opts (all when
// opts is empty).
func (c *Client) DeleteCollection(ctx context.Context, coll string, opts Options) (Meta, error) {
	var ts json.RawMessage
	return c.storageJSON(ctx, http.MethodDelete, "storage/"+coll+query(opts, false), nil, nil, &ts)
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
		return dec.Decode(out)
	})
	return m, err
}

// storage runs a storage call on the user's node, following the Weave
// reassignment flow: on 401 it re-reads node/weave once and, if the node
// changed, retries there.
func (c *Client) storage(ctx context.Context, method, path string, body []byte, h http.Header, read func(*http.Response) error) error {
	node := c.Node()
	if node == "" {
		if c.cfg.Directory == "" {
			return errors.New("weave: no storage node and no directory to ask")
		}
		n, err := c.NodeWeave(ctx)
		if err != nil {
			return err
		}
		if n == "" {
			return errors.New("weave: the directory assigned no storage node")
		}
		node = n
	}
	err := c.send(ctx, method, node+"1.1/"+c.cfg.User+"/"+path, body, true, h, read)
	if StatusOf(err) != http.StatusUnauthorized || c.cfg.Directory == "" {
		return err
	}
	n, lerr := c.NodeWeave(ctx)
	if lerr != nil || n == "" || n == node {
		return err
	}
	return c.send(ctx, method, n+"1.1/"+c.cfg.User+"/"+path, body, true, h, read)
}

func (c *Client) roundTrip(ctx context.Context, method, u string, body []byte, auth bool, h http.Header) ([]byte, http.Header, error) {
	var out []byte
	var hdr http.Header
	err := c.send(ctx, method, u, body, auth, h, func(resp *http.Response) error {
		hdr = resp.Header
		var err error
		out, err = io.ReadAll(resp.Body)
		return err
	})
	return out, hdr, err
}

func (c *Client) send(ctx context.Context, method, u string, body []byte, auth bool, h http.Header, read func(*http.Response) error) error {
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
	if auth {
		c.mu.Lock()
		tok, pw := c.cfg.Token, c.cfg.Password
		c.mu.Unlock()
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		} else {
			req.SetBasicAuth(c.cfg.User, pw)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
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
