package testnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hce-sync/hce/api"
)

// nemUser is one written and read user.
type nemUser struct {
	idx         int
	name, email string

	// mu orders acknowledgements and read starts: an acknowledgement's
	// time is taken under it, and so is a read's start with the number
	// of acknowledgements before it.
	mu   sync.Mutex
	acks []nemAck // in acknowledgement order; entries never change
	// doing is what the writer does now, since when (for stuck writers).
	doing   string
	doingAt time.Time
}

// set notes what the writer does now.
func (u *nemUser) set(doing string) {
	u.mu.Lock()
	u.doing, u.doingAt = doing, time.Now()
	u.mu.Unlock()
}

// state returns what the writer does, since when.
func (u *nemUser) state() (string, time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.doing, u.doingAt
}

// nemAck is an acknowledged record.
type nemAck struct {
	id, payload string
	node        string // the node that acknowledged it
	at          time.Time
}

// lastAck is the time of the user's last acknowledgement (zero if none).
func (u *nemUser) lastAck() time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.acks) == 0 {
		return time.Time{}
	}
	return u.acks[len(u.acks)-1].at
}

// firstAckAfter returns when the first record acknowledged at or after t
// was acknowledged (zero if none was).
func (u *nemUser) firstAckAfter(t time.Time) time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	i, _ := slices.BinarySearchFunc(u.acks, t, func(a nemAck, t time.Time) int { return a.at.Compare(t) })
	if i == len(u.acks) {
		return time.Time{}
	}
	return u.acks[i].at
}

// registration is one registration attempt of the prober.
type registration struct {
	name string
	at   time.Time // when the answer came
	err  error     // nil: acknowledged
}

// runTag tells this run's accounts from other runs' on the same testnet.
func (n *nemesis) runTag() string {
	return fmt.Sprintf("%d-%d", n.cfg.Seed, n.begin.UnixNano()%1_000_000_000)
}

// registerUsers registers the written users through the voters in turn,
// each retried for up to cfg.Recover.
func (n *nemesis) registerUsers(ctx context.Context) error {
	for i := range n.cfg.Users {
		email := fmt.Sprintf("nemesis-%s-u%d@example.com", n.runTag(), i)
		u := &nemUser{idx: i, name: api.AccountName(email), email: email}
		rctx, cancel := context.WithTimeout(ctx, n.cfg.Recover)
		var last error
		err, _ := pollUntil(rctx, 200*time.Millisecond, func() error {
			v := n.voterURLs[(i+len(n.voterURLs)-1)%len(n.voterURLs)]
			if _, last = n.register(rctx, v, email, u.name); last != nil && n.exists(rctx, u.name) {
				last = nil // an earlier attempt's outcome was unknown, and it took
			}
			return last
		})
		cancel()
		if err != nil {
			return fmt.Errorf("testnet: nemesis: registering %s: %w (last: %v)", email, err, last)
		}
		n.users = append(n.users, u)
	}
	return nil
}

// register creates an account through the voter at base: nil when the
// voter acknowledged it (200 with the account name), else the error and
// its cause for the statistics.
func (n *nemesis) register(ctx context.Context, base, email, name string) (string, error) {
	body, _ := json.Marshal(map[string]string{"email": email, "password": nemesisPassword})
	code, resp, _, err := n.call(ctx, http.MethodPut, base+"user/1.0/"+name, "", body)
	if err != nil {
		return cause(0, err), err
	}
	if code != http.StatusOK || string(resp) != name {
		return cause(code, nil), fmt.Errorf("%s answered %d %.100s", base, code, bytes.TrimSpace(resp))
	}
	return "", nil
}

// exists asks the voters in turn whether the account exists (false when
// none answers).
func (n *nemesis) exists(ctx context.Context, name string) bool {
	ok, _ := n.existsErr(ctx, name)
	return ok
}

// existsErr is exists with the error when no voter answered.
func (n *nemesis) existsErr(ctx context.Context, name string) (bool, error) {
	var errs []error
	for _, v := range n.voterURLs {
		code, body, _, err := n.call(ctx, http.MethodGet, v+"user/1.0/"+name, "", nil)
		if err == nil && code == http.StatusOK {
			return string(body) == "1", nil
		}
		errs = append(errs, fmt.Errorf("%s: %d %v", v, code, err))
	}
	return false, errors.Join(errs...)
}

// call sends one request (Basic credentials of user when set) and returns
// the status, the body, the Retry-After in seconds (0 if none) and a
// transport error.
func (n *nemesis) call(ctx context.Context, method, u, user string, body []byte) (int, []byte, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.SetBasicAuth(user, nemesisPassword)
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	var ra time.Duration
	if s, e := strconv.Atoi(resp.Header.Get("Retry-After")); e == nil && s > 0 {
		ra = time.Duration(s) * time.Second
	}
	return resp.StatusCode, b, ra, err
}

