// Package mix reads load mixes and draws requests from them. A mix file
// (format: docs/mix-format.md) says what a simulated Sync user — a browser
// profile with its devices — sends and holds: the ops of a sync with their
// shares of requests, payload-size and record-count distributions, the
// time between a user's syncs, directory requests at a rate per active
// user, and the records each user holds before a run (prefill).
//
// A Generator turns a mix into requests without doing any IO: every draw
// takes its randomness from a caller's *rand.Rand, so a seed fixes the
// sequence. The built-in mixes are weave-mix-v1 (the traffic of real Sync
// clients) and the one-op mixes post100, get100, info and nodeweave.
//
// Parse faces files written by operators and is fuzzed (FuzzParse).
package mix
