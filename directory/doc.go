// Package directory is HCE's account directory: the database of Weave
// accounts (name, argon2id password hash, e-mail, creation time, pending
// password reset code), of storage nodes (identity key, operator, URLs,
// capacity, state) and of each user's replica set of nodes, replicated
// with hashicorp/raft.
//
// Open starts one raft voter whose log and stable store is raft-boltdb
// (raft.db) and whose snapshots live in a raft.FileSnapshotStore
// (snapshots/), both under Config.Dir. Later starts restore the latest
// snapshot and replay the log after it. Two modes:
//
//   - Single voter (Bootstrap, Join and RaftAddr empty; what `hce serve`
//     uses): it bootstraps itself on Config.Transport or an in-memory
//     transport, and Open returns once it leads.
//   - Cluster: raft runs over mutual TLS (directory/raftls) on RaftAddr.
//     The first voter bootstraps (Bootstrap); the others Join through the
//     HTTP endpoint of any voter, authenticated by the admin token.
//
// *Directory implements api.Accounts for the user API and the
// CheckPassword method the storage node's Basic-auth check needs. Reads are
// answered from the local state machine; writes are typed, versioned
// commands (see EncodeCommand) proposed through raft and acknowledged only
// once committed and applied; a follower forwards them once to the leader.
// Concurrent writes are group-committed: a small loop packs whatever is
// queued into one Batch entry, so one fsync serves many registrations.
// Passwords are hashed before proposing, never inside the state machine,
// which does no IO and reads no clock.
//
// Allocation is decided inside Apply with directory/placement, using the
// raft index as its clock: CreateUser gets R nodes on distinct operators
// where possible (StorageNode answers the primary), a node that goes down
// or retires has its users' sets repaired (primary to a live replica, a new
// replica added), and a drain moves users in two committed steps so none is
// ever without a node. Storage nodes register with a request signed by
// their Ed25519 key (SignRegistration, RegisterNode); they stay pending
// until an admin approves them unless auto-approval is on. The leader
// tracks Heartbeat calls in memory and commits only down/up changes.
// HTTPHandler serves the internal (join, forward, register) and admin
// routes.
//
// Password reset codes are mailed through a Mailer: SMTPMailer for
// production, LogMailer (which logs the code) for development.
//
// DESIGN.md in this folder states the invariants, the command and snapshot
// formats and their versioning rules, the cluster protocol, and the
// failure modes.
package directory
