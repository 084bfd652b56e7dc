package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// benchStore serves fixed answers so that the benchmarks measure the HTTP
// layer only.
type benchStore struct {
	fakeStore
	ws []WBO
}

func (s *benchStore) CollectionTimestamps(context.Context, string) (map[string]Stamp, Stamp, error) {
	return map[string]Stamp{"tabs": 176000000012, "history": 176000000034, "clients": 176000000056,
		"meta": 176000000001, "crypto": 176000000002, "bookmarks": 176000000078}, 176000000099, nil
}

func (s *benchStore) GetCollection(_ context.Context, _, _ string, q *Query, start func(int, Stamp) error, emit func(*WBO) error) error {
	return EmitRecords(s.ws, 176000000099, start, emit)
}

func newBenchHandler(b *testing.B) http.Handler {
	st := &benchStore{}
	p := `{"ciphertext":"` + strings.Repeat("Zm9vYmFy", 50) + `","IV":"aXY=","hmac":"0123456789abcdef"}`
	for i := range 100 {
		st.ws = append(st.ws, WBO{ID: "abcdefghij" + string(rune('a'+i%26)) + string(rune('a'+i/26)),
			Modified: 176000000000 + Stamp(i), Payload: p, SortIndex: int64(i), Has: FieldPayload | FieldSortIndex})
	}
	cfg := DefaultStorageConfig()
	cfg.Store, cfg.Auth = st, fakeAuth{}
	h, err := NewStorageHandler(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// benchServer measures requests per second against a real loopback server.
func benchServer(b *testing.B, h http.Handler, path string) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	auth := basic("alice", "secret")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", auth)
		for pb.Next() {
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
}

func BenchmarkServeBare(b *testing.B) {
	benchServer(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"tabs":1760000000.12}`)
	}), "/")
}

func BenchmarkServeInfoCollections(b *testing.B) {
	benchServer(b, newBenchHandler(b), "/1.1/alice/info/collections")
}

func BenchmarkServeGetFull100(b *testing.B) {
	benchServer(b, newBenchHandler(b), "/1.1/alice/storage/history?full=1&limit=100&newer=1760000000.00")
}

// BenchmarkHandlerInfoCollections measures the handler without the network.
func BenchmarkHandlerInfoCollections(b *testing.B) {
	h := newBenchHandler(b)
	req := httptest.NewRequest("GET", "/1.1/alice/info/collections", nil)
	req.Header.Set("Authorization", basic("alice", "secret"))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
	}
}

// BenchmarkHandlerGetFull100 measures GET full=1&limit=100 without the network.
func BenchmarkHandlerGetFull100(b *testing.B) {
	h := newBenchHandler(b)
	req := httptest.NewRequest("GET", "/1.1/alice/storage/history?full=1&limit=100&newer=1760000000.00", nil)
	req.Header.Set("Authorization", basic("alice", "secret"))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
	}
}
