package api

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestStorageLimitsConfigured checks that StorageConfig's payload and
// POST limits replace the protocol defaults, and that a payload limit
// above the protocol's is refused.
func TestStorageLimitsConfigured(t *testing.T) {
	st := newFakeStore()
	cfg := DefaultStorageConfig()
	cfg.Store = st
	cfg.Auth = authFunc(func(context.Context, string, Credentials) error { return nil })
	cfg.MaxPayloadBytes, cfg.MaxPostRecords, cfg.MaxPostBytes = 10, 2, 15
	h, err := NewStorageHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &storageFixture{store: st, h: h, auth: &fakeAuth{}}
	if r := f.do("PUT", "/1.1/alice/storage/tabs/a", `{"payload":"12345678901"}`); r.code != 400 || r.body != "8" {
		t.Fatalf("PUT of 11 payload bytes with a limit of 10: %d %q", r.code, r.body)
	}
	if r := f.do("PUT", "/1.1/alice/storage/tabs/a", `{"payload":"1234567890"}`); r.code != 200 {
		t.Fatalf("PUT of 10 payload bytes: %d %q", r.code, r.body)
	}
	for _, tc := range []struct {
		body string
		ok   []string
		fail map[string][]string
	}{
		{`[{"id":"a","payload":"x"},{"id":"b","payload":"y"},{"id":"c","payload":"z"}]`,
			[]string{"a", "b"}, map[string][]string{"c": {"retry wbo"}}},
		{`[{"id":"a","payload":"12345678"},{"id":"b","payload":"1234567"}]`,
			[]string{"a"}, map[string][]string{"b": {"retry bytes"}}},
		{`[{"id":"a","payload":"12345678901"},{"id":"b","payload":"x"}]`,
			[]string{"b"}, map[string][]string{"a": {"payload too large"}}},
	} {
		r := f.do("POST", "/1.1/alice/storage/tabs", tc.body)
		var res struct {
			Success []string            `json:"success"`
			Failed  map[string][]string `json:"failed"`
		}
		if err := json.Unmarshal([]byte(r.body), &res); err != nil || r.code != 200 ||
			!reflect.DeepEqual(res.Success, tc.ok) || !reflect.DeepEqual(res.Failed, tc.fail) {
			t.Errorf("POST %s: %d %s", strings.ReplaceAll(tc.body, `"`, ""), r.code, r.body)
		}
	}
	bad := DefaultStorageConfig()
	bad.Store, bad.Auth = st, cfg.Auth
	bad.MaxPayloadBytes = MaxPayloadBytes + 1
	if _, err := NewStorageHandler(bad); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("MaxPayloadBytes above the protocol's limit: %v", err)
	}
}
