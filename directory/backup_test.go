package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hce-sync/hce/api/testkit"
)

// getBackup fetches GET /admin/v1/backup from url.
func getBackup(t *testing.T, url string) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/admin/v1/backup", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("backup: %d %v %s", resp.StatusCode, err, b)
	}
	return b
}

// postRestore posts a backup to url's POST /admin/v1/restore.
func postRestore(t *testing.T, url string, backup []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/admin/v1/restore", bytes.NewReader(backup))
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestQuorumLossRecovery: registrations go on while a backup is taken;
// then two of three voters are lost for good (folders deleted), the third
// is recovered offline (Recover) and restarted alone with every
// acknowledged registration; two fresh voters join it. The backup,
// restored into a fresh one-voter cluster, brings back what it held.
func TestQuorumLossRecovery(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	var (
		mu    sync.Mutex
		acked []string
		seq   atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				d := c.voters[(w+i)%3].d
				name := fmt.Sprintf("u%05d", seq.Add(1))
				if err := d.CreateUser(ctx, name, "password", ""); err == nil {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	testkit.WaitFor(t, 10*time.Second, "registrations", func() bool { return count() >= 100 })
	l := c.leader()
	mu.Lock()
	beforeBackup := slices.Clone(acked)
	mu.Unlock()
	begin := time.Now()
	backup := getBackup(t, l.url())
	t.Logf("directory backup under load: %d bytes in %v", len(backup), time.Since(begin))
	h, users, err := CheckBackup(bytes.NewReader(backup))
	if err != nil || users < len(beforeBackup) || h.Voter != l.id {
		t.Fatalf("backup check: %+v users %d (acked before %d) %v", h, users, len(beforeBackup), err)
	}
	testkit.WaitFor(t, 10*time.Second, "more registrations", func() bool { return count() >= len(beforeBackup)+100 })
	cancel()
	wg.Wait()
	mu.Lock()
	all := slices.Clone(acked)
	mu.Unlock()

	// The survivor holds every acknowledged registration (the healthy
	// cluster caught it up); the other two are lost with their folders.
	survivor := c.voters[2]
	testkit.WaitFor(t, 10*time.Second, "survivor caught up", func() bool {
		for _, u := range all {
			if ok, _ := survivor.d.UserExists(context.Background(), u); !ok {
				return false
			}
		}
		return true
	})
	for _, v := range c.voters {
		c.stop(v)
	}
	for _, v := range c.voters[:2] {
		if err := os.RemoveAll(v.dir); err != nil {
			t.Fatal(err)
		}
	}
	info, err := InspectRaft(survivor.dir)
	if err != nil || info.Users < len(all) {
		t.Fatalf("inspect: %+v %v", info, err)
	}
	if _, err := Recover(survivor.dir, "nobody", []RecoverVoter{{ID: survivor.id, RaftAddr: survivor.raftAddr}}, nil); err == nil {
		t.Fatal("recover for another voter id accepted")
	}
	begin = time.Now()
	info, err = Recover(survivor.dir, survivor.id, []RecoverVoter{{ID: survivor.id, RaftAddr: survivor.raftAddr}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("recover: %+v in %v", info, time.Since(begin))
	begin = time.Now()
	c.start(survivor, false, "")
	testkit.WaitFor(t, 10*time.Second, "the survivor leads alone", survivor.d.IsLeader)
	t.Logf("recovered voter leads %v after its start", time.Since(begin))
	for _, u := range all {
		if ok, _ := survivor.d.UserExists(context.Background(), u); !ok {
			t.Fatalf("acknowledged registration %s lost", u)
		}
	}
	if err := survivor.d.CreateUser(context.Background(), "after-recovery", "password", ""); err != nil {
		t.Fatal(err)
	}
	// Two fresh voters join; the lost voters' records go.
	for _, id := range []string{"v4", "v5"} {
		v := c.addVoterSlot(id)
		c.start(v, false, survivor.url())
	}
	testkit.WaitFor(t, 10*time.Second, "three voters again", func() bool {
		vv, err := survivor.d.Voters()
		return err == nil && len(vv.Voters) == 3 && len(vv.Stale) == 0
	})
	want := survivor.d.state.Accounts()
	for _, v := range c.live() {
		testkit.WaitFor(t, 10*time.Second, v.id+" has every user", func() bool {
			ok, _ := v.d.UserExists(context.Background(), "after-recovery")
			return ok && v.d.state.Accounts() == want
		})
	}

	// The backup into a fresh cluster: refused when damaged, and then
	// exactly its state.
	fresh := newTestCluster(t, 1, nil)
	fl := fresh.leader()
	if err := fl.d.CreateUser(context.Background(), "doomed", "password", ""); err != nil {
		t.Fatal(err)
	}
	if code, body := postRestore(t, fl.url(), backup[:len(backup)-10]); code != 400 {
		t.Fatalf("truncated backup: %d %s", code, body)
	}
	if ok, _ := fl.d.UserExists(context.Background(), "doomed"); !ok {
		t.Fatal("a refused restore changed the state")
	}
	begin = time.Now()
	if code, body := postRestore(t, fl.url(), backup); code != 200 {
		t.Fatalf("restore: %d %s", code, body)
	}
	t.Logf("restore of %d users: %v", users, time.Since(begin))
	for _, u := range beforeBackup {
		if ok, _ := fl.d.UserExists(context.Background(), u); !ok {
			t.Fatalf("restored state lacks %s", u)
		}
	}
	if ok, _ := fl.d.UserExists(context.Background(), "doomed"); ok {
		t.Fatal("restore kept a user the backup does not hold")
	}
	if fl.d.state.Accounts() != users {
		t.Fatalf("restored %d users, backup holds %d", fl.d.state.Accounts(), users)
	}
	// Writes go on after the restore; a restart replays it.
	if err := fl.d.CreateUser(context.Background(), "after-restore", "password", ""); err != nil {
		t.Fatal(err)
	}
	fresh.stop(fl)
	fresh.start(fl, false, "")
	testkit.WaitFor(t, 10*time.Second, "restart after restore", func() bool {
		ok, _ := fl.d.UserExists(context.Background(), "after-restore")
		return ok && fl.d.state.Accounts() == users+1
	})
	if _, _, err := ReadBackupHeader(bytes.NewReader([]byte(`{"format":"hce-directory-backup","version":2,"size":1}` + "\n"))); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("newer backup version: %v", err)
	}
}
