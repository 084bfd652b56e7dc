package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/hce-sync/hce/testnet"
)

// hce node backup | restore (docs/node-backup.md).

const nodeUsage = `Usage:
  hce node [flags]                          run a storage node that registers with a directory
  hce node backup --to DIR [--data DATA]    have the node running on DATA write a backup into DIR
                                            (online: a checkpoint of the whole store and the node key)
  hce node restore --from DIR --data NEW    make NEW (absent or empty) a data folder from a backup;
                                            start the node on it and it catches up by replication
`

func runNodeBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./hce-node", "data folder of the running node (its admin socket is there)")
	to := fs.String("to", "", "folder to write the backup into (required; must not exist; the node's user must be able to create it)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	if *to == "" {
		return errors.New("--to DIR is required")
	}
	dir, err := filepath.Abs(*to)
	if err != nil {
		return err
	}
	begin := time.Now()
	cctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	b, err := testnet.RequestBackup(cctx, *data, dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup of node %s (store %s) written to %s: %d bytes, checkpoint %d ms, %v in all\n",
		b.Node, b.Store, dir, b.Bytes, b.TookMS, time.Since(begin).Round(time.Millisecond))
	return nil
}

func runNodeRestore(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "backup folder made by hce node backup (required)")
	data := fs.String("data", "", "new data folder, absent or empty (required)")
	if _, err := parseFlags(fs, args, parseOpts{mode: noPositionals, stdout: stdout}); err != nil {
		return err
	}
	if *from == "" || *data == "" {
		return errors.New("--from DIR and --data NEW are required")
	}
	begin := time.Now()
	r, err := testnet.RestoreNode(*from, *data)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s restored into %s in %v (backup of %s; store %s is now %s).\n"+
		"Start it with hce node --data %s (the node that was backed up must not run): it tells the directory, "+
		"which makes it catch up what was written since before it serves those users again.\n",
		r.Backup.Node, *data, time.Since(begin).Round(time.Millisecond), r.Backup.Created, r.OldStore, r.NewStore, *data)
	return nil
}