// cause names a failed request for the statistics.
func cause(code int, err error) string {
	var ne interface{ Timeout() bool }
	switch {
	case err != nil && errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case err != nil:
		return "unreachable"
	}
	return strconv.Itoa(code)
}

// lookup asks node/weave for the user's node, through the voter at index
// vi and, when it fails, the next ones; it returns the node's base URL
// and the index of the voter that answered.
func (n *nemesis) lookup(ctx context.Context, user string, vi int) (string, int, error) {
	var last error
	for k := range n.voterURLs {
		i := (vi + k) % len(n.voterURLs)
		code, body, _, err := n.call(ctx, http.MethodGet, n.voterURLs[i]+"user/1.0/"+user+"/node/weave", "", nil)
		node := strings.TrimSpace(string(body))
		if err == nil && code == http.StatusOK && strings.HasPrefix(node, "http") {
			n.mu.Lock()
			n.stats.lookups++
			n.mu.Unlock()
			return node, i, nil
		}
		if ctx.Err() != nil {
			return "", vi, ctx.Err()
		}
		c := cause(code, err)
		if err == nil && code == http.StatusOK {
			c = "no node"
		}
		n.count(&n.stats.lookupErrors, c)
		last = fmt.Errorf("node/weave via %s: %s", n.voterURLs[i], c)
	}
	return "", vi, last
}

// maxRetryAfter caps how long a writer honours a Retry-After.
const maxRetryAfter = 5 * time.Second

// nemRecord is a record a writer sends.
type nemRecord struct {
	ID      string `json:"id"`
	Payload string `json:"payload"`
}

// writer writes batches of new records for u, the way a Sync client does:
// it asks node/weave for its node, POSTs there with Basic credentials,
// and on 401, 503 or no answer asks node/weave again after a backoff and
// resends the same records. Every record the node reports as a success is
// acknowledged, with its time.
func (n *nemesis) writer(ctx context.Context, u *nemUser) {
	var pending []nemRecord
	seq := 0
	node, vi := "", u.idx%len(n.voterURLs)
	const first, most = 100 * time.Millisecond, 2 * time.Second
	backoff := first
	fail := func(key string, wait time.Duration) {
		n.count(&n.stats.writeErrors, key)
		u.set(fmt.Sprintf("pausing after %s from %s", key, n.nodeName(node)))
		node = ""
		n.pause(ctx, max(wait, backoff))
		backoff = min(2*backoff, most)
	}
	for ctx.Err() == nil {
		if len(pending) == 0 {
			for range n.cfg.BatchSize {
				seq++
				id := fmt.Sprintf("u%d-%07d", u.idx, seq)
				var salt [8]byte
				_, _ = rand.Read(salt[:])
				pending = append(pending, nemRecord{ID: id, Payload: fmt.Sprintf(`{"ciphertext":"%s/%s/%s","IV":"%d"}`,
					n.runTag(), id, hex.EncodeToString(salt[:]), seq)})
			}
		}
		if node == "" {
			var err error
			u.set("asking node/weave")
			if node, vi, err = n.lookup(ctx, u.name, vi); err != nil {
				node = ""
				n.pause(ctx, backoff)
				backoff = min(2*backoff, most)
				continue
			}
		}
		body, _ := json.Marshal(pending)
		u.set("POST to " + n.nodeName(node))
		code, resp, retryAfter, err := n.call(ctx, http.MethodPost, node+"1.1/"+u.name+"/storage/"+nemesisCollection, u.name, body)
		if ctx.Err() != nil {
			return // outcome unknown: not acknowledged
		}
		if err != nil || code != http.StatusOK {
			if retryAfter > maxRetryAfter {
				// Weave's 503s say Retry-After: 1800 by default; a real
				// client would stay away half an hour. The writer notes
				// it and comes back sooner, to see the recovery.
				n.count(&n.stats.writeErrors, fmt.Sprintf("%d with Retry-After %v", code, retryAfter))
				retryAfter = maxRetryAfter
			}
			fail(cause(code, err), retryAfter)
			continue
		}
		var out struct {
			Success []string            `json:"success"`
			Failed  map[string][]string `json:"failed"`
		}
		if err := json.Unmarshal(resp, &out); err != nil {
			fail("bad answer", 0)
			continue
		}
		ok := map[string]bool{}
		for _, id := range out.Success {
			ok[id] = true
		}
		var rest []nemRecord
		u.mu.Lock()
		at := time.Now()
		for _, r := range pending {
			if ok[r.ID] {
				u.acks = append(u.acks, nemAck{id: r.ID, payload: r.Payload, node: node, at: at})
			} else {
				rest = append(rest, r)
			}
		}
		u.mu.Unlock()
		n.mu.Lock()
		n.stats.acked += len(pending) - len(rest)
		n.mu.Unlock()
		if len(rest) > 0 {
			n.count(&n.stats.writeErrors, "record failed")
		}
		pending, backoff = rest, first
		u.set("pausing after an acknowledgement")
		n.pause(ctx, n.cfg.WritePause)
	}
}

