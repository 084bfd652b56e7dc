package sync15

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/hawk"
)

// streamStore serves one generated collection of n records without
// holding them. Halfway through it waits until the reader has received
// the first bytes of the answer: a handler that buffered the whole answer
// would never let that happen.
type streamStore struct {
	*memStore
	n          int
	payload    string
	firstBytes chan struct{}
	failAt     int // emit fails after this many records (0: never)
}

func (s *streamStore) GetCollection(ctx context.Context, _, _ string, q *Query, start func(*Page) error, emit func(*BSO) error) error {
	count := min(s.n, q.Limit)
	rec := func(i int) BSO {
		return BSO{ID: fmt.Sprintf("r%06d", s.n-1-i), Modified: 100, Payload: s.payload, Has: FieldPayload}
	}
	p := &Page{LastModified: 100, Count: count, More: s.n > count}
	if count > 0 {
		last := rec(count - 1)
		p.Last = PositionOf(&last)
	}
	if err := start(p); err != nil {
		return err
	}
	for i := 0; i < count; i++ {
		if i == count/2 {
			deadline := time.NewTimer(20 * time.Second)
			select {
			case <-s.firstBytes:
				deadline.Stop()
			case <-deadline.C:
				return errors.New("the handler has not sent anything after half the records")
			case <-ctx.Done():
				deadline.Stop()
				return ctx.Err()
			}
		}
		if s.failAt > 0 && i == s.failAt {
			return errors.New("disk died mid-read")
		}
		b := rec(i)
		if err := emit(&b); err != nil {
			return err
		}
	}
	return nil
}

func TestStreamingRead(t *testing.T) {
	for _, failAt := range []int{0, 1500} {
		t.Run(fmt.Sprintf("failAt=%d", failAt), func(t *testing.T) {
			ss := &streamStore{n: 2000, payload: strings.Repeat("x", 1024), firstBytes: make(chan struct{}), failAt: failAt}
			e := newEnv(t, func(c *Config) { c.Store = ss })
			ss.memStore = e.store
			c := e.newClient(42, "alice", time.Hour)
			host, port := hostPort(t, e)
			req, _ := http.NewRequest("GET", e.srv.URL+"/1.5/42/storage/col?full=1", nil)
			auth, _ := hawk.Sign(hawk.Credentials{ID: c.id, Key: []byte(c.key)}, "GET", "/1.5/42/storage/col?full=1", host, port, hawk.SignOptions{}, e.clock.Now().Unix())
			req.Header.Set("Authorization", auth)
			res, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != 200 || res.Header.Get("X-Weave-Records") != "2000" || res.ContentLength != -1 {
				t.Fatalf("answer %d %v", res.StatusCode, res.Header)
			}
			first := make([]byte, 64<<10)
			if _, err := io.ReadFull(res.Body, first); err != nil {
				t.Fatal(err)
			}
			close(ss.firstBytes)
			rest, err := io.ReadAll(res.Body)
			if failAt > 0 {
				if err == nil {
					t.Fatal("a read that failed mid-stream ended like a complete answer")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var list []map[string]any
			if err := json.Unmarshal(append(first, rest...), &list); err != nil || len(list) != 2000 {
				t.Fatalf("decoded %d records: %v", len(list), err)
			}
		})
	}
}

// brokenStore reports pages that do not match what it emits.
type brokenStore struct {
	*memStore
	count, emits int
}

func (s *brokenStore) GetCollection(_ context.Context, _, _ string, _ *Query, start func(*Page) error, emit func(*BSO) error) error {
	if err := start(&Page{Count: s.count}); err != nil {
		return err
	}
	for i := 0; i < s.emits; i++ {
		if err := emit(&BSO{ID: "x"}); err != nil {
			return err
		}
	}
	return nil
}

func TestStoreContractViolations(t *testing.T) {
	for _, tc := range []struct{ count, emits int }{{2, 1}, {1, 2}, {-1, 0}} {
		bs := &brokenStore{count: tc.count, emits: tc.emits}
		e := newEnv(t, func(c *Config) { c.Store = bs })
		bs.memStore = e.store
		c := e.newClient(42, "alice", time.Hour)
		host, port := hostPort(t, e)
		req, _ := http.NewRequest("GET", e.srv.URL+"/1.5/42/storage/col", nil)
		auth, _ := hawk.Sign(hawk.Credentials{ID: c.id, Key: []byte(c.key)}, "GET", "/1.5/42/storage/col", host, port, hawk.SignOptions{}, e.clock.Now().Unix())
		req.Header.Set("Authorization", auth)
		res, err := e.srv.Client().Do(req)
		if err == nil {
			_, err = io.ReadAll(res.Body)
			res.Body.Close()
			if err == nil && res.StatusCode == 200 {
				t.Fatalf("page of %d with %d records answered as complete", tc.count, tc.emits)
			}
		}
	}
}

// TestListingFitsOneWrite checks that a page smaller than the stream
// buffer goes out with its Content-Length (not chunked), in JSON and in
// newlines, and that a store failure before anything was written gets
// an error answer without the page's headers, not a cut connection.
func TestListingFitsOneWrite(t *testing.T) {
	e := newEnv(t, nil)
	c := e.newClient(42, "alice", time.Hour)
	expect(t, c.do("POST", "/storage/col", `[{"id":"a","payload":"x"},{"id":"b","payload":"y\"z"},{"id":"c","payload":"w","sortindex":3}]`), 200, "*")
	for _, accept := range []string{"application/json", "application/newlines"} {
		r := c.do("GET", "/storage/col?full=1", "", "Accept: "+accept)
		if r.status != 200 || r.header.Get("X-Weave-Records") != "3" {
			t.Fatalf("%s: answer %d %v", accept, r.status, r.header)
		}
		if cl := r.header.Get("Content-Length"); cl != strconv.Itoa(len(r.body)) {
			t.Fatalf("%s: Content-Length %q for a body of %d bytes", accept, cl, len(r.body))
		}
		if accept == "application/json" {
			var list []map[string]any
			r.json(t, &list)
			if len(list) != 3 || list[1]["payload"] != `y"z` {
				t.Fatalf("list %v", list)
			}
		} else if n := strings.Count(r.body, "\n"); n != 3 {
			t.Fatalf("%d lines: %q", n, r.body)
		}
	}

	ss := &streamStore{n: 2000, payload: "p", failAt: 10}
	e2 := newEnv(t, func(c *Config) { c.Store = ss })
	ss.memStore = e2.store
	c2 := e2.newClient(42, "alice", time.Hour)
	r := c2.do("GET", "/storage/col?full=1", "")
	if r.status < 500 || r.header.Get("X-Weave-Records") != "" || r.header.Get("X-Last-Modified") != "" || strings.HasPrefix(r.body, "[") {
		t.Fatalf("a read that failed before its first write answered %d %v %q", r.status, r.header, r.body)
	}
}
