// Package revtree is the revision model of HCE documents, pure and free of
// IO: revision ids, deterministic revision hashes, the revision tree with
// CouchDB's merge, stemming and winner rules, and a compact, strictly
// validated binary encoding. The node's store keeps one Tree per WBO and
// the replicator moves paths between trees; both build on this package.
//
// # Design
//
// Revision ids have CouchDB's shape "N-<32 lowercase hex>" (Rev, ParseRev).
// Lowercase is enforced because CouchDB parses the hash as hex
// (case-insensitively) while PouchDB compares strings: only lowercase hex
// sorts and compares the same in both. Positions are capped at MaxPos
// (2^53-1) so JavaScript peers read them exactly.
//
// A new edit's hash is NewRevHash: SHA-256, truncated to 128 bits, over a
// domain tag and a fixed-width or length-prefixed encoding of (deleted,
// parent position, parent hash, canonical body). Identical edits on the same
// parent made on two nodes get the same revision, so they converge instead of
// conflicting and a retried write is idempotent. Revisions received from
// peers are opaque: their hashes are never recomputed.
//
// A Tree maps each revision to its parent (the zero Rev for a root). Rev ids
// are the node identities: one revision, one node, one parent. Merging a
// Path (CouchDB's _revisions plus the leaf's _deleted flag) adds the path's
// revisions and parent links that are missing; a known revision keeps its
// links, and a path that contradicts them is refused whole. The tree is
// therefore the union of everything merged, and any set of valid paths
// merged in any order gives the same tree, the convergence property the
// replicator relies on (FuzzMerge and the property tests check it). A
// stemmed root gets its parent back if a later path carries it.
//
// Leaves carry the deleted flag of the path that created them and an opaque
// Value handle the store uses to find the leaf's body; both are cleared when
// the leaf gains a child, so only leaves keep bodies. Winner applies
// CouchDB's rule: a live leaf beats a tombstone, then the higher position,
// then the greater hash (byte order, equal to the lowercase hex string
// order). Leaves lists the winner first, then the losers in the same order;
// Conflicts and DeletedConflicts split the losers like _conflicts and
// _deleted_conflicts.
//
// Stem(limit) keeps the newest limit revisions of every root-to-leaf path
// (CouchDB's _revs_limit, default 1000) and never removes a leaf; it is
// separate from Merge, and the store calls it after merging. Merging a path
// longer than the limit into a stemmed tree re-adds the old ancestors until
// the next Stem. A path that shares no revision with the tree (both sides
// stemmed past their common ancestor) becomes a new root and shows as a
// conflict; that spurious conflict is inherent to stemming, as in CouchDB.
//
// Input from peers is untrusted: Merge bounds a path's length
// (Config.MaxPathLen, at most HardMaxPathLen), checks that positions stay in
// range (Start >= len(IDs), Start <= MaxPos) and refuses duplicate ids.
// Encode writes a canonical, versioned form and Decode accepts exactly
// Encode's outputs, so a stored or received tree is either valid or refused.
//
// A Tree is a plain value and not safe for concurrent use; the store
// serialises access per document.
package revtree
