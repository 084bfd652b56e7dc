package testnet

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hce-sync/hce/api"
	"github.com/hce-sync/hce/api/httpserve"
	"github.com/hce-sync/hce/api/sync15"
	"github.com/hce-sync/hce/node"
)

// activeWindows are the windows of hce_active_users.
var activeWindows = []struct {
	label string
	d     time.Duration
}{{"5m", 5 * time.Minute}, {"1h", time.Hour}, {"24h", 24 * time.Hour}}

// authObserver wraps a node's authenticator (Weave API and CouchDB
// endpoint) to count refused credentials and the users served: it is a
// prometheus.Collector of hce_auth_failures_total{scheme},
// hce_auth_not_serving_total, hce_auth_errors_total and
// hce_active_users{window}.
type authObserver struct {
	next api.Authenticator
	now  func() time.Time

	basic, bearer, hawk, other atomic.Uint64 // refused credentials by scheme
	notServing, errs           atomic.Uint64
	seen                       sync.Map // user -> *atomic.Int64 (Unix seconds of the last success)

	failures, notServingD, errsD, active *prometheus.Desc
}

func newAuthObserver(next api.Authenticator) *authObserver {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(httpserve.Namespace, "", name), help, labels, nil)
	}
	return &authObserver{
		next: next, now: time.Now,
		failures:    d("auth_failures_total", "Requests to the storage API or CouchDB endpoint whose credentials were refused (wrong password, bad or expired token).", "scheme"),
		notServingD: d("auth_not_serving_total", "Requests with valid credentials for a user this node does not serve now (401: the client reads node/weave again)."),
		errsD:       d("auth_errors_total", "Requests whose credentials could not be checked (directory unreachable: 503)."),
		active:      d("active_users", "Users with at least one authenticated request in the window.", "window"),
	}
}

// Authenticate implements api.Authenticator.
func (a *authObserver) Authenticate(ctx context.Context, user string, c api.Credentials) error {
	err := a.next.Authenticate(ctx, user, c)
	switch {
	case err == nil:
		a.served(user)
	case errors.Is(err, node.ErrNotServing):
		a.notServing.Add(1)
	case errors.Is(err, api.ErrUnauthorized):
		switch c.Scheme {
		case "basic":
			a.basic.Add(1)
		case "bearer":
			a.bearer.Add(1)
		default:
			a.other.Add(1)
		}
	default:
		a.errs.Add(1)
	}
	return err
}

// served records a request authenticated as user.
func (a *authObserver) served(user string) {
	now := a.now().Unix()
	if v, ok := a.seen.Load(user); ok {
		if t := v.(*atomic.Int64); t.Load() != now {
			t.Store(now)
		}
	} else {
		t := new(atomic.Int64)
		t.Store(now)
		a.seen.Store(user, t)
	}
}

// hawkObserver counts the Sync 1.5 storage API's authentications into an
// authObserver (scheme "hawk").
type hawkObserver struct {
	a    *authObserver
	next sync15.Authenticator
}

// Authenticate implements sync15.Authenticator.
func (h hawkObserver) Authenticate(ctx context.Context, r sync15.AuthRequest) (sync15.Identity, error) {
	id, err := h.next.Authenticate(ctx, r)
	switch {
	case err == nil:
		h.a.served(id.User)
	case errors.Is(err, node.ErrNotServing):
		h.a.notServing.Add(1)
	case errors.Is(err, api.ErrUnauthorized):
		h.a.hawk.Add(1)
	default:
		h.a.errs.Add(1)
	}
	return id, err
}

// Describe implements prometheus.Collector.
func (a *authObserver) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{a.failures, a.notServingD, a.errsD, a.active} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It also forgets users not
// seen for the longest window.
func (a *authObserver) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(a.failures, prometheus.CounterValue, float64(a.basic.Load()), "basic")
	ch <- prometheus.MustNewConstMetric(a.failures, prometheus.CounterValue, float64(a.bearer.Load()), "bearer")
	ch <- prometheus.MustNewConstMetric(a.failures, prometheus.CounterValue, float64(a.hawk.Load()), "hawk")
	ch <- prometheus.MustNewConstMetric(a.failures, prometheus.CounterValue, float64(a.other.Load()), "other")
	ch <- prometheus.MustNewConstMetric(a.notServingD, prometheus.CounterValue, float64(a.notServing.Load()))
	ch <- prometheus.MustNewConstMetric(a.errsD, prometheus.CounterValue, float64(a.errs.Load()))
	now := a.now().Unix()
	counts := make([]int, len(activeWindows))
	longest := int64(activeWindows[len(activeWindows)-1].d / time.Second)
	a.seen.Range(func(k, v any) bool {
		age := now - v.(*atomic.Int64).Load()
		if age > longest {
			a.seen.Delete(k)
			return true
		}
		for i, w := range activeWindows {
			if age <= int64(w.d/time.Second) {
				counts[i]++
			}
		}
		return true
	})
	for i, w := range activeWindows {
		ch <- prometheus.MustNewConstMetric(a.active, prometheus.GaugeValue, float64(counts[i]), w.label)
	}
}
