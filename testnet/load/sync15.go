package load

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hce-sync/hce/api/hawk"
	"github.com/hce-sync/hce/api/tokenserver"
	"github.com/hce-sync/hce/testnet/load/mix"
)

// Sync 1.5 runs (EngineConfig.API = API15). A mix is written in Weave 1.1
// paths (/1.1/{user}/...); a 1.5 run sends each storage request to the
// user's Sync 1.5 endpoint instead (<node>/1.5/<uid>/ + the rest of the
// path), signed with Hawk. Each profile's account gets an access token
// from the directory's local issuer (POST /fxa-local/v1/token, so the
// target runs it: hce serve does by default, a testnet's voters do) and
// trades it at the tokenserver (GET /1.0/sync/1.5) for Hawk credentials
// and its endpoint during Prepare, again after a 401 and before they
// expire; the mix's "token" background request becomes that tokenserver
// request. The replication lag probe is off (Hawk credentials are for the
// primary only).

// The storage protocols an Engine speaks.
const (
	API11 = "1.1"
	API15 = "1.5"
)

// sync15Creds are a profile's Sync 1.5 credentials.
type sync15Creds struct {
	fxa      string // the access token
	id, key  string
	endpoint string // api_endpoint with a trailing "/"
	uid      uint64
	expires  time.Time
}

// keyID is the X-KeyID of a profile (keys changed at 1 ms, a client state
// derived from the account name).
func keyID(name string) string {
	sum := sha256.Sum256([]byte("hce-load-client-state:" + name))
	k, _ := tokenserver.FormatKeyID(tokenserver.KeyID{KeysChangedAt: 1, ClientState: hex.EncodeToString(sum[:16])})
	return k
}

// sync15Login gets p an access token from the local issuer (unless it
// has one) and Hawk credentials from the tokenserver.
func (e *Engine) sync15Login(ctx context.Context, p *profile) error {
	p.mu.Lock()
	fxa := p.s15.fxa
	p.mu.Unlock()
	if fxa == "" {
		err := retry(ctx, func() (outcome, error) {
			out, data := e.sendRead(ctx, http.MethodPost, p.user+"fxa-local/v1/token", p.auth, nil)
			var r struct {
				AccessToken string `json:"access_token"`
			}
			if out.status != http.StatusOK || json.Unmarshal(data, &r) != nil || r.AccessToken == "" {
				return out, fmt.Errorf("%w: access token of %s from the local issuer: %s %.200s", ErrPrepare, p.name, out.describe(), data)
			}
			fxa = r.AccessToken
			return out, nil
		})
		if err != nil {
			return err
		}
	}
	return retry(ctx, func() (outcome, error) {
		out, data := e.tokenserver(ctx, p, fxa)
		var r tokenserver.Response
		if out.status != http.StatusOK || json.Unmarshal(data, &r) != nil || r.ID == "" {
			return out, fmt.Errorf("%w: Sync 1.5 credentials of %s: %s %.200s", ErrPrepare, p.name, out.describe(), data)
		}
		ep := r.APIEndpoint
		if !strings.HasSuffix(ep, "/") {
			ep += "/"
		}
		p.mu.Lock()
		p.s15 = sync15Creds{fxa: fxa, id: r.ID, key: r.Key, endpoint: ep, uid: r.UID,
			expires: time.Now().Add(time.Duration(r.Duration) * time.Second)}
		p.storage, p.resolve = ep, false
		p.mu.Unlock()
		return out, nil
	})
}

// tokenserver sends a token request with access token fxa.
func (e *Engine) tokenserver(ctx context.Context, p *profile, fxa string) (outcome, []byte) {
	ctx, cancel := context.WithTimeout(ctx, max(e.cfg.Timeout, 30*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.user+strings.TrimPrefix(tokenserver.Path, "/"), nil)
	if err != nil {
		return outcome{kind: "bad request: " + err.Error()}, nil
	}
	req.Header.Set("Authorization", "Bearer "+fxa)
	req.Header.Set("X-KeyID", keyID(p.name))
	resp, err := e.client.Do(req)
	if err != nil {
		var out outcome
		out.kind, out.timeout = classify(ctx, err)
		return out, nil
	}
	defer resp.Body.Close()
	var buf [16 << 10]byte
	n, _ := readFull(resp.Body, buf[:])
	out := outcome{status: resp.StatusCode, bytesIn: int64(n)}
	if resp.StatusCode >= 300 {
		out.kind = fmt.Sprintf("http %d", resp.StatusCode)
	}
	return out, buf[:n]
}

// readFull reads until buf is full or the reader ends.
func readFull(r interface{ Read([]byte) (int, error) }, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// storageRest is the part of a mix's storage path after its protocol
// prefix and user ("/1.1/{user}/info/collections" -> "info/collections").
func storageRest(path, user string) string {
	for _, v := range []string{"/1.1/", "/1.0/", "/1/"} {
		if rest, ok := strings.CutPrefix(path, v+user); ok {
			return strings.TrimPrefix(rest, "/")
		}
	}
	return strings.TrimPrefix(path, "/")
}

// storageRequest returns the URL and Authorization of a storage request
// of p whose path (from the server root, user filled in) is path.
func (e *Engine) storageRequest(ctx context.Context, p *profile, method, base, path string) (string, string) {
	if e.cfg.API != API15 {
		return base + strings.TrimPrefix(path, "/"), p.auth
	}
	p.mu.Lock()
	c := p.s15
	p.mu.Unlock()
	if c.id == "" || time.Until(c.expires) < time.Minute {
		if err := e.sync15Login(ctx, p); err == nil {
			p.mu.Lock()
			c = p.s15
			p.mu.Unlock()
		}
	}
	u := c.endpoint + storageRest(path, p.name)
	return u, hawkAuth(c, method, u)
}

// lastOfEachID returns ws with every id once, at its last place (ws
// itself when no id repeats).
func lastOfEachID(ws []mix.WBO) []mix.WBO {
	seen := make(map[string]int, len(ws))
	dup := false
	for i, w := range ws {
		if _, ok := seen[w.ID]; ok {
			dup = true
		}
		seen[w.ID] = i
	}
	if !dup {
		return ws
	}
	out := make([]mix.WBO, 0, len(seen))
	for i, w := range ws {
		if seen[w.ID] == i {
			out = append(out, w)
		}
	}
	return out
}

// hawkAuth signs a request to u with c.
func hawkAuth(c sync15Creds, method, u string) string {
	pu, err := url.Parse(u)
	if err != nil || c.id == "" {
		return ""
	}
	port := 80
	if pu.Scheme == "https" {
		port = 443
	}
	if p := pu.Port(); p != "" {
		port, _ = strconv.Atoi(p)
	}
	auth, err := hawk.Sign(hawk.Credentials{ID: c.id, Key: []byte(c.key)}, method, pu.RequestURI(), pu.Hostname(), port, hawk.SignOptions{}, time.Now().Unix())
	if err != nil {
		return ""
	}
	return auth
}
