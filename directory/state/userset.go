package state

import (
	"slices"
	"strings"
)

// userSetBlock is the most names a userSet block holds before it splits.
const userSetBlock = 512

// userSet is an ordered set of user names: a list of sorted blocks, each
// holding at most userSetBlock names, every name of a block less than
// every name of the next. Lookups cost O(log n); an insert or removal
// O(log n + userSetBlock + n/userSetBlock), which for a million users is
// a few thousand word moves rather than a million. Not safe for
// concurrent use; the FSM guards it with its lock.
type userSet struct {
	blocks [][]string // never empty blocks
	n      int
}

// newUserSet returns a set of sorted, distinct names (which it keeps).
func newUserSet(sorted []string) *userSet {
	s := &userSet{n: len(sorted)}
	for len(sorted) > 0 {
		k := min(len(sorted), userSetBlock/2)
		s.blocks = append(s.blocks, slices.Clip(sorted[:k]))
		sorted = sorted[k:]
	}
	return s
}

func (s *userSet) len() int { return s.n }

// block returns the index of the first block whose last name is at or
// after name (len(s.blocks) if none).
func (s *userSet) block(name string) int {
	i, _ := slices.BinarySearchFunc(s.blocks, name, func(b []string, name string) int {
		return strings.Compare(b[len(b)-1], name)
	})
	return i
}

// insert adds name; it reports whether name was new.
func (s *userSet) insert(name string) bool {
	if len(s.blocks) == 0 {
		s.blocks = [][]string{{name}}
		s.n = 1
		return true
	}
	bi := min(s.block(name), len(s.blocks)-1)
	b := s.blocks[bi]
	j, found := slices.BinarySearch(b, name)
	if found {
		return false
	}
	b = slices.Insert(b, j, name)
	s.n++
	if len(b) <= userSetBlock {
		s.blocks[bi] = b
		return true
	}
	half := len(b) / 2
	lo := slices.Clip(b[:half])
	hi := slices.Clone(b[half:])
	s.blocks[bi] = lo
	s.blocks = slices.Insert(s.blocks, bi+1, hi)
	return true
}

// remove deletes name; it reports whether name was there.
func (s *userSet) remove(name string) bool {
	bi := s.block(name)
	if bi == len(s.blocks) {
		return false
	}
	b := s.blocks[bi]
	j, found := slices.BinarySearch(b, name)
	if !found {
		return false
	}
	b = slices.Delete(b, j, j+1)
	s.n--
	switch {
	case len(b) == 0:
		s.blocks = slices.Delete(s.blocks, bi, bi+1)
	case len(b) < userSetBlock/4 && bi+1 < len(s.blocks) && len(b)+len(s.blocks[bi+1]) <= userSetBlock/2:
		s.blocks[bi] = append(b, s.blocks[bi+1]...)
		s.blocks = slices.Delete(s.blocks, bi+1, bi+2)
	default:
		s.blocks[bi] = b
	}
	return true
}

// after returns up to limit names strictly after name, in order (a new
// slice; the names are shared).
func (s *userSet) after(name string, limit int) []string {
	var out []string
	bi := s.block(name)
	if bi == len(s.blocks) {
		return nil
	}
	j, found := slices.BinarySearch(s.blocks[bi], name)
	if found {
		j++
	}
	for ; bi < len(s.blocks) && len(out) < limit; bi, j = bi+1, 0 {
		b := s.blocks[bi][j:]
		out = append(out, b[:min(len(b), limit-len(out))]...)
	}
	return out
}
