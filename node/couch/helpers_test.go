package couch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
	"github.com/hce-sync/hce/node/revtree"
)

var _ Store = (*node.Store)(nil)

var bg = context.Background()

// passwords is the directory's password check, reduced to a map (the node
// Authenticator in front of it is the real one).
type passwords map[string]string

func (p passwords) CheckPassword(ctx context.Context, user, password string) error {
	if pw, ok := p[user]; ok && pw == password {
		return nil
	}
	return api.ErrUnauthorized
}

// env is a real node store behind the CouchDB handler on a loopback HTTP
// server.
type env struct {
	store *node.Store
	srv   *httptest.Server
	base  string // server root URL, without trailing '/'
}

const (
	alice   = "alice"
	alicePW = "alice-secret"
	bob     = "bob"
	bobPW   = "bob-secret"
)

func newEnv(t *testing.T, mods ...func(*Config)) *env {
	t.Helper()
	return newEnvWith(t, nil, mods...)
}

// newEnvWith is newEnv with the node store's configuration changed by
// nmod (when not nil).
func newEnvWith(t *testing.T, nmod func(*node.Config), mods ...func(*Config)) *env {
	t.Helper()
	ncfg := node.DefaultConfig()
	ncfg.Dir = t.TempDir()
	ncfg.CacheBytes = 8 << 20
	ncfg.MemTableBytes = 4 << 20
	if nmod != nil {
		nmod(&ncfg)
	}
	st, err := node.Open(ncfg)
	if err != nil {
		t.Fatalf("node.Open: %v", err)
	}
	auth, err := node.NewAuthenticator(node.AuthConfig{Checker: passwords{alice: alicePW, bob: bobPW}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Store, cfg.Auth = st, auth
	cfg.MinHeartbeat = 10 * time.Millisecond
	for _, m := range mods {
		m(&cfg)
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		st.Close()
	})
	return &env{store: st, srv: srv, base: srv.URL + "/couch"}
}

// resp is one answer.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
}

// errOf returns the CouchDB error string of an error answer.
func (r resp) errOf(t *testing.T) (string, string) {
	t.Helper()
	var e struct{ Error, Reason string }
	r.json(t, &e)
	return e.Error, e.Reason
}

func basicAuth(user, pw string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
}

// do sends a request to path (relative to the server root) with alice's
// credentials unless hdr overrides Authorization ("" sends none).
func (e *env) do(t *testing.T, method, path string, body any, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", basicAuth(alice, alicePW))
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading: %v", method, path, err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: data}
}

func wantStatus(t *testing.T, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q", ct)
	}
}

func wantError(t *testing.T, r resp, status int, code string) {
	t.Helper()
	wantStatus(t, r, status)
	if got, reason := r.errOf(t); got != code || reason == "" {
		t.Fatalf("error %q (%q), want %q", got, reason, code)
	}
}

// hashOf makes a rev hash from a label (tests' client-made revisions).
func hashOf(label string) string {
	h := revtree.NewRevHash(revtree.Rev{}, false, []byte(label))
	return revtree.Rev{Pos: 1, Hash: h}.HashString()
}

// clientDoc is a document as a CouchDB client sends it with
// new_edits=false; ids are newest first.
func clientDoc(docID string, start uint64, ids []string, fields map[string]any) map[string]any {
	d := map[string]any{
		"_id":        docID,
		"_rev":       revStr(start, ids[0]),
		"_revisions": map[string]any{"start": start, "ids": ids},
	}
	for k, v := range fields {
		d[k] = v
	}
	return d
}

func revStr(pos uint64, hash string) string { return fmt.Sprintf("%d-%s", pos, hash) }

func (e *env) bulkDocs(t *testing.T, docs ...map[string]any) []map[string]string {
	t.Helper()
	r := e.do(t, "POST", "/alice/_bulk_docs", map[string]any{"docs": docs, "new_edits": false})
	wantStatus(t, r, http.StatusCreated)
	var out []map[string]string
	r.json(t, &out)
	return out
}

// changesResp is a normal/longpoll feed answer.
type changesResp struct {
	Results []struct {
		Seq     uint64 `json:"seq"`
		ID      string `json:"id"`
		Changes []struct {
			Rev string `json:"rev"`
		} `json:"changes"`
		Deleted bool            `json:"deleted"`
		Doc     json.RawMessage `json:"doc"`
	} `json:"results"`
	LastSeq uint64 `json:"last_seq"`
}

func (e *env) changes(t *testing.T, query string) changesResp {
	t.Helper()
	r := e.do(t, "GET", "/alice/_changes?"+query, nil)
	wantStatus(t, r, http.StatusOK)
	var c changesResp
	r.json(t, &c)
	return c
}
