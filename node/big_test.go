package node

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

// TestBigBackupAndPurge measures, on a store of 1M records (100 users of
// 10,000 history records with ~400 bytes of random ciphertext), an online
// checkpoint (time, size), a restore (copy, new UUID, open), and the
// purge of the same 1M records once expired: disk usage before the
// purge, right after it, after Pebble's own compactions, and after a
// manual compaction of the whole key space. Opt-in (minutes of IO):
// HCE_BIG_TESTS=1 go test -run TestBigBackupAndPurge -v ./node/
func TestBigBackupAndPurge(t *testing.T) {
	if os.Getenv("HCE_BIG_TESTS") == "" {
		t.Skip("set HCE_BIG_TESTS=1 to run (writes 1M records)")
	}
	const users, perUser, batch = 100, 10_000, 100
	clk := newFakeClock()
	dir := filepath.Join(t.TempDir(), "store")
	s := openTest(t, dir, clk, 0)
	begin := time.Now()
	for u := range users {
		user := fmt.Sprintf("user%03d", u)
		for b := 0; b < perUser; b += batch {
			ws := make([]api.WBO, batch)
			for i := range ws {
				// Sync payloads are ciphertext: incompressible.
				var ct [192]byte
				rand.Read(ct[:])
				ws[i] = api.WBO{ID: fmt.Sprintf("r%06d", b+i), Has: api.FieldPayload | api.FieldTTL,
					Payload: fmt.Sprintf(`{"ciphertext":"%s","IV":"%s","hmac":"%x"}`,
						base64.StdEncoding.EncodeToString(ct[:]), base64.StdEncoding.EncodeToString(ct[:16]), ct[16:48]), TTL: 86400}
			}
			if _, err := s.PostItems(ctx, user, "history", ws, api.Precondition{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("wrote %d records in %v", users*perUser, time.Since(begin).Round(time.Second))
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	size := func(what string) int64 {
		n := liveBytes(dir)
		t.Logf("%s: %.1f MiB on disk (Pebble's DiskSpaceUsage %.1f MiB)", what, mib(n), mib(int64(s.db.Metrics().DiskSpaceUsage())))
		return n
	}
	size("1M records")

	// Backup: an online checkpoint.
	cp := filepath.Join(t.TempDir(), "backup")
	info, err := s.Checkpoint(cp)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint of 1M records: %v, %.1f MiB (hard links on the same file system)", info.Took.Round(time.Millisecond), mib(info.Bytes))
	// Restore: copy to another folder (what a restore from a copy off the
	// machine does), a new UUID, open.
	restored := filepath.Join(t.TempDir(), "restored")
	begin = time.Now()
	if err := copyDir(cp, restored); err != nil {
		t.Fatal(err)
	}
	copied := time.Since(begin)
	if _, _, err := RenewUUID(restored, nil); err != nil {
		t.Fatal(err)
	}
	renewed := time.Since(begin)
	r := openTest(t, restored, clk, 0)
	opened := time.Since(begin)
	if got := mustGet(t, r, "user042", "history", api.Query{Limit: 5}); len(got) != 5 {
		t.Fatalf("restored store reads %d records", len(got))
	}
	t.Logf("restore of 1M records: copy %v, new UUID %v, open %v (in all, until it reads)",
		copied.Round(time.Millisecond), (renewed - copied).Round(time.Millisecond), opened.Round(time.Millisecond))
	r.Close()

	// Purge: every record expires.
	clk.Add(2 * 24 * time.Hour)
	before := size("before the purge (records expired)")
	begin = time.Now()
	total := 0
	for {
		n, err := s.PurgeExpired(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if n == 0 {
			break
		}
	}
	t.Logf("purged %d records in %v", total, time.Since(begin).Round(time.Millisecond))
	size("right after the purge")
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	after := size("right after the purge (flushed)")
	// Pebble's background compactions: poll until none runs and no debt
	// is left, for at most two minutes.
	tick := time.NewTicker(500 * time.Millisecond)
	for deadline := time.After(2 * time.Minute); ; {
		m := s.db.Metrics()
		if m.Compact.NumInProgress == 0 && m.Compact.EstimatedDebt == 0 {
			break
		}
		select {
		case <-deadline:
		case <-tick.C:
			continue
		}
		break
	}
	tick.Stop()
	auto := size("after Pebble's own compactions settle")
	begin = time.Now()
	if err := s.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		t.Fatal(err)
	}
	manual := size(fmt.Sprintf("after a manual compaction of the whole key space (%v)", time.Since(begin).Round(time.Millisecond)))
	t.Logf("purge of 1M expired records: %.1f -> %.1f (flushed) -> %.1f (auto) -> %.1f MiB (manual compaction)",
		mib(before), mib(after), mib(auto), mib(manual))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// liveBytes adds up the files under dir, skipping those a compaction
// removes meanwhile.
func liveBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// copyDir copies the regular files of a folder tree.
func copyDir(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Sync(); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
