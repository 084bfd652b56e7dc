package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/node"
)

// limitFlags are the storage limits a command serving the Weave storage
// API takes (serve, node); every default is the component's own.
type limitFlags struct {
	quotaKB                    *int64
	maxPayload, maxPostRecords *int
	maxPostBytes               *int
	maxRequestBytes            *int64
	purgeInterval              *time.Duration
}

// addLimitFlags registers the limit flags on fs. Units are in the names:
// -kb is KB of 1024 bytes (the Weave protocol's quota unit), -bytes
// bytes. With oldQuota, --quota (bytes, node's old flag) is kept as a
// deprecated alias of --quota-kb that warns on warn.
func addLimitFlags(fs *flag.FlagSet, oldQuota bool, warn io.Writer) *limitFlags {
	f := &limitFlags{
		quotaKB:         fs.Int64("quota-kb", 0, "per-user storage quota in KB of 1024 bytes (0: no quota)"),
		maxPayload:      fs.Int("max-payload-bytes", api.MaxPayloadBytes, "largest payload of one record, bytes (at most the protocol's 262144)"),
		maxPostRecords:  fs.Int("max-post-records", api.BatchMaxCount, "most records one POST stores; the rest are answered \"retry wbo\""),
		maxPostBytes:    fs.Int("max-post-bytes", api.BatchMaxBytes, "most payload bytes one POST stores; the rest are answered \"retry bytes\""),
		maxRequestBytes: fs.Int64("max-request-bytes", api.DefaultMaxBodyBytes, "largest storage API request body, bytes (larger: 413)"),
		purgeInterval:   fs.Duration("purge-interval", node.DefaultPurgeInterval, "how often expired (ttl) records are purged in the background"),
	}
	if oldQuota {
		deprecatedAlias(fs, "quota", "quota-kb", bytesToKB, warn, "per-user storage quota in bytes")
	}
	return f
}

// validate reports limits no component would accept.
func (f *limitFlags) validate() error {
	switch {
	case *f.quotaKB < 0:
		return fmt.Errorf("--quota-kb %d is negative", *f.quotaKB)
	case *f.maxPayload < 1 || *f.maxPayload > api.MaxPayloadBytes:
		return fmt.Errorf("--max-payload-bytes %d: want 1..%d (the protocol's limit)", *f.maxPayload, api.MaxPayloadBytes)
	case *f.maxPostRecords < 1 || *f.maxPostBytes < 1 || *f.maxRequestBytes < 1:
		return fmt.Errorf("--max-post-records, --max-post-bytes and --max-request-bytes must be positive")
	case *f.purgeInterval <= 0:
		return fmt.Errorf("--purge-interval %v: want a positive duration", *f.purgeInterval)
	}
	return nil
}

// quotaBytes is --quota-kb in bytes.
func (f *limitFlags) quotaBytes() int64 { return *f.quotaKB * 1024 }

// storage applies the storage API limits.
func (f *limitFlags) storage(c *api.StorageConfig) {
	c.MaxPayloadBytes = *f.maxPayload
	c.MaxPostRecords = *f.maxPostRecords
	c.MaxPostBytes = *f.maxPostBytes
	c.MaxBodyBytes = *f.maxRequestBytes
}

// node applies the store's limits (the quota is set by the caller's
// QuotaBytes).
func (f *limitFlags) node(c *node.Config) {
	c.PurgeInterval = *f.purgeInterval
}
