package testnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
)

// The PouchDB interop test: a real PouchDB 9 (installed from npm during the
// run) replicates with a real `hce serve` through its /couch endpoint,
// while the test acts as the Weave client on the other side.

// pouchPackages are the PouchDB modules the script loads, pinned.
var pouchPackages = []string{
	"pouchdb-core@9.0.0",
	"pouchdb-adapter-http@9.0.0",
	"pouchdb-adapter-memory@9.0.0",
	"pouchdb-replication@9.0.0",
}

var pouchInstall struct {
	mu   sync.Mutex
	dir  string
	took time.Duration
}

// pouchDir installs PouchDB into a temp folder, once for all the tests of
// the run that need it (the folder goes when the test that installed it
// ends; a later test installs again, from npm's cache). It skips the test
// when npm is missing, unless HCE_REQUIRE_NPM is set (CI sets it).
func pouchDir(t *testing.T) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		if os.Getenv("HCE_REQUIRE_NPM") == "" {
			t.Skip("npm not on PATH (set HCE_REQUIRE_NPM=1 to make this a failure)")
		}
		t.Fatalf("HCE_REQUIRE_NPM is set but npm is not on PATH: %v", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("npm without node: %v", err)
	}
	pouchInstall.mu.Lock()
	defer pouchInstall.mu.Unlock()
	if pouchInstall.dir != "" {
		if _, err := os.Stat(filepath.Join(pouchInstall.dir, "node_modules", "pouchdb-core")); err == nil {
			return pouchInstall.dir
		}
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", "hce-pouchdb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"private":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append([]string{"install", "--no-audit", "--no-fund", "--prefer-offline", "--no-save", "--loglevel=error"}, pouchPackages...)
	cmd := exec.CommandContext(ctx, npm, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install: %v\n%s", err, out)
	}
	pouchInstall.dir, pouchInstall.took = dir, time.Since(start)
	t.Logf("PouchDB installed in %v", pouchInstall.took.Round(time.Millisecond))
	return dir
}

