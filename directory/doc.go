// Package directory is HCE's account directory: the database of Weave
// accounts (name, argon2id password hash, e-mail, creation time, assigned
// storage node, pending password reset code), replicated with
// hashicorp/raft.
//
// Open starts one raft voter whose log and stable store is raft-boltdb
// (raft.db) and whose snapshots live in a raft.FileSnapshotStore
// (snapshots/), both under Config.Dir. On first start it bootstraps a
// single-voter cluster; later starts restore the latest snapshot and replay
// the log after it. The transport is pluggable (Config.Transport); by
// default an in-memory transport serves the lone voter.
//
// *Directory implements api.Accounts for the user API and the
// CheckPassword method the storage node's Basic-auth check needs. Reads are
// answered from the local state machine; writes are typed, versioned
// commands (see EncodeCommand) proposed through raft and acknowledged only
// once committed and applied. Concurrent writes are group-committed: a
// small loop packs whatever is queued into one Batch entry, so one fsync
// serves many registrations. Passwords are hashed before proposing, never
// inside the state machine, which does no IO and reads no clock.
//
// Password reset codes are mailed through a Mailer: SMTPMailer for
// production, LogMailer (which logs the code) for development.
//
// DESIGN.md in this folder states the invariants, the command format and
// its versioning rules, the failure modes, and what clustering adds.
package directory
