// Package replication moves revisions between the nodes of a user's
// replica set, CouchDB style and pull based: a node asks a peer for a
// user's changes since its checkpoint, diffs the leaves against its own
// store, fetches the missing revisions with their history, and applies them
// with new_edits=false semantics (node.Store.ApplyRevisions), the
// checkpoint committed in the same synced batch as the data. Push notices
// make the pull immediate; periodic sweeps compare sequence numbers to
// catch up lost notices and to backfill a new replica.
//
// A Replicator runs one pull goroutine per peer with work, not one per
// user. It serves and pulls only users whose replica set (Membership)
// contains both ends. Requests travel over a Transport: Libp2pTransport
// (protocol ProtocolID, one length-prefixed frame each way) or MemTransport
// (in-process, for tests). Messages use a compact, versioned binary
// encoding (Encode, Decode) whose decoder bounds every count and length.
// See DESIGN.md for the invariants and failure modes.
//
// # Layout
//
//   - replicator.go: the Store seam, errors, Stats, New, Start, Close and
//     call (one request to a peer)
//   - config.go: Config, DefaultConfig, Validate
//   - pull.go: the per-peer pull loops, Sync, and a pull (changes,
//     revs_diff, fetch, apply with the checkpoint)
//   - serve.go: Handle and the answers to other nodes' requests
//   - ack.go: WaitReplicated, the node.ReplicaWaiter that confirms a
//     client's write on another replica
//   - notice.go: Changed, the node.ChangeNotifier, and the notice senders
//   - sweep.go: Sweep, the periodic comparison of sequence numbers
//   - wire.go: the messages and their encoding
//   - transport.go: Transport, Libp2pTransport, MemTransport
//   - membership.go: Membership and StaticMembership
package replication
