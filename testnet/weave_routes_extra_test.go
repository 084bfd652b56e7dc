package testnet

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/hce-sync/hce/api/testkit"
)

// TestDoubleSlashPrefix checks that "//1.0/..." (an old client joining the
// node URL, which ends in "/", with "/1.0/...") reaches the same handler as
// "/1.0/...", as the 1.0 server allowed.
func TestDoubleSlashPrefix(t *testing.T) {
	s := startServer(t)
	a := s.newAccount(t)
	a.put(t, "bookmarks", "x", map[string]any{"payload": "p"})
	r := s.do(t, http.MethodGet, "/"+a.path("storage/bookmarks/x"), nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
	want(t, r, http.StatusOK)
	r = s.do(t, http.MethodGet, "//user/1.0/"+a.Name, nil)
	want(t, r, http.StatusOK)
}

// TestServeTokens checks that `hce serve` hands out directory-signed
// tokens and accepts them as Bearer credentials for their user only.
func TestServeTokens(t *testing.T) {
	s := startServer(t)
	a := s.newAccount(t)
	b := s.newAccount(t)
	r := s.do(t, http.MethodGet, "/user/1.0/"+a.Name+"/token", nil, "Authorization", testkit.BasicAuth(a.Name, a.Password))
	want(t, r, http.StatusOK)
	var tok struct {
		Token string `json:"token"`
		Node  string `json:"node"`
	}
	if err := json.Unmarshal(r.Body, &tok); err != nil || tok.Token == "" || tok.Node != s.s.URL() {
		t.Fatalf("token answer %s (node %q, want %q)", r.Body, tok.Node, s.s.URL())
	}
	bearer := "Bearer " + tok.Token
	want(t, s.do(t, http.MethodPut, a.path("storage/c/x"), map[string]any{"payload": "p"}, "Authorization", bearer), http.StatusOK)
	want(t, s.do(t, http.MethodGet, "/1.1/"+b.Name+"/info/collections", nil, "Authorization", bearer), http.StatusUnauthorized)
	want(t, s.do(t, http.MethodGet, a.path("storage/c/x"), nil, "Authorization", bearer+"x"), http.StatusUnauthorized)
	// No token without the right password.
	want(t, s.do(t, http.MethodGet, "/user/1.0/"+a.Name+"/token", nil, "Authorization", testkit.BasicAuth(a.Name, "wrong password")), http.StatusUnauthorized)
}

// TestDeleteAccountDeletesRecords checks that a deleted account's records
// are gone when an account of the same name is created again.
func TestDeleteAccountDeletesRecords(t *testing.T) {
	s := startServer(t)
	a := s.newAccount(t)
	a.put(t, "bookmarks", "x", map[string]any{"payload": "secret"})
	want(t, s.do(t, http.MethodDelete, "/user/1.0/"+a.Name, nil, "Authorization", testkit.BasicAuth(a.Name, a.Password)), http.StatusOK)
	reg := map[string]string{"password": "another password 1", "email": a.Email}
	want(t, s.do(t, http.MethodPut, "/user/1.0/"+a.Name, reg), http.StatusOK)
	a.Password = "another password 1"
	r := a.do(t, http.MethodGet, "info/collections", nil)
	want(t, r, http.StatusOK)
	if string(r.Body) != "{}" {
		t.Fatalf("a new account of the same name sees %s", r.Body)
	}
}
