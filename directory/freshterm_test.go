package directory

import (
	"testing"

	"github.com/hashicorp/raft"
)

// TestFirstOfTerm: the first index of a term in a log whose terms grow
// along it, including a term that began before the log's first entry
// (compacted) and terms the log does not hold yet.
func TestFirstOfTerm(t *testing.T) {
	s := raft.NewInmemStore()
	terms := []uint64{1, 1, 2, 2, 2, 3, 5, 5}
	var logs []*raft.Log
	for i, term := range terms {
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: term, Type: raft.LogNoop})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		term, want uint64
		ok         bool
	}{{1, 1, true}, {2, 3, true}, {3, 6, true}, {4, 0, false}, {5, 7, true}, {6, 0, false}} {
		if got, ok := firstOfTerm(s, tc.term); got != tc.want || ok != tc.ok {
			t.Errorf("term %d: %d %v, want %d %v", tc.term, got, ok, tc.want, tc.ok)
		}
	}
	// Compaction took the first four entries: term 2 began before the
	// log's first entry, which is where its (committed) start is taken.
	if err := s.DeleteRange(1, 4); err != nil {
		t.Fatal(err)
	}
	if got, ok := firstOfTerm(s, 2); got != 5 || !ok {
		t.Errorf("term 2 after compaction: %d %v, want 5 true", got, ok)
	}
	if got, ok := firstOfTerm(s, 1); ok {
		t.Errorf("term 1, wholly compacted: %d %v, want not found", got, ok)
	}
	if got, ok := firstOfTerm(raft.NewInmemStore(), 1); ok {
		t.Errorf("empty log: %d %v", got, ok)
	}
}
