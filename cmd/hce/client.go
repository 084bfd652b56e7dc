package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/client"
)

const clientUsage = `Usage: hce client [--directory URL] (--email E | --user U) [--password P] [--api 1.1|1.5] <command> [args]

Talks to a Weave server (hce serve, or a directory voter) as one account.
--directory, --email and --password default to $HCE_DIRECTORY, $HCE_EMAIL
and $HCE_PASSWORD. Data is printed as JSON, status as a short line.
With --api 1.5 the storage commands speak Sync 1.5: the client trades an
access token (--fxa-token, or one from the directory's local issuer with
the password) at the tokenserver for Hawk credentials.

Commands:
  register                       create the account (needs --email)
  node                           print the user's storage node (node/weave)
  info                           collections, counts, usage and quota
  ids <coll> [--newer T] [--limit N] [--sort S]
                                 list record ids
  get <coll> <id>                print one record
  put <coll> <id> <payload> [--ttl N] [--sortindex N]
                                 write one record
  post <coll> <file.json|->      write a JSON array of records
  delete <coll> [<id>]           delete a record, or the whole collection
  wipe                           delete all of the user's records
  token                          print a bearer token for the user's node
                                 (with --api 1.5: the tokenserver's answer)
  fxa-token                      print an access token of the local issuer
                                 (hce directory --fxa-local, hce serve)
  passwd <new>                   change the password
`

// runClient is `hce client`.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("directory", "", "base URL of the user API (`URL`)")
	email := fs.String("email", "", "account e-mail address")
	user := fs.String("user", "", "account name (instead of --email)")
	password := fs.String("password", "", "account password")
	timeout := fs.Duration("timeout", time.Minute, "bound on the whole command, failover included")
	apiVersion := fs.String("api", client.API11, "storage protocol: 1.1 (Weave) or 1.5 (Sync 1.5: tokenserver and Hawk)")
	fxaToken := fs.String("fxa-token", "", "Sync 1.5: a Firefox Accounts access token for the tokenserver (default: one from the local issuer, with --password)")
	keyID := fs.String("key-id", "", "Sync 1.5: the X-KeyID to send (<keys_changed_at>-<client state>; default derived from the account name)")
	args, err := parseFlags(fs, args, parseOpts{mode: leading, stdout: stdout})
	if err != nil {
		return err
	}
	if len(args) == 0 {
		fs.Usage()
		return errors.New("client: no command given")
	}
	if *dir == "" {
		return errors.New("client: --directory (or $HCE_DIRECTORY) is required")
	}
	cfg := client.DefaultConfig()
	cfg.Directory, cfg.Email, cfg.User, cfg.Password = *dir, *email, *user, *password
	cfg.API, cfg.FxAToken, cfg.KeyID = *apiVersion, *fxaToken, *keyID
	c, err := client.New(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	cmd, rest := args[0], args[1:]
	cc := clientCmd{c: c, out: stdout, stderr: stderr}
	switch cmd {
	case "register":
		if *email == "" || *password == "" {
			return errors.New("client: register needs --email and --password")
		}
		return cc.simple(rest, 0, func() (string, error) {
			return "registered " + c.User(), c.Register(ctx)
		})
	case "node":
		return cc.simple(rest, 0, func() (string, error) { return c.NodeWeave(ctx) })
	case "info":
		return cc.info(ctx, rest)
	case "ids":
		return cc.ids(ctx, rest)
	case "get":
		return cc.get(ctx, rest)
	case "put":
		return cc.put(ctx, rest)
	case "post":
		return cc.post(ctx, rest)
	case "delete":
		return cc.del(ctx, rest)
	case "wipe":
		return cc.simple(rest, 0, func() (string, error) {
			_, err := c.DeleteStorage(ctx)
			return "deleted all records of " + c.User(), err
		})
	case "fxa-token":
		return cc.simple(rest, 0, func() (string, error) { return c.FxALocalToken(ctx) })
	case "token":
		if err := exactArgs("token", rest, 0); err != nil {
			return err
		}
		if *apiVersion == client.API15 {
			r, err := c.SyncToken(ctx)
			if err != nil {
				return err
			}
			return cc.json(r)
		}
		g, err := c.Token(ctx)
		if err != nil {
			return err
		}
		return cc.json(map[string]any{"token": g.Token, "node": g.Node, "expires": g.Expires.Unix()})
	case "passwd":
		if err := exactArgs("passwd", rest, 1); err != nil {
			return err
		}
		return cc.simple(nil, 0, func() (string, error) { return "password changed", c.ChangePassword(ctx, rest[0]) })
	default:
		fs.Usage()
		return fmt.Errorf("client: unknown command %q", cmd)
	}
}

// clientCmd runs one client command and prints its result.
type clientCmd struct {
	c      *client.Client
	out    io.Writer
	stderr io.Writer
}

func exactArgs(cmd string, args []string, n int) error {
	if len(args) != n {
		return fmt.Errorf("client: %s takes %d argument(s), got %d (see hce client -h)", cmd, n, len(args))
	}
	return nil
}

