package api

import (
	"encoding/json"
	"testing"
)

func TestStampJSON(t *testing.T) {
	for _, c := range []struct {
		s    Stamp
		json string
	}{{179563967557, "1795639675.57"}, {100, "1.00"}, {5, "0.05"}, {0, "null"}} {
		b, err := json.Marshal(c.s)
		if err != nil || string(b) != c.json {
			t.Errorf("Marshal(%d) = %s, %v; want %s", c.s, b, err, c.json)
		}
		var back Stamp = 42
		if err := json.Unmarshal(b, &back); err != nil || back != c.s {
			t.Errorf("Unmarshal(%s) = %d, %v; want %d", b, back, err, c.s)
		}
	}
	var s Stamp
	if err := json.Unmarshal([]byte(`"12.345"`), &s); err != nil || s != 1234 {
		t.Errorf(`Unmarshal("12.345") = %d, %v`, s, err)
	}
	if err := json.Unmarshal([]byte(`"x"`), &s); err == nil {
		t.Error("Unmarshal of a non-number succeeded")
	}
}
