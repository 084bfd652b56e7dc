// Package testnet composes directories and storage nodes into running
// systems on one machine: Standalone is what `hce serve` runs (one directory
// voter and one storage node behind one HTTP port, the same code paths as a
// federation). The tests of this package drive the composed system through
// real HTTP, exactly as Sync clients do.
package testnet
