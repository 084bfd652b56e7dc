package directory

import (
	"errors"
	"reflect"
	"testing"
)

func sampleCommands() []Command {
	return []Command{
		CreateUser{Name: "alice", Hash: "$argon2id$x", Email: "a@example.org", Created: 1700000000, Node: "http://n1/"},
		CreateUser{Name: "bob", Hash: "h", Created: 1},
		DeleteUser{Name: "alice"},
		SetPassword{Name: "alice", Hash: "h2"},
		SetEmail{Name: "alice", Email: "é@example.org"},
		SetEmail{Name: "alice", Email: ""},
		SetResetCode{Name: "alice", CodeHash: "abc", Expires: 42},
		ClearResetCode{Name: "alice"},
		ResetPassword{Name: "alice", CodeHash: "abc", Hash: "h3", Now: 41},
		Batch{Commands: []Command{
			CreateUser{Name: "c1", Hash: "h", Created: 5},
			CreateUser{Name: "c2", Hash: "h", Created: 5},
			DeleteUser{Name: "c1"},
		}},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		t.Run(c.Type().String(), func(t *testing.T) {
			enc, err := EncodeCommand(c)
			if err != nil {
				t.Fatal(err)
			}
			if CommandType(enc[0]) != c.Type() || enc[1] != commandV1 {
				t.Fatalf("envelope = %x %x, want type %d version %d", enc[0], enc[1], c.Type(), commandV1)
			}
			got, err := DecodeCommand(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip: got %#v, want %#v", got, c)
			}
		})
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	create := func() []byte {
		b, _ := EncodeCommand(CreateUser{Name: "a", Hash: "h"})
		return b
	}
	batchOf := func(encs ...[]byte) []byte { return encodeBatch(encs) }
	tests := []struct {
		name    string
		data    []byte
		unknown bool // else malformed
	}{
		{"empty", nil, false},
		{"one byte", []byte{1}, false},
		{"unknown type", []byte{200, 1, '{', '}'}, true},
		{"type zero", []byte{0, 1}, true},
		{"unknown version", append([]byte{byte(CmdCreateUser), 2}, create()[2:]...), true},
		{"version zero", []byte{byte(CmdDeleteUser), 0, '{', '}'}, true},
		{"bad json", []byte{byte(CmdDeleteUser), 1, '{'}, false},
		{"unknown field", []byte(string([]byte{byte(CmdDeleteUser), 1}) + `{"n":"a","zz":1}`), false},
		{"trailing data", []byte(string([]byte{byte(CmdDeleteUser), 1}) + `{"n":"a"}{}`), false},
		{"wrong field type", []byte(string([]byte{byte(CmdCreateUser), 1}) + `{"n":"a","c":"x"}`), false},
		{"empty batch", []byte{byte(CmdBatch), 1, 0}, false},
		{"batch count too big", []byte{byte(CmdBatch), 1, 0xff, 0xff, 0x03}, false},
		{"batch truncated", batchOf(create(), create())[:10], false},
		{"batch trailing", append(batchOf(create()), 0), false},
		{"nested batch", batchOf(batchOf(create())), false},
		{"batch with unknown", batchOf(create(), []byte{99, 1}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := DecodeCommand(tt.data)
			if err == nil {
				t.Fatalf("decoded %#v, want error", c)
			}
			if tt.unknown {
				var ue *UnknownCommandError
				if !errors.As(err, &ue) || !errors.Is(err, ErrUnknownCommand) {
					t.Fatalf("err = %v, want UnknownCommandError", err)
				}
			} else if !errors.Is(err, ErrMalformedCommand) {
				t.Fatalf("err = %v, want ErrMalformedCommand", err)
			}
		})
	}
}

func TestEncodeCommandRejects(t *testing.T) {
	for _, c := range []Command{
		nil,
		Batch{},
		Batch{Commands: []Command{Batch{Commands: []Command{DeleteUser{Name: "a"}}}}},
		Batch{Commands: []Command{nil}},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrMalformedCommand) {
			t.Errorf("EncodeCommand(%#v) err = %v, want ErrMalformedCommand", c, err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		enc, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(CmdBatch), 1, 1, 2, 2, 1})
	f.Add([]byte{byte(CmdResetPassword), 1, 'n', 'u', 'l', 'l'})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if c != nil {
				t.Fatalf("command %#v with error %v", c, err)
			}
			if !errors.Is(err, ErrMalformedCommand) && !errors.Is(err, ErrUnknownCommand) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", c, err)
		}
		c2, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %x: %v", enc, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("unstable: %#v != %#v", c, c2)
		}
	})
}