// pouchScript is the Node.js side. It talks to the test over stdio: it
// prints one JSON object per line ({"need": step} asks the test to do
// step through the Weave API and answer "ok" on stdin; {"done": results}
// ends), and exits non-zero on failure.
const pouchScript = `
'use strict';
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-replication'));
const readline = require('readline');

const url = process.env.HCE_DB_URL;
const auth = {username: process.env.HCE_USER, password: process.env.HCE_PASSWORD};
const rl = readline.createInterface({input: process.stdin});
const lines = [];
let waiter = null;
rl.on('line', function (l) { if (waiter) { const w = waiter; waiter = null; w(l); } else { lines.push(l); } });
function readLine() {
  if (lines.length) { return Promise.resolve(lines.shift()); }
  return new Promise(function (res) { waiter = res; });
}
async function need(step, extra) {
  console.log(JSON.stringify(Object.assign({need: step}, extra || {})));
  const l = await readLine();
  if (l !== 'ok') { throw new Error('test answered ' + l + ' to ' + step); }
}
function stats(r, ms) {
  return {ok: r.ok, status: r.status, docs_read: r.docs_read, docs_written: r.docs_written,
          doc_write_failures: r.doc_write_failures, errors: (r.errors || []).map(String), ms: ms};
}
async function timed(fn) {
  const t0 = Date.now();
  const r = await fn();
  return stats(r, Date.now() - t0);
}
function summary(d) {
  if (!d) { return null; }
  return {id: d._id, rev: d._rev, payload: d.payload, sortindex: d.sortindex, expiry: d.expiry,
          hce_origin: d.hce_origin, conflicts: d._conflicts || [],
          revisions: d._revisions ? d._revisions.ids.length : 0, revstart: d._revisions ? d._revisions.start : 0};
}

// Count the requests PouchDB makes, by endpoint, to show which parts of
// the protocol it used.
const requests = {};
function countingFetch(u, opts) {
  const path = new URL(u).pathname.split('/').slice(3).join('/');
  const q = new URL(u).searchParams;
  let kind = path.startsWith('_') ? path.split('/')[0] : (path === '' ? 'db' : 'doc');
  if (kind === '_changes' && q.get('feed')) { kind += ':' + q.get('feed'); }
  if (kind === 'doc' && q.get('open_revs')) { kind = 'open_revs'; }
  kind = (opts && opts.method || 'GET') + ' ' + kind;
  requests[kind] = (requests[kind] || 0) + 1;
  return PouchDB.fetch(u, opts);
}

async function main() {
  const remote = new PouchDB(url, {auth: auth, fetch: countingFetch});
  const local = new PouchDB('local', {adapter: 'memory'});
  const out = {};
  out.remote_info = await remote.info();

  // 1. push: 20 records and a deleted one.
  const docs = [];
  for (let i = 0; i < 20; i++) {
    docs.push({_id: 'bookmarks/b' + i, payload: JSON.stringify({ciphertext: 'b' + i}), sortindex: i});
  }
  docs.push({_id: 'bookmarks/gone', payload: 'soon deleted'});
  await local.bulkDocs(docs);
  const gone = await local.get('bookmarks/gone');
  await local.remove(gone);
  out.push1 = await timed(function () { return PouchDB.replicate(local, remote); });
  await need('check-push1');

  // 2. pull what Weave clients wrote.
  await need('weave-tabs');
  out.pull1 = await timed(function () { return PouchDB.replicate(remote, local); });
  out.tabs = [];
  for (let i = 0; i < 5; i++) { out.tabs.push(summary(await local.get('tabs/t' + i))); }

  // 3. resume from the checkpoints: only the new documents move.
  await local.bulkDocs([0, 1, 2].map(function (i) { return {_id: 'bookmarks/n' + i, payload: 'new ' + i, sortindex: 100 + i}; }));
  out.push2 = await timed(function () { return PouchDB.replicate(local, remote); });
  await need('weave-more');
  out.pull2 = await timed(function () { return PouchDB.replicate(remote, local); });

  // 4. conflicts: bookmarks/b1 edited on both sides; tabs/t0 (a node
  // revision, with hce_origin) edited in PouchDB only.
  const b1 = await local.get('bookmarks/b1');
  b1.payload = 'pouch edit';
  await local.put(b1);
  const t0 = await local.get('tabs/t0');
  t0.payload = 'pouch edit t0';
  await local.put(t0);
  await need('weave-conflict');
  out.push3 = await timed(function () { return PouchDB.replicate(local, remote); });
  out.pull3 = await timed(function () { return PouchDB.replicate(remote, local); });
  out.conflict_local = summary(await local.get('bookmarks/b1', {conflicts: true}));
  out.conflict_remote = summary(await remote.get('bookmarks/b1', {conflicts: true}));

  // 5. a 30-revision history, pushed, then pulled into a fresh database.
  let h = {_id: 'history/h', payload: 'v1'};
  h._rev = (await local.put(h)).rev;
  for (let i = 2; i <= 30; i++) {
    h.payload = 'v' + i;
    h._rev = (await local.put(h)).rev;
  }
  out.push4 = await timed(function () { return PouchDB.replicate(local, remote); });
  const fresh = new PouchDB('fresh', {adapter: 'memory'});
  out.pull_fresh = await timed(function () { return PouchDB.replicate(remote, fresh); });
  out.history_fresh = summary(await fresh.get('history/h', {revs: true}));
  out.history_remote = summary(await remote.get('history/h', {revs: true}));
  out.fresh_info = await fresh.info();

  // 6. live pull over longpoll: a Weave write shows up in PouchDB.
  const live = PouchDB.replicate(remote, local, {live: true, retry: true, heartbeat: 1000, timeout: 5000});
  let liveErr = null;
  live.on('error', function (e) { liveErr = e; });
  await new Promise(function (res, rej) {
    const to = setTimeout(function () { rej(new Error('live replication never caught up')); }, 30000);
    live.once('paused', function () { clearTimeout(to); res(); });
  });
  const seen = new Promise(function (res, rej) {
    const to = setTimeout(function () { rej(new Error('live write not seen within 20s')); }, 20000);
    const ch = local.changes({since: 'now', live: true, include_docs: true}).on('change', function (c) {
      if (c.id === 'tabs/live') { clearTimeout(to); ch.cancel(); res(c.doc); }
    });
  });
  await need('weave-live');
  const t1 = Date.now();
  const liveDoc = await seen;
  out.live = {ms: Date.now() - t1, doc: summary(liveDoc), error: liveErr && String(liveErr)};
  live.cancel();
  await new Promise(function (res) { live.once('complete', res); setTimeout(res, 5000); });
  out.requests = requests;
  console.log(JSON.stringify({done: out}));
}

main().then(function () { process.exit(0); }, function (e) {
  console.log(JSON.stringify({error: String(e && e.stack || e)}));
  process.exit(1);
});
`

