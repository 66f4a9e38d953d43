package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerStatsSwapIOAndPressure: ContainerStats carries swap (use,
// and what the memory+swap limit leaves) and, where the kernel keeps it
// for the container's cgroup (cgroup v2, or the unified hierarchy of a
// hybrid host like this one), pressure: a busy loop held to a tenth of a
// CPU shows CPU pressure, and memory and I/O pressure are reported; the
// pod's cgroup reports its I/O pressure too.
func TestContainerStatsSwapIOAndPressure(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/unified/cpu.pressure"); err != nil {
		if _, err := os.Stat("/sys/fs/cgroup/cpu.pressure"); err != nil {
			t.Skip("no pressure stall information for cgroups on this host")
		}
	}
	pullTestImage(t)
	cfg := podConfig("pressure")
	cfg.LogDirectory = t.TempDir()
	cfg.Linux.CgroupParent = fmt.Sprintf("/cri-mini-e2e-%d/pod-pressure", os.Getpid())
	podID := runPod(t, cfg)
	busy := containerConfig("busy", "sh", "-c", "while :; do :; done")
	busy.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{
		CpuQuota: 10000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 96 << 20}}
	id := runContainer(t, podID, cfg, busy)

	var st *runtimeapi.ContainerStats
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := suite.rt.ContainerStats(ctx(t), &runtimeapi.ContainerStatsRequest{ContainerId: id})
		if err != nil {
			t.Fatal(err)
		}
		st = resp.Stats
		if st.GetCpu().GetPsi().GetSome().GetTotal() > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if psi := st.GetCpu().GetPsi(); psi.GetSome().GetTotal() == 0 || psi.GetFull() == nil {
		t.Errorf("CPU pressure of a throttled busy loop: %v", psi)
	}
	if st.GetMemory().GetPsi().GetSome() == nil || st.GetIo().GetPsi().GetFull() == nil || st.GetIo().GetTimestamp() == 0 {
		t.Errorf("memory pressure %v, io %v", st.GetMemory().GetPsi(), st.GetIo())
	}
	if sw := st.GetSwap(); sw.GetTimestamp() == 0 || sw.GetSwapUsageBytes() == nil ||
		sw.GetSwapAvailableBytes().GetValue() != 32<<20-sw.GetSwapUsageBytes().GetValue() {
		t.Errorf("swap %v, want its use and the 32 MiB the limits leave less it", sw)
	}
	list, err := suite.rt.ListContainerStats(ctx(t), &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{Id: id}})
	if err != nil || len(list.Stats) != 1 || list.Stats[0].GetIo() == nil || list.Stats[0].GetSwap() == nil {
		t.Errorf("ListContainerStats: %v %v", list, err)
	}
	pod, err := suite.rt.PodSandboxStats(ctx(t), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
	if err != nil || pod.GetStats().GetLinux().GetIo().GetPsi() == nil || pod.GetStats().GetLinux().GetCpu().GetPsi() == nil {
		t.Errorf("pod stats: %v %v", pod, err)
	}
}

// TestPodWithoutCgroupParentStats: a pod without a cgroup parent has no
// cgroup of its own; PodSandboxStats, ListPodSandboxStats and the pod-level
// ListPodSandboxMetrics report the sum of its containers' (here one busy
// loop), not 0.
func TestPodWithoutCgroupParentStats(t *testing.T) {
	pullTestImage(t)
	cfg := podConfig("no-parent")
	podID := runPod(t, cfg)
	ctrID := runContainer(t, podID, cfg, containerConfig("busy", "sh", "-c", "while :; do :; done"))

	// Container metrics are whole seconds: spin until the pod's passed one.
	var pod, ctrMetrics []*runtimeapi.Metric
	value := func(ms []*runtimeapi.Metric, name string) uint64 {
		for _, m := range ms {
			if m.Name == name {
				return m.Value.GetValue()
			}
		}
		return 0
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := suite.rt.ListPodSandboxMetrics(ctx(t), &runtimeapi.ListPodSandboxMetricsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, pm := range resp.PodMetrics {
			if pm.PodSandboxId == podID {
				pod = pm.Metrics
				for _, cm := range pm.ContainerMetrics {
					if cm.ContainerId == ctrID {
						ctrMetrics = cm.Metrics
					}
				}
			}
		}
		if value(pod, "container_cpu_usage_seconds_total") > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, name := range []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"} {
		if pv, cv := value(pod, name), value(ctrMetrics, name); pv == 0 || pv < cv {
			t.Errorf("pod metric %s = %d, its container's %d", name, pv, cv)
		}
	}

	// Two calls: the second has a CPU rate over the interval.
	var stats *runtimeapi.PodSandboxStats
	for range 2 {
		resp, err := suite.rt.PodSandboxStats(ctx(t), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
		if err != nil {
			t.Fatal(err)
		}
		stats = resp.Stats
		time.Sleep(500 * time.Millisecond)
	}
	l := stats.GetLinux()
	if len(l.GetContainers()) != 1 {
		t.Fatalf("pod stats: %d containers, want 1", len(l.GetContainers()))
	}
	c := l.GetContainers()[0]
	if cpu := l.GetCpu().GetUsageCoreNanoSeconds().GetValue(); cpu < uint64(time.Second) || cpu != c.GetCpu().GetUsageCoreNanoSeconds().GetValue() {
		t.Errorf("pod CPU %d ns, its only container's %d", cpu, c.GetCpu().GetUsageCoreNanoSeconds().GetValue())
	}
	if rate := l.GetCpu().GetUsageNanoCores().GetValue(); rate < 1e8 {
		t.Errorf("pod CPU rate %d nano-cores for a busy loop", rate)
	}
	if ws := l.GetMemory().GetWorkingSetBytes().GetValue(); ws == 0 || ws != c.GetMemory().GetWorkingSetBytes().GetValue() {
		t.Errorf("pod working set %d, its only container's %d", ws, c.GetMemory().GetWorkingSetBytes().GetValue())
	}
	if n := l.GetProcess().GetProcessCount().GetValue(); n == 0 {
		t.Errorf("pod process count %d", n)
	}
	list, err := suite.rt.ListPodSandboxStats(ctx(t), &runtimeapi.ListPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: podID}})
	if err != nil || len(list.Stats) != 1 || list.Stats[0].GetLinux().GetCpu().GetUsageCoreNanoSeconds().GetValue() < uint64(time.Second) {
		t.Errorf("ListPodSandboxStats: %v %v", list, err)
	}
}
