package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/directory/placement"
)

// stepper applies commands at increasing raft indexes.
type stepper struct {
	t   *testing.T
	f   *FSM
	idx uint64
}

func (s *stepper) apply(c Command) error {
	s.t.Helper()
	s.idx++
	err, _ := applyCmd(s.t, s.f, s.idx, c).(error)
	return err
}

func (s *stepper) must(c Command) {
	s.t.Helper()
	if err := s.apply(c); err != nil {
		s.t.Fatalf("%#v: %v", c, err)
	}
}

// TestFSMCredentials checks the credential state every voter agrees on:
// creation, a password change and a reset move ChangedAt (never back)
// and Gen (the raft index); a deleted account does not exist; an account
// created again under the same name gets a later ChangedAt and another
// Gen, so nothing issued for the old one is accepted for it.
func TestFSMCredentials(t *testing.T) {
	s := &stepper{t: t, f: testFSM(t)}
	s.must(CreateUser{Name: "a", Hash: "h1", Created: 100})
	want := api.CredentialState{Exists: true, ChangedAt: 100, Gen: 1}
	if got := s.f.Credentials("a"); got != want {
		t.Fatalf("after create: %+v, want %+v", got, want)
	}
	s.must(SetEmail{Name: "a", Email: "a@x"}) // not a credential change
	s.must(SetPassword{Name: "a", Hash: "h2", At: 150})
	if got := s.f.Credentials("a"); got != (api.CredentialState{Exists: true, ChangedAt: 150, Gen: 3}) {
		t.Fatalf("after SetPassword: %+v", got)
	}
	// A proposer's clock behind, or a change in the second of the last:
	// one second after the last, past every token issued before it.
	s.must(SetPassword{Name: "a", Hash: "h3", At: 120})
	if got := s.f.Credentials("a"); got.ChangedAt != 151 || got.Gen != 4 {
		t.Fatalf("ChangedAt went back: %+v", got)
	}
	s.must(SetResetCode{Name: "a", CodeHash: "c", Expires: 500})
	s.must(ResetPassword{Name: "a", CodeHash: "c", Hash: "h4", Now: 200})
	if got := s.f.Credentials("a"); got.ChangedAt != 200 || got.Gen != 6 {
		t.Fatalf("after reset: %+v", got)
	}
	s.must(DeleteUser{Name: "a", At: 210})
	if got := s.f.Credentials("a"); got.Exists {
		t.Fatalf("deleted account: %+v", got)
	}
	// Created again in a second where the old account's tokens could
	// still have been issued: its credentials start after them.
	s.must(CreateUser{Name: "a", Hash: "h1", Created: 205})
	if got := s.f.Credentials("a"); got.ChangedAt != 210 || got.Gen != 8 {
		t.Fatalf("created again: %+v", got)
	}
	for _, iat := range []int64{200, 201, 210} {
		if !s.f.Credentials("a").Revokes(api.TokenClaims{Iat: iat}) {
			t.Fatalf("token of the old account (iat %d) accepted for the new one", iat)
		}
	}
	// A deletion right after a change (ChangedAt 300, so tokens with iat
	// 301) leaves a floor of 301; a version 1 deletion (no time) too.
	s.must(SetPassword{Name: "a", Hash: "h5", At: 300})
	s.must(DeleteUser{Name: "a"})
	s.must(CreateUser{Name: "a", Hash: "h1", Created: 300})
	if got := s.f.Credentials("a"); got.ChangedAt != 301 {
		t.Fatalf("created again after a v1 deletion: %+v", got)
	}
	// Tombstones go after TombstoneTTL (pruned by later deletions) and
	// survive snapshots until then.
	s.must(CreateUser{Name: "b", Hash: "h", Created: 300})
	s.must(CreateUser{Name: "c", Hash: "h", Created: 300})
	s.must(DeleteUser{Name: "b", At: 400})
	snap, _ := s.f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if g.deleted["b"].Floor != 400 {
		t.Fatalf("restored tombstones %v", g.deleted)
	}
	s.must(DeleteUser{Name: "c", At: 400 + TombstoneTTL + 1})
	if _, ok := s.f.deleted["b"]; ok {
		t.Fatalf("tombstone kept past TombstoneTTL: %v", s.f.deleted)
	}
}

