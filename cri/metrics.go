package cri

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	"github.com/cri-mini/cri-mini/sandbox"
)

// metrics are the daemon's Prometheus metrics: every CRI call (counted and
// timed by the interceptor) and the pods by state.
type metrics struct {
	registry *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(pods *sandbox.Manager) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cri_mini_cri_calls_total",
			Help: "CRI calls served, by method and gRPC code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cri_mini_cri_call_duration_seconds",
			Help:    "Time to serve a CRI call, by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs .. 26s
		}, []string{"method"}),
	}
	m.registry.MustRegister(m.calls, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if pods != nil {
		for _, state := range []sandbox.State{sandbox.Ready, sandbox.NotReady} {
			m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "cri_mini_pod_sandboxes",
				Help:        "Pod sandboxes, by state.",
				ConstLabels: prometheus.Labels{"state": string(state)},
			}, func() float64 {
				n := 0
				for _, p := range pods.List() {
					if p.State == state {
						n++
					}
				}
				return float64(n)
			}))
		}
	}
	return m
}

func (m *metrics) observe(method string, code codes.Code, d time.Duration) {
	m.calls.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
}

// MetricsHandler serves the daemon's metrics in the Prometheus text format.
func (s *Service) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
}
