package api

import (
	"errors"
	"testing"
)

func TestParseStamp(t *testing.T) {
	tests := []struct {
		in   string
		want Stamp
		err  bool
	}{
		{in: "12", want: 1200},
		{in: "12.5", want: 1250},
		{in: "1278109839.90", want: 127810983990},
		{in: "1278109839.123456", want: 127810983912},
		{in: " 7.01 ", want: 701},
		{in: ".5", want: 50},
		{in: "5.", want: 500},
		{in: "-3.2", want: -320},
		{in: "+3.2", want: 320},
		{in: "1e3", want: 100000},
		{in: "1.5E1", want: 1500},
		// Half to even.
		{in: "0.125", want: 12},
		{in: "0.135", want: 14},
		{in: "0.1251", want: 13},
		{in: "0.12500000", want: 12},
		{in: "0.115", want: 12},
		{in: "0.105", want: 10},
		{in: "-0.125", want: -12},
		{in: "0.126", want: 13},
		{in: "0.124999", want: 12},
		{in: "", err: true},
		{in: "abc", err: true},
		{in: ".", err: true},
		{in: "1.2.3", err: true},
		{in: "12a", err: true},
		{in: "1234567890123456", err: true},
		{in: "1e400", err: true},
		{in: "NaN", err: true},
		{in: "-", err: true},
	}
	for _, tt := range tests {
		got, err := ParseStamp(tt.in)
		if tt.err {
			if !errors.Is(err, ErrBadStamp) {
				t.Errorf("ParseStamp(%q) = %v, %v; want ErrBadStamp", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseStamp(%q) = %v, %v; want %d", tt.in, int64(got), err, tt.want)
		}
	}
}

func TestStampString(t *testing.T) {
	for _, tt := range []struct {
		s    Stamp
		want string
	}{
		{0, "0.00"}, {5, "0.05"}, {50, "0.50"}, {100, "1.00"}, {127810983990, "1278109839.90"},
		{127810983901, "1278109839.01"}, {-320, "-3.20"}, {-5, "-0.05"},
	} {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Stamp(%d).String() = %q, want %q", int64(tt.s), got, tt.want)
		}
		back, err := ParseStamp(tt.want)
		if err != nil || back != tt.s {
			t.Errorf("round trip %q = %d, %v", tt.want, int64(back), err)
		}
	}
}
