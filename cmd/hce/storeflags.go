package main

import (
	"flag"
	"fmt"

	"github.com/hce-sync/hce/node"
)

// storeFlags size the node's Pebble store (serve, node); every default
// is node.DefaultConfig's.
type storeFlags struct {
	cacheMiB, memtableMiB *int64
	maxCompactions        *int
}

// addStoreFlags registers the store sizing flags on fs. Sizes are MiB
// (the unit is in the names).
func addStoreFlags(fs *flag.FlagSet) *storeFlags {
	return &storeFlags{
		cacheMiB: fs.Int64("block-cache-mib", node.DefaultCacheBytes>>20,
			"Pebble block cache, MiB (the memtables are reserved in it: keep it at least 4 times --memtable-mib)"),
		memtableMiB: fs.Int64("memtable-mib", node.DefaultMemTableBytes>>20,
			"size of one Pebble memtable, MiB (up to 2 more may wait for their flush)"),
		maxCompactions: fs.Int("max-compactions", node.DefaultMaxCompactions,
			"most Pebble compactions at once (more than 1 only while level 0 or the compaction debt grows)"),
	}
}

// validate reports sizes the store would refuse.
func (f *storeFlags) validate() error {
	switch {
	case *f.cacheMiB < 1 || *f.cacheMiB > 1<<20:
		return fmt.Errorf("--block-cache-mib %d: want 1..%d", *f.cacheMiB, 1<<20)
	case *f.memtableMiB < 1 || *f.memtableMiB >= 4<<10:
		return fmt.Errorf("--memtable-mib %d: want 1..%d", *f.memtableMiB, 4<<10-1)
	case *f.maxCompactions < 1 || *f.maxCompactions > 64:
		return fmt.Errorf("--max-compactions %d: want 1..64", *f.maxCompactions)
	}
	return nil
}

// node applies the sizes.
func (f *storeFlags) node(c *node.Config) {
	c.CacheBytes = *f.cacheMiB << 20
	c.MemTableBytes = *f.memtableMiB << 20
	c.MaxCompactions = *f.maxCompactions
}
