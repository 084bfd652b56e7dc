package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hce-sync/hce/directory"
)

const adminUsage = `Usage:
  hce admin [flags] status [--linearizable]       voters, leader, raft indexes, settings
  hce admin [flags] nodes                         storage nodes, their states and heartbeats
  hce admin [flags] user <name>                   a user's replica set (members, filling, leaving)
  hce admin [flags] node approve|drain|undrain|retire <id>
                                                  admit a pending node, move its users away, stop
                                                  a drain, retire a node once its users are elsewhere
  hce admin [flags] node retire <id> [--no-wait]  drains first and waits until nothing is left on it
  hce admin [flags] node retire <id> --accept-data-loss
                                                  retire at once (a node gone for good): writes only
                                                  it held are lost
  hce admin [flags] voter list                    the raft voters, the leader
  hce admin [flags] voter add <id> --raft HOST:PORT --url URL
                                                  add a voter started with --await-add
  hce admin [flags] voter remove <id>             remove a voter (the leader hands over first)
  hce admin [flags] invite [--ttl 168h]           a single-use registration code (shown once)
  hce admin [flags] invites                       the unused invites (without their codes)
  hce admin [flags] settings                      the cluster settings
  hce admin [flags] settings set k=v ...          change some (replicas, auto_approve,
                                                  max_node_capacity, max_operator_capacity, down_after_ms)

--directory takes several voters' URLs (repeat it, or separate them with commas; or
--directory-file FILE, one per line): the first that answers is used. --token defaults to
$HCE_TOKEN or $HCE_ADMIN_TOKEN. Output is a table; --json prints the directory's JSON.
Flags may come before or after the command.
`

// urlList is a flag of URLs: repeated, or separated by commas.
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, ",") }

func (l *urlList) Set(s string) error {
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			*l = append(*l, u)
		}
	}
	return nil
}

// adminFlags are hce admin's settings.
type adminFlags struct {
	dirs         urlList
	dirFile      string
	token        string
	json         bool
	linearizable bool
	inviteTTL    time.Duration
	raft, url    string
	noWait       bool
	dataLoss     bool
	timeout      time.Duration
}

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f adminFlags
	fs.Var(&f.dirs, "directory", "HTTP URL of a directory voter; repeat it or separate URLs with commas: the first that answers is used")
	fs.StringVar(&f.dirFile, "directory-file", "", "file of voters' URLs, one per line (# comments), tried after --directory")
	fs.StringVar(&f.token, "token", "", "admin token (env HCE_TOKEN or HCE_ADMIN_TOKEN)")
	fs.BoolVar(&f.json, "json", false, "print the directory's answers as JSON instead of tables")
	fs.BoolVar(&f.linearizable, "linearizable", false, "status: ask the leader, checking its leadership first")
	fs.DurationVar(&f.inviteTTL, "ttl", 0, "invite: how long the code stays valid (default: the directory's, 7 days)")
	fs.StringVar(&f.raft, "raft", "", "voter add: the new voter's raft address (host:port, as its certificate names it)")
	fs.StringVar(&f.url, "url", "", "voter add: the new voter's HTTP base URL")
	fs.BoolVar(&f.noWait, "no-wait", false, "node retire: start the drain and return instead of waiting until the node is retired")
	fs.BoolVar(&f.dataLoss, "accept-data-loss", false, "node retire: retire at once, even if the node holds the only current copy of some users (a node gone for good)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long one request may take")
	rest, err := parseFlags(fs, args, parseOpts{mode: interspersed, stdout: stdout,
		envAliases: map[string][]string{"token": {"HCE_ADMIN_TOKEN"}}})
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, adminUsage)
		return errors.New("no admin command given")
	}
	urls, err := f.urls()
	if err != nil {
		return err
	}
	if len(urls) == 0 || f.token == "" {
		return errors.New("--directory (or --directory-file) and --token (or HCE_DIRECTORY and HCE_ADMIN_TOKEN) are required")
	}
	c := &adminClient{urls: urls, token: f.token, timeout: f.timeout, hc: &http.Client{}}
	cmd, err := adminCommandFor(rest, f)
	if err != nil {
		fmt.Fprint(stderr, adminUsage)
		return err
	}
	if cmd.run != nil {
		return cmd.run(ctx, c, stdout)
	}
	body, err := c.call(ctx, cmd.method, cmd.path, cmd.body)
	if err != nil {
		if f.json && len(body) > 0 {
			writePretty(stdout, body)
		}
		return err
	}
	if f.json || cmd.render == nil {
		writePretty(stdout, body)
		return nil
	}
	return cmd.render(stdout, body)
}

