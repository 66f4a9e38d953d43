package cri

import (
	"context"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
)

func (s *Service) containerStats(st *container.State) (*runtimeapi.ContainerStats, error) {
	out, _, err := s.containerUsage(st)
	return out, err
}

// containerUsage is containerStats with the usage of the container's
// cgroup it was made of; nil usage when there is none to read.
func (s *Service) containerUsage(st *container.State) (*runtimeapi.ContainerStats, *cgroupUsage, error) {
	out := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
		Id: st.ID, Metadata: containerMetadata(st),
		Labels: decodeMap(st.Spec.Annotations[annoLabels]), Annotations: decodeMap(st.Spec.Annotations[annoAnnotation]),
	}}
	if st.CgroupPath == "" || s.cgroups == nil || st.Status != container.StatusRunning {
		return out, nil, nil
	}
	u, err := s.readCgroupUsage(st.CgroupPath)
	if err != nil {
		return out, nil, err
	}
	out.Cpu, out.Memory, out.Swap, out.Io = u.cpu, u.mem, u.swap, u.io
	if s.images != nil {
		if l, err := s.images.ContainerUsage(st.ID); err == nil {
			out.WritableLayer = &runtimeapi.FilesystemUsage{Timestamp: out.Cpu.Timestamp,
				FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: l.Mountpoint}, UsedBytes: u64(l.Bytes), InodesUsed: u64(l.Inodes)}
		}
	}
	return out, &u, nil
}

func (s *Service) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	st, err := s.containerState(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	stats, err := s.containerStats(st)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: stats}, nil
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
		stats, err := s.containerStats(st)
		if err != nil {
			// A container that exits while it is read has no cgroup left:
			// report it without usage rather than fail the whole list.
			stats = &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{Id: st.ID, Metadata: containerMetadata(st)}}
		}
		resp.Stats = append(resp.Stats, stats)
	}
	return resp, nil
}
