package main

import (
	"bufio"
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

	"github.com/hce-sync/hce/directory"
)

// hce directory backup | restore | recover: the directory's state copied
// off a running voter, put back into a cluster, and a voter recovered
// offline after its cluster lost its quorum (docs/directory-backup.md).

// addVoterListFlags adds --directory, --directory-file and --token (as
// hce admin has them) to fs.
func addVoterListFlags(fs *flag.FlagSet, f *adminFlags) {
	fs.Var(&f.dirs, "directory", "HTTP URL of a directory voter; repeat it or separate URLs with commas: the first that answers is used")
	fs.StringVar(&f.dirFile, "directory-file", "", "file of voters' URLs, one per line (# comments), tried after --directory")
	fs.StringVar(&f.token, "token", "", "admin token (env HCE_TOKEN or HCE_ADMIN_TOKEN)")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Minute, "how long the transfer may take")
}

// voterClient is the admin client of a command with addVoterListFlags.
func voterClient(f adminFlags) (*adminClient, error) {
	urls, err := f.urls()
	if err != nil {
		return nil, err
	}
	if len(urls) == 0 || f.token == "" {
		return nil, errors.New("--directory (or --directory-file) and --token (or HCE_DIRECTORY and HCE_ADMIN_TOKEN) are required")
	}
	return &adminClient{urls: urls, token: f.token, timeout: f.timeout, hc: &http.Client{}}, nil
}

func runDirectoryBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("directory backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f adminFlags
	addVoterListFlags(fs, &f)
	to := fs.String("to", "", "file to write the backup to (required; written whole or not at all)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout,
		envAliases: map[string][]string{"token": {"HCE_ADMIN_TOKEN"}}}); err != nil {
		return err
	}
	if *to == "" {
		return errors.New("--to FILE is required")
	}
	c, err := voterClient(f)
	if err != nil {
		return err
	}
	begin := time.Now()
	tmp := *to + ".tmp"
	var lastErr error
	for _, u := range c.urls {
		lastErr = fetchBackup(ctx, c, strings.TrimSuffix(u, "/")+"/admin/v1/backup", tmp)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		os.Remove(tmp)
		return lastErr
	}
	file, err := os.Open(tmp)
	if err != nil {
		return err
	}
	h, users, err := directory.CheckBackup(bufio.NewReaderSize(file, 1<<20))
	file.Close()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("the backup received does not check out: %w", err)
	}
	if err := os.Rename(tmp, *to); err != nil {
		return err
	}
	fi, _ := os.Stat(*to)
	fmt.Fprintf(stdout, "directory backup of %d users at raft index %d (voter %s) written to %s: %d bytes in %v\n",
		users, h.Index, h.Voter, *to, fi.Size(), time.Since(begin).Round(time.Millisecond))
	return nil
}

// fetchBackup streams GET url into path (synced).
func fetchBackup(ctx context.Context, c *adminClient, url, path string) error {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("directory unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = io.Copy(out, resp.Body); err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func runDirectoryRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("directory restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f adminFlags
	addVoterListFlags(fs, &f)
	from := fs.String("from", "", "backup file made by hce directory backup (required)")
	yes := fs.Bool("yes", false, "confirm: the cluster's whole state is replaced by the backup's (accounts, nodes and replica sets made since are gone)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout,
		envAliases: map[string][]string{"token": {"HCE_ADMIN_TOKEN"}}}); err != nil {
		return err
	}
	if *from == "" {
		return errors.New("--from FILE is required")
	}
	file, err := os.Open(*from)
	if err != nil {
		return err
	}
	defer file.Close()
	h, users, err := directory.CheckBackup(bufio.NewReaderSize(file, 1<<20))
	if err != nil {
		return err
	}
	if !*yes {
		return fmt.Errorf("%s holds %d users at raft index %d (voter %s, %s); restoring replaces the cluster's whole state: "+
			"add --yes to do it", *from, users, h.Index, h.Voter, time.Unix(h.Created, 0).UTC().Format(time.RFC3339))
	}
	c, err := voterClient(f)
	if err != nil {
		return err
	}
	// The restore goes to the leader: wait a little for one (a voter just
	// started, an election).
	var st directory.Status
	for deadline := time.Now().Add(15 * time.Second); ; {
		body, err := c.call(ctx, http.MethodGet, "/admin/v1/status", nil)
		if err == nil && json.Unmarshal(body, &st) == nil && st.Leader.URL != "" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no leader known to the directory within 15 s (%v): restore goes to the leader", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	begin := time.Now()
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, strings.TrimSuffix(st.Leader.URL, "/")+"/admin/v1/restore", file)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("leader %s unreachable: %w", st.Leader.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("restore at %s: %s: %s", st.Leader.URL, resp.Status, strings.TrimSpace(string(b)))
	}
	fmt.Fprintf(stdout, "directory state restored from %s (%d users, backup of raft index %d) through leader %s in %v\n",
		*from, users, h.Index, st.Leader.ID, time.Since(begin).Round(time.Millisecond))
	return nil
}

func runDirectoryRecover(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("directory recover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "data folder of the stopped voter to recover (required)")
	id := fs.String("id", "", "that voter's id (required)")
	var voters urlList
	fs.Var(&voters, "voters", "the new raft configuration: id=host:port of each voter (this one included), comma-separated or repeated")
	dry := fs.Bool("dry-run", false, "only print the folder's last raft entry and how many users its log holds (compare the survivors)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	if *data == "" {
		return errors.New("--data DIR is required")
	}
	if *dry {
		info, err := directory.InspectRaft(*data)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: last raft entry %d (term %d), snapshot at %d, %d users\n",
			*data, info.LastIndex, info.LastTerm, info.SnapshotIndex, info.Users)
		return nil
	}
	if *id == "" || len(voters) == 0 {
		return errors.New("--id and --voters id=host:port,... are required (or --dry-run)")
	}
	var vs []directory.RecoverVoter
	for _, v := range voters {
		vid, addr, ok := strings.Cut(v, "=")
		if !ok || vid == "" || addr == "" {
			return fmt.Errorf("--voters: %q is not id=host:port", v)
		}
		vs = append(vs, directory.RecoverVoter{ID: vid, RaftAddr: addr})
	}
	release, err := lockDataDir(*data)
	if err != nil {
		return err
	}
	defer release()
	info, err := directory.Recover(*data, *id, vs, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s recovered: raft configuration now %s; log up to %d (term %d) counts as committed, %d users.\n"+
		"Start the voter as usual (no --bootstrap, no --join); new voters join it with --join.\n",
		*data, strings.Join(voters, ","), info.LastIndex, info.LastTerm, info.Users)
	return nil
}
