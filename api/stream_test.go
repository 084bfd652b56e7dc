package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// streamStore is a Store whose GetCollection emits n copies of a record,
// counting n+extra and failing with fail after failAt records (-1: never).
type streamStore struct {
	*fakeStore
	n, extra, failAt int
	fail             error
	rec              WBO
}

func (s *streamStore) GetCollection(_ context.Context, _, _ string, _ *Query, start func(int, Stamp) error, emit func(*WBO) error) error {
	if s.failAt == 0 {
		return s.fail
	}
	if err := start(s.n+s.extra, 100); err != nil {
		return err
	}
	for i := range s.n {
		if i == s.failAt {
			return s.fail
		}
		w := s.rec
		w.ID = "r" + strconv.Itoa(i)
		if err := emit(&w); err != nil {
			return err
		}
	}
	return nil
}

func streamServer(t *testing.T, st Store) *httptest.Server {
	t.Helper()
	cfg := DefaultStorageConfig()
	cfg.Store, cfg.Auth = st, fakeAuth{}
	h, err := NewStorageHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func streamGet(t *testing.T, srv *httptest.Server, query string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+"/1.1/alice/storage/big"+query, nil)
	req.Header.Set("Authorization", basic("alice", "secret"))
	resp, err := srv.Client().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// TestStorageGetCollectionStreams checks that a large answer goes out in
// chunks (no Content-Length), complete and in order, while a small one
// keeps its Content-Length.
func TestStorageGetCollectionStreams(t *testing.T) {
	p := strings.Repeat("z", 100<<10)
	st := &streamStore{fakeStore: newFakeStore(), n: 20, failAt: -1, rec: WBO{Payload: p, Has: FieldPayload, Plain: PlainPayload}}
	srv := streamServer(t, st)
	resp, body, err := streamGet(t, srv, "?full=1")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != -1 || resp.Header.Get("X-Weave-Records") != "20" {
		t.Fatalf("status %d, length %d, headers %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	var want []byte
	want = AppendListStart(want, FormatJSON)
	for i := range 20 {
		w := st.rec
		w.ID = "r" + strconv.Itoa(i)
		want = AppendListElem(want, FormatJSON, i == 0, func(b []byte) []byte { return AppendWBOJSON(b, w) })
	}
	want = AppendListEnd(want, FormatJSON)
	if string(body) != string(want) {
		t.Fatalf("body of %d bytes differs from the %d expected", len(body), len(want))
	}
	st.n = 2
	resp, body, err = streamGet(t, srv, "")
	if err != nil || resp.ContentLength != int64(len(body)) || string(body) != `["r0","r1"]` {
		t.Fatalf("small answer: %v, length %d, %q", err, resp.ContentLength, body)
	}
}

// TestStorageGetCollectionFailures checks what a client sees when the
// store fails: a 503 before anything was written, a cut connection (never
// a well-formed list) after; a store that emits fewer or more records than
// it counted is a failure too.
func TestStorageGetCollectionFailures(t *testing.T) {
	p := strings.Repeat("z", 100<<10)
	rec := WBO{Payload: p, Has: FieldPayload}
	boom := errors.New("disk on fire")
	for _, tt := range []struct {
		name             string
		n, extra, failAt int
		wantStatus       int
		wantCut          bool
	}{
		{name: "before start", n: 20, failAt: 0, wantStatus: 503},
		{name: "buffered", n: 20, failAt: 1, wantStatus: 503},
		{name: "mid-stream", n: 20, failAt: 10, wantStatus: 200, wantCut: true},
		{name: "short count buffered", n: 1, extra: 1, failAt: -1, wantStatus: 503},
		{name: "short count streamed", n: 20, extra: 1, failAt: -1, wantStatus: 200, wantCut: true},
		{name: "long count", n: 20, extra: -1, failAt: -1, wantStatus: 200, wantCut: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &streamStore{fakeStore: newFakeStore(), n: tt.n, extra: tt.extra, failAt: tt.failAt, fail: boom, rec: rec}
			srv := streamServer(t, st)
			resp, body, err := streamGet(t, srv, "?full=1")
			if resp == nil {
				t.Fatalf("no answer: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantCut {
				if err == nil {
					t.Fatalf("read %d bytes of a cut answer without an error", len(body))
				}
				return
			}
			if err != nil || resp.Header.Get("Retry-After") == "" || resp.Header.Get("X-Weave-Records") != "" {
				t.Fatalf("503: %v, headers %v", err, resp.Header)
			}
		})
	}
}
