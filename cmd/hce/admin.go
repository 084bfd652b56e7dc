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
	"os"
	"strconv"
	"strings"
	"time"
)

const adminUsage = `Usage:
  hce admin [--directory URL] [--token T] status [--linearizable]
  hce admin [--directory URL] [--token T] nodes
  hce admin [--directory URL] [--token T] user <name>
  hce admin [--directory URL] [--token T] node approve|drain|retire <id>
  hce admin [--directory URL] [--token T] invite [--ttl 168h]      a single-use registration code (shown once)
  hce admin [--directory URL] [--token T] invites                  the unused invites (without their codes)
  hce admin [--directory URL] [--token T] settings                 the cluster settings
  hce admin [--directory URL] [--token T] settings set k=v ...     change some (replicas, auto_approve,
                                                                   max_node_capacity, max_operator_capacity, down_after_ms)

--directory defaults to $HCE_DIRECTORY, --token to $HCE_ADMIN_TOKEN.
`

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("directory", os.Getenv("HCE_DIRECTORY"), "HTTP URL of any directory voter")
	token := fs.String("token", os.Getenv("HCE_ADMIN_TOKEN"), "admin token")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
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
	case rest[0] == "invite":
		method, path = http.MethodPost, "/admin/v1/invites"
		if len(rest) == 3 && (rest[1] == "--ttl" || rest[1] == "-ttl") {
			path += "?ttl=" + url.QueryEscape(rest[2])
		} else if len(rest) != 1 {
			fmt.Fprint(stderr, adminUsage)
			return errors.New("usage: invite [--ttl DURATION]")
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
		method, path = http.MethodGet, "/admin/v1/status"
		if len(rest) > 1 && (rest[1] == "--linearizable" || rest[1] == "-linearizable") {
			path += "?linearizable=1"
		}
	case rest[0] == "nodes":
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
		return err
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
	if resp.StatusCode/100 != 2 {
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
