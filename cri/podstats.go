package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/cri/stats"
	"github.com/cri-mini/cri-mini/sandbox"
)

// podStats gathers a pod's usage and its running containers' (of ctrs,
// every container there is), as kubelet reads them all from the runtime
// with PodAndContainerStatsFromCRI.
func (s *Service) podStats(p *sandbox.Pod, ctrs []*container.State) (*runtimeapi.PodSandboxStats, error) {
	sp, cs := statsPod(p, ctrs)
	ps, err := s.stats.Pod(sp, cs)
	if err != nil {
		return nil, err
	}
	byID := map[string]*container.State{}
	for _, st := range ctrs {
		byID[st.ID] = st
	}
	linux := &runtimeapi.LinuxPodSandboxStats{}
	for _, c := range ps.Containers {
		linux.Containers = append(linux.Containers, criContainerStats(byID[c.ID], c))
	}
	if u := ps.Usage; u != nil {
		linux.Cpu, linux.Memory, linux.Io = criCPU(u), criMemory(u), criIO(u)
		linux.Process = &runtimeapi.ProcessUsage{Timestamp: u.Timestamp, ProcessCount: u64(u.Tasks)}
	}
	if n := ps.Network; n != nil {
		linux.Network = criNetwork(n.Devices, n.Timestamp)
	}
	md := p.Spec.Metadata
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: p.ID, Labels: p.Spec.Labels, Annotations: p.Spec.Annotations,
			Metadata: &runtimeapi.PodSandboxMetadata{Name: md.Name, Namespace: md.Namespace, Uid: md.UID, Attempt: md.Attempt}},
		Linux: linux,
	}, nil
}

// allContainers lists every container for podStats; none without a
// container runtime.
func (s *Service) allContainers() ([]*container.State, error) {
	if s.containers == nil {
		return nil, nil
	}
	return s.containers.List()
}

// criNetwork reports the interfaces with eth0, the interface kubelet has
// CNI make, as the default one; without eth0 there is no usage to report:
// kubelet reads a default interface wherever network usage is reported (a
// pod's without one panicked kubelet v1.37).
func criNetwork(devs []stats.NetDevice, now int64) *runtimeapi.NetworkUsage {
	usage := &runtimeapi.NetworkUsage{Timestamp: now}
	for _, d := range devs {
		iface := &runtimeapi.NetworkInterfaceUsage{Name: d.Name, RxBytes: u64(d.RxBytes), RxErrors: u64(d.RxErrors),
			TxBytes: u64(d.TxBytes), TxErrors: u64(d.TxErrors)}
		usage.Interfaces = append(usage.Interfaces, iface)
		if d.Name == "eth0" {
			usage.DefaultInterface = iface
		}
	}
	if usage.DefaultInterface == nil {
		return nil
	}
	return usage
}

func (s *Service) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	p, err := s.sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	ctrs, err := s.allContainers()
	if err != nil {
		return nil, err
	}
	out, err := s.podStats(p, ctrs)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: out}, nil
}

func (s *Service) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	ctrs, err := s.allContainers()
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListPodSandboxStatsResponse{}
	for _, p := range s.sandboxes.List() {
		if (f.GetId() != "" && !strings.HasPrefix(p.ID, f.GetId())) || !matchLabels(p.Spec.Labels, f.GetLabelSelector()) {
			continue
		}
		out, err := s.podStats(p, ctrs)
		if err != nil {
			// A pod removed while it is read: leave it out of the list.
			continue
		}
		resp.Stats = append(resp.Stats, out)
	}
	return resp, nil
}