// replStats is one replication's result as PouchDB reports it.
type replStats struct {
	OK               bool     `json:"ok"`
	Status           string   `json:"status"`
	DocsRead         int      `json:"docs_read"`
	DocsWritten      int      `json:"docs_written"`
	DocWriteFailures int      `json:"doc_write_failures"`
	Errors           []string `json:"errors"`
	Ms               int      `json:"ms"`
}

// pouchDoc is a document summary from the script.
type pouchDoc struct {
	ID        string   `json:"id"`
	Rev       string   `json:"rev"`
	Payload   string   `json:"payload"`
	SortIndex *int64   `json:"sortindex"`
	Expiry    int64    `json:"expiry"`
	Origin    string   `json:"hce_origin"`
	Conflicts []string `json:"conflicts"`
	Revisions int      `json:"revisions"`
	RevStart  int      `json:"revstart"`
}

type pouchResults struct {
	RemoteInfo     map[string]any `json:"remote_info"`
	Push1          replStats      `json:"push1"`
	Pull1          replStats      `json:"pull1"`
	Tabs           []pouchDoc     `json:"tabs"`
	Push2          replStats      `json:"push2"`
	Pull2          replStats      `json:"pull2"`
	Push3          replStats      `json:"push3"`
	Pull3          replStats      `json:"pull3"`
	ConflictLocal  pouchDoc       `json:"conflict_local"`
	ConflictRemote pouchDoc       `json:"conflict_remote"`
	Push4          replStats      `json:"push4"`
	PullFresh      replStats      `json:"pull_fresh"`
	HistoryFresh   pouchDoc       `json:"history_fresh"`
	HistoryRemote  pouchDoc       `json:"history_remote"`
	FreshInfo      map[string]any `json:"fresh_info"`
	Requests       map[string]int `json:"requests"`
	Live           struct {
		Ms    int      `json:"ms"`
		Doc   pouchDoc `json:"doc"`
		Error string   `json:"error"`
	} `json:"live"`
}

