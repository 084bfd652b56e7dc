package httpserve

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"
)

// The paths the platform answers itself, before the Handler.
const (
	PathLBHeartbeat = "/__lbheartbeat__"
	PathHeartbeat   = "/__heartbeat__"
	PathVersion     = "/__version__"
	PathMetrics     = "/metrics"
)

// Status words of the health answers.
const (
	statusOK        = "ok"
	statusError     = "error"
	statusDraining  = "draining"
	statusSaturated = "saturated"
)

// heartbeatAnswer is /__heartbeat__'s JSON (Dockerflow's shape): the
// overall status, each check's status, and the failures' messages.
type heartbeatAnswer struct {
	Status  string                  `json:"status"`
	Checks  map[string]string       `json:"checks"`
	Details map[string]checkFailure `json:"details"`
}

type checkFailure struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// heartbeat runs the checks, at most once per CheckCacheTTL.
type heartbeat struct {
	checks  map[string]Checker
	timeout time.Duration
	ttl     time.Duration
	mu      sync.Mutex // held while the checks run: callers share one run
	at      time.Time
	last    heartbeatAnswer
}

func (h *heartbeat) run(ctx context.Context) heartbeatAnswer {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.at.IsZero() && time.Since(h.at) < h.ttl {
		return h.last
	}
	a := heartbeatAnswer{Status: statusOK, Checks: map[string]string{}, Details: map[string]checkFailure{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range slices.Sorted(maps.Keys(h.checks)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Detached from the request: a poller that hangs up must not
			// fail the checks that others share.
			cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			if h.timeout > 0 {
				cctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), h.timeout)
			}
			err := h.checks[name].Check(cctx)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				a.Status = statusError
				a.Checks[name] = statusError
				a.Details[name] = checkFailure{Status: statusError, Message: err.Error()}
				return
			}
			a.Checks[name] = statusOK
		}()
	}
	wg.Wait()
	h.last, h.at = a, time.Now()
	return a
}

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// serveLBHeartbeat answers 200 while the server takes work, 503 while it
// drains or is at its in-flight bound. It checks no dependency.
func (s *Server) serveLBHeartbeat(w http.ResponseWriter) {
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": statusDraining})
	case s.flight.saturated() || (s.cfg.MaxConns > 0 && s.conns.open() >= s.cfg.MaxConns):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": statusSaturated})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": statusOK})
	}
}

// serveHeartbeat answers the checks: 200 when all pass, 503 otherwise.
func (s *Server) serveHeartbeat(w http.ResponseWriter, r *http.Request) {
	a := s.hb.run(r.Context())
	code := http.StatusOK
	if a.Status != statusOK {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, a)
}
