package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/hawk"
	"github.com/hce-sync/hce/api/tokenserver"
)

// Sync 1.5 mode (Config.API = API15): the client trades a Firefox
// Accounts access token at the directory's tokenserver (GET
// /1.0/sync/1.5 with X-KeyID) for Hawk credentials and the storage URL
// of its uid, signs every storage request with Hawk (api/hawk), and
// fetches new credentials before they expire, when the node answers 401
// (the node no longer serves the user) and, with bounded backoff, while
// the node cannot be reached (the directory moves the user to a replica
// holding its data). Without Config.FxAToken it asks the directory's
// local issuer (POST /fxa-local/v1/token) for an access token with the
// account's password.

// The storage protocols of Config.API.
const (
	API11 = "1.1"
	API15 = "1.5"
)

// hawkCreds are Hawk credentials from the tokenserver.
type hawkCreds struct {
	id, key  string
	base     string // api_endpoint with a trailing "/"
	uid      uint64
	expires  time.Time
	hashedID string
}

// DefaultKeyID is the X-KeyID a client sends without Config.KeyID: keys
// changed at 1 (ms) and a client state derived from the account name
// (HCE's own clients have no Firefox Accounts sync key).
func DefaultKeyID(user string) string {
	sum := sha256.Sum256([]byte("hce-client-state:" + user))
	k, _ := tokenserver.FormatKeyID(tokenserver.KeyID{KeysChangedAt: 1, ClientState: hex.EncodeToString(sum[:16])})
	return k
}

// FxALocalToken asks the directory's local issuer for an access token of
// the account (Basic auth with the password).
func (c *Client) FxALocalToken(ctx context.Context) (string, error) {
	if c.cfg.Directory == "" {
		return "", errors.New("weave: no directory configured")
	}
	if c.password() == "" {
		return "", ErrNoPassword
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	err := c.send(ctx, http.MethodPost, c.cfg.Directory+"fxa-local/v1/token", nil, authBasic, nil, func(resp *http.Response) error {
		return json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
	})
	if err != nil {
		return "", err
	}
	if out.AccessToken == "" {
		return "", errors.New("weave: the local issuer answered no token")
	}
	return out.AccessToken, nil
}

// SyncToken trades an access token (Config.FxAToken, or one from the
// local issuer) for Hawk credentials at the tokenserver and uses them
// from then on. It returns the tokenserver's answer.
func (c *Client) SyncToken(ctx context.Context) (tokenserver.Response, error) {
	if c.cfg.Directory == "" {
		return tokenserver.Response{}, errors.New("weave: no directory configured")
	}
	tok := c.cfg.FxAToken
	if tok == "" {
		var err error
		if tok, err = c.FxALocalToken(ctx); err != nil {
			return tokenserver.Response{}, fmt.Errorf("weave: access token from the local issuer: %w", err)
		}
	}
	kid := c.cfg.KeyID
	if kid == "" {
		kid = DefaultKeyID(c.cfg.User)
	}
	h := http.Header{"Authorization": {"Bearer " + tok}, "X-KeyID": {kid}}
	var r tokenserver.Response
	err := c.send(ctx, http.MethodGet, c.cfg.Directory+strings.TrimPrefix(tokenserver.Path, "/"), nil, authNone, h, func(resp *http.Response) error {
		return json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&r)
	})
	if err != nil {
		return tokenserver.Response{}, err
	}
	u, perr := url.Parse(r.APIEndpoint)
	if r.ID == "" || r.Key == "" || perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return tokenserver.Response{}, fmt.Errorf("weave: malformed tokenserver answer for uid %d", r.UID)
	}
	c.mu.Lock()
	c.hawk = hawkCreds{id: r.ID, key: r.Key, base: withSlash(r.APIEndpoint), uid: r.UID,
		expires: time.Now().Add(time.Duration(r.Duration) * time.Second), hashedID: r.HashedFxAUID}
	c.node = c.hawk.base
	c.mu.Unlock()
	return r, nil
}

// UID returns the Sync uid of the current credentials (0 before the
// first 1.5 storage call or SyncToken).
func (c *Client) UID() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hawk.uid
}

// resolve15 returns the storage URL of the current credentials, fetching
// new ones when there are none or they are about to expire.
func (c *Client) resolve15(ctx context.Context) (string, error) {
	c.mu.Lock()
	h := c.hawk
	c.mu.Unlock()
	if h.id == "" || time.Until(h.expires) < c.cfg.TokenSlack {
		r, err := c.SyncToken(ctx)
		if err != nil {
			return "", err
		}
		return withSlash(r.APIEndpoint), nil
	}
	return h.base, nil
}

