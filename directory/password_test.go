package directory

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
)

var phcRE = regexp.MustCompile(`^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$`)

func TestHashFormatAndVerify(t *testing.T) {
	ctx := context.Background()
	h := newHasher(HashParams{Time: 1, MemoryKiB: 64, Threads: 2, SaltLen: 16, KeyLen: 32}, 2)
	enc, err := h.hash(ctx, "ééééééééé")
	if err != nil {
		t.Fatal(err)
	}
	m := phcRE.FindStringSubmatch(enc)
	if m == nil || m[1] != "64" || m[2] != "1" || m[3] != "2" {
		t.Fatalf("hash %q not in PHC argon2id form with m=64,t=1,p=2", enc)
	}
	if enc2, _ := h.hash(ctx, "ééééééééé"); enc2 == enc {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	for pw, want := range map[string]bool{"ééééééééé": true, "eeeeeeeee": false, "": false} {
		if ok, err := h.verify(ctx, enc, pw, false); err != nil || ok != want {
			t.Errorf("verify(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	// Hashes keep verifying after the parameters change.
	h2 := newHasher(HashParams{Time: 2, MemoryKiB: 128, Threads: 1, SaltLen: 16, KeyLen: 32}, 1)
	if ok, err := h2.verify(ctx, enc, "ééééééééé", true); err != nil || !ok {
		t.Fatalf("verify with other params = %v, %v", ok, err)
	}
}

func TestParseHashRejects(t *testing.T) {
	good := "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43)
	if _, _, _, err := parseHash(good); err != nil {
		t.Fatalf("good hash rejected: %v", err)
	}
	for _, s := range []string{
		"",
		"plain",
		"$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=4,t=1,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=64,t=1,p=1,x=2$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=64,t=1,p=1$!!$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$AAAA",
		good + "$extra",
	} {
		if _, _, _, err := parseHash(s); !errors.Is(err, ErrBadHash) {
			t.Errorf("parseHash(%q) = %v, want ErrBadHash", s, err)
		}
	}
}

func TestResetCodes(t *testing.T) {
	code, hash, err := newResetCode()
	if err != nil {
		t.Fatal(err)
	}
	if len(code) != 32 || strings.Trim(code, "0123456789abcdef") != "" {
		t.Fatalf("code %q is not 32 hex chars", code)
	}
	if hash == code || hashResetCode(" "+strings.ToUpper(code)+"\r\n") != hash {
		t.Fatal("hashResetCode does not normalise case and space")
	}
	if code2, _, _ := newResetCode(); code2 == code {
		t.Fatal("codes repeat")
	}
}
