// Package client is a Weave 1.1 client: the user API (registration, node
// lookup, tokens, password and e-mail changes, password resets) and the
// storage API (every call of weave-api.md section 2, including the
// application/newlines format read as a stream), with HTTP Basic or
// directory-signed Bearer credentials. With Config.API = API15 the same
// storage calls speak Sync 1.5 (sync15.go): Hawk credentials from the
// directory's tokenserver, and atomic batch uploads (PostBatch).
//
// Storage calls follow the Weave reassignment flow: when the user's
// storage node answers 401, the client re-reads node/weave (or, with
// tokens, asks for a new token, which names the node) and retries once.
// When the node cannot be reached at all (a crashed node refuses
// connections rather than answering 401), the client keeps asking the
// directory, with bounded exponential backoff, until the directory names
// another node or Config.FailoverWait (or ctx) runs out, then retries
// there once. Weave writes are idempotent by record id, so a retry after a
// request the dead node may or may not have applied is safe.
//
// It is shared by the tests, `hce load` and `hce client`. It imports only
// package api.
package client
