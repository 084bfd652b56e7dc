package httpserve

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every HCE metric name.
const Namespace = "hce"

// DurationBuckets are the upper bounds, in seconds, of the request
// latency histogram: from a cached read (1 ms) to a slow upload (60 s).
var DurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// metrics are the platform's own collectors.
type metrics struct {
	observers    sync.Map // observerKey -> *observer
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	inFlight     prometheus.Gauge
	shed         *prometheus.CounterVec
	conns        prometheus.Gauge
	connsRefused *prometheus.CounterVec
	bodyTimeouts prometheus.Counter
	basicRefused prometheus.Counter
	tlsReloads   *prometheus.CounterVec
	tlsExpiry    prometheus.Gauge
}

// newMetrics creates and registers the platform's metrics in reg.
func newMetrics(reg prometheus.Registerer, cfg *Config) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time from a request's headers to the end of its answer, by route template, method and status code.",
			Buckets: DurationBuckets,
		}, []string{"route", "method", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "http", Name: "requests_in_flight",
			Help: "Requests being served that count against the in-flight bound (long-lived feeds do not).",
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "http", Name: "requests_shed_total",
			Help: "Requests answered 503 because the server (reason=server) or the client (reason=client) was at its in-flight bound.",
		}, []string{"reason"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "http", Name: "connections_open",
			Help: "Open client connections.",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "http", Name: "connections_refused_total",
			Help: "Connections refused on accept because the total (reason=total) or the client address's (reason=address) cap was reached.",
		}, []string{"reason"}),
		bodyTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "http", Name: "body_timeouts_total",
			Help: "Request bodies cut because they arrived slower than the minimum body rate.",
		}),
		basicRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "http", Name: "basic_refused_total",
			Help: "Requests refused because they sent HTTP Basic credentials over plain HTTP from a non-loopback address.",
		}),
		tlsReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "tls", Name: "reloads_total",
			Help: "Certificate loads, by result (ok, error).",
		}, []string{"result"}),
		tlsExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "tls", Name: "certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the certificate being served, as a Unix time (0 without TLS).",
		}),
	}
	limits := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: "http", Name: "limit",
		Help: "The platform's configured bounds (0: off): max_in_flight, max_in_flight_per_client, max_connections, max_connections_per_address.",
	}, []string{"limit"})
	limits.WithLabelValues("max_in_flight").Set(float64(cfg.MaxInFlight))
	limits.WithLabelValues("max_in_flight_per_client").Set(float64(cfg.MaxInFlightPerClient))
	limits.WithLabelValues("max_connections").Set(float64(cfg.MaxConns))
	limits.WithLabelValues("max_connections_per_address").Set(float64(cfg.MaxConnsPerAddr))
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help: "Always 1; the labels name the running build.",
	}, []string{"version", "commit", "goversion"})
	build.WithLabelValues(cfg.Version.Version, cfg.Version.Commit, cfg.Version.Go).Set(1)
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.shed, m.conns, m.connsRefused,
		m.bodyTimeouts, m.basicRefused, m.tlsReloads, m.tlsExpiry, limits, build} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{"server", "client"} {
		m.shed.WithLabelValues(r)
	}
	for _, r := range []string{"total", "address"} {
		m.connsRefused.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.tlsReloads.WithLabelValues(r)
	}
	return m, nil
}

// methodLabel bounds the method label to the methods HCE serves.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodPatch:
		return m
	}
	return "OTHER"
}

// codeLabels holds the status labels, so counting allocates nothing.
var codeLabels = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func codeLabel(c int) string {
	if c >= 0 && c < len(codeLabels) {
		return codeLabels[c]
	}
	return "other"
}

// observerKey names one request series; route and method are bounded
// (templates, methodLabel), so the cache is too.
type observerKey struct {
	route, method string
	code          int
}

// observer is one series' counter and histogram.
type observer struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// observe counts one answered request.
func (m *metrics) observe(route, method string, code int, seconds float64) {
	ml := methodLabel(method)
	k := observerKey{route, ml, code}
	o, ok := m.observers.Load(k)
	if !ok {
		cl := codeLabel(code)
		o, _ = m.observers.LoadOrStore(k, &observer{count: m.requests.WithLabelValues(route, ml, cl), duration: m.duration.WithLabelValues(route, ml, cl)})
	}
	ob := o.(*observer)
	ob.count.Inc()
	ob.duration.Observe(seconds)
}

// metricsHandler serves reg in the Prometheus text format.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
}
