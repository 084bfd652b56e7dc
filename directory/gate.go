package directory

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hce-sync/hce/directory/state"
)

// The feature gate. A raft entry that one voter cannot decode makes its
// state differ from the others' (state.FSM skips it), so a leader
// proposes a command type or body version outside state.Baseline (what
// every build decodes, those before the gate included) only once every
// voter of the raft configuration has said that it decodes it. Voters
// say so at GET /internal/v1/commands (state.Known); what each answered
// is kept in memory and in DIR/voter-commands.json, so a new leader or a
// restarted one needs no round trip for voters that answered before
// (downgrading a voter below what it reported is not supported; see
// docs/upgrade.md). A voter that does not answer (down, or a build older
// than the gate, which answers 404) is taken to decode the baseline only.

// pathCommands is the route where a voter lists the commands it decodes.
const pathCommands = "/internal/v1/commands"

// gateFile keeps what the voters reported, across restarts.
const gateFile = "voter-commands.json"

// gateWait bounds how long a write of a gated command waits for the
// voters' answers before it fails with ErrGated.
const gateWait = 3 * time.Second

// ErrGated means a command was not proposed because some voter of the
// configuration has not said that it decodes it (an older build, or a
// voter that cannot be asked): upgrade every voter first.
var ErrGated = errors.New("directory: not every voter decodes this command yet (upgrade every voter first)")

// commandsAnswer is the answer of GET /internal/v1/commands: the voter's
// ID and, per command type (decimal), the body versions it decodes.
type commandsAnswer struct {
	ID       string             `json:"id"`
	Commands map[string][]uint8 `json:"commands"`
}

// knownCommands is state.Known in the wire form.
func knownCommands() map[string][]uint8 {
	out := make(map[string][]uint8)
	for t, vs := range state.Known() {
		out[strconv.Itoa(int(t))] = vs
	}
	return out
}

// gate remembers what each voter decodes and checks proposals against
// it; see the comment at the top of the file.
type gate struct {
	d    *Directory
	path string

	mu    sync.Mutex
	known map[string]map[string][]uint8 // voter ID -> commandsAnswer.Commands
}

// newGate loads the voters' earlier answers from dir.
func newGate(d *Directory, dir string) *gate {
	g := &gate{d: d, path: filepath.Join(dir, gateFile), known: make(map[string]map[string][]uint8)}
	if b, err := os.ReadFile(g.path); err == nil {
		if err := json.Unmarshal(b, &g.known); err != nil {
			d.log.Warn("directory: ignoring unreadable "+gateFile, "err", err)
			g.known = make(map[string]map[string][]uint8)
		}
	}
	return g
}

// commandsOf lists the (type, version) pairs of an encoded write: one,
// or each entry of a batch.
func commandsOf(enc []byte) [][2]uint8 {
	if len(enc) < 2 {
		return nil
	}
	if state.CommandType(enc[0]) != state.CmdBatch {
		return [][2]uint8{{enc[0], enc[1]}}
	}
	body := enc[2:]
	n, k := binary.Uvarint(body)
	if k <= 0 {
		return nil
	}
	body = body[k:]
	var out [][2]uint8
	for range min(n, state.MaxBatchCommands) {
		l, k := binary.Uvarint(body)
		if k <= 0 || l > uint64(len(body)-k) || l < 2 {
			break
		}
		out = append(out, [2]uint8{body[k], body[k+1]})
		body = body[k+int(l):]
	}
	return out
}

// check returns nil when every voter decodes every command of enc,
// asking the voters that have not said so yet (up to gateWait), and an
// error wrapping ErrGated otherwise. Baseline commands pass at once.
func (g *gate) check(ctx context.Context, enc []byte) error {
	var want [][2]uint8
	for _, c := range commandsOf(enc) {
		t, v := state.CommandType(c[0]), c[1]
		if !state.Understands(t, v) {
			return fmt.Errorf("%w: this voter does not decode %v version %d either", ErrGated, t, v)
		}
		if !state.Baseline(t, v) {
			want = append(want, c)
		}
	}
	if len(want) == 0 {
		return nil
	}
	deadline := time.Now().Add(gateWait)
	for {
		missing, err := g.missing(want)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			return nil
		}
		g.ask(ctx, missing)
		if missing, err = g.missing(want); err != nil || len(missing) == 0 {
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t := state.CommandType(want[0][0])
			return fmt.Errorf("%w: %v version %d: voters %q have not said they decode it", ErrGated, t, want[0][1], missing)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// missing lists the voters of the configuration (this one aside) that
// have not reported decoding every pair of want.
func (g *gate) missing(want [][2]uint8) ([]string, error) {
	f := g.d.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, s := range f.Configuration().Servers {
		id := string(s.ID)
		if id == g.d.cfg.ID {
			continue
		}
		k := g.known[id]
		for _, c := range want {
			if !slices.Contains(k[strconv.Itoa(int(c[0]))], c[1]) {
				out = append(out, id)
				break
			}
		}
	}
	return out, nil
}

// ask asks the given voters what they decode, in parallel, and records
// the answers.
func (g *gate) ask(ctx context.Context, ids []string) {
	voters := g.d.state.Voters()
	var wg sync.WaitGroup
	for _, id := range ids {
		url := voters[id].HTTPURL
		if url == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := g.d.askCommands(ctx, url)
			if err != nil {
				g.d.log.Debug("directory: feature gate: voter did not say what it decodes", "voter", id, "err", err)
				return
			}
			if a.ID != id {
				g.d.log.Warn("directory: feature gate: voter answered under another id", "voter", id, "answered", a.ID)
				return
			}
			g.record(id, a.Commands)
		}()
	}
	wg.Wait()
}

// record keeps a voter's answer and writes the file when it changed.
func (g *gate) record(id string, cmds map[string][]uint8) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old, _ := json.Marshal(g.known[id])
	now, _ := json.Marshal(cmds)
	if string(old) == string(now) {
		return
	}
	g.known[id] = cmds
	b, err := json.Marshal(g.known)
	if err == nil {
		err = writeFileSync(g.path, b)
	}
	if err != nil {
		g.d.log.Warn("directory: feature gate: saving "+gateFile, "err", err)
	}
}

// askCommands asks the voter at url which commands it decodes.
func (d *Directory) askCommands(ctx context.Context, url string) (commandsAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+pathCommands, nil)
	if err != nil {
		return commandsAnswer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+d.cfg.AdminToken)
	resp, err := d.cfg.Cluster.HTTPClient.Do(req)
	if err != nil {
		return commandsAnswer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return commandsAnswer{}, fmt.Errorf("%s: %s", pathCommands, resp.Status)
	}
	var a commandsAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&a); err != nil {
		return commandsAnswer{}, err
	}
	return a, nil
}

// Understood reports whether every voter of the configuration has said
// it decodes command type t in body version v (asking those that have
// not, bounded by ctx and a few seconds): whether the leader would
// propose it now.
func (d *Directory) Understood(ctx context.Context, t state.CommandType, v uint8) bool {
	return d.gate.check(ctx, []byte{byte(t), v}) == nil
}

// writeFileSync writes data to path through a synced temporary file.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// raftServers returns the latest raft configuration's servers.
func (d *Directory) raftServers() ([]raft.Server, error) {
	f := d.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	return f.Configuration().Servers, nil
}
