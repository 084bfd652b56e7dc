package dirclient

import (
	"context"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hce-sync/hce/api/dirproto"
	"github.com/hce-sync/hce/api/p2p"
	"github.com/hce-sync/hce/node"
)

type fakeWiper struct {
	deleted []string
	err     error
}

func (f *fakeWiper) WipeUser(_ context.Context, user string) error {
	if f.err != nil {
		return f.err
	}
	f.deleted = append(f.deleted, user)
	return nil
}

type fakeCache struct{ forgot []string }

func (f *fakeCache) Forget(user string) { f.forgot = append(f.forgot, user) }

func TestAccountEventsConfigValidate(t *testing.T) {
	good := DefaultAccountEventsConfig()
	good.Store, good.Auth, good.IsVoter = &fakeWiper{}, &fakeCache{}, func(peer.ID) bool { return true }
	for _, tc := range []struct {
		name string
		mod  func(*AccountEventsConfig)
		ok   bool
	}{
		{"good", func(*AccountEventsConfig) {}, true},
		{"no store", func(c *AccountEventsConfig) { c.Store = nil }, false},
		{"no auth", func(c *AccountEventsConfig) { c.Auth = nil }, false},
		{"no voters", func(c *AccountEventsConfig) { c.IsVoter = nil }, false},
		{"negative timeout", func(c *AccountEventsConfig) { c.Timeout = -1 }, false},
	} {
		c := good
		tc.mod(&c)
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

func TestHandleAccountEvent(t *testing.T) {
	voter, stranger := peer.ID("voter"), peer.ID("stranger")
	for _, tc := range []struct {
		name       string
		from       peer.ID
		ev         dirproto.AccountEvent
		wipeErr    error
		wantCode   string // "" for success, "internal" for a plain error
		wantWiped  int
		wantForgot int
	}{
		{"password change", voter, dirproto.AccountEvent{User: "u"}, nil, "", 0, 1},
		{"deletion", voter, dirproto.AccountEvent{User: "u", Deleted: true}, nil, "", 1, 2},
		{"not a voter", stranger, dirproto.AccountEvent{User: "u", Deleted: true}, nil, p2p.CodeForbidden, 0, 0},
		{"bad name", voter, dirproto.AccountEvent{User: "u", Deleted: true}, node.ErrBadName, p2p.CodeBadRequest, 0, 1},
		{"store failure", voter, dirproto.AccountEvent{User: "u", Deleted: true}, errors.New("disk"), "internal", 0, 1},
	} {
		w, c := &fakeWiper{err: tc.wipeErr}, &fakeCache{}
		cfg := DefaultAccountEventsConfig()
		cfg.Store, cfg.Auth, cfg.IsVoter = w, c, func(id peer.ID) bool { return id == voter }
		err := handleAccountEvent(context.Background(), cfg, tc.from, tc.ev)
		switch tc.wantCode {
		case "":
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		case "internal":
			var re *p2p.RemoteError
			if err == nil || errors.As(err, &re) {
				t.Errorf("%s: err = %v, want a plain error", tc.name, err)
			}
		default:
			if !p2p.IsCode(err, tc.wantCode) {
				t.Errorf("%s: err = %v, want %s", tc.name, err, tc.wantCode)
			}
		}
		if len(w.deleted) != tc.wantWiped || len(c.forgot) != tc.wantForgot {
			t.Errorf("%s: wiped %v, forgot %v", tc.name, w.deleted, c.forgot)
		}
	}
}
