package state

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Invite codes admit one account each when registration is invite-only.
// The state keeps only the hex SHA-256 of each code (like reset codes: a
// code carries 128 random bits, so its hash does not reveal it) with its
// expiry; CreateUser with the hash uses it up in the same entry, so two
// registrations racing with one code cannot both succeed.

// MaxInvites bounds the unused invites the state holds.
const MaxInvites = 100000

// ErrTooManyInvites means CreateInvite found MaxInvites unexpired
// invites.
var ErrTooManyInvites = errors.New("directory: too many unused invites")

// Invite is one unused invite code. Records are never modified in place.
type Invite struct {
	// Hash is InviteHash of the code.
	Hash string `json:"hash"`
	// Created and Expires are Unix seconds of the proposer's clock.
	Created int64 `json:"created"`
	Expires int64 `json:"expires"`
}

// InviteHash returns the hex SHA-256 of an invite code as given (callers
// normalise codes first).
func InviteHash(code string) string {
	sum := sha256.Sum256([]byte(code))
	return hex.EncodeToString(sum[:])
}

// CreateInvite stores an invite (the hash of its code) valid until
// Expires. Invites expired at Now are dropped first; ErrTooManyInvites
// when MaxInvites remain.
type CreateInvite struct {
	Hash    string `json:"h"`
	Expires int64  `json:"x"`
	Now     int64  `json:"now"`
}

// Type implements Command.
func (CreateInvite) Type() CommandType { return CmdCreateInvite }
func (CreateInvite) version() uint8    { return commandV1 }

// applyInvite applies CreateInvite; f.mu is held.
func (f *FSM) applyInvite(c CreateInvite) error {
	if len(c.Hash) != 2*sha256.Size || c.Expires <= c.Now {
		return fmt.Errorf("%w: CreateInvite without hash or already expired", ErrMalformedCommand)
	}
	for h, inv := range f.invites {
		if inv.Expires <= c.Now {
			delete(f.invites, h)
		}
	}
	if _, ok := f.invites[c.Hash]; !ok && len(f.invites) >= MaxInvites {
		return ErrTooManyInvites
	}
	f.invites[c.Hash] = &Invite{Hash: c.Hash, Created: c.Now, Expires: c.Expires}
	return nil
}

// inviteValid reports whether hash names an invite unexpired at now;
// f.mu is held.
func (f *FSM) inviteValid(hash string, now int64) bool {
	inv, ok := f.invites[hash]
	return ok && now < inv.Expires
}

// InviteValid reports whether hash names an unused invite unexpired at
// now (Unix seconds).
func (f *FSM) InviteValid(hash string, now int64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.inviteValid(hash, now)
}

// Invites returns copies of the unused invites (expired ones included
// until the next CreateInvite drops them), sorted by expiry then hash.
func (f *FSM) Invites() []Invite {
	f.mu.RLock()
	all := sortedInvites(f.invites)
	f.mu.RUnlock()
	out := make([]Invite, len(all))
	for i, inv := range all {
		out[i] = *inv
	}
	slices.SortStableFunc(out, func(a, b Invite) int {
		switch {
		case a.Expires < b.Expires:
			return -1
		case a.Expires > b.Expires:
			return 1
		}
		return 0
	})
	return out
}

// sortedInvites returns the invites sorted by hash.
func sortedInvites(m map[string]*Invite) []*Invite {
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b *Invite) int { return strings.Compare(a.Hash, b.Hash) })
	return out
}

func (inv *Invite) validate() error {
	if len(inv.Hash) != 2*sha256.Size || inv.Expires <= 0 {
		return fmt.Errorf("directory: snapshot invite %q malformed", inv.Hash)
	}
	return nil
}
