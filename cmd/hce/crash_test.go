package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hce-sync/hce/api"
)

// TestCrashDurability SIGKILLs a child `hce serve` while concurrent clients
// POST records, restarts it on the same data folder and checks that every
// record whose POST was answered 200 is there, byte for byte.
func TestCrashDurability(t *testing.T) {
	bin := hceBinary(t)
	data := t.TempDir()
	cmd, base := startServe(t, bin, data)
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	const email, password = "crash@example.com", "crash-test-password"
	user := api.AccountName(email)
	client := &http.Client{Timeout: 30 * time.Second}
	reg, _ := json.Marshal(map[string]string{"password": password, "email": email})
	if code, body := call(t, client, http.MethodPut, base+"user/1.0/"+user, reg, ""); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}

	type acked struct{ coll, id, payload string }
	var (
		mu   sync.Mutex
		good []acked
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			coll := fmt.Sprintf("c%d", w%3)
			for n := 0; ctx.Err() == nil; n++ {
				var batch []map[string]any
				var recs []acked
				for i := 0; i < 10; i++ {
					id := fmt.Sprintf("w%d-%d-%d", w, n, i)
					p := fmt.Sprintf(`{"ciphertext":"%s","n":%d,"w":"é€\u2028"}`, strings.Repeat("x", 50+i), n)
					batch = append(batch, map[string]any{"id": id, "payload": p, "sortindex": i})
					recs = append(recs, acked{coll, id, p})
				}
				body, _ := json.Marshal(batch)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"1.1/"+user+"/storage/"+coll, bytes.NewReader(body))
				req.SetBasicAuth(user, password)
				resp, err := client.Do(req)
				if err != nil {
					return // the server was killed
				}
				rb, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					continue
				}
				var out struct {
					Success []string `json:"success"`
				}
				if json.Unmarshal(rb, &out) != nil || len(out.Success) != len(recs) {
					continue
				}
				mu.Lock()
				good = append(good, recs...)
				mu.Unlock()
			}
		}(w)
	}
	// Let writes flow until a few hundred records are acknowledged.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(good)
		mu.Unlock()
		if n >= 400 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(good) == 0 {
		t.Fatal("no write was acknowledged before the kill")
	}

	cmd2, base2 := startServe(t, bin, data)
	defer func() { cmd2.Process.Kill(); cmd2.Wait() }()
	for _, r := range good {
		code, body := call(t, client, http.MethodGet, base2+"1.1/"+user+"/storage/"+r.coll+"/"+r.id, nil, user+":"+password)
		if code != 200 {
			t.Fatalf("acknowledged record %s/%s lost after kill -9: %d %s", r.coll, r.id, code, body)
		}
		var got struct {
			Payload string `json:"payload"`
		}
		if err := json.Unmarshal(body, &got); err != nil || got.Payload != r.payload {
			t.Fatalf("record %s/%s changed after kill -9: %s", r.coll, r.id, body)
		}
	}
	t.Logf("%d acknowledged records survived SIGKILL", len(good))
}

func call(t *testing.T, c *http.Client, method, url string, body []byte, userpass string) (int, []byte) {
	t.Helper()
	code, b, err := tryCall(c, method, url, body, userpass)
	if err != nil {
		t.Fatal(err)
	}
	return code, b
}

// tryCall is call for goroutines other than the test's own.
func tryCall(c *http.Client, method, url string, body []byte, userpass string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if userpass != "" {
		u, p, _ := strings.Cut(userpass, ":")
		req.SetBasicAuth(u, p)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
