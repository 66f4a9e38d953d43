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
	pulls    *prometheus.CounterVec // by result
	attempts *prometheus.CounterVec // by endpoint and result
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
	}
}

// Collectors are the store's metrics, for the daemon's registry.
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.metrics.pulls, s.metrics.attempts}
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