// TestCouchPouchDBInterop replicates between PouchDB and `hce serve` in
// both directions and checks each side through its own API.
func TestCouchPouchDBInterop(t *testing.T) {
	dir := pouchDir(t)
	srv := startServer(t)
	a := srv.newAccount(t)
	script := filepath.Join(dir, fmt.Sprintf("interop-%d.js", time.Now().UnixNano()))
	if err := os.WriteFile(script, []byte(pouchScript), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(script) })

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HCE_DB_URL="+srv.s.URL()+"couch/"+a.Name,
		"HCE_USER="+a.Name,
		"HCE_PASSWORD="+a.Password,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()

	steps := map[string]func(){
		"check-push1": func() {
			ws := decodeWBOs(t, a.do(t, "GET", "storage/bookmarks?full=1&sort=index", nil))
			if len(ws) != 20 {
				t.Fatalf("Weave shows %d bookmarks after the push, want 20", len(ws))
			}
			for _, w := range ws {
				id := w.str(t, "id")
				var si int
				json.Unmarshal(w["sortindex"], &si)
				if want := fmt.Sprintf(`{"ciphertext":"b%d"}`, si); w.str(t, "payload") != want || id != fmt.Sprintf("b%d", si) {
					t.Fatalf("Weave record %s: payload %q sortindex %d", id, w.str(t, "payload"), si)
				}
			}
			if r := a.do(t, "GET", "storage/bookmarks/gone", nil); r.Status != http.StatusNotFound {
				t.Fatalf("a document deleted in PouchDB is visible in Weave: %v", r)
			}
		},
		"weave-tabs": func() {
			var ws []map[string]any
			for i := range 5 {
				w := map[string]any{"id": fmt.Sprintf("t%d", i), "payload": fmt.Sprintf("tab %d", i), "sortindex": 10 * i}
				if i == 4 {
					w["ttl"] = 3600
				}
				ws = append(ws, w)
			}
			a.post(t, "tabs", ws)
		},
		"weave-more": func() {
			a.post(t, "tabs", []map[string]any{{"id": "m0", "payload": "more 0"}, {"id": "m1", "payload": "more 1"}})
		},
		"weave-conflict": func() {
			a.put(t, "bookmarks", "b1", map[string]any{"payload": "weave edit"})
		},
		"weave-live": func() {
			a.put(t, "tabs", "live", map[string]any{"payload": "live write", "sortindex": 7})
		},
	}
	var res pouchResults
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	done := false
	for !done && sc.Scan() {
		var msg struct {
			Need  string          `json:"need"`
			Done  json.RawMessage `json:"done"`
			Error string          `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			t.Logf("script: %s", sc.Text())
			continue
		}
		switch {
		case msg.Error != "":
			t.Fatalf("PouchDB script failed: %s\nstderr: %s", msg.Error, stderr.String())
		case msg.Need != "":
			fn := steps[msg.Need]
			if fn == nil {
				t.Fatalf("script asked for unknown step %q", msg.Need)
			}
			fn()
			if _, err := io.WriteString(stdin, "ok\n"); err != nil {
				t.Fatal(err)
			}
		case msg.Done != nil:
			if err := json.Unmarshal(msg.Done, &res); err != nil {
				t.Fatalf("results %s: %v", msg.Done, err)
			}
			done = true
		}
	}
	if !done {
		t.Fatalf("script ended without results (%v)\nstderr: %s", sc.Err(), stderr.String())
	}
	stdin.Close()
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("script: %v\nstderr: %s", err, stderr.String())
	}
	elapsed := time.Since(start)

	if res.RemoteInfo["db_name"] != a.Name {
		t.Errorf("remote info %v", res.RemoteInfo)
	}
	// Exact transfer counts: every replication moves exactly the new
	// documents, so the checkpoints were found and resumed from.
	for _, c := range []struct {
		name          string
		s             replStats
		read, written int
	}{
		{"push1", res.Push1, 21, 21},
		{"pull1 (5 Weave records)", res.Pull1, 5, 5},
		{"push2 (resume: 3 new)", res.Push2, 3, 3},
		{"pull2 (resume: 2 new)", res.Pull2, 2, 2},
		{"push3 (2 edits)", res.Push3, 2, 2},
		{"pull3 (the Weave edit)", res.Pull3, 1, 1},
		{"push4 (history)", res.Push4, 1, 1},
	} {
		if !c.s.OK || c.s.Status != "complete" || c.s.DocWriteFailures != 0 || len(c.s.Errors) != 0 ||
			c.s.DocsRead != c.read || c.s.DocsWritten != c.written {
			t.Errorf("%s: %+v, want %d read and %d written", c.name, c.s, c.read, c.written)
		}
	}
	// The fresh database reads everything the node has: 20+1+3
	// bookmarks, 5+2 tabs and the history document, plus the losing
	// branch of the conflicted bookmark (PouchDB counts revisions).
	if s := res.PullFresh; !s.OK || s.DocsRead != 33 || s.DocsWritten != 33 || s.DocWriteFailures != 0 {
		t.Errorf("pull into a fresh db: %+v", s)
	}

	// What Weave wrote, PouchDB shows, with the WBO fields and an origin.
	for i, d := range res.Tabs {
		if d.Payload != fmt.Sprintf("tab %d", i) || d.SortIndex == nil || *d.SortIndex != int64(10*i) || d.Origin == "" {
			t.Errorf("PouchDB's tabs/t%d: %+v", i, d)
		}
	}
	if exp := res.Tabs[4].Expiry; exp < time.Now().Add(50*time.Minute).Unix() || exp > time.Now().Add(61*time.Minute).Unix() {
		t.Errorf("ttl 3600 became expiry %d (now %d)", exp, time.Now().Unix())
	}

	// Conflict: both sides agree on the winner and the losing branch, and
	// the Weave view shows the winner.
	cl, cr := res.ConflictLocal, res.ConflictRemote
	if cl.Rev != cr.Rev || cl.Payload != cr.Payload || len(cl.Conflicts) != 1 || len(cr.Conflicts) != 1 || cl.Conflicts[0] != cr.Conflicts[0] {
		t.Errorf("sides disagree on the conflict: local %+v remote %+v", cl, cr)
	}
	if cl.Payload != "pouch edit" && cl.Payload != "weave edit" {
		t.Errorf("winner payload %q", cl.Payload)
	}
	if got := decodeWBO(t, a.do(t, "GET", "storage/bookmarks/b1", nil)).str(t, "payload"); got != cl.Payload {
		t.Errorf("Weave shows %q for the conflicted record, the replicas' winner is %q", got, cl.Payload)
	}
	if got := decodeWBO(t, a.do(t, "GET", "storage/tabs/t0", nil)).str(t, "payload"); got != "pouch edit t0" {
		t.Errorf("PouchDB's edit of a Weave record: Weave shows %q", got)
	}

	// History: 30 revisions travel both ways.
	for _, h := range []pouchDoc{res.HistoryFresh, res.HistoryRemote} {
		if h.Revisions != 30 || h.RevStart != 30 || h.Payload != "v30" {
			t.Errorf("history %+v, want 30 revisions", h)
		}
	}
	if got := decodeWBO(t, a.do(t, "GET", "storage/history/h", nil)).str(t, "payload"); got != "v30" {
		t.Errorf("Weave history/h = %q", got)
	}
	for _, rel := range []string{"storage/bookmarks/n2", "storage/tabs/m1"} {
		want(t, a.do(t, "GET", rel, nil), http.StatusOK)
	}

	// Live: a Weave write reached PouchDB's live pull.
	if res.Live.Doc.Payload != "live write" || res.Live.Doc.SortIndex == nil || *res.Live.Doc.SortIndex != 7 || res.Live.Error != "" {
		t.Errorf("live pull %+v", res.Live)
	}
	// PouchDB used the preferred paths: _bulk_get (no per-document
	// open_revs fallback) and a longpoll feed for the live pull.
	if q := res.Requests; q["POST _bulk_get"] == 0 || q["GET open_revs"] != 0 || q["GET _changes:longpoll"] == 0 ||
		q["POST _bulk_docs"] == 0 || q["POST _revs_diff"] == 0 || q["PUT _local"] == 0 {
		t.Errorf("requests PouchDB made: %v", q)
	}
	t.Logf("PouchDB requests: %v", res.Requests)
	t.Logf("PouchDB interop in %v: push1 %+v; pull1 %+v; push2 %+v; pull2 %+v; push3 %+v; pull3 %+v; push4 %+v; fresh %+v; live write seen after %d ms",
		elapsed.Round(time.Millisecond), res.Push1, res.Pull1, res.Push2, res.Pull2, res.Push3, res.Pull3, res.Push4, res.PullFresh, res.Live.Ms)
	if strings.TrimSpace(stderr.String()) != "" {
		t.Logf("script stderr: %s", stderr.String())
	}
}

// TestCouchShutdownEndsFeeds: a waiting _changes feed does not hold the
// server's graceful shutdown.
func TestCouchShutdownEndsFeeds(t *testing.T) {
	srv := startServer(t)
	a := srv.newAccount(t)
	req, _ := http.NewRequest("GET", srv.base+"/couch/"+a.Name+"/_changes?feed=continuous&heartbeat=100&timeout=600000", nil)
	req.Header.Set("Authorization", testkit.BasicAuth(a.Name, a.Password))
	res, err := srv.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	br := bufio.NewReader(res.Body)
	if _, err := br.ReadByte(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	srv.stop()
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), `"last_seq":0`) {
		t.Fatalf("feed ended with %q", rest)
	}
}