// reader reads u's whole collection through node/weave again and again
// and checks that every answer 200 lists every record acknowledged before
// the read started.
func (n *nemesis) reader(ctx context.Context, u *nemUser) {
	vi := (u.idx + 1) % len(n.voterURLs)
	for ctx.Err() == nil {
		u.mu.Lock()
		start, known := time.Now(), len(u.acks)
		u.mu.Unlock()
		node, i, err := n.lookup(ctx, u.name, vi)
		vi = i
		if err != nil {
			n.pause(ctx, n.cfg.ReadPause)
			continue
		}
		code, body, _, err := n.call(ctx, http.MethodGet, node+"1.1/"+u.name+"/storage/"+nemesisCollection, u.name, nil)
		if ctx.Err() != nil {
			return
		}
		var ids []string
		if err == nil && code == http.StatusOK {
			if jerr := json.Unmarshal(body, &ids); jerr != nil {
				err = fmt.Errorf("bad listing: %w", jerr)
			}
		}
		if err != nil || code != http.StatusOK {
			n.count(&n.stats.readErrors, cause(code, err))
			n.pause(ctx, n.cfg.ReadPause)
			continue
		}
		u.mu.Lock()
		before := u.acks[:known]
		u.mu.Unlock()
		listed := make(map[string]bool, len(ids))
		for _, id := range ids {
			listed[id] = true
		}
		answered := n.since(time.Now())
		var missing []string
		var ackedBy []string
		var first, last time.Duration
		for _, a := range before {
			if !listed[a.id] {
				at := n.since(a.at)
				if len(missing) == 0 {
					first = at
				}
				last = at
				missing = append(missing, a.id)
				if by := n.nodeName(a.node); !slices.Contains(ackedBy, by) {
					ackedBy = append(ackedBy, by)
				}
			}
		}
		name := n.nodeName(node)
		n.mu.Lock()
		n.stats.reads++
		if len(missing) > 0 {
			n.stats.stale = append(n.stats.stale, StaleRead{User: u.name, Node: name, At: n.since(start),
				Listed: len(ids), Missing: len(missing), Example: missing[:min(3, len(missing))],
				Answered: answered, AckedBy: ackedBy, FirstAcked: first, LastAcked: last})
		}
		n.mu.Unlock()
		n.pause(ctx, n.cfg.ReadPause)
	}
}

// prober registers a new account every cfg.RegisterPause through the
// voters in turn and records every answer.
func (n *nemesis) prober(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		email := fmt.Sprintf("nemesis-%s-r%d@example.com", n.runTag(), i)
		name := api.AccountName(email)
		key, err := n.register(ctx, n.voterURLs[i%len(n.voterURLs)], email, name)
		if ctx.Err() != nil {
			return
		}
		n.mu.Lock()
		n.regs = append(n.regs, registration{name: name, at: time.Now(), err: err})
		n.mu.Unlock()
		if err != nil {
			n.count(&n.stats.regErrors, key)
		}
		n.pause(ctx, n.cfg.RegisterPause)
	}
}

// nodeName returns the short name of the node with base URL u (u itself
// when unknown; the testnet's nodes keep their URLs across restarts).
func (n *nemesis) nodeName(u string) string {
	for _, e := range n.tn.Nodes() {
		if e.HTTP == u {
			return e.Name
		}
	}
	return u
}

// listing reads every record of the user's collection on the node at
// base directly (GET ?full=1 with Basic credentials): id -> payload.
func (n *nemesis) listing(ctx context.Context, base, user string) (map[string]string, error) {
	code, body, _, err := n.call(ctx, http.MethodGet, base+"1.1/"+user+"/storage/"+nemesisCollection+"?full=1", user, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%d %.100s", code, bytes.TrimSpace(body))
	}
	var ws []nemRecord
	if err := json.Unmarshal(body, &ws); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ws))
	for _, w := range ws {
		out[w.ID] = w.Payload
	}
	return out, nil
}
