package load

import (
	"testing"
	"time"
)

func TestMergeAndMedianRatio(t *testing.T) {
	a := Result{Scenario: Info, Requests: 100, WBOs: 0, Elapsed: time.Second, lat: []time.Duration{1, 2, 3}}
	b := Result{Scenario: Info, Requests: 300, Elapsed: time.Second, Errors: 1, FirstError: "x", lat: []time.Duration{4, 5, 6, 7}}
	m := Merge(a, b)
	if m.Requests != 400 || m.Errors != 1 || m.Elapsed != 2*time.Second || m.RPS() != 200 || m.FirstError != "x" {
		t.Fatalf("Merge = %+v", m)
	}
	if m.P50 != 4 || m.P99 != 7 {
		t.Fatalf("percentiles %v %v", m.P50, m.P99)
	}
	rs := []Result{{Requests: 10, Elapsed: time.Second}, {Requests: 30, Elapsed: time.Second}, {Requests: 20, Elapsed: time.Second}}
	bs := []Result{{Requests: 100, Elapsed: time.Second}, {Requests: 100, Elapsed: time.Second}, {Requests: 100, Elapsed: time.Second}}
	if got := MedianRatio(rs, bs); got != 20 {
		t.Fatalf("MedianRatio = %v, want 20", got)
	}
}
