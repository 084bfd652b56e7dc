// Package replication moves revisions between the nodes of a user's
// replica set, CouchDB style and pull based: a node asks a peer for a
// user's changes since its checkpoint, diffs the leaves against its own
// store, fetches the missing revisions with their history, and applies them
// with new_edits=false semantics (node.Store.ApplyRevisions), the
// checkpoint committed in the same synced batch as the data. Push notices
// make the pull immediate; periodic sweeps compare sequence numbers to
// catch up lost notices and to backfill a new member.
//
// A Replicator runs one pull goroutine per peer with work, not one per
// user. A member of a user's replica set (Membership) pulls from the
// other members and from the leaving members (nodes that left the set and
// hand off what they hold); a member or leaving member serves a member.
// Requests travel over a Transport: Libp2pTransport (protocol
// SessionProtocolID, or ProtocolID for older peers; one length-prefixed
// frame each way) or MemTransport (in-process, for tests). Messages use a compact, versioned binary encoding (Encode,
// Decode) whose decoder bounds every count and length.
//
// The Replicator is also the store's node.ReplicaWaiter: a client write
// is acknowledged once every other member confirmed it, or once the
// directory committed a report of the members that did not (Reporter).
// It reports completed backfills of a filling member and completed
// handoffs of a leaving member, and wipes the data of users the directory
// no longer assigns to the node. See DESIGN.md for the rules, invariants
// and failure modes.
//
// # Layout
//
//   - replicator.go: the Store seam, errors, Stats, New, Start, Close and
//     call (one request to a peer)
//   - config.go: Config, DefaultConfig, Validate
//   - pull.go: the per-peer pull loops, Sync, and a pull (changes,
//     revs_diff, fetch, apply with the checkpoint)
//   - serve.go: Handle and the answers to other nodes' requests
//   - ack.go: WaitReplicated, the node.ReplicaWaiter (the acknowledgement
//     rule)
//   - reports.go: the report queue and sender (Unconfirmed, Filled,
//     HandedOff) and the reports a complete pull earns
//   - fill.go: observe, the fill loop that completes backfills, and
//     MembershipChanged
//   - notice.go: Changed, the node.ChangeNotifier, and the notice senders
//   - sweep.go: Sweep, the periodic comparison of sequence numbers, the
//     handoff pulls and the wipe of users no longer held
//   - wire.go: the messages and their encoding
//   - transport.go: Transport, Libp2pTransport, MemTransport
//   - membership.go: Membership, ReplicaSet, Reporter and
//     StaticMembership
package replication