// urls lists --directory, then the lines of --directory-file.
func (f adminFlags) urls() ([]string, error) {
	out := append([]string{}, f.dirs...)
	if f.dirFile == "" {
		return out, nil
	}
	file, err := os.Open(f.dirFile)
	if err != nil {
		return nil, fmt.Errorf("--directory-file: %w", err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

// adminCommand is one hce admin command: a request and how to show its
// answer, or a run function of its own.
type adminCommand struct {
	method, path string
	body         []byte
	render       func(w io.Writer, body []byte) error
	run          func(ctx context.Context, c *adminClient, w io.Writer) error
}

// adminCommandFor parses the command words.
func adminCommandFor(rest []string, f adminFlags) (adminCommand, error) {
	n := len(rest)
	switch {
	case rest[0] == "invite" && n == 1:
		p := "/admin/v1/invites"
		if f.inviteTTL > 0 {
			p += "?ttl=" + url.QueryEscape(f.inviteTTL.String())
		}
		return adminCommand{method: http.MethodPost, path: p, render: renderInvite}, nil
	case rest[0] == "invites" && n == 1:
		return adminCommand{method: http.MethodGet, path: "/admin/v1/invites", render: renderInvites}, nil
	case rest[0] == "settings" && n == 1:
		return adminCommand{method: http.MethodGet, path: "/admin/v1/settings", render: renderSettings}, nil
	case rest[0] == "settings" && n > 2 && rest[1] == "set":
		b, err := settingsBody(rest[2:])
		if err != nil {
			return adminCommand{}, err
		}
		return adminCommand{method: http.MethodPut, path: "/admin/v1/settings", body: b, render: renderSettings}, nil
	case rest[0] == "status":
		if n != 1 {
			return adminCommand{}, fmt.Errorf("status takes no argument, got %q", rest[1:])
		}
		p := "/admin/v1/status"
		if f.linearizable {
			p += "?linearizable=1"
		}
		return adminCommand{method: http.MethodGet, path: p, render: renderStatus}, nil
	case rest[0] == "nodes" && n == 1:
		return adminCommand{method: http.MethodGet, path: "/admin/v1/nodes", render: renderNodes}, nil
	case rest[0] == "user" && n == 2:
		return adminCommand{method: http.MethodGet, path: "/admin/v1/users/" + url.PathEscape(rest[1]), render: renderUser}, nil
	case rest[0] == "node" && n == 3 && rest[1] == "retire":
		id := rest[2]
		return adminCommand{run: func(ctx context.Context, c *adminClient, w io.Writer) error {
			return retireNode(ctx, c, w, id, f)
		}}, nil
	case rest[0] == "node" && n == 3 && (rest[1] == "approve" || rest[1] == "drain" || rest[1] == "undrain"):
		return adminCommand{method: http.MethodPost, path: "/admin/v1/nodes/" + url.PathEscape(rest[2]) + "/" + rest[1],
			render: renderDone("node " + rest[2] + ": " + rest[1] + " done")}, nil
	case rest[0] == "voter" && n == 2 && rest[1] == "list":
		return adminCommand{method: http.MethodGet, path: "/admin/v1/voters", render: renderVoters}, nil
	case rest[0] == "voter" && n == 3 && rest[1] == "add":
		if f.raft == "" || f.url == "" {
			return adminCommand{}, errors.New("voter add needs --raft HOST:PORT and --url URL of the new voter")
		}
		b, _ := json.Marshal(map[string]string{"id": rest[2], "raft_addr": f.raft, "http_url": f.url})
		return adminCommand{method: http.MethodPost, path: "/admin/v1/voters", body: b,
			render: renderDone("voter " + rest[2] + " added")}, nil
	case rest[0] == "voter" && n == 3 && rest[1] == "remove":
		return adminCommand{method: http.MethodDelete, path: "/admin/v1/voters/" + url.PathEscape(rest[2]),
			render: renderDone("voter " + rest[2] + " removed")}, nil
	}
	return adminCommand{}, fmt.Errorf("unknown admin command %q", strings.Join(rest, " "))
}

// adminClient sends admin requests to the first voter that answers.
type adminClient struct {
	urls    []string
	token   string
	timeout time.Duration
	hc      *http.Client
	next    int // the voter that answered last is asked first
}

// errAdminStatus is an answer other than 2xx.
type errAdminStatus struct {
	method, path, status string
	code                 int
	msg                  string
}

func (e *errAdminStatus) Error() string {
	s := fmt.Sprintf("%s %s: %s", e.method, e.path, e.status)
	if e.msg != "" {
		s += ": " + e.msg
	}
	return s
}

// call sends the request to each voter in turn, from the one that
// answered last, until one answers with anything but 503; a voter that
// cannot be reached, or answers 503 (no leader, a write that could not
// be forwarded), passes the request to the next. It returns the body of
// the answer, and an error for a status other than 2xx.
func (c *adminClient) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var lastErr error
	var lastBody []byte
	for i := range c.urls {
		k := (c.next + i) % len(c.urls)
		base := strings.TrimSuffix(c.urls[k], "/")
		rctx, cancel := context.WithTimeout(ctx, c.timeout)
		req, err := http.NewRequestWithContext(rctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			cancel()
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			lastErr = fmt.Errorf("directory %s unreachable: %w", c.urls[k], err)
			var op *net.OpError
			if method != http.MethodGet && !(errors.As(err, &op) && op.Op == "dial") {
				return nil, lastErr // it may have been applied: do not send it twice
			}
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		cancel()
		if err != nil {
			return nil, err
		}
		c.next = k
		var wr struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &wr)
		switch {
		case resp.StatusCode == http.StatusUnauthorized:
			return b, fmt.Errorf("%s %s: %s: the directory refused the admin token (--token, HCE_ADMIN_TOKEN)", method, path, resp.Status)
		case resp.StatusCode == http.StatusServiceUnavailable:
			lastErr = &errAdminStatus{method, path, resp.Status + " from " + c.urls[k], resp.StatusCode, wr.Message}
			lastBody = b
			continue
		case resp.StatusCode/100 != 2:
			return b, &errAdminStatus{method, path, resp.Status, resp.StatusCode, wr.Message}
		}
		return b, nil
	}
	return lastBody, lastErr
}

// retireNode drains the node and retires it once nothing is left on it
// (or at once with --accept-data-loss), showing the progress.
func retireNode(ctx context.Context, c *adminClient, w io.Writer, id string, f adminFlags) error {
	path := "/admin/v1/nodes/" + url.PathEscape(id) + "/retire"
	if f.dataLoss {
		path += "?force=accept-data-loss"
	}
	var last directory.RetireProgress
	shown := ""
	for {
		body, err := c.call(ctx, http.MethodPost, path, nil)
		var p directory.RetireProgress
		_ = json.Unmarshal(body, &p)
		if err != nil {
			var se *errAdminStatus
			if errors.As(err, &se) && se.code == http.StatusConflict && strings.Contains(se.msg, "down") {
				return fmt.Errorf("%w; bring it back so it can hand its users over, or retire it with --accept-data-loss "+
					"(writes only it held are lost)", err)
			}
			return err
		}
		last = p
		if p.Retired {
			break
		}
		line := fmt.Sprintf("node %s %s: %d users still on it, %d handoffs owed", id, p.State, p.Load, p.Leaving)
		if !f.json && line != shown {
			fmt.Fprintln(w, line)
			shown = line
		}
		if f.noWait {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting; node %s still drains (run retire again to wait, undrain to stop): %w", id, ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
	if f.json {
		b, _ := json.Marshal(last)
		writePretty(w, b)
		return nil
	}
	if last.Retired {
		fmt.Fprintf(w, "node %s retired\n", id)
	}
	return nil
}

// writePretty writes JSON indented (other bodies as they are).
func writePretty(w io.Writer, body []byte) {
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") == nil {
		body = append(pretty.Bytes(), '\n')
	}
	w.Write(body)
}

// settingsBody turns key=value arguments into the JSON of PUT
// /admin/v1/settings: integers and booleans as such, anything else as a
// string (which the directory refuses for its numeric settings).
func settingsBody(kvs []string) ([]byte, error) {
	m := map[string]any{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("settings set: %q is not key=value", kv)
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			m[k] = n
		} else if b, err := strconv.ParseBool(v); err == nil {
			m[k] = b
		} else {
			m[k] = v
		}
	}
	return json.Marshal(m)
}
