package image

import (
	"context"
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// metrics are the store's Prometheus metrics; the daemon registers them
// with its own (Store.Collectors).
type metrics struct {
	pulls      *prometheus.CounterVec // by result
	attempts   *prometheus.CounterVec // by endpoint and result
	bytes      prometheus.Counter
	stalls     prometheus.Counter
	inProgress prometheus.Gauge
	duration   prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cri_mini_image_pulls_total",
			Help: "Image pulls, by result (ok or the kind of failure).",
		}, []string{"result"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cri_mini_image_pull_endpoint_attempts_total",
			Help: "Registry endpoints (mirrors and servers) asked for an image, by endpoint and result: which one served, which failed and how.",
		}, []string{"endpoint", "result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cri_mini_image_pull_bytes_total",
			Help: "Compressed layer bytes received by pulls.",
		}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cri_mini_image_pull_stalls_total",
			Help: "Pulls that received no byte for a tenth of the stall timeout (logged as \"Pull stalled\"); at the whole timeout they are cancelled.",
		}),
		inProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cri_mini_image_pulls_in_progress",
			Help: "Pulls running now.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cri_mini_image_pull_duration_seconds",
			Help:    "Time a pull took, whatever its result.",
			Buckets: prometheus.ExponentialBuckets(0.05, 3, 10), // 50ms .. 16min
		}),
	}
}

// Collectors are the store's metrics, for the daemon's registry.
func (s *Store) Collectors() []prometheus.Collector {
	m := s.metrics
	return []prometheus.Collector{m.pulls, m.attempts, m.bytes, m.stalls, m.inProgress, m.duration}
}

// resultKinds name failures in metrics, the most specific first.
var resultKinds = []error{
	errdefs.ErrNotFound, errdefs.ErrInvalidArgument, errdefs.ErrFailedPrecondition, errdefs.ErrResourceExhausted,
	errdefs.ErrDeadlineExceeded, errdefs.ErrUnavailable, errdefs.ErrUnauthenticated, context.Canceled,
}

// result is the label of an outcome: "ok", or the kind of failure
// ("not_found", "unavailable", ...).
func result(err error) string {
	if err == nil {
		return "ok"
	}
	for _, k := range resultKinds {
		if errors.Is(err, k) {
			return strings.ReplaceAll(k.Error(), " ", "_")
		}
	}
	return "other"
}
