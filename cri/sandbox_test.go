package cri

import (
	"maps"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/cri/config"
	"github.com/cri-mini/cri-mini/sandbox"
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

// TestPodSysctlDefaults: a pod with a network of its own gets
// containerd's two sysctls unless it sets them itself (in either
// spelling) or the configuration turns them off; a pod on the host's
// network gets none.
func TestPodSysctlDefaults(t *testing.T) {
	on := &Service{config: config.Default()}
	off := &Service{config: config.Default()}
	off.config.EnableUnprivilegedPorts, off.config.EnableUnprivilegedICMP = false, false
	own := map[string]string{"net/ipv4/ip_unprivileged_port_start": "1024", "kernel.shmmax": "1"}
	for _, tc := range []struct {
		name string
		s    *Service
		spec sandbox.Spec
		want map[string]string
	}{
		{"defaults", on, sandbox.Spec{}, map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}},
		{"the pod's own", on, sandbox.Spec{Sysctls: own},
			map[string]string{"net/ipv4/ip_unprivileged_port_start": "1024", "kernel.shmmax": "1", "net.ipv4.ping_group_range": "0 2147483647"}},
		{"host network", on, sandbox.Spec{HostNetwork: true}, nil},
		{"turned off", off, sandbox.Spec{Sysctls: own}, own},
	} {
		if got := tc.s.podSysctls(tc.spec); !maps.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if len(own) != 2 {
		t.Errorf("the request's sysctls were changed: %v", own)
	}
}
