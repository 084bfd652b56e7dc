package directory

import (
	"slices"
	"testing"

	"github.com/hce-sync/hce/directory/state"
)

func TestCommandsOf(t *testing.T) {
	one, _ := state.EncodeCommand(state.RemoveVoter{ID: "d2"})
	batch, _ := state.EncodeCommand(state.Batch{Commands: []state.Command{
		state.CreateUser{Name: "a", Hash: "h"}, state.UndrainNode{ID: "n1"}, state.DeleteUser{Name: "a", At: 3},
	}})
	for _, tc := range []struct {
		name string
		enc  []byte
		want [][2]uint8
	}{
		{"one", one, [][2]uint8{{50, 1}}},
		{"batch", batch, [][2]uint8{{1, 1}, {52, 1}, {2, 2}}},
		{"short", []byte{50}, nil},
		{"truncated batch", batch[:len(batch)-5], [][2]uint8{{1, 1}, {52, 1}}},
		{"bad count", []byte{byte(state.CmdBatch), 1, 0xff}, nil},
	} {
		if got := commandsOf(tc.enc); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