// relocate15 fetches new credentials after a storage call on base failed
// with cause: at once after a 401, and while the node is unreachable
// until the tokenserver names another endpoint (bounded by FailoverWait).
// It returns the endpoint to retry on, or "".
func (c *Client) relocate15(ctx context.Context, base string, cause error) string {
	unreachable := Unreachable(cause)
	if c.cfg.Directory == "" || (!unreachable && StatusOf(cause) != http.StatusUnauthorized) {
		return ""
	}
	deadline := time.Now().Add(c.cfg.FailoverWait)
	pause := c.cfg.Backoff
	for {
		r, err := c.SyncToken(ctx)
		if err == nil && (!unreachable || withSlash(r.APIEndpoint) != base) {
			return withSlash(r.APIEndpoint)
		}
		if !unreachable && err != nil && StatusOf(err) != http.StatusServiceUnavailable {
			return ""
		}
		if ctx.Err() != nil || c.cfg.FailoverWait < 0 || time.Now().Add(pause).After(deadline) {
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

// storage15 runs a storage call of the 1.5 API.
func (c *Client) storage15(ctx context.Context, method, path string, body []byte, h http.Header, read func(*http.Response) error) error {
	base, err := c.resolve15(ctx)
	if err != nil {
		return err
	}
	err = c.send(ctx, method, base+path, body, authHawk, h, read)
	if err == nil {
		return nil
	}
	next := c.relocate15(ctx, base, err)
	if next == "" {
		return err
	}
	return c.send(ctx, method, next+path, body, authHawk, h, read)
}

// signHawk sets the Hawk Authorization header of req.
func (c *Client) signHawk(req *http.Request) error {
	c.mu.Lock()
	h := c.hawk
	c.mu.Unlock()
	if h.id == "" {
		return errors.New("weave: no Hawk credentials")
	}
	port := 80
	if req.URL.Scheme == "https" {
		port = 443
	}
	if p := req.URL.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return err
		}
		port = n
	}
	auth, err := hawk.Sign(hawk.Credentials{ID: h.id, Key: []byte(h.key)}, req.Method, req.URL.RequestURI(), req.URL.Hostname(), port,
		hawk.SignOptions{}, time.Now().Unix())
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", auth)
	return nil
}

// BatchResult is the answer to a batch upload's commit.
type BatchResult struct {
	Modified api.Stamp
	// Success and Failed gather the answers of every request of the batch.
	Success []string
	Failed  map[string][]string
}

// PostBatch uploads chunks of records as one Sync 1.5 batch: the first
// request opens it, the last one commits it, and the records appear
// together with the commit's timestamp. With one chunk it is a plain
// POST.
func (c *Client) PostBatch(ctx context.Context, coll string, chunks [][]Record, ifUnmodifiedSince api.Stamp) (BatchResult, Meta, error) {
	var res BatchResult
	res.Failed = map[string][]string{}
	batch := ""
	var m Meta
	for i, chunk := range chunks {
		q := url.Values{}
		switch {
		case len(chunks) == 1:
		case i == 0:
			q.Set("batch", "true")
		default:
			q.Set("batch", batch)
		}
		if len(chunks) > 1 && i == len(chunks)-1 {
			q.Set("commit", "true")
		}
		b, err := json.Marshal(chunk)
		if err != nil {
			return res, m, err
		}
		var out postAnswer
		path := "storage/" + url.PathEscape(coll)
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		if m, err = c.storageJSON(ctx, http.MethodPost, path, b, precondition(ifUnmodifiedSince), &out); err != nil {
			return res, m, err
		}
		if i == 0 && len(chunks) > 1 {
			if out.Batch == "" {
				return res, m, errors.New("weave: the server opened no batch")
			}
			batch = out.Batch
		}
		res.Success = append(res.Success, out.Success...)
		for k, v := range out.failed() {
			res.Failed[k] = v
		}
		if out.Modified != "" {
			res.Modified, _ = api.ParseStamp(out.Modified.String())
		}
	}
	return res, m, nil
}

// postAnswer is a POST's answer in either protocol: Weave's failed map
// holds lists of reasons, Sync 1.5's one reason each.
type postAnswer struct {
	Modified json.Number                `json:"modified"`
	Batch    string                     `json:"batch"`
	Success  []string                   `json:"success"`
	Failed   map[string]json.RawMessage `json:"failed"`
}

func (p *postAnswer) failed() map[string][]string {
	out := make(map[string][]string, len(p.Failed))
	for k, raw := range p.Failed {
		var list []string
		if json.Unmarshal(raw, &list) == nil {
			out[k] = list
			continue
		}
		var one string
		if json.Unmarshal(raw, &one) == nil {
			out[k] = []string{one}
		}
	}
	return out
}
