package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/cri/stats"
)

// The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics) let
// kubelet serve /metrics/cadvisor without cAdvisor: cri/stats reads
// them, with cAdvisor's names, units and labels.

var metricTypes = map[stats.MetricType]runtimeapi.MetricType{
	stats.Counter: runtimeapi.MetricType_COUNTER,
	stats.Gauge:   runtimeapi.MetricType_GAUGE,
}

func (s *Service) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	resp := &runtimeapi.ListMetricDescriptorsResponse{}
	for _, d := range stats.Descriptors() {
		resp.Descriptors = append(resp.Descriptors, &runtimeapi.MetricDescriptor{Name: d.Name, Help: d.Help, LabelKeys: d.LabelKeys})
	}
	return resp, nil
}

// criMetrics is the CRI's form of metrics.
func criMetrics(metrics []stats.Metric) []*runtimeapi.Metric {
	var out []*runtimeapi.Metric
	for _, m := range metrics {
		out = append(out, &runtimeapi.Metric{Name: m.Name, MetricType: metricTypes[m.Type], Value: u64(m.Value), LabelValues: m.LabelValues})
	}
	return out
}

func (s *Service) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	resp := &runtimeapi.ListPodSandboxMetricsResponse{}
	states, err := s.allContainers()
	if err != nil {
		return nil, err
	}
	for _, p := range s.sandboxes.List() {
		pm := s.stats.PodMetrics(statsPod(p, states))
		out := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.ID, Metrics: criMetrics(pm.Metrics)}
		for _, c := range pm.Containers {
			out.ContainerMetrics = append(out.ContainerMetrics, &runtimeapi.ContainerMetrics{ContainerId: c.ID, Metrics: criMetrics(c.Metrics)})
		}
		resp.PodMetrics = append(resp.PodMetrics, out)
	}
	return resp, nil
}
