package cri

import (
	"bufio"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/sandbox"
)

// metrics are the daemon's Prometheus metrics: every CRI call (counted and
// timed by the interceptor), the pods and containers by state, and the
// containers' supervisor processes.
type metrics struct {
	registry *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(pods *sandbox.Manager, containers *container.Runtime) *metrics {
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
	if containers != nil {
		m.registry.MustRegister(containerCollector{containers})
	}
	return m
}

var (
	containersDesc  = prometheus.NewDesc("cri_mini_containers", "Containers, by state.", []string{"state"}, nil)
	supervisorsDesc = prometheus.NewDesc("cri_mini_supervisor_processes",
		"Live supervisor processes (one per container that has not been deleted and whose supervisor still runs).", nil, nil)
	supervisorRSSDesc = prometheus.NewDesc("cri_mini_supervisor_resident_memory_bytes",
		"Resident memory (VmRSS) of all supervisor processes together.", nil, nil)
)

// containerCollector reads the containers' states and supervisors once per
// scrape (a gauge per figure would list the state directory each time).
type containerCollector struct{ rt *container.Runtime }

func (c containerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- containersDesc
	ch <- supervisorsDesc
	ch <- supervisorRSSDesc
}

func (c containerCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[container.Status]int{container.StatusCreating: 0, container.StatusCreated: 0, container.StatusRunning: 0, container.StatusStopped: 0}
	if states, err := c.rt.List(); err == nil {
		for _, st := range states {
			counts[st.Status]++
		}
	} else {
		ch <- prometheus.NewInvalidMetric(containersDesc, err)
	}
	for status, n := range counts {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(n), string(status))
	}
	sups, err := c.rt.Supervisors()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(supervisorsDesc, err)
		return
	}
	var rss uint64
	for _, sup := range sups {
		rss += residentBytes(sup.Pid)
	}
	ch <- prometheus.MustNewConstMetric(supervisorsDesc, prometheus.GaugeValue, float64(len(sups)))
	ch <- prometheus.MustNewConstMetric(supervisorRSSDesc, prometheus.GaugeValue, float64(rss))
}

// residentBytes is the VmRSS of a process, 0 when it has gone.
func residentBytes(pid int) uint64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (m *metrics) observe(method string, code codes.Code, d time.Duration) {
	m.calls.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
}

// MetricsHandler serves the daemon's metrics in the Prometheus text format.
func (s *Service) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
}
