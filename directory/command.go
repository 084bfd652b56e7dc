package directory

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// CommandType is the first byte of every raft log entry the directory
// writes. Values are never reused; a retired type stays reserved.
type CommandType uint8

// The command types. Each has its own version (the second byte of an
// entry); see DESIGN.md for the rules on changing them.
const (
	CmdCreateUser     CommandType = 1
	CmdDeleteUser     CommandType = 2
	CmdSetPassword    CommandType = 3
	CmdSetEmail       CommandType = 4
	CmdSetResetCode   CommandType = 5
	CmdClearResetCode CommandType = 6
	CmdResetPassword  CommandType = 7
	CmdBatch          CommandType = 8
)

// commandV1 is the only body version of every command type so far.
const commandV1 = 1

// maxBatchCommands bounds the commands of one Batch entry, so a decoder
// never allocates for more than this.
const maxBatchCommands = 1024

// String returns the command type's name.
func (t CommandType) String() string {
	switch t {
	case CmdCreateUser:
		return "CreateUser"
	case CmdDeleteUser:
		return "DeleteUser"
	case CmdSetPassword:
		return "SetPassword"
	case CmdSetEmail:
		return "SetEmail"
	case CmdSetResetCode:
		return "SetResetCode"
	case CmdClearResetCode:
		return "ClearResetCode"
	case CmdResetPassword:
		return "ResetPassword"
	case CmdBatch:
		return "Batch"
	}
	if n := clusterCommandName(t); n != "" {
		return n
	}
	if n := keyCommandName(t); n != "" {
		return n
	}
	return fmt.Sprintf("CommandType(%d)", uint8(t))
}

// Errors of the command codec.
var (
	// ErrMalformedCommand means an entry could not be decoded: too short,
	// a body that does not parse, unknown fields, trailing bytes, or a
	// nested or empty batch.
	ErrMalformedCommand = errors.New("directory: malformed command")
	// ErrUnknownCommand is matched (errors.Is) by every
	// *UnknownCommandError.
	ErrUnknownCommand = errors.New("directory: unknown command")
)

// UnknownCommandError reports an entry whose type or version this build
// does not know. It matches ErrUnknownCommand. The FSM returns it as the
// apply result (and logs it at ERROR level); see DESIGN.md.
type UnknownCommandError struct {
	Type    CommandType
	Version uint8
}

// Error implements error.
func (e *UnknownCommandError) Error() string {
	return fmt.Sprintf("directory: unknown command type %d version %d", uint8(e.Type), e.Version)
}

// Is makes errors.Is(err, ErrUnknownCommand) true.
func (e *UnknownCommandError) Is(target error) bool { return target == ErrUnknownCommand }

// Command is one typed FSM command. The set is closed: only the types in
// this package implement it.
type Command interface {
	// Type returns the command's type byte.
	Type() CommandType
	version() uint8
}

// CreateUser creates an account. Fails with api.ErrUserExists if Name is
// taken.
type CreateUser struct {
	Name string `json:"n"`
	// Hash is the encoded argon2id hash of the password.
	Hash  string `json:"h"`
	Email string `json:"e,omitempty"`
	// Created is the proposer's clock in Unix seconds.
	Created int64 `json:"c"`
	// Node is the storage node base URL assigned to the account.
	Node string `json:"node,omitempty"`
}

// DeleteUser removes an account. Fails with api.ErrUserNotFound.
type DeleteUser struct {
	Name string `json:"n"`
}

// SetPassword replaces an account's hash and drops any pending reset
// code. Fails with api.ErrUserNotFound.
type SetPassword struct {
	Name string `json:"n"`
	Hash string `json:"h"`
}

// SetEmail replaces an account's e-mail address. Fails with
// api.ErrUserNotFound.
type SetEmail struct {
	Name  string `json:"n"`
	Email string `json:"e"`
}

// SetResetCode stores the SHA-256 (hex) of a new reset code and its expiry
// (Unix seconds), replacing any earlier code. Fails with
// api.ErrUserNotFound.
type SetResetCode struct {
	Name     string `json:"n"`
	CodeHash string `json:"ch"`
	Expires  int64  `json:"x"`
}

// ClearResetCode drops a pending reset code (no-op when none). Fails with
// api.ErrUserNotFound.
type ClearResetCode struct {
	Name string `json:"n"`
}

// ResetPassword sets Hash as the account's password and clears the reset
// code, if CodeHash is the pending code's hash and it has not expired at
// Now (Unix seconds, the proposer's clock). Fails with api.ErrUserNotFound
// or api.ErrBadResetCode.
type ResetPassword struct {
	Name     string `json:"n"`
	CodeHash string `json:"ch"`
	Hash     string `json:"h"`
	Now      int64  `json:"now"`
}

// Batch carries several commands in one raft entry. Each is applied in
// order with its own result; one failing does not stop the others.
// Batches do not nest.
type Batch struct {
	Commands []Command
}

// Type implements Command.
func (CreateUser) Type() CommandType { return CmdCreateUser }

// Type implements Command.
func (DeleteUser) Type() CommandType { return CmdDeleteUser }

