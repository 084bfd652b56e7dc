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
	"strings"
	"time"
)

const adminUsage = `Usage:
  hce admin [flags] status [--linearizable]       voters, leader, raft indexes, settings
  hce admin [flags] nodes                         storage nodes, their states and heartbeats
  hce admin [flags] user <name>                   a user's replica set (members, filling, leaving)
  hce admin [flags] node approve|drain|retire <id>
                                                  admit a pending node, move its users away, retire it

--directory defaults to $HCE_DIRECTORY, --token to $HCE_TOKEN or $HCE_ADMIN_TOKEN.
Flags may come before or after the command.
`

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("directory", "", "HTTP URL of any directory voter")
	token := fs.String("token", "", "admin token (env HCE_TOKEN or HCE_ADMIN_TOKEN)")
	linearizable := fs.Bool("linearizable", false, "status: ask the leader, checking its leadership first")
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
	switch {
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
	req, err := http.NewRequestWithContext(rctx, method, base+path, nil)
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
