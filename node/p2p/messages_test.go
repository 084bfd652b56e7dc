package p2p

import (
	"errors"
	"strings"
	"testing"
)

func TestAccountEventDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want AccountEvent
		ok   bool
	}{
		{"password change", `{"user":"alice","deleted":false}`, AccountEvent{User: "alice"}, true},
		{"deletion", `{"user":"alice","deleted":true}`, AccountEvent{User: "alice", Deleted: true}, true},
		{"deleted omitted", `{"user":"bob"}`, AccountEvent{User: "bob"}, true},
		{"longest user", `{"user":"` + strings.Repeat("u", MaxUserLen) + `"}`, AccountEvent{User: strings.Repeat("u", MaxUserLen)}, true},
		{"empty user", `{"user":"","deleted":true}`, AccountEvent{}, false},
		{"no user", `{"deleted":true}`, AccountEvent{}, false},
		{"user too long", `{"user":"` + strings.Repeat("u", MaxUserLen+1) + `"}`, AccountEvent{}, false},
		{"unknown field", `{"user":"alice","wipe":true}`, AccountEvent{}, false},
		{"deleted as string", `{"user":"alice","deleted":"yes"}`, AccountEvent{}, false},
		{"trailing", `{"user":"alice"} {}`, AccountEvent{}, false},
		{"not an object", `["alice"]`, AccountEvent{}, false},
		{"truncated", `{"user":"alice"`, AccountEvent{}, false},
		{"too big", `{"user":"` + strings.Repeat("a", MaxMessageSize) + `"}`, AccountEvent{}, false},
	} {
		var got AccountEvent
		err := Unmarshal([]byte(tc.in), &got)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.ok && got != tc.want:
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		case !tc.ok && !errors.Is(err, ErrBadMessage):
			t.Errorf("%s: err = %v, want ErrBadMessage", tc.name, err)
		}
	}
	if _, err := Marshal(AccountEvent{User: "alice", Deleted: true}); err != nil {
		t.Fatal(err)
	}
}

// FuzzAccountEvent checks that whatever AccountEvent decodes is valid and
// survives a round trip.
func FuzzAccountEvent(f *testing.F) {
	f.Add([]byte(`{"user":"alice","deleted":true}`))
	f.Add([]byte(`{"user":""}`))
	f.Add([]byte(`{"user":"a","deleted":false,"x":1}`))
	f.Add([]byte(`{"user":"\u0000"} `))
	f.Fuzz(func(t *testing.T, in []byte) {
		var ev AccountEvent
		if err := Unmarshal(in, &ev); err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error not wrapping ErrBadMessage: %v", err)
			}
			return
		}
		if ev.User == "" || len(ev.User) > MaxUserLen {
			t.Fatalf("accepted user of %d bytes", len(ev.User))
		}
		b, err := Marshal(ev)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again AccountEvent
		if err := Unmarshal(b, &again); err != nil || again != ev {
			t.Fatalf("round trip: %+v -> %+v, %v", ev, again, err)
		}
	})
}
