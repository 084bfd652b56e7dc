package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hce-sync/hce/api"
)

// ErrPrepare is wrapped by Prepare's errors.
var ErrPrepare = errors.New("load: prepare")

// maxBatchPayload is the payload bytes one prefill POST carries at most
// (a Weave POST stores at most 100 WBOs and 1 MiB of payload).
const maxBatchPayload = 1000 << 10

// Prepare registers the profiles' accounts (an existing account is
// reused), finds each one's storage node (and a second replica when the
// target has an admin token) and prefills every collection holding fewer
// records than the mix asks. It measures the target's data folders and
// memory before and after. With Target.NoAccounts it does nothing.
func (e *Engine) Prepare(ctx context.Context) error {
	if e.cfg.Target.NoAccounts {
		return nil
	}
	t0 := time.Now()
	disk0, rss0 := e.sampler.totals()
	var registered, prefilled, reused atomic.Int64
	err := e.forEach(ctx, e.profiles, func(ctx context.Context, p *profile) error {
		created, err := e.register(ctx, p)
		if err != nil {
			return err
		}
		if created {
			registered.Add(1)
		}
		if err := e.resolve(ctx, p); err != nil {
			return err
		}
		wrote, err := e.prefill(ctx, p)
		if err != nil {
			return err
		}
		if wrote {
			prefilled.Add(1)
		} else {
			reused.Add(1)
		}
		return nil
	})
	disk1, rss1 := e.sampler.totals()
	e.mu.Lock()
	u := &e.res.Users
	u.Registered, u.Prefilled, u.Reused = int(registered.Load()), int(prefilled.Load()), int(reused.Load())
	u.PrepareSeconds = time.Since(t0).Seconds()
	u.DiskBefore, u.DiskAfter, u.RSSBefore, u.RSSAfter = disk0, disk1, rss0, rss1
	e.mu.Unlock()
	return err
}