// TestFSMResetLimit checks the per-account limit on reset mails: within
// the window the Max-th+1 code is refused and the pending code stays;
// once the oldest leaves the window one more is allowed; commands without
// a limit (version 1) are not counted.
func TestFSMResetLimit(t *testing.T) {
	s := &stepper{t: t, f: testFSM(t)}
	s.must(CreateUser{Name: "a", Hash: "h", Created: 1})
	code := func(n int, now int64) SetResetCode {
		return SetResetCode{Name: "a", CodeHash: fmt.Sprintf("c%d", n), Expires: now + 100, Now: now, Max: 3, Window: 3600}
	}
	s.must(code(1, 1000))
	s.must(code(2, 1001))
	s.must(code(3, 2000))
	if err := s.apply(code(4, 2001)); !errors.Is(err, ErrTooManyResets) {
		t.Fatalf("fourth code within the hour: %v", err)
	}
	a, _ := s.f.Account("a")
	if a.ResetCodeHash != "c3" {
		t.Fatalf("pending code %q after a refused one, want c3", a.ResetCodeHash)
	}
	if wait, ok := a.ResetWait(2001, 3, 3600); ok || wait != 1000+3600-2001 {
		t.Fatalf("ResetWait = %d %v", wait, ok)
	}
	s.must(code(5, 4600)) // the first left the window
	a, _ = s.f.Account("a")
	if !reflect.DeepEqual(a.Resets, []int64{1001, 2000, 4600}) {
		t.Fatalf("Resets = %v", a.Resets)
	}
	s.must(SetResetCode{Name: "a", CodeHash: "v1", Expires: 9999}) // no limit
	if enc, _ := EncodeCommand(SetResetCode{Name: "a", CodeHash: "v1", Expires: 9}); enc[1] != commandV1 {
		t.Fatalf("SetResetCode without a limit encoded as version %d", enc[1])
	}
}

// TestFSMInvites checks invite codes: one account per invite, none after
// expiry, expired invites dropped by the next CreateInvite, and invites
// kept across a snapshot.
func TestFSMInvites(t *testing.T) {
	s := &stepper{t: t, f: testFSM(t)}
	h1, h2, h3 := InviteHash("one"), InviteHash("two"), InviteHash("three")
	s.must(CreateInvite{Hash: h1, Expires: 1000, Now: 10})
	s.must(CreateInvite{Hash: h2, Expires: 50, Now: 10})
	if err := s.apply(CreateInvite{Hash: "short", Expires: 1000, Now: 10}); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("malformed invite: %v", err)
	}
	if err := s.apply(CreateUser{Name: "a", Hash: "h", Created: 20, Invite: InviteHash("nope")}); !errors.Is(err, api.ErrBadInvite) {
		t.Fatalf("unknown invite: %v", err)
	}
	s.must(CreateUser{Name: "a", Hash: "h", Created: 20, Invite: h1})
	if err := s.apply(CreateUser{Name: "b", Hash: "h", Created: 21, Invite: h1}); !errors.Is(err, api.ErrBadInvite) {
		t.Fatalf("used invite: %v", err)
	}
	if err := s.apply(CreateUser{Name: "b", Hash: "h", Created: 60, Invite: h2}); !errors.Is(err, api.ErrBadInvite) {
		t.Fatalf("expired invite: %v", err)
	}
	if _, ok := s.f.Account("b"); ok {
		t.Fatal("refused account created")
	}
	// A taken name does not use the invite up.
	s.must(CreateInvite{Hash: h3, Expires: 1000, Now: 60}) // drops the expired h2
	if err := s.apply(CreateUser{Name: "a", Hash: "h", Created: 61, Invite: h3}); !errors.Is(err, api.ErrUserExists) {
		t.Fatalf("taken name: %v", err)
	}
	if inv := s.f.Invites(); len(inv) != 1 || inv[0].Hash != h3 {
		t.Fatalf("invites = %+v, want only three", inv)
	}
	snap, _ := s.f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.SplitN(sink.String(), "\n", 2)[0], `"invites":1`) {
		t.Fatalf("snapshot header: %s", strings.SplitN(sink.String(), "\n", 2)[0])
	}
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !g.InviteValid(h3, 100) || g.InviteValid(h3, 1000) {
		t.Fatal("restored invite not valid until its expiry")
	}
	gs := &stepper{t: t, f: g, idx: s.idx}
	gs.must(CreateUser{Name: "c", Hash: "h", Created: 100, Invite: h3})
}

