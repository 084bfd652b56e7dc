package state

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

// The command types, in families: accounts from 1, the cluster (storage
// nodes, assignments, settings, voters) from 20, token signing keys from
// 40, so that each family can grow without clashing. Each type has its own
// version (the second byte of an entry); see DESIGN.md for the rules on
// changing them.
const (
	CmdCreateUser     CommandType = 1
	CmdDeleteUser     CommandType = 2
	CmdSetPassword    CommandType = 3
	CmdSetEmail       CommandType = 4
	CmdSetResetCode   CommandType = 5
	CmdClearResetCode CommandType = 6
	CmdResetPassword  CommandType = 7
	CmdBatch          CommandType = 8
	CmdCreateInvite   CommandType = 9

	CmdRegisterNode CommandType = 20
	CmdApproveNode  CommandType = 21
	CmdSetNodeState CommandType = 22
	CmdRetireNode   CommandType = 23
	CmdSetSettings  CommandType = 24
	CmdFinishDrain  CommandType = 25
	CmdSetVoter     CommandType = 26
	// Replica sets: what nodes' replication reports, rebalancing
	// transfers, members leaving their sets.
	CmdNodeReport    CommandType = 27
	CmdStartTransfer CommandType = 28
	CmdFinishLeave   CommandType = 29

	CmdPublishKey CommandType = 40
	CmdRetireKey  CommandType = 41
)

// commandV1 is the body version of every command type unless it carries
// fields a later version added: commandV2 for CreateUser with an invite,
// SetPassword with its time, SetResetCode with a limit, SetSettings with
// capacity limits, DeleteUser with its time, and SetVoter with libp2p
// fields (setVoterV2).
const (
	commandV1 = 1
	commandV2 = 2
)

// MaxBatchCommands bounds the commands of one Batch entry, so a decoder
// never allocates for more than this.
const MaxBatchCommands = 1024

// codec names a command type and decodes its bodies, by version.
type codec struct {
	name   string
	decode map[uint8]func(body []byte) (Command, error)
}

// v1 is the codec of a type whose only body version is 1, a strict JSON
// object of T.
func v1[T Command](name string) codec {
	return codec{name: name, decode: map[uint8]func([]byte) (Command, error){commandV1: decodeJSON[T]}}
}

// v1v2 is the codec of a type with body versions 1 (decoded by dec1, a
// strict decoder of the older body) and 2 (a strict JSON object of T).
func v1v2[T Command](name string, dec1 func(body []byte) (Command, error)) codec {
	return codec{name: name, decode: map[uint8]func([]byte) (Command, error){
		commandV1: dec1,
		commandV2: decodeJSON[T],
	}}
}

// codecs lists every type but Batch, which DecodeCommand handles itself
// (its decoder calls DecodeCommand).
var codecs = map[CommandType]codec{
	CmdCreateUser:     v1v2[CreateUser]("CreateUser", decodeCreateUserV1),
	CmdDeleteUser:     v1v2[DeleteUser]("DeleteUser", decodeDeleteUserV1),
	CmdSetPassword:    v1v2[SetPassword]("SetPassword", decodeSetPasswordV1),
	CmdSetEmail:       v1[SetEmail]("SetEmail"),
	CmdSetResetCode:   v1v2[SetResetCode]("SetResetCode", decodeSetResetCodeV1),
	CmdClearResetCode: v1[ClearResetCode]("ClearResetCode"),
	CmdResetPassword:  v1[ResetPassword]("ResetPassword"),
	CmdCreateInvite:   v1[CreateInvite]("CreateInvite"),

	CmdRegisterNode: v1[RegisterNode]("RegisterNode"),
	CmdApproveNode:  v1[ApproveNode]("ApproveNode"),
	CmdSetNodeState: v1[SetNodeState]("SetNodeState"),
	CmdRetireNode:   v1[RetireNode]("RetireNode"),
	CmdSetSettings:  v1v2[SetSettings]("SetSettings", decodeSetSettingsV1),
	CmdFinishDrain:  v1[FinishDrain]("FinishDrain"),
	CmdSetVoter: {name: "SetVoter", decode: map[uint8]func([]byte) (Command, error){
		commandV1:  decodeSetVoterV1,
		setVoterV2: decodeJSON[SetVoter],
	}},
	CmdNodeReport:    v1[NodeReport]("NodeReport"),
	CmdStartTransfer: v1[StartTransfer]("StartTransfer"),
	CmdFinishLeave:   v1[FinishLeave]("FinishLeave"),

	CmdPublishKey: v1[PublishKey]("PublishKey"),
	CmdRetireKey:  v1[RetireKey]("RetireKey"),
}

// String returns the command type's name.
func (t CommandType) String() string {
	if t == CmdBatch {
		return "Batch"
	}
	if c, ok := codecs[t]; ok {
		return c.name
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

// Batch carries several commands in one raft entry. Each is applied in
// order with its own result; one failing does not stop the others.
// Batches do not nest.
type Batch struct {
	Commands []Command
}

// Type implements Command.
func (Batch) Type() CommandType { return CmdBatch }
func (Batch) version() uint8    { return commandV1 }

// EncodeCommand returns the log entry for c: the type byte, the version
// byte, then the body (JSON, or for Batch a count and length-prefixed
// entries, all unsigned varints).
func EncodeCommand(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrMalformedCommand)
	}
	if b, ok := c.(Batch); ok {
		if len(b.Commands) == 0 || len(b.Commands) > MaxBatchCommands {
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
		return EncodeBatch(encs), nil
	}
	out := []byte{byte(c.Type()), c.version()}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("directory: encode %v: %w", c.Type(), err)
	}
	return append(out, body...), nil
}

// EncodeBatch builds a Batch entry from already encoded (non-batch)
// commands: the encoding EncodeCommand gives a Batch of them. The caller
// keeps to 1..MaxBatchCommands commands.
func EncodeBatch(encs [][]byte) []byte {
	n := 2 + binary.MaxVarintLen64
	for _, e := range encs {
		n += binary.MaxVarintLen64 + len(e)
	}
	out := make([]byte, 0, n)
	out = append(out, byte(CmdBatch), commandV1)
	out = binary.AppendUvarint(out, uint64(len(encs)))
	for _, e := range encs {
		out = binary.AppendUvarint(out, uint64(len(e)))
		out = append(out, e...)
	}
	return out
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
	if t == CmdBatch && v == commandV1 {
		return decodeBatch(body)
	}
	decode, ok := codecs[t].decode[v]
	if !ok {
		return nil, &UnknownCommandError{Type: t, Version: v}
	}
	return decode(body)
}

// decodeJSON decodes one JSON object strictly: unknown fields and trailing
// data are errors, so a body change without a version bump is caught
// instead of silently dropping a field on older voters.
func decodeJSON[T Command](body []byte) (Command, error) {
	var c T
	c, err := decodeStrict[T](c.Type(), body)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// decodeStrict decodes the body of a command of type t into a T, as
// decodeJSON does (for the older bodies of a type).
func decodeStrict[T any](t CommandType, body []byte) (T, error) {
	var c T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: %v body: %v", ErrMalformedCommand, t, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return c, fmt.Errorf("%w: %v body: trailing data", ErrMalformedCommand, t)
	}
	return c, nil
}

func decodeBatch(body []byte) (Command, error) {
	n, k := binary.Uvarint(body)
	if k <= 0 || n == 0 || n > MaxBatchCommands || n > uint64(len(body)) {
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
