// Package couch serves a user's records over the CouchDB replication
// protocol, so that an unmodified PouchDB or CouchDB replicator can
// replicate to and from a storage node.
//
// The handler is mounted under a prefix (default /couch): the prefix is the
// CouchDB server root (GET answers the store's persistent uuid, which
// replicators put into their replication ids), and {prefix}/{user} is that
// user's database. Every Weave record is the document "<collection>/<id>";
// its body carries the replicated WBO fields (payload, sortindex, parentid,
// predecessorid, an absolute expiry and the origin metadata). Replicated
// revisions go through the node store's revision API (ApplyRevisions with
// new_edits=false semantics), so what a replicator writes shows in the
// Weave API, and what Weave clients write shows in the _changes feed.
//
// The endpoints are exactly the ones replication needs (see
// shared/couchdb-replication.md, appendix): GET/HEAD/PUT {db}, _local
// documents, _changes (normal, longpoll, continuous), _revs_diff,
// _bulk_get, _bulk_docs with new_edits=false, _ensure_full_commit and GET
// of one document (plain or with open_revs). Requests are authenticated
// like the Weave storage API, and a user reaches only their own database;
// a longpoll or continuous feed ends when its credentials are revoked
// (revoke.go).
// Errors are CouchDB JSON objects {"error","reason"}; a revision the store
// refuses (bad input, past a document's limits, the user over quota) is
// reported per document as "forbidden", the one error string PouchDB
// counts as a write failure without aborting its replication (a 403 for a
// PUT). _local documents are bounded in number and size and count against
// the quota (403 and 413); DELETE of one is served so a client can make
// room.
//
// Large answers stream: _changes row by row, _bulk_get and open_revs
// document by document, so a request holds one document whatever it asks
// for. A store failure after the status line cuts the connection, so a
// client never takes a truncated answer for a whole one.
package couch
