package cri

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodCgroupResources: the pod's cgroup gets its containers' resources
// plus its overhead, as kubelet sizes the pod cgroup.
func TestPodCgroupResources(t *testing.T) {
	if podCgroupResources(nil, nil) != nil {
		t.Error("no resources and no overhead: want nothing to apply")
	}
	res := &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20}
	// An overhead quota in a period of its own counts in the pod's.
	ovh := &runtimeapi.LinuxContainerResources{CpuShares: 102, CpuQuota: 5000, CpuPeriod: 50000, MemoryLimitInBytes: 16 << 20}
	got := podCgroupResources(res, ovh)
	if *got.CPU.Shares != 614 || *got.CPU.Quota != 60000 || *got.CPU.Period != 100000 || *got.Memory.Limit != 80<<20 {
		t.Errorf("sum: cpu %+v memory %+v", got.CPU, got.Memory)
	}
	// A container without a limit leaves the pod without one: the
	// overhead alone does not limit it.
	got = podCgroupResources(&runtimeapi.LinuxContainerResources{CpuShares: 2}, ovh)
	if *got.CPU.Shares != 104 || got.CPU.Quota != nil || got.Memory != nil {
		t.Errorf("unlimited pod: cpu %+v memory %+v", got.CPU, got.Memory)
	}
}
