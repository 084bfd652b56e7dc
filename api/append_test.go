package api

import (
	"context"
	"errors"
	"strconv"
	"testing"
)

// appendingStore is a fakeStore that also implements CollectionAppender,
// encoding GetCollection's answer, and counts the calls of that path.
type appendingStore struct {
	*fakeStore
	appends int
}

func (s *appendingStore) AppendCollection(ctx context.Context, user, coll string, q *Query, f Format, b []byte) ([]byte, int, Stamp, error) {
	s.appends++
	ws, now, err := s.GetCollection(ctx, user, coll, q)
	if err != nil {
		return b, 0, 0, err
	}
	b = AppendListStart(b, f)
	for i := range ws {
		b = AppendListElem(b, f, i == 0, func(b []byte) []byte {
			if q.Full {
				return AppendWBOJSON(b, ws[i])
			}
			return AppendJSONString(b, ws[i].ID)
		})
	}
	return AppendListEnd(b, f), len(ws), now, nil
}

// TestStorageGetCollectionAppender checks that a store implementing
// CollectionAppender serves GET storage/{coll} with the same bodies and
// headers as the GetCollection path, plus a Content-Length.
func TestStorageGetCollectionAppender(t *testing.T) {
	plain := newStorageFixture(t)
	f := newStorageFixture(t)
	st := &appendingStore{fakeStore: f.store}
	cfg := DefaultStorageConfig()
	cfg.Store, cfg.Auth = st, fakeAuth{}
	h, err := NewStorageHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	for _, tt := range []struct{ query, accept string }{
		{"", ""}, {"?full=1", ""}, {"?full=1", "application/whoisi"}, {"", "application/newlines"}, {"?full=1&limit=1", ""},
	} {
		want := plain.do("GET", "/1.1/alice/storage/history"+tt.query, "", "Accept", tt.accept)
		n := st.appends
		got := f.do("GET", "/1.1/alice/storage/history"+tt.query, "", "Accept", tt.accept)
		if st.appends != n+1 {
			t.Errorf("%q: AppendCollection not used", tt.query)
		}
		for _, k := range []string{"Content-Type", "X-Weave-Records", "X-Weave-Timestamp"} {
			if got.hdr.Get(k) != want.hdr.Get(k) {
				t.Errorf("%q %q: %s = %q, want %q", tt.query, tt.accept, k, got.hdr.Get(k), want.hdr.Get(k))
			}
		}
		if got.code != 200 || got.body != want.body || got.hdr.Get("Content-Length") != strconv.Itoa(len(want.body)) {
			t.Errorf("%q %q: %d %q %v, want %q", tt.query, tt.accept, got.code, got.body, got.hdr, want.body)
		}
	}
	f.store.readErr = errors.New("disk on fire")
	if r := f.do("GET", "/1.1/alice/storage/history?full=1", ""); r.code != 503 {
		t.Errorf("read error: %d %q", r.code, r.body)
	}
}
