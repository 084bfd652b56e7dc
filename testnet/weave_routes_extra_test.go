package testnet

import (
	"net/http"
	"testing"
)

// TestDoubleSlashPrefix checks that "//1.0/..." (an old client joining the
// node URL, which ends in "/", with "/1.0/...") reaches the same handler as
// "/1.0/...", as the 1.0 server allowed.
func TestDoubleSlashPrefix(t *testing.T) {
	s := startServer(t)
	a := s.newAccount(t)
	a.put(t, "bookmarks", "x", map[string]any{"payload": "p"})
	r := s.do(t, http.MethodGet, "/"+a.path("storage/bookmarks/x"), nil, "Authorization", basic(a.Name, a.Password))
	want(t, r, http.StatusOK)
	r = s.do(t, http.MethodGet, "//user/1.0/"+a.Name, nil)
	want(t, r, http.StatusOK)
}