// TestFSMCapacityLimits checks that a node's declared capacity is capped
// by the cluster settings: per node, and per operator in proportion; a
// node declaring a million users then takes no more than its capped
// share of new users.
func TestFSMCapacityLimits(t *testing.T) {
	s := &stepper{t: t, f: New(testFSM(t).log, placement.Policy{ReleaseStep: 1 << 30, NewNodeWindow: 1}, Hooks{})}
	s.must(SetSettings{Settings: Settings{Replicas: 1, AutoApprove: true, MaxNodeCapacity: 100, MaxOperatorCapacity: 150}})
	s.must(RegisterNode{ID: "honest1", Operator: "h1", BaseURL: "http://h1/", Capacity: 100, PublicKey: []byte{1}})
	s.must(RegisterNode{ID: "honest2", Operator: "h2", BaseURL: "http://h2/", Capacity: 100, PublicKey: []byte{2}})
	s.must(RegisterNode{ID: "rogue", Operator: "r", BaseURL: "http://r/", Capacity: 1000000, PublicKey: []byte{3}})
	s.must(RegisterNode{ID: "big1", Operator: "b", BaseURL: "http://b1/", Capacity: 100, PublicKey: []byte{4}})
	s.must(RegisterNode{ID: "big2", Operator: "b", BaseURL: "http://b2/", Capacity: 200, PublicKey: []byte{5}})
	caps := map[string]int{}
	for _, n := range s.f.Nodes() {
		caps[n.ID] = n.EffectiveCapacity
	}
	if want := map[string]int{"honest1": 100, "honest2": 100, "rogue": 100, "big1": 75, "big2": 75}; !reflect.DeepEqual(caps, want) {
		t.Fatalf("effective capacities %v, want %v", caps, want)
	}
	primaries := map[string]int{}
	for i := range 50 {
		s.must(CreateUser{Name: fmt.Sprintf("u%02d", i), Hash: "h", Created: 1})
		r, _, _ := s.f.Replicas(fmt.Sprintf("u%02d", i))
		primaries[r.Members[0].ID]++
	}
	if primaries["rogue"] > 50/4+1 {
		t.Fatalf("the node declaring 1,000,000 took %d of 50 users: %v", primaries["rogue"], primaries)
	}
	if err := s.apply(SetSettings{Settings: Settings{MaxNodeCapacity: -1}}); !errors.Is(err, ErrMalformedCommand) {
		t.Fatalf("negative limit: %v", err)
	}
	// Without limits the settings are written as version 1.
	if enc, _ := EncodeCommand(SetSettings{Settings: Settings{Replicas: 2}}); enc[1] != commandV1 {
		t.Fatalf("SetSettings without limits encoded as version %d", enc[1])
	}
}

// TestCommandVersions checks the version 2 bodies: they round-trip, and
// a command without the new fields is still written as version 1, which
// older voters read.
func TestCommandVersions(t *testing.T) {
	for _, tc := range []struct {
		c       Command
		version uint8
	}{
		{CreateUser{Name: "a", Hash: "h", Created: 1}, commandV1},
		{CreateUser{Name: "a", Hash: "h", Created: 1, Invite: InviteHash("x")}, commandV2},
		{SetPassword{Name: "a", Hash: "h"}, commandV1},
		{SetPassword{Name: "a", Hash: "h", At: 5}, commandV2},
		{SetResetCode{Name: "a", CodeHash: "c", Expires: 9}, commandV1},
		{SetResetCode{Name: "a", CodeHash: "c", Expires: 9, Now: 1, Max: 3, Window: 3600}, commandV2},
		{SetSettings{Settings: Settings{Replicas: 3, AutoApprove: true, DownAfterMS: 5}}, commandV1},
		{SetSettings{Settings: Settings{Replicas: 3, MaxNodeCapacity: 10, MaxOperatorCapacity: 20}}, commandV2},
		{CreateInvite{Hash: InviteHash("x"), Expires: 9, Now: 1}, commandV1},
		{DeleteUser{Name: "a"}, commandV1},
		{DeleteUser{Name: "a", At: 7}, commandV2},
	} {
		enc, err := EncodeCommand(tc.c)
		if err != nil {
			t.Fatal(err)
		}
		if enc[1] != tc.version {
			t.Errorf("%#v: version %d, want %d", tc.c, enc[1], tc.version)
		}
		got, err := DecodeCommand(enc)
		if err != nil || !reflect.DeepEqual(got, tc.c) {
			t.Errorf("%#v: round trip %#v, %v", tc.c, got, err)
		}
	}
}

// TestFSMTombstoneNodes: a deletion's tombstone names the nodes that held
// the account, for a re-creation to wipe the name on them first.
func TestFSMTombstoneNodes(t *testing.T) {
	s := &stepper{t: t, f: testFSM(t)}
	s.must(SetSettings{Settings: Settings{Replicas: 2, AutoApprove: true}})
	s.must(RegisterNode{ID: "n2", Operator: "a", BaseURL: "http://n2/", Capacity: 10, PublicKey: []byte{1}})
	s.must(RegisterNode{ID: "n1", Operator: "b", BaseURL: "http://n1/", Capacity: 10, PublicKey: []byte{2}})
	s.must(CreateUser{Name: "u", Hash: "h", Created: 1})
	s.must(DeleteUser{Name: "u", At: 5})
	ts, ok := s.f.Tombstone("u")
	if !ok || ts.Floor != 5 || !reflect.DeepEqual(ts.Nodes, []string{"n1", "n2"}) {
		t.Fatalf("tombstone %+v %v", ts, ok)
	}
	s.must(CreateUser{Name: "u", Hash: "h", Created: 6})
	if _, ok := s.f.Tombstone("u"); ok {
		t.Fatal("tombstone kept after the name was taken again")
	}
}
