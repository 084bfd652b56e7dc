package node

import "encoding/binary"

// Key layout (see DESIGN.md). User and collection names never contain NUL,
// so "user\x00" and "coll\x00" terminate them unambiguously; ids come last
// in a key and may hold any byte. Global keys start with NUL, which no user
// name does.
const (
	tagMeta = 'C' // user\0 C coll          -> collection meta ("" = user meta)
	tagData = 'D' // user\0 D coll\0 seq     -> record (insertion order)
	tagMod  = 'M' // user\0 M coll\0 mod seq -> ""
	tagRec  = 'R' // user\0 R coll\0 id      -> head
	tagIdx  = 'S' // user\0 S coll\0 ^si seq -> ""
	tagExp  = 'X' // user\0 X coll\0 exp seq -> id

	// Sync 1.5 (index15.go, batch15.go): the view's orders of the Sync 1.5
	// API, kept for users served by it, and its batch uploads.
	tagNew15 = 'N' // user\0 N coll\0 mod id              -> seq, exp
	tagIdx15 = 'I' // user\0 I coll\0 0 id | 1 si id      -> seq, exp, mod
	tagBatch = 'B' // user\0 B coll\0 batch [\0 id]       -> batch header | batched record

	// Revision keys (not part of the Weave view: DELETE storage keeps them).
	tagAnc   = 'A' // user\0 A coll\0 len(id) id ^chunk -> entries (position, hash) of older revisions of a single-path document, appended by merge (history.go)
	tagHist  = 'O' // user\0 O coll\0 id     -> older revision hashes of a single-path document (document version 3; replaced by tagAnc keys when it changes)
	tagCkpt  = 'P' // user\0 P peer         -> replication checkpoint
	tagChg   = 'Q' // user\0 Q seq          -> changes row (see appendChange)
	tagDoc   = 'V' // user\0 V coll\0 id     -> document: revision tree + leaf bodies
	tagLocal = 'W' // user\0 W id           -> _local document
)

// viewRanges are the tag ranges [lo, hi) holding the Weave view of a
// user's documents (records, indexes, collection metadata), and nothing
// else: DELETE storage range-deletes them.
var viewRanges = [][2]byte{{tagMeta, tagHist}, {tagRec, 'T'}, {tagExp, 'Y'}}

var keyUUID = []byte("\x00uuid")

func docKey(b []byte, u ukey, coll, id string) []byte {
	b = collPrefix(b, u, tagDoc, coll)
	return append(b, id...)
}

func histKey(b []byte, u ukey, coll, id string) []byte {
	b = collPrefix(b, u, tagHist, coll)
	return append(b, id...)
}

func chgKey(b []byte, u ukey, seq uint64) []byte {
	return appendU64(userTag(b, u, tagChg), seq)
}

func localKey(b []byte, u ukey, id string) []byte {
	return append(userTag(b, u, tagLocal), id...)
}

func ckptKey(b []byte, u ukey, peer string) []byte {
	return append(userTag(b, u, tagCkpt), peer...)
}

var (
	keyClock        = []byte("\x00clock")
	globalExpPrefix = []byte("\x00E") // \0 E exp user\0 coll -> ""
)

const signBit = 1 << 63

// ordInt64 encodes v so that byte order equals numeric order.
func ordInt64(v int64) uint64 { return uint64(v) ^ signBit }

func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// userStart and userEnd bound every per-user key.
func userStart(b []byte, u ukey) []byte {
	b = append(b, u.check()...)
	return append(b, 0)
}

func userEnd(b []byte, u ukey) []byte {
	b = append(b, u.check()...)
	return append(b, 1)
}

// userTag is the prefix user\0 tag.
func userTag(b []byte, u ukey, tag byte) []byte {
	b = append(b, u.check()...)
	return append(b, 0, tag)
}

// collPrefix is the prefix user\0 tag coll\0 of one collection's keys of
// one kind.
func collPrefix(b []byte, u ukey, tag byte, coll string) []byte {
	b = append(b, u.check()...)
	b = append(b, 0, tag)
	b = append(b, coll...)
	return append(b, 0)
}

// prefixEnd returns the smallest key greater than every key with prefix p
// (p must not end in 0xff, which none of ours does).
func prefixEnd(b, p []byte) []byte {
	b = append(b, p...)
	b[len(b)-1]++
	return b
}

func metaKey(b []byte, u ukey, coll string) []byte {
	b = userTag(b, u, tagMeta)
	return append(b, coll...)
}

func recKey(b []byte, u ukey, coll, id string) []byte {
	b = collPrefix(b, u, tagRec, coll)
	return append(b, id...)
}

func dataKey(b []byte, u ukey, coll string, seq uint64) []byte {
	return appendU64(collPrefix(b, u, tagData, coll), seq)
}

func modKey(b []byte, u ukey, coll string, mod int64, seq uint64) []byte {
	return appendU64(appendU64(collPrefix(b, u, tagMod, coll), ordInt64(mod)), seq)
}

// idxKey sorts by sortindex descending, then seq ascending.
func idxKey(b []byte, u ukey, coll string, si int64, seq uint64) []byte {
	return appendU64(appendU64(collPrefix(b, u, tagIdx, coll), ^ordInt64(si)), seq)
}

func expKey(b []byte, u ukey, coll string, exp int64, seq uint64) []byte {
	return appendU64(appendU64(collPrefix(b, u, tagExp, coll), ordInt64(exp)), seq)
}

func globalExpKey(b []byte, exp int64, user, coll string) []byte {
	b = append(b, globalExpPrefix...)
	b = appendU64(b, ordInt64(exp))
	b = append(b, user...)
	b = append(b, 0)
	return append(b, coll...)
}

// parseGlobalExpKey splits a global expiry key.
func parseGlobalExpKey(k []byte) (exp int64, user, coll string, ok bool) {
	if len(k) < len(globalExpPrefix)+8 {
		return 0, "", "", false
	}
	rest := k[len(globalExpPrefix):]
	exp = int64(binary.BigEndian.Uint64(rest) ^ signBit)
	rest = rest[8:]
	for i, c := range rest {
		if c == 0 {
			return exp, string(rest[:i]), string(rest[i+1:]), true
		}
	}
	return 0, "", "", false
}

// tailU64 reads the big-endian uint64 that ends at len(k)-off.
func tailU64(k []byte, off int) uint64 {
	return binary.BigEndian.Uint64(k[len(k)-off-8 : len(k)-off])
}
