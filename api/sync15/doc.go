// Package sync15 is the Firefox Sync 1.5 storage protocol, as package api
// is for Weave 1.1: the BSO type and its strict decoder, query parameters
// and the opaque offset and batch tokens, the limits of
// info/configuration, the precondition headers, the error codes, and the
// HTTP handler of every route under /1.5/{uid}/ over two interfaces this
// package defines: Store (the records) and Authenticator (Hawk, provided
// by the node). It imports none of HCE's packages but api.
//
// The protocol is the one of Mozilla's storage API 1.5 document as
// implemented by syncstorage-rs and the Python server-syncstorage. Where
// they disagree, this package follows the document when it is explicit
// and the servers otherwise, and says so where it matters:
//
//   - Error bodies are bare Weave codes: 6 malformed JSON, 8 invalid BSO,
//     14 over quota, 17 size limit, 1 for other bad requests (the Python
//     server's choice, which the document names for bad X-Weave-Total-*
//     headers), 0 with 401, 404, 405 and the like. Conflicting writes get
//     503 with Retry-After: 10, as both servers answer instead of the
//     specified 409. Over quota is 400 with code 14 (the document; the
//     Rust server sends 403).
//   - A BSO's ttl is 0 to 999999999 seconds and its sortindex an integer
//     within ±999999999, both written as JSON integers; unknown fields
//     fail the record; null counts as absent; a PUT body's id is checked
//     and ignored.
//   - POST records fail one by one (reasons in "failed"), but a body that
//     is not a list of objects with distinct string ids fails whole (400,
//     code 8), as in both servers.
//   - Listing orders are total and pagination is by position (see Sort
//     and EncodeOffset), so offset tokens cannot be inflated into
//     unbounded work; a GET without a limit is capped at
//     Config.MaxGetRecords and continues with X-Weave-Next-Offset, as in
//     syncstorage-rs.
//   - DELETE answers {"modified": T} for collections and records (the
//     Python server) and {} for the whole storage.
//
// Reads stream: Store.GetCollection hands records to a callback one at a
// time and the handler writes them out through a fixed buffer, so a
// request's memory does not grow with the collection.
package sync15
