// Package state is the directory's replicated state machine: the raft FSM
// (FSM) with its typed, versioned commands (Command, EncodeCommand,
// DecodeCommand) and its snapshot format.
//
// The state is the accounts (Account: name, argon2id hash, e-mail,
// creation time, pending reset code, recent reset mails, the time and
// raft index of the last credential change), the tombstones of recently
// deleted accounts, the unused invite codes (their hashes), the cluster
// (storage nodes with their identity key, operator, URLs, capacity and
// placement.State, capped by the Settings' limits for placement; each
// user's replica set, a placement.Set of current and filling members and
// leaving nodes; the cluster Settings; the voters' URLs and libp2p
// identities, each node's Sync 1.5 X25519 key), the published token
// signing keys (SigningKey), and the Sync 1.5 records of Firefox
// accounts (SyncUser: uid, account, generation, keys_changed_at, client
// states; SyncLogin applies the tokenserver's rules). The
// storage nodes' replication reports (NodeReport), drains and rebalancing
// transfers (StartTransfer, FinishLeave) change the sets by the rules of
// directory/placement; the SetsChanged hook tells the owner which nodes
// each change concerns.
//
// Apply is deterministic: it depends only on the state and the entry. It
// reads no clock (times travel in commands, and directory/placement runs
// with the raft index as its clock), draws no random numbers and does no
// IO, so every voter that applies the same log holds the same state and
// writes the same snapshot bytes. Checks that decide an outcome (a name is
// taken, a reset code or an invite is valid, an account may be sent
// another reset mail) are made here, so racing proposers cannot both win. What needs IO or a clock — password hashing, signatures,
// raft, HTTP, libp2p — is package directory's, which proposes the
// commands and reads the state through the FSM's read methods.
//
// ../DESIGN.md describes the command and snapshot formats and their
// versioning rules.
package state
