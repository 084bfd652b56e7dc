// Package tokenserver holds the pure formats and cryptography of the Sync
// tokenserver protocol, which the HCE directory serves at
// GET /1.0/sync/1.5: the success body (Response), the error bodies and
// statuses (Error), the request's headers (ParseRequest: the Bearer token,
// X-KeyID, X-Client-State, ?duration), the generation / keys_changed_at /
// client-state rules as one decision function over the stored user state
// and the request (Decide), the hashed_fxa_uid derivation, verification of
// Firefox Accounts OAuth access tokens (RS256 JWTs, "at+jwt") against a
// JWKS with an injected clock (Verifier), and a local issuer of such
// tokens with its JWKS for tests and self-hosters without Mozilla's
// accounts (Issuer).
//
// Nothing here does IO or touches raft: the directory fetches JWKS,
// stores users and allocates uids, and calls these functions.
//
// Behaviour follows Mozilla's tokenserver (the Python original and its
// port in syncstorage-rs); where they differ the choice is documented on
// the function.
package tokenserver
