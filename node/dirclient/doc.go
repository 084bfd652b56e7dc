// Package dirclient is a storage node's client of the directory over
// libp2p (api/dirproto): it checks HTTP Basic passwords
// (node.PasswordChecker, passing the client's address; a directory
// back-off becomes a 429), keeps the directory's token verification keys
// (node.KeySource, fetched again when a token names an unknown key),
// gives each user's credential state (node.CredentialSource: from the
// cached replica set and the account events), sends heartbeats (with the node's unconfirmed
// writes and handoff backlog), looks up replica sets with their members'
// states and leaving members (node.Membership: the node serves a user
// only as a current member), lists the users assigned to this node,
// sends replication reports (replication.Reporter), keeps the node's
// connection gater in step with the directory's peer list, and serves the
// account and membership events voters send (ServeAccountEvents,
// Client.ServeMembershipEvents).
//
// It follows the directory whoever leads it: it learns every voter from
// the directory's peer list (voters that joined after the node started
// included), tries the voter that answered last first and then all
// others, follows a "not leader" answer naming the leader at once, and
// retries failed heartbeats within a second. Failures are logged at WARN
// (rate-limited, with the count and the last error), recoveries at INFO.
//
// It is wired to the store and the replicator in cmd and testnet, so the
// root node package knows the directory only through the interfaces it
// owns and imports no libp2p.
package dirclient