// forEach runs f for every profile with PrefillConns workers and returns
// the first error (the others stop at their next profile).
func (e *Engine) forEach(ctx context.Context, ps []*profile, f func(context.Context, *profile) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan *profile)
	var wg sync.WaitGroup
	var done atomic.Int64
	for range min(e.cfg.PrefillConns, max(len(ps), 1)) {
		wg.Go(func() {
			for p := range next {
				if err := f(ctx, p); err != nil {
					cancel(err)
				}
				done.Add(1)
			}
		})
	}
	last := time.Now()
	for _, p := range ps {
		select {
		case next <- p:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		if e.cfg.Progress != nil && time.Since(last) > time.Second {
			last = time.Now()
			e.progress(fmt.Sprintf("preparing users: %d/%d", done.Load(), len(ps)))
		}
	}
	close(next)
	wg.Wait()
	if e.cfg.Progress != nil && len(ps) > 0 {
		e.progress(fmt.Sprintf("preparing users: %d/%d", done.Load(), len(ps)))
		e.endProgress()
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// retry runs f up to 8 times while it fails with a retryable answer (503,
// 429, a refused or reset connection, a timeout), pausing 0.1 s, 0.2 s,
// ... 6.4 s in between (about 13 s in all): setup requests meet a server
// that is busy hashing passwords or compacting.
func retry(ctx context.Context, f func() (outcome, error)) error {
	var err error
	for i := range 8 {
		var out outcome
		out, err = f()
		if err == nil {
			return nil
		}
		if out.status != http.StatusServiceUnavailable && out.status != http.StatusTooManyRequests &&
			out.kind != "refused" && out.kind != "reset" && out.kind != "timeout" {
			return err
		}
		if i == 7 {
			break
		}
		select {
		case <-time.After(time.Duration(100<<i) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// register creates p's account; it reports whether it was created (false:
// it existed).
func (e *Engine) register(ctx context.Context, p *profile) (created bool, err error) {
	body, _ := json.Marshal(map[string]string{"password": e.cfg.Password, "email": p.email})
	err = retry(ctx, func() (outcome, error) {
		out, data := e.sendRead(ctx, http.MethodPut, p.user+"user/1.0/"+p.name, "", body)
		switch {
		case out.status == http.StatusOK:
			created = true
			return out, nil
		case out.status == http.StatusBadRequest && strings.TrimSpace(string(data)) == "4":
			return out, nil // exists: reused
		}
		return out, fmt.Errorf("%w: register %s at %s: %s %s", ErrPrepare, p.name, p.user, out.describe(), data)
	})
	return created, err
}

// resolve reads p's storage node from node/weave (unless the target
// serves storage itself) and, with an admin token, a second replica.
func (e *Engine) resolve(ctx context.Context, p *profile) error {
	if e.cfg.API == API15 {
		return e.sync15Login(ctx, p)
	}
	if e.cfg.Target.StorageURL == "" {
		err := retry(ctx, func() (outcome, error) {
			out, data := e.sendRead(ctx, http.MethodGet, p.user+"user/1.0/"+p.name+"/node/weave", "", nil)
			u := strings.TrimSpace(string(data))
			if out.status != http.StatusOK || !strings.HasPrefix(u, "http") {
				return out, fmt.Errorf("%w: node/weave of %s: %s %q", ErrPrepare, p.name, out.describe(), u)
			}
			if !strings.HasSuffix(u, "/") {
				u += "/"
			}
			p.mu.Lock()
			p.storage, p.resolve = u, false
			p.mu.Unlock()
			return out, nil
		})
		if err != nil {
			return err
		}
	}
	if e.cfg.Target.AdminToken == "" {
		return nil
	}
	return retry(ctx, func() (outcome, error) {
		out, data := e.sendRead(ctx, http.MethodGet, e.cfg.Target.AdminURL+"admin/v1/users/"+p.name, "Bearer "+e.cfg.Target.AdminToken, nil)
		if out.status != http.StatusOK {
			return out, fmt.Errorf("%w: replica set of %s: %s %s", ErrPrepare, p.name, out.describe(), data)
		}
		var set struct {
			Primary  struct{ URL string }   `json:"primary"`
			Replicas []struct{ URL string } `json:"replicas"`
		}
		if err := json.Unmarshal(data, &set); err != nil {
			return out, fmt.Errorf("%w: replica set of %s: %v", ErrPrepare, p.name, err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, r := range set.Replicas {
			u := r.URL
			if !strings.HasSuffix(u, "/") {
				u += "/"
			}
			if u != p.storage {
				p.replica = u
				break
			}
		}
		return out, nil
	})
}

// storageURL is p's storage base URL.
func (p *profile) storageURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.storage
}

// prefill fills each of p's collections that holds fewer records than the
// mix asks; it reports whether it wrote anything.
func (e *Engine) prefill(ctx context.Context, p *profile) (bool, error) {
	base := p.storageURL()
	var counts map[string]int
	err := retry(ctx, func() (outcome, error) {
		u, auth := e.storageRequest(ctx, p, http.MethodGet, base, "/1.1/"+p.name+"/info/collection_counts")
		out, data := e.sendRead(ctx, http.MethodGet, u, auth, nil)
		if out.status != http.StatusOK {
			return out, fmt.Errorf("%w: collection counts of %s: %s %s", ErrPrepare, p.name, out.describe(), data)
		}
		p.setFilled(out.stamp)
		counts = map[string]int{}
		if err := json.Unmarshal(data, &counts); err != nil {
			return out, fmt.Errorf("%w: collection counts of %s: %v", ErrPrepare, p.name, err)
		}
		return out, nil
	})
	if err != nil {
		return false, err
	}
	wrote := false
	for i, pf := range e.cfg.Mix.Prefill {
		want := e.gen.PrefillCount(pf, e.cfg.PrefillScale)
		if counts[pf.Coll] >= want {
			continue
		}
		wrote = true
		r := rand.New(rand.NewPCG(e.cfg.Seed, uint64(p.index)<<16|uint64(i)))
		recs := e.gen.PrefillRecords(r, pf)
		for len(recs) > 0 {
			n, bytes := 0, 0
			for n < len(recs) && n < 100 && (n == 0 || bytes+recs[n].Size <= maxBatchPayload) {
				bytes += recs[n].Size
				n++
			}
			body := e.wboBody(recs[:n], r.Uint64())
			err := retry(ctx, func() (outcome, error) {
				url, auth := e.storageRequest(ctx, p, http.MethodPost, base, "/1.1/"+p.name+"/storage/"+pf.Coll)
				out := e.send(ctx, http.MethodPost, url, auth, nil, body, true)
				if out.kind != "" {
					return out, fmt.Errorf("%w: prefill %s/%s: %s", ErrPrepare, p.name, pf.Coll, out.describe())
				}
				p.setFilled(out.stamp)
				return out, nil
			})
			if err != nil {
				return wrote, err
			}
			recs = recs[n:]
		}
	}
	return wrote, nil
}

// setFilled records the server time prefill reached.
func (p *profile) setFilled(s api.Stamp) {
	p.mu.Lock()
	if s > p.filled {
		p.filled = s
	}
	p.mu.Unlock()
}

// repair refills the collections a wipe or a collection delete emptied,
// between measured phases, so the data each user holds stays as the mix
// describes; it also reads node/weave again for users answered with 401.
func (e *Engine) repair(ctx context.Context) error {
	var ps []*profile
	for _, p := range e.profiles {
		p.mu.Lock()
		if p.dirty || p.resolve {
			ps = append(ps, p)
		}
		p.mu.Unlock()
	}
	if len(ps) == 0 || e.cfg.Target.NoAccounts {
		return nil
	}
	return e.forEach(ctx, ps, func(ctx context.Context, p *profile) error {
		p.mu.Lock()
		dirty, res := p.dirty, p.resolve
		p.dirty = false
		p.mu.Unlock()
		if res {
			if err := e.resolve(ctx, p); err != nil {
				return err
			}
		}
		if dirty {
			_, err := e.prefill(ctx, p)
			return err
		}
		return nil
	})
}

// Cleanup deletes the accounts the run registered: the profiles and the
// accounts the mix created. Deleting an account at the directory removes
// its records on its nodes. It returns how many accounts it deleted.
func (e *Engine) Cleanup(ctx context.Context) (int, error) {
	return e.CleanupSkipping(ctx, nil)
}

// CleanupSkipping is Cleanup for engines that share accounts (the runs of
// one command with the same seed): it leaves out the accounts in done
// and adds its own to it (done may be nil). Deleting an account twice
// would cost a failed login, which the directory's login guard counts.
func (e *Engine) CleanupSkipping(ctx context.Context, done map[string]bool) (int, error) {
	if e.cfg.Target.NoAccounts {
		return 0, nil
	}
	e.mu.Lock()
	all := append(append([]*profile{}, e.profiles...), e.newUsers...)
	e.mu.Unlock()
	skip := make(map[*profile]bool, len(all))
	for _, p := range all {
		skip[p] = done[p.name]
	}
	defer func() {
		if done != nil {
			for _, p := range all {
				done[p.name] = true
			}
		}
	}()
	var deleted atomic.Int64
	err := e.forEach(ctx, all, func(ctx context.Context, p *profile) error {
		if e.cfg.API == API15 && p.storageURL() != "" {
			// The Sync 1.5 account is the directory's own: its records go
			// with DELETE storage.
			_ = retry(ctx, func() (outcome, error) {
				u, auth := e.storageRequest(ctx, p, http.MethodDelete, p.storageURL(), "/1.1/"+p.name+"/storage")
				out, data := e.sendRead(ctx, http.MethodDelete, u, auth, nil)
				if out.status != http.StatusOK {
					return out, fmt.Errorf("load: delete Sync 1.5 storage of %s: %s %s", p.name, out.describe(), data)
				}
				return out, nil
			})
		}
		if skip[p] {
			return nil
		}
		return retry(ctx, func() (outcome, error) {
			out, data := e.sendRead(ctx, http.MethodDelete, p.user+"user/1.0/"+p.name, p.auth, nil)
			switch out.status {
			case http.StatusOK:
				deleted.Add(1)
				return out, nil
			case http.StatusNotFound, http.StatusUnauthorized: // never created, or gone
				return out, nil
			}
			return out, fmt.Errorf("load: delete account %s: %s %s", p.name, out.describe(), data)
		})
	})
	e.mu.Lock()
	e.res.Users.Deleted = int(deleted.Load())
	e.mu.Unlock()
	return int(deleted.Load()), err
}

// sendRead is send for setup requests: it returns the body (up to 1 MiB).
func (e *Engine) sendRead(ctx context.Context, method, url, auth string, body []byte) (outcome, []byte) {
	ctx, cancel := context.WithTimeout(ctx, max(e.cfg.Timeout, 30*time.Second))
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return outcome{kind: "bad request: " + err.Error()}, nil
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		var out outcome
		out.kind, out.timeout = classify(ctx, err)
		return out, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	out := outcome{status: resp.StatusCode}
	if ts := resp.Header.Get("X-Weave-Timestamp"); ts != "" {
		out.stamp, _ = api.ParseStamp(ts)
	}
	if resp.StatusCode >= 300 {
		out.kind = fmt.Sprintf("http %d", resp.StatusCode)
	}
	return out, data
}

// describe names an outcome for error messages.
func (o outcome) describe() string {
	if o.kind != "" {
		return o.kind
	}
	return fmt.Sprintf("HTTP %d", o.status)
}
