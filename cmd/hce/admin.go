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
	"os"
	"strings"
	"time"
)

const adminUsage = `Usage:
  hce admin [--directory URL] [--token T] status [--linearizable]
  hce admin [--directory URL] [--token T] nodes
  hce admin [--directory URL] [--token T] user <name>
  hce admin [--directory URL] [--token T] node approve|drain|retire <id>

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
	switch {
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
	req, err := http.NewRequestWithContext(rctx, method, base+path, nil)
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
