package api

import "testing"

func TestAccountName(t *testing.T) {
	tests := []struct{ in, want string }{
		// python3: base32(sha1(b'test@mozilla.com')).lower()
		{"test@mozilla.com", "rsytxdnwkte6alwne5tmb4yoomohhlke"},
		{"Test@Mozilla.COM", "rsytxdnwkte6alwne5tmb4yoomohhlke"},
		// sha1(b'test@xn--bcher-kva.example')
		{"test@bücher.example", "mhx4kgxvdv2csb6wcouc4whgzugqsxmk"},
		{"test@BÜCHER.Example", "mhx4kgxvdv2csb6wcouc4whgzugqsxmk"},
	}
	for _, tt := range tests {
		got := AccountName(tt.in)
		if got != tt.want {
			t.Errorf("AccountName(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if len(got) != 32 {
			t.Errorf("len %d", len(got))
		}
	}
}

func TestPunycode(t *testing.T) {
	// Vectors checked with Python's "punycode" codec and RFC 3492 7.1.
	tests := []struct{ in, want string }{
		{"bücher", "bcher-kva"},
		{"münchen", "mnchen-3ya"},
		{"ü", "tda"},
		{"例え", "r8jz45g"},
		{"ليهمابتكلموشعربي؟", "egbpdaj6bu4bxfgehfvwxn"},
		{"他们为什么不说中文", "ihqwcrb4cv8a8dqg056pqjye"},
	}
	for _, tt := range tests {
		got, ok := punycodeEncode(tt.in)
		if !ok || got != tt.want {
			t.Errorf("punycode(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestValidPassword(t *testing.T) {
	tests := []struct {
		user, pw string
		want     bool
	}{
		{"tarek", "x", false},
		{"tarek2", "tarek2", false},
		{"someuser", "SomeUser", false},
		{"someuser", "  someuser ", false},
		{"u", "1234567", false},
		{"u", "12345678", true},
		{"u", "ééé", false}, // 6 bytes
		{"u", "éééé", true}, // 8 bytes
		{"u", "ééééééééé", true},
		{"tarek2", "tarek2tarek2", true},
	}
	for _, tt := range tests {
		if got := ValidPassword(tt.user, tt.pw); got != tt.want {
			t.Errorf("ValidPassword(%q, %q) = %v, want %v", tt.user, tt.pw, got, tt.want)
		}
	}
}

func TestValidEmail(t *testing.T) {
	for s, want := range map[string]bool{
		"a@b.c": true, "test@mozilla.com": true, "ü@bücher.de": true,
		"bademailhere": false, "@b.c": false, "a@b": false, "a@.c": false, "a@b.": false,
		"a b@c.d": false, "a@b@c.d": false, "": false, "a@b..c": false,
	} {
		if got := ValidEmail(s); got != want {
			t.Errorf("ValidEmail(%q) = %v, want %v", s, got, want)
		}
	}
}