// Type implements Command.
func (SetPassword) Type() CommandType { return CmdSetPassword }

// Type implements Command.
func (SetEmail) Type() CommandType { return CmdSetEmail }

// Type implements Command.
func (SetResetCode) Type() CommandType { return CmdSetResetCode }

// Type implements Command.
func (ClearResetCode) Type() CommandType { return CmdClearResetCode }

// Type implements Command.
func (ResetPassword) Type() CommandType { return CmdResetPassword }

// Type implements Command.
func (Batch) Type() CommandType { return CmdBatch }

func (CreateUser) version() uint8     { return commandV1 }
func (DeleteUser) version() uint8     { return commandV1 }
func (SetPassword) version() uint8    { return commandV1 }
func (SetEmail) version() uint8       { return commandV1 }
func (SetResetCode) version() uint8   { return commandV1 }
func (ClearResetCode) version() uint8 { return commandV1 }
func (ResetPassword) version() uint8  { return commandV1 }
func (Batch) version() uint8          { return commandV1 }

// EncodeCommand returns the log entry for c: the type byte, the version
// byte, then the body (JSON, or for Batch a count and length-prefixed
// entries, all unsigned varints).
func EncodeCommand(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrMalformedCommand)
	}
	if b, ok := c.(Batch); ok {
		if len(b.Commands) == 0 || len(b.Commands) > maxBatchCommands {
			return nil, fmt.Errorf("%w: batch of %d commands", ErrMalformedCommand, len(b.Commands))
		}
		encs := make([][]byte, len(b.Commands))
		for i, sub := range b.Commands {
			if sub == nil || sub.Type() == CmdBatch {
				return nil, fmt.Errorf("%w: nil or nested command in batch", ErrMalformedCommand)
			}
			enc, err := EncodeCommand(sub)
			if err != nil {
				return nil, err
			}
			encs[i] = enc
		}
		return encodeBatch(encs), nil
	}
	out := []byte{byte(c.Type()), c.version()}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("directory: encode %v: %w", c.Type(), err)
	}
	return append(out, body...), nil
}

// DecodeCommand parses a log entry written by EncodeCommand. It returns
// an *UnknownCommandError (matching ErrUnknownCommand) for a type or
// version this build does not know, and an error wrapping
// ErrMalformedCommand for anything else it cannot parse. Inside a batch,
// an unknown sub-command is reported as the batch's error: a batch is
// decoded whole or not at all.
func DecodeCommand(data []byte) (Command, error) {
	if len(data) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformedCommand, len(data))
	}
	t, v, body := CommandType(data[0]), data[1], data[2:]
	if t == CmdSetVoter && v == setVoterV2 {
		return decodeJSON[SetVoter](t, body)
	}
	if v != commandV1 {
		return nil, &UnknownCommandError{Type: t, Version: v}
	}
	switch t {
	case CmdCreateUser:
		return decodeJSON[CreateUser](t, body)
	case CmdDeleteUser:
		return decodeJSON[DeleteUser](t, body)
	case CmdSetPassword:
		return decodeJSON[SetPassword](t, body)
	case CmdSetEmail:
		return decodeJSON[SetEmail](t, body)
	case CmdSetResetCode:
		return decodeJSON[SetResetCode](t, body)
	case CmdClearResetCode:
		return decodeJSON[ClearResetCode](t, body)
	case CmdResetPassword:
		return decodeJSON[ResetPassword](t, body)
	case CmdBatch:
		return decodeBatch(body)
	}
	if c, err, ok := decodeClusterCommand(t, body); ok {
		return c, err
	}
	if c, err, ok := decodeKeyCommand(t, body); ok {
		return c, err
	}
	return nil, &UnknownCommandError{Type: t, Version: v}
}

// decodeJSON decodes one JSON object strictly: unknown fields and trailing
// data are errors, so a body change without a version bump is caught
// instead of silently dropping a field on older voters.
func decodeJSON[T Command](t CommandType, body []byte) (Command, error) {
	var c T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v body: %v", ErrMalformedCommand, t, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: %v body: trailing data", ErrMalformedCommand, t)
	}
	return c, nil
}

func decodeBatch(body []byte) (Command, error) {
	n, k := binary.Uvarint(body)
	if k <= 0 || n == 0 || n > maxBatchCommands || n > uint64(len(body)) {
		return nil, fmt.Errorf("%w: bad batch count", ErrMalformedCommand)
	}
	body = body[k:]
	cmds := make([]Command, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(body)
		if k <= 0 || l > uint64(len(body)-k) {
			return nil, fmt.Errorf("%w: bad batch entry %d length", ErrMalformedCommand, i)
		}
		sub := body[k : k+int(l)]
		body = body[k+int(l):]
		if len(sub) > 0 && CommandType(sub[0]) == CmdBatch {
			return nil, fmt.Errorf("%w: nested batch", ErrMalformedCommand)
		}
		c, err := DecodeCommand(sub)
		if err != nil {
			return nil, fmt.Errorf("batch entry %d: %w", i, err)
		}
		cmds = append(cmds, c)
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes after batch", ErrMalformedCommand, len(body))
	}
	return Batch{Commands: cmds}, nil
}
