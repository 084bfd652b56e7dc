// Package placement is the allocation policy of the HCE directory: it decides
// which storage nodes hold a user's data (an ordered replica set whose first
// member is the primary), how a set is repaired when a member fails, and how a
// draining node hands its users over.
//
// Every function is pure: no IO, no clock, no randomness, and no dependence on
// map iteration order or on the order of the input slices. The directory calls
// it inside raft's FSM.Apply, so every voter computes the same answer from the
// same committed state. The caller supplies "now" as Policy.Now, a
// deterministic clock (the directory uses the raft index of the entry being
// applied), in the same unit as Node.Added.
//
// # Terms
//
// A node's Load is the number of users whose replica set contains the node, in
// any position (primary, replica, or a draining node still listed during a
// hand-over). Each user counts once per node. Loads computes it from a list of
// assignments; the directory keeps it up to date as it commits assignments.
//
// A candidate for a new placement is a node in state Active with
// Load < Capacity that is not already in the user's set. Capacity is a hard
// limit: a node is never given a user when Load >= Capacity. Pending, Draining,
// Down and Retired nodes never receive users.
//
// # Gradual release of capacity
//
// As Mozilla's tokenserver did, a node's usable capacity is released in steps
// so that a freshly added node is not flooded with every new user at once:
//
//	released(n) = min(Capacity, ReleaseStep × (1 + (Now − Added) / ReleaseInterval))
//
// (integer division; Now < Added counts as 0). A node is "within release" when
// Load < released(n). The release is soft: a node beyond its released capacity
// (but below Capacity) is chosen only when no candidate within release is left
// for that slot, which is how tokenserver releases more capacity once every node
// has used its current allowance. So release never causes ErrNoCapacity.
//
// # New nodes hold replicas before primaries
//
// A node is "new" while Now < Added + NewNodeWindow. A new node is not made the
// primary of a new user while an established candidate exists; it still takes
// replica slots normally.
//
// # Choosing a node for a slot
//
// Slots are filled one at a time, primary first. For each slot the candidates
// are ordered by these keys, the first difference deciding:
//
//  1. replica slots only: a node of an operator not yet in the set first
//     (so a set spans min(R, operators available) distinct operators, falling
//     back to the same operator when there are not enough);
//  2. primary slot only: an established node before a new one;
//  3. within release before beyond release;
//  4. lower fill after placement, (Load+1)/Capacity, compared exactly by
//     cross-multiplication;
//  5. lower ID (byte-wise).
//
// The best candidate takes the slot and the next slot is chosen from the rest.
//
// # Repair and drain
//
// Repair keeps the Active members in their order (so the primary moves to the
// first live replica when it fails), drops Down, Retired, Pending and unknown
// members, drops Draining members once an Active member that already held the
// user remains, and appends replacement replicas (never a node that was already
// in the set) until the set has R Active members. It never leaves a user
// without a live node: a Draining member that is the user's only live copy
// stays (first, as primary) until a later Repair finds the replacement in
// place; and when nothing live is left and no replacement exists the set is
// left unchanged.
//
// Drain plans a node's hand-over in two steps per user: Add lists the old set
// plus the replacement replicas (the draining node keeps its place, even as
// primary); Final is Add without the draining node, with the first Active
// member moved to the front. Committing Add, letting replication fill the new
// replica, then committing Final means the user always has a node holding its
// data.
package placement