func (cc clientCmd) simple(args []string, n int, fn func() (string, error)) error {
	if len(args) != n {
		return fmt.Errorf("client: unexpected arguments %q", args)
	}
	msg, err := fn()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cc.out, msg)
	return err
}

func (cc clientCmd) json(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(cc.out, "%s\n", b)
	return err
}

func (cc clientCmd) info(ctx context.Context, args []string) error {
	if err := exactArgs("info", args, 0); err != nil {
		return err
	}
	colls, _, err := cc.c.InfoCollections(ctx)
	if err != nil {
		return err
	}
	counts, _, err := cc.c.InfoCounts(ctx)
	if err != nil {
		return err
	}
	usage, _, err := cc.c.InfoUsage(ctx)
	if err != nil {
		return err
	}
	used, quota, _, err := cc.c.InfoQuota(ctx)
	if err != nil {
		return err
	}
	return cc.json(map[string]any{"collections": colls, "counts": counts, "usage_kb": usage,
		"quota_kb": []any{used, quota}, "node": cc.c.Node()})
}

func (cc clientCmd) ids(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client ids", flag.ContinueOnError)
	fs.SetOutput(cc.stderr)
	newer := fs.String("newer", "", "only records modified after this timestamp")
	limit := fs.Int("limit", 0, "at most this many ids (0: all)")
	sort := fs.String("sort", "", "oldest, newest or index")
	pos, err := parseFlags(fs, args, parseOpts{mode: interspersed, stdout: cc.out})
	if err != nil {
		return err
	}
	if err := exactArgs("ids", pos, 1); err != nil {
		return err
	}
	opts := client.Options{}
	if *newer != "" {
		if _, err := api.ParseStamp(*newer); err != nil {
			return fmt.Errorf("client: bad --newer %q", *newer)
		}
		opts.Set("newer", *newer)
	}
	if *limit > 0 {
		opts.Set("limit", strconv.Itoa(*limit))
	}
	if *sort != "" {
		opts.Set("sort", *sort)
	}
	ids, _, err := cc.c.IDs(ctx, pos[0], opts)
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	return cc.json(ids)
}

// recordOut is a record as `hce client get` prints it.
type recordOut struct {
	ID        string    `json:"id"`
	Modified  api.Stamp `json:"modified"`
	Payload   *string   `json:"payload,omitempty"`
	SortIndex *int64    `json:"sortindex,omitempty"`
	ParentID  *string   `json:"parentid,omitempty"`
}

func (cc clientCmd) get(ctx context.Context, args []string) error {
	if err := exactArgs("get", args, 2); err != nil {
		return err
	}
	r, _, err := cc.c.Get(ctx, args[0], args[1])
	if err != nil {
		return err
	}
	out := recordOut{ID: r.ID, Payload: r.Payload, SortIndex: r.SortIndex, ParentID: r.ParentID}
	if r.Modified != nil {
		out.Modified = *r.Modified
	}
	return cc.json(out)
}

func (cc clientCmd) put(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client put", flag.ContinueOnError)
	fs.SetOutput(cc.stderr)
	ttl := fs.Int64("ttl", 0, "seconds until the record expires (0: never)")
	sortIndex := fs.Int64("sortindex", 0, "the record's sortindex")
	pos, err := parseFlags(fs, args, parseOpts{mode: interspersed, stdout: cc.out})
	if err != nil {
		return err
	}
	if err := exactArgs("put", pos, 3); err != nil {
		return err
	}
	r := client.Record{ID: pos[1], Payload: &pos[2]}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "ttl":
			r.TTL = ttl
		case "sortindex":
			r.SortIndex = sortIndex
		}
	})
	m, err := cc.c.Put(ctx, pos[0], r, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cc.out, m.Timestamp)
	return err
}

func (cc clientCmd) post(ctx context.Context, args []string) error {
	if err := exactArgs("post", args, 2); err != nil {
		return err
	}
	var b []byte
	var err error
	if args[1] == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(args[1])
	}
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	var rs []client.Record
	if err := json.Unmarshal(b, &rs); err != nil {
		return fmt.Errorf("client: %s is not a JSON array of records: %w", args[1], err)
	}
	res, _, err := cc.c.Post(ctx, args[0], rs, 0)
	if err != nil {
		return err
	}
	if res.Success == nil {
		res.Success = []string{}
	}
	if res.Failed == nil {
		res.Failed = map[string][]string{}
	}
	return cc.json(map[string]any{"modified": res.Modified, "success": res.Success, "failed": res.Failed})
}

func (cc clientCmd) del(ctx context.Context, args []string) error {
	var err error
	switch len(args) {
	case 1:
		_, err = cc.c.DeleteCollection(ctx, args[0], nil)
	case 2:
		_, err = cc.c.Delete(ctx, args[0], args[1])
	default:
		return errors.New("client: delete takes <coll> [<id>]")
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(cc.out, "deleted")
	return err
}
