package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

// TestMemoryFootprint fills a child `hce serve` with 1,000 users holding
// 5,000 records each (~300-byte payloads) through the Weave API, serves a
// round of reads for every user, and checks the process RSS stays under
// 256 MB. It takes several minutes, so it runs only with HCE_MEMTEST=1:
//
//	HCE_MEMTEST=1 go test -run TestMemoryFootprint -v -timeout 60m ./cmd/hce/
func TestMemoryFootprint(t *testing.T) {
	if os.Getenv("HCE_MEMTEST") == "" {
		t.Skip("set HCE_MEMTEST=1 to run (several minutes)")
	}
	users, perUser := 1000, 5000
	if v, err := strconv.Atoi(os.Getenv("HCE_MEMTEST_USERS")); err == nil && v > 0 {
		users = v
	}
	bin, err := buildHCE()
	if err != nil {
		t.Fatal(err)
	}
	cmd, base := startServe(t, bin, t.TempDir())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	const password = "memory-test-password"
	payload := strings.Repeat("p", 300)

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				email := fmt.Sprintf("mem%d@example.com", u)
				name := api.AccountName(email)
				reg, _ := json.Marshal(map[string]string{"password": password, "email": email})
				if code, body, err := tryCall(client, http.MethodPut, base+"user/1.0/"+name, reg, ""); err != nil || code != 200 {
					errs <- fmt.Errorf("register %d: %d %v %s", u, code, err, body)
					return
				}
				for b := 0; b < perUser/100; b++ {
					var buf bytes.Buffer
					buf.WriteByte('[')
					for i := 0; i < 100; i++ {
						if i > 0 {
							buf.WriteByte(',')
						}
						fmt.Fprintf(&buf, `{"id":"r%d","sortindex":%d,"payload":"%s"}`, b*100+i, i, payload)
					}
					buf.WriteByte(']')
					// A first login per account: the login guard lets one
					// address run only a few at once and answers the rest
					// 429 with Retry-After (1 s), which a client honours.
					code, body, err := tryCall(client, http.MethodPost, base+"1.1/"+name+"/storage/history", buf.Bytes(), name+":"+password)
					for try := 0; err == nil && code == http.StatusTooManyRequests && try < 30; try++ {
						time.Sleep(time.Second)
						code, body, err = tryCall(client, http.MethodPost, base+"1.1/"+name+"/storage/history", buf.Bytes(), name+":"+password)
					}
					if err != nil || code != 200 {
						errs <- fmt.Errorf("post %d: %d %v %s", u, code, err, body)
						return
					}
				}
			}
		}()
	}
	for u := 0; u < users; u++ {
		select {
		case err := <-errs:
			t.Fatal(err)
		case work <- u:
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("filled %d users x %d records in %s", users, perUser, time.Since(start).Round(time.Second))
	// One round of reads for every user.
	for u := 0; u < users; u++ {
		name := api.AccountName(fmt.Sprintf("mem%d@example.com", u))
		for _, p := range []string{"info/collections", "storage/history?full=1&limit=100", "info/collection_counts"} {
			if code, body := call(t, client, http.MethodGet, base+"1.1/"+name+"/"+p, nil, name+":"+password); code != 200 {
				t.Fatalf("GET %s: %d %s", p, code, body)
			}
		}
	}
	rss := rssKB(t, cmd.Process.Pid)
	t.Logf("RSS of hce serve after serving %d users x %d records: %d MB", users, perUser, rss/1024)
	if rss > 256*1024 {
		t.Fatalf("RSS %d MB is over 256 MB", rss/1024)
	}
}

func rssKB(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
