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
