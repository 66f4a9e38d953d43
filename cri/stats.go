package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/cri/stats"
	"github.com/cri-mini/cri-mini/sandbox"
)

func u64(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

// optU64 is an optional figure: nil stays nil.
func optU64(v *uint64) *runtimeapi.UInt64Value {
	if v == nil {
		return nil
	}
	return u64(*v)
}

// statsContainer is what the figures of a container are read from.
func statsContainer(st *container.State) stats.Container {
	a := st.Spec.Annotations
	return stats.Container{ID: st.ID, Name: a[annoName], Image: a[annoImage], CgroupPath: st.CgroupPath,
		Running: st.Status == container.StatusRunning, Pid: st.Pid, Started: st.Started}
}

// statsPod is what the figures of pod p are read from, with those of its
// containers (of ctrs, every container there is).
func statsPod(p *sandbox.Pod, ctrs []*container.State) (stats.Pod, []stats.Container) {
	md := p.Spec.Metadata
	sp := stats.Pod{ID: p.ID, Name: md.Name, Namespace: md.Namespace, CgroupParent: p.Spec.CgroupParent}
	if p.State == sandbox.Ready {
		sp.NetNS = p.NetNS
	}
	var cs []stats.Container
	for _, st := range ctrs {
		if st.Spec.Annotations[annoSandboxID] == p.ID {
			cs = append(cs, statsContainer(st))
		}
	}
	return sp, cs
}

// criContainerStats is the CRI's form of a container's figures.
func criContainerStats(st *container.State, cs stats.ContainerStats) *runtimeapi.ContainerStats {
	out := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
		Id: st.ID, Metadata: containerMetadata(st),
		Labels: decodeMap(st.Spec.Annotations[annoLabels]), Annotations: decodeMap(st.Spec.Annotations[annoAnnotation]),
	}}
	u := cs.Usage
	if u == nil {
		return out
	}
	out.Cpu, out.Memory, out.Io = criCPU(u), criMemory(u), criIO(u)
	out.Swap = &runtimeapi.SwapUsage{Timestamp: u.Timestamp, SwapUsageBytes: u64(u.Swap.Usage), SwapAvailableBytes: optU64(u.Swap.Available)}
	if l := cs.WritableLayer; l != nil {
		out.WritableLayer = &runtimeapi.FilesystemUsage{Timestamp: u.Timestamp,
			FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: l.Mountpoint}, UsedBytes: u64(l.Bytes), InodesUsed: u64(l.Inodes)}
	}
	return out
}

func criCPU(u *stats.Usage) *runtimeapi.CpuUsage {
	return &runtimeapi.CpuUsage{Timestamp: u.Timestamp, UsageCoreNanoSeconds: u64(u.CPU.UsageNanos),
		UsageNanoCores: optU64(u.CPU.NanoCores), Psi: psiStats(u.CPU.Pressure)}
}

func criMemory(u *stats.Usage) *runtimeapi.MemoryUsage {
	m := u.Memory
	return &runtimeapi.MemoryUsage{Timestamp: u.Timestamp, WorkingSetBytes: u64(m.WorkingSet), UsageBytes: u64(m.Usage),
		AvailableBytes: optU64(m.Available), RssBytes: u64(m.RSS), PageFaults: u64(m.PageFaults),
		MajorPageFaults: u64(m.MajorPageFaults), Psi: psiStats(m.Pressure)}
}

// criIO is nil without I/O pressure, its only figure.
func criIO(u *stats.Usage) *runtimeapi.IoUsage {
	if p := psiStats(u.IOPressure); p != nil {
		return &runtimeapi.IoUsage{Timestamp: u.Timestamp, Psi: p}
	}
	return nil
}

// psiStats is the CRI's form of pressure stall information (totals in
// nanoseconds); nil where the kernel shows none.
func psiStats(p *cgroups.PSI) *runtimeapi.PsiStats {
	if p == nil {
		return nil
	}
	data := func(totalMicros uint64, a cgroups.PSIAverages) *runtimeapi.PsiData {
		return &runtimeapi.PsiData{Total: totalMicros * 1000, Avg10: a.Avg10, Avg60: a.Avg60, Avg300: a.Avg300}
	}
	return &runtimeapi.PsiStats{Some: data(p.SomeMicros, p.SomeAvg), Full: data(p.FullMicros, p.FullAvg)}
}

func (s *Service) containerStats(st *container.State) (*runtimeapi.ContainerStats, error) {
	cs, err := s.stats.Container(statsContainer(st))
	if err != nil {
		return nil, err
	}
	return criContainerStats(st, cs), nil
}

func (s *Service) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	st, err := s.containerState(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	out, err := s.containerStats(st)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: out}, nil
}

func (s *Service) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	states, err := s.containers.List()
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	resp := &runtimeapi.ListContainerStatsResponse{}
	for _, st := range states {
		if (f.GetId() != "" && !strings.HasPrefix(st.ID, f.GetId())) ||
			(f.GetPodSandboxId() != "" && !strings.HasPrefix(st.Spec.Annotations[annoSandboxID], f.GetPodSandboxId())) ||
			!matchLabels(decodeMap(st.Spec.Annotations[annoLabels]), f.GetLabelSelector()) {
			continue
		}
		out, err := s.containerStats(st)
		if err != nil {
			// A container that exits while it is read has no cgroup left:
			// report it without usage rather than fail the whole list.
			out = &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{Id: st.ID, Metadata: containerMetadata(st)}}
		}
		resp.Stats = append(resp.Stats, out)
	}
	return resp, nil
}
