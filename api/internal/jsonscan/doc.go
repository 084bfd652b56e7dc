// Package jsonscan is the strict single-pass JSON scanner under the
// record decoders of the api packages: the Weave WBO decoder (api) and the
// Sync 1.5 BSO decoder (api/sync15). It scans whitespace, literals,
// numbers, strings with escapes and whole values, decoding scalar values
// and skipping objects and arrays without recursion; the decoders keep
// their own object and array loops and their protocol's validation.
//
// The two protocols differ in two places, which a Scanner's fields select:
// Strict (refuse invalid UTF-8 and lone surrogate escapes in strings, or
// replace them with U+FFFD as encoding/json does) and MaxDepth (how deep
// Skip may nest). Everything else, what is well-formed and how strings
// decode, is the same for both.
package jsonscan
