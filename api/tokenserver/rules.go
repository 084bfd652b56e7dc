package tokenserver

import "slices"

// UserState is what the directory keeps about the Sync user record of a
// Firefox account. Zero Generation or KeysChangedAt means "never
// reported" (the Python tokenserver stores NULL as 0, and the Rust port
// treats a reported 0 as absent).
type UserState struct {
	// UID is the record's numeric Sync uid.
	UID uint64
	// Generation is the largest fxa-generation seen (ms timestamp of the
	// last authentication-related change of the account).
	Generation int64
	// KeysChangedAt is the largest keys_changed_at seen (ms timestamp of
	// the last key change; always <= generation).
	KeysChangedAt int64
	// ClientState is the hex fingerprint of the current sync key.
	ClientState string
	// OldClientStates are the client states of replaced records; a client
	// may never go back to one of them.
	OldClientStates []string
}

// Claims are what a verified token request says about the account: the
// token's fxa-generation (0 when absent), and the X-KeyID's
// keys_changed_at (0 treated as absent) and client state (hex).
type Claims struct {
	Generation    int64
	KeysChangedAt int64
	ClientState   string
}

// Action is what the directory must do with the user record.
type Action uint8

// The actions of Decide.
const (
	// Create: no record exists; create one (new uid) with the outcome's
	// values.
	Create Action = iota + 1
	// Keep: the record is current; answer with its uid.
	Keep
	// Update: set the record's generation and keys_changed_at to the
	// outcome's, keeping its uid.
	Update
	// Replace: the client rotated its keys: retire the record (its client
	// state joins OldClientStates) and create a new one with a new uid and
	// the outcome's values. Data stored under the old uid was encrypted
	// with the old keys.
	Replace
)

// String names the action.
func (a Action) String() string {
	switch a {
	case Create:
		return "create"
	case Keep:
		return "keep"
	case Update:
		return "update"
	case Replace:
		return "replace"
	}
	return "invalid"
}

// Outcome is Decide's answer: the action and the record's values after it.
type Outcome struct {
	Action        Action
	Generation    int64
	KeysChangedAt int64
	ClientState   string
}

// Decide applies the tokenserver's consistency rules to a token request
// for an account whose record is stored (nil when the account has none).
// The rules, in order (g, k, cs are the request's generation,
// keys_changed_at and client state; G, K, CS the stored ones; 0 means
// absent):
//
//  1. negative g or k: ErrInvalidGeneration / ErrInvalidKeysChangedAt;
//  2. no record: Create with (g, k, cs);
//  3. k > K and 0 < g < k (a key change must come with a generation
//     change): ErrInvalidKeysChangedAt;
//  4. cs != CS (the client changed keys):
//     cs empty: ErrInvalidClientState ("empty string");
//     cs among the old client states: ErrInvalidClientState ("stale value");
//     g > 0 and g <= G: ErrInvalidClientState ("new value with no
//     generation change");
//     K > 0 and k <= K: ErrInvalidClientState ("new value with no
//     keys_changed_at change");
//  5. g > 0 and G > g: ErrInvalidGeneration (an older token than one
//     already seen);
//  6. K > 0 and K > k (including k absent): ErrInvalidKeysChangedAt.
//
// Otherwise the new generation is max(G, g), or k when the request has no
// generation and brings a newer k beyond G; the new keys_changed_at is
// max(K, k); the action is Replace when cs != CS, Update when a value
// changed, else Keep. This is the Python tokenserver's logic; its Rust port
// differs only for records that never saw a keys_changed_at (NULL there),
// which this model, like the Python one, does not distinguish from 0.
func Decide(stored *UserState, c Claims) (Outcome, error) {
	g, k, cs := c.Generation, c.KeysChangedAt, c.ClientState
	if g < 0 {
		return Outcome{}, ErrInvalidGeneration.With("Unauthorized")
	}
	if k < 0 {
		return Outcome{}, ErrInvalidKeysChangedAt.With("Unauthorized")
	}
	if stored == nil {
		return Outcome{Action: Create, Generation: g, KeysChangedAt: k, ClientState: cs}, nil
	}
	G, K, CS := stored.Generation, stored.KeysChangedAt, stored.ClientState
	out := Outcome{Generation: G, KeysChangedAt: K, ClientState: CS}
	if g > G {
		out.Generation = g
	}
	if k > K {
		if g > 0 && g < k {
			return Outcome{}, ErrInvalidKeysChangedAt.With("Unauthorized")
		}
		if g == 0 && k > G {
			out.Generation = k
		}
		out.KeysChangedAt = k
	}
	if cs != CS {
		switch {
		case cs == "":
			return Outcome{}, ErrInvalidClientState.With("Unacceptable client-state value empty string")
		case slices.Contains(stored.OldClientStates, cs):
			return Outcome{}, ErrInvalidClientState.With("Unacceptable client-state value stale value")
		case g > 0 && g <= G:
			return Outcome{}, ErrInvalidClientState.With("Unacceptable client-state value new value with no generation change")
		case K > 0 && k <= K:
			return Outcome{}, ErrInvalidClientState.With("Unacceptable client-state value new value with no keys_changed_at change")
		}
		out.ClientState = cs
	}
	if g > 0 && G > g {
		return Outcome{}, ErrInvalidGeneration.With("Unauthorized")
	}
	if K > 0 && K > k {
		return Outcome{}, ErrInvalidKeysChangedAt.With("Unauthorized")
	}
	switch {
	case cs != CS:
		out.Action = Replace
	case out.Generation != G || out.KeysChangedAt != K:
		out.Action = Update
	default:
		out.Action = Keep
	}
	return out, nil
}

// FxAKeyID returns the fxa_kid a token is issued for: the outcome's
// keys_changed_at (or its generation when the account never reported one)
// and client state, formatted as FormatKeyID does.
func (o Outcome) FxAKeyID() (string, error) {
	t := o.KeysChangedAt
	if t == 0 {
		t = o.Generation
	}
	return FormatKeyID(KeyID{KeysChangedAt: t, ClientState: o.ClientState})
}
