package testnet

import (
	"slices"
	"testing"

	"github.com/hce-sync/hce/node"
)

// TestStoreSizing checks that a testnet's store sizes reach in-process
// nodes' configurations and child nodes' command lines, zero fields
// leaving the node's defaults.
func TestStoreSizing(t *testing.T) {
	for _, tc := range []struct {
		name string
		z    StoreSizing
		args []string
		mem  int64
	}{
		{"zero", StoreSizing{}, nil, node.DefaultMemTableBytes},
		{"memtable", StoreSizing{MemTableMiB: 16}, []string{"--memtable-mib", "16"}, 16 << 20},
		{"all", StoreSizing{BlockCacheMiB: 256, MemTableMiB: 64, MaxCompactions: 3},
			[]string{"--block-cache-mib", "256", "--memtable-mib", "64", "--max-compactions", "3"}, 64 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.z.args(); !slices.Equal(got, tc.args) {
				t.Errorf("args %q, want %q", got, tc.args)
			}
			c := node.DefaultConfig()
			tc.z.apply(&c)
			if c.MemTableBytes != tc.mem {
				t.Errorf("MemTableBytes %d, want %d", c.MemTableBytes, tc.mem)
			}
			if tc.z.BlockCacheMiB == 0 && c.CacheBytes != node.DefaultCacheBytes {
				t.Errorf("CacheBytes %d changed", c.CacheBytes)
			}
		})
	}
}
