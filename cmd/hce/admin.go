package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const adminUsage = `Usage:
  hce admin [flags] status [--linearizable]       voters, leader, raft indexes, settings
  hce admin [flags] nodes                         storage nodes, their states and heartbeats
  hce admin [flags] user <name>                   a user's replica set (members, filling, leaving)
  hce admin [flags] node approve|drain|retire <id>
                                                  admit a pending node, move its users away, retire it
  hce admin [flags] invite [--ttl 168h]           a single-use registration code (shown once)
  hce admin [flags] invites                       the unused invites (without their codes)
  hce admin [flags] settings                      the cluster settings
  hce admin [flags] settings set k=v ...          change some (replicas, auto_approve,
                                                  max_node_capacity, max_operator_capacity, down_after_ms)

--directory defaults to $HCE_DIRECTORY, --token to $HCE_TOKEN or $HCE_ADMIN_TOKEN.
Flags may come before or after the command.
`

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("directory", "", "HTTP URL of any directory voter")
	token := fs.String("token", "", "admin token (env HCE_TOKEN or HCE_ADMIN_TOKEN)")
	linearizable := fs.Bool("linearizable", false, "status: ask the leader, checking its leadership first")
	inviteTTL := fs.Duration("ttl", 0, "invite: how long the code stays valid (default: the directory's, 7 days)")
	rest, err := parseFlags(fs, args, parseOpts{mode: interspersed, stdout: stdout,
		envAliases: map[string][]string{"token": {"HCE_ADMIN_TOKEN"}}})
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, adminUsage)
		return errors.New("no admin command given")
	}
	if *dir == "" || *token == "" {
		return errors.New("--directory and --token (or HCE_DIRECTORY and HCE_ADMIN_TOKEN) are required")
	}
	base := strings.TrimSuffix(*dir, "/")
	var method, path string
	var reqBody io.Reader
	switch {
	case rest[0] == "invite" && len(rest) == 1:
		method, path = http.MethodPost, "/admin/v1/invites"
		if *inviteTTL > 0 {
			path += "?ttl=" + url.QueryEscape(inviteTTL.String())
		}
	case rest[0] == "invites" && len(rest) == 1:
		method, path = http.MethodGet, "/admin/v1/invites"
	case rest[0] == "settings" && len(rest) == 1:
		method, path = http.MethodGet, "/admin/v1/settings"
	case rest[0] == "settings" && len(rest) > 2 && rest[1] == "set":
		b, err := settingsBody(rest[2:])
		if err != nil {
			return err
		}
		method, path, reqBody = http.MethodPut, "/admin/v1/settings", bytes.NewReader(b)
	case rest[0] == "status":
		if len(rest) != 1 {
			fmt.Fprint(stderr, adminUsage)
			return fmt.Errorf("status takes no argument, got %q", rest[1:])
		}
		method, path = http.MethodGet, "/admin/v1/status"
		if *linearizable {
			path += "?linearizable=1"
		}
	case rest[0] == "nodes" && len(rest) == 1:
		method, path = http.MethodGet, "/admin/v1/nodes"
	case rest[0] == "user" && len(rest) == 2:
		method, path = http.MethodGet, "/admin/v1/users/"+rest[1]
	case rest[0] == "node" && len(rest) == 3 && (rest[1] == "approve" || rest[1] == "drain" || rest[1] == "retire"):
		method, path = http.MethodPost, "/admin/v1/nodes/"+rest[2]+"/"+rest[1]
	default:
		fmt.Fprint(stderr, adminUsage)
		return fmt.Errorf("unknown admin command %q", strings.Join(rest, " "))
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, base+path, reqBody)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+*token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("directory %s unreachable: %w", *dir, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") == nil {
		body = append(pretty.Bytes(), '\n')
	}
	stdout.Write(body)
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%s %s: %s: the directory refused the admin token (--token, HCE_ADMIN_TOKEN)", method, path, resp.Status)
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil
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
