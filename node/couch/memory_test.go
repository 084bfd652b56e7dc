package couch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
)

func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestLargeAnswersBounded checks that _bulk_get, _changes with
// include_docs and open_revs stream their answers: 200 documents of 250
// KB (50 MB) fetched whole by four parallel _bulk_get and two
// _changes?include_docs=true must not grow the Go heap by more than 64
// MiB (built in memory, each _bulk_get held the documents, the results
// and their encoding: about 150 MB each).
func TestLargeAnswersBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 50 MB")
	}
	e := newEnv(t)
	docs := 200
	if raceEnabled {
		docs = 60
	}
	payload := strings.Repeat("p", 250<<10)
	var ids []string
	for i := 0; i < docs; i += 4 {
		var ws []api.WBO
		for j := i; j < i+4 && j < docs; j++ {
			id := fmt.Sprintf("r%04d", j)
			ids = append(ids, "big/"+id)
			ws = append(ws, api.WBO{ID: id, Has: api.FieldPayload, Payload: payload})
		}
		if _, err := e.store.PostItems(bg, alice, "big", ws, api.Precondition{}); err != nil {
			t.Fatal(err)
		}
	}
	payload = ""
	type docReq struct {
		ID string `json:"id"`
	}
	var reqDocs []docReq
	for _, id := range ids {
		reqDocs = append(reqDocs, docReq{ID: id})
	}
	bulkBody, _ := json.Marshal(map[string]any{"docs": reqDocs})
	get := func(method, path string, body []byte) error {
		req, _ := http.NewRequest(method, e.base+path, bytes.NewReader(body))
		req.Header.Set("Authorization", basicAuth(alice, alicePW))
		req.Header.Set("Content-Type", "application/json")
		res, err := e.srv.Client().Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		n, err := io.Copy(io.Discard, res.Body)
		if err == nil && (res.StatusCode != 200 || n < int64(docs)*250<<10) {
			err = fmt.Errorf("%s %s: status %d, %d bytes", method, path, res.StatusCode, n)
		}
		return err
	}
	runtime.GC()
	base := heapBytes()
	var peak atomic.Uint64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(2 * time.Millisecond)
		defer tk.Stop()
		for {
			if v := heapBytes(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i < 4 {
				errs <- get("POST", "/alice/_bulk_get?revs=true", bulkBody)
			} else {
				errs <- get("GET", "/alice/_changes?include_docs=true", nil)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	grow := int64(peak.Load()) - int64(base)
	t.Logf("%d documents of 250 KB, 4 _bulk_get and 2 _changes?include_docs=true in parallel: Go heap +%d MiB", docs, grow>>20)
	if grow > 64<<20 {
		t.Errorf("the Go heap grew by %d MiB, want at most 64 MiB", grow>>20)
	}
}

// failingStore fails GetDoc from its n-th call on.
type failingStore struct {
	*node.Store
	calls, n atomic.Int32
}

func (f *failingStore) GetDoc(ctx context.Context, user, coll, id string) (*node.Doc, error) {
	if f.calls.Add(1) >= f.n.Load() {
		return nil, errors.New("store failure")
	}
	return f.Store.GetDoc(ctx, user, coll, id)
}

// TestBulkGetFailureCutsConnection checks that a store failure after a
// _bulk_get answer started cuts the connection (the client must not take
// a truncated answer for a whole one), and that one before any result is
// answered as an error.
func TestBulkGetFailureCutsConnection(t *testing.T) {
	e := newEnv(t)
	payload := strings.Repeat("p", 100<<10)
	var reqDocs []map[string]string
	for i := range 6 {
		id := fmt.Sprintf("r%d", i)
		if _, err := e.store.PutItem(bg, alice, "c", api.WBO{ID: id, Has: api.FieldPayload, Payload: payload}, api.Precondition{}); err != nil {
			t.Fatal(err)
		}
		reqDocs = append(reqDocs, map[string]string{"id": "c/" + id})
	}
	body, _ := json.Marshal(map[string]any{"docs": reqDocs})
	for _, tt := range []struct {
		failAt int32
		cut    bool
	}{{1, false}, {4, true}} {
		fs := &failingStore{Store: e.store}
		fs.n.Store(tt.failAt)
		auth, err := node.NewAuthenticator(node.AuthConfig{Checker: passwords{alice: alicePW}})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Store, cfg.Auth = fs, auth
		h, err := NewHandler(cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		req, _ := http.NewRequest("POST", srv.URL+"/couch/alice/_bulk_get", bytes.NewReader(body))
		req.Header.Set("Authorization", basicAuth(alice, alicePW))
		req.Header.Set("Content-Type", "application/json")
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, rerr := io.ReadAll(res.Body)
		res.Body.Close()
		srv.Close()
		switch {
		case tt.cut && (res.StatusCode != 200 || rerr == nil):
			t.Errorf("failure at doc %d: status %d, read error %v after %d bytes, want a cut 200", tt.failAt, res.StatusCode, rerr, len(data))
		case !tt.cut && (res.StatusCode != 500 || rerr != nil):
			t.Errorf("failure at doc %d: status %d, %v, want 500", tt.failAt, res.StatusCode, rerr)
		}
	}
}
