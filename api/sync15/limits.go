package sync15

import (
	"fmt"
	"strconv"
)

// Limits are the size limits of the storage API, published at
// GET info/configuration and enforced by the handler (and, for batch
// totals, by the store).
type Limits struct {
	// MaxRequestBytes bounds a request body; larger bodies get 413.
	MaxRequestBytes int64
	// MaxPostRecords is the most records one POST stores; later ones are
	// reported failed with "retry bso".
	MaxPostRecords int
	// MaxPostBytes bounds the payload bytes one POST stores; records past
	// it are reported failed with "retry bytes".
	MaxPostBytes int64
	// MaxTotalRecords and MaxTotalBytes bound a batch (records and payload
	// bytes over all its requests); exceeding them gives 400 with code 17.
	MaxTotalRecords int
	MaxTotalBytes   int64
	// MaxRecordPayloadBytes bounds one record's payload.
	MaxRecordPayloadBytes int64
}

// syncstorage-rs's default limits.
const (
	DefaultMaxPostBytes          = 2_621_440 // 2.5 MiB
	DefaultMaxPostRecords        = 100
	DefaultMaxRecordPayloadBytes = 2_621_440
	DefaultMaxRequestBytes       = DefaultMaxPostBytes + 4096
	DefaultMaxTotalBytes         = 100 * DefaultMaxPostBytes
	DefaultMaxTotalRecords       = 100 * DefaultMaxPostRecords
)

// DefaultLimits returns syncstorage-rs's default limits.
func DefaultLimits() Limits {
	return Limits{
		MaxRequestBytes:       DefaultMaxRequestBytes,
		MaxPostRecords:        DefaultMaxPostRecords,
		MaxPostBytes:          DefaultMaxPostBytes,
		MaxTotalRecords:       DefaultMaxTotalRecords,
		MaxTotalBytes:         DefaultMaxTotalBytes,
		MaxRecordPayloadBytes: DefaultMaxRecordPayloadBytes,
	}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxRequestBytes == 0 {
		l.MaxRequestBytes = d.MaxRequestBytes
	}
	if l.MaxPostRecords == 0 {
		l.MaxPostRecords = d.MaxPostRecords
	}
	if l.MaxPostBytes == 0 {
		l.MaxPostBytes = d.MaxPostBytes
	}
	if l.MaxTotalRecords == 0 {
		l.MaxTotalRecords = d.MaxTotalRecords
	}
	if l.MaxTotalBytes == 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxRecordPayloadBytes == 0 {
		l.MaxRecordPayloadBytes = d.MaxRecordPayloadBytes
	}
	return l
}

// validate reports negative limits.
func (l Limits) validate() error {
	if l.MaxRequestBytes < 0 || l.MaxPostRecords < 0 || l.MaxPostBytes < 0 || l.MaxTotalRecords < 0 ||
		l.MaxTotalBytes < 0 || l.MaxRecordPayloadBytes < 0 {
		return fmt.Errorf("%w: negative limit in %+v", ErrBadConfig, l)
	}
	return nil
}

// appendConfiguration appends the info/configuration object, members in
// syncstorage-rs's order; max_quota_limit is present when quota > 0.
func (l Limits) appendConfiguration(b []byte, quota int64) []byte {
	b = append(b, `{"max_post_bytes":`...)
	b = strconv.AppendInt(b, l.MaxPostBytes, 10)
	b = append(b, `,"max_post_records":`...)
	b = strconv.AppendInt(b, int64(l.MaxPostRecords), 10)
	b = append(b, `,"max_record_payload_bytes":`...)
	b = strconv.AppendInt(b, l.MaxRecordPayloadBytes, 10)
	b = append(b, `,"max_request_bytes":`...)
	b = strconv.AppendInt(b, l.MaxRequestBytes, 10)
	b = append(b, `,"max_total_bytes":`...)
	b = strconv.AppendInt(b, l.MaxTotalBytes, 10)
	b = append(b, `,"max_total_records":`...)
	b = strconv.AppendInt(b, int64(l.MaxTotalRecords), 10)
	if quota > 0 {
		b = append(b, `,"max_quota_limit":`...)
		b = strconv.AppendInt(b, quota, 10)
	}
	return append(b, '}')
}
