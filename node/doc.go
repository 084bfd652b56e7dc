// Package node is the storage engine of an HCE storage node: a Pebble store
// that implements api.Store (the Weave storage API) and an api.Authenticator
// for the requests that reach the node.
//
// Every Weave query is answered by a range scan or point lookups over the
// key layout described in DESIGN.md: records by (user, collection, id), an
// insertion-order index, an index by modified time, an index by sortindex
// and an expiry index. Per-collection metadata (last modified, live count,
// payload bytes) is written in the same batch as the records it describes
// and kept hot in a bounded in-memory cache, so info/collections never
// scans.
//
// Writes take the user's lock exclusively, stamp one per-user tick per
// request (max(user's last stamp + 1, node time)), commit one Pebble batch
// with fsync and only then update memory. Reads take the user's lock shared
// and report max(user's last stamp, node time). The node time is the wall
// clock made monotonic under a persisted bound, so timestamps equal wall
// time unless one user writes more than 100 times a second (then only that
// user runs ahead), and no value is reissued to a user, not even after a
// cache eviction or a restart with the wall clock set backwards: every
// write's timestamp is strictly greater than any timestamp the user was
// given before and newer=<any given timestamp> never skips a record.
//
// Expired records (ttl) are invisible at once, purged lazily before counts,
// usage and quota are answered, and purged in the background every
// Config.PurgeInterval.
//
// Every resource a request can consume is bounded: a collection GET
// streams from a snapshot (one record in memory at a time), a document
// keeps at most Config.MaxConflicts conflicts and Config.MaxDocBytes, one
// quota counts every byte a user stores whichever way it came in (records,
// conflicting revisions, _local documents) and is enforced on every client
// surface, and the store refuses writes (reads go on) while its disk has
// less than Config.MinFreeBytes free, since Pebble does not live through
// ENOSPC.
//
// Every record is also a document with a CouchDB revision tree
// (node/revtree): client writes make revisions, deletes make tombstones,
// and the records are the view of each document's winning revision. The
// revision API (Changes, GetDocs, RevsDiff, ApplyRevisions with
// new_edits=false semantics, checkpoints, _local documents, WaitChanges)
// is what the replication package and the CouchDB endpoint (node/couch)
// build on; a replicated revision that changes a winner becomes visible
// with a fresh local timestamp. The node reaches replication only through
// the interfaces it owns: ChangeNotifier (push notices) and ReplicaWaiter
// (a client write, Weave or CouchDB, is acknowledged only under the
// acknowledgement rule; otherwise it answers ErrNotAcknowledged, a 503,
// or a 401 when this node no longer serves the user, and stays
// committed). The authenticator serves a user only while
// Membership says this node is a current member of the user's replica
// set.
//
// # Layout
//
// The Store and its lifecycle:
//
//   - store.go: Store, Open, Close, locks, UUID and origin
//   - config.go: Config, DefaultConfig, Validate
//   - disk.go: the disk guard (free-space reserve, ballast, ENOSPC hook,
//     failed commits); ratelog.go: rate-limited logging
//   - cache.go: the users' metadata cache (userState, eviction)
//   - clock.go: the monotonic node clock and per-user stamps
//   - keys.go, codec.go: the key layout and the stored value encodings
//   - backup.go: Checkpoint (an online copy of the whole store) and
//     RenewUUID (a restored copy's new identity)
//
// The Weave storage API (api.Store):
//
//   - query.go: GetCollection (streamed from a snapshot), GetItem, query
//     plans and counts
//   - info.go: info/collections, counts, usage, quota
//   - write.go: the client write path (PutItem, PostItems, deletes,
//     CheckWrite) over writeLocked
//   - writer.go: the staging of one request's records, indexes and metadata
//   - purge.go: lazy and background purge of expired records
//
// Revisions and the revision API:
//
//   - revision.go: Revision, RevisionHash, Verify, ValidateDocID, errors
//   - body.go: Body and its one binary codec (AppendBody, DecodeBody)
//   - docstate.go: a document as a request changes it (single path or
//     tree) and its stored form
//   - docwrite.go: staging a request's document changes (edits,
//     tombstones, history, placement in the record head or V key)
//   - apply.go: ApplyRevisions, the new_edits=false merge
//   - docs.go: Doc, GetDocs, RevsDiff
//   - feed.go: Change, Changes, UpdateSeq, WaitChanges
//   - checkpoint.go, local.go: replication checkpoints, _local documents
//     (bounded in number, counted in the quota)
//   - users.go: Users (users with data), WipeUser
//   - seams.go: ChangeNotifier and ReplicaWaiter, the interfaces node owns
//     towards replication, and ErrNotAcknowledged
//
// Authentication: auth.go (Authenticator, password cache, Membership: the
// serving rule, CredentialSource: revocation of tokens and cached answers
// by the directory's credential state, Watch for long requests) and
// token.go (signed tokens, KeySource, KeyRefresher for unknown key ids).
//
// The Sync 1.5 storage API (sync15.Store, over the same records and
// documents: a Sync 1.5 write is a client write like a Weave one):
//
//   - sync15.go: Sync15 (Store.Sync15), the protocol's write rules,
//     collections that exist while empty, the storage's last-modified
//     time, listings in the protocol's total orders with keyset offsets
//   - index15.go: the two indexes of those orders, kept only for users
//     served by Sync 1.5 and built at a user's first Sync 1.5 request
//   - batch15.go: batch uploads kept in Pebble until committed in one
//     synced batch, and the purge of abandoned ones
//   - hawk.go: HawkAuthenticator (Hawk with api/hawkid credentials whose
//     key is sealed to the node's X25519 key, hawk.key) under the same
//     serving and revocation rules as the Authenticator
package node
