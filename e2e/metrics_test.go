package e2e

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/nettest"
)

// TestPodSandboxMetrics runs a busy container that wrote a file, sends
// traffic to its pod, and reads the CRI metrics back: every metric
// carries its descriptor's labels, and the figures moved.
func TestPodSandboxMetrics(t *testing.T) {
	pullTestImage(t)
	descs, err := suite.rt.ListMetricDescriptors(ctx(t), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, d := range descs.Descriptors {
		keys[d.Name] = len(d.LabelKeys)
	}

	cfg := podConfig("metrics")
	cfg.Linux.CgroupParent = fmt.Sprintf("/cri-mini-e2e-%d/pod-metrics", os.Getpid())
	podID := runPod(t, cfg)
	st, info := podInfo(t, podID)
	ctr := containerConfig("busy", "/bin/sh", "-c", "dd if=/dev/zero of=/big bs=1024 count=2048 2>/dev/null; while :; do :; done")
	ctr.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 80000, MemoryLimitInBytes: 64 << 20}}
	ctrID := runContainer(t, podID, cfg, ctr)
	nettest.Serve(t, info.NetNS, ":8084", strings.Repeat("x", 20000))
	if got, err := nettest.Dial("", net.JoinHostPort(st.GetNetwork().GetIp(), "8084")); err != nil || len(got) != 20000 {
		t.Fatalf("traffic to the pod: %d bytes, %v", len(got), err)
	}

	// value of name (whose first extra label, if any, is extra) for the pod or the container.
	var pod, ctrMetrics []*runtimeapi.Metric
	value := func(ms []*runtimeapi.Metric, name, extra string) (uint64, bool) {
		for _, m := range ms {
			if m.Name == name && (extra == "" || m.LabelValues[6] == extra) {
				return m.Value.GetValue(), true
			}
		}
		return 0, false
	}
	// CPU time is whole seconds: spin until one has passed.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := suite.rt.ListPodSandboxMetrics(ctx(t), &runtimeapi.ListPodSandboxMetricsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		pod, ctrMetrics = nil, nil
		for _, pm := range resp.PodMetrics {
			if pm.PodSandboxId != podID {
				continue
			}
			pod = pm.Metrics
			for _, cm := range pm.ContainerMetrics {
				if cm.ContainerId == ctrID {
					ctrMetrics = cm.Metrics
				}
			}
		}
		// The pod's figure is read before its container's: both must have
		// passed the second.
		podCPU, _ := value(pod, "container_cpu_usage_seconds_total", "")
		if cpu, _ := value(ctrMetrics, "container_cpu_usage_seconds_total", ""); cpu > 0 && podCPU > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(pod) == 0 || len(ctrMetrics) == 0 {
		t.Fatalf("pod %s: %d pod metrics, %d container metrics", podID, len(pod), len(ctrMetrics))
	}
	for _, m := range append(append([]*runtimeapi.Metric{}, pod...), ctrMetrics...) {
		if n, ok := keys[m.Name]; !ok || n != len(m.LabelValues) {
			t.Errorf("%s: %d label values %q, descriptor has %d keys (described %v)", m.Name, len(m.LabelValues), m.LabelValues, n, ok)
		}
	}
	if got := ctrMetrics[0].LabelValues[:6]; got[0] != "busy" || got[2] != suite.image || got[3] != ctrID || got[4] != "e2e" || got[5] != "metrics" ||
		!strings.HasPrefix(got[1], cfg.Linux.CgroupParent+"/") {
		t.Errorf("container labels %q", got)
	}

	for _, c := range []struct {
		name, extra string
		min         uint64
	}{
		{"container_cpu_usage_seconds_total", "", 1},
		{"container_memory_usage_bytes", "", 1},
		{"container_memory_working_set_bytes", "", 1},
		{"container_spec_cpu_quota", "", 80000},
		{"container_spec_cpu_period", "", 100000},
		{"container_spec_memory_limit_bytes", "", 64 << 20},
		{"container_cpu_cfs_periods_total", "", 1},
		{"container_processes", "", 1},
		{"container_threads", "", 1},
		{"container_file_descriptors", "", 3},
		{"container_fs_usage_bytes", "", 2 << 20},
		{"container_fs_limit_bytes", "", 2 << 20},
		{"container_fs_inodes_total", "", 1},
		{"container_start_time_seconds", "", uint64(time.Now().Add(-time.Minute).Unix())},
		{"container_last_seen", "", uint64(time.Now().Add(-time.Minute).Unix())},
		{"container_ulimits_soft", "max_open_files", 1},
	} {
		if v, ok := value(ctrMetrics, c.name, c.extra); !ok || v < c.min {
			t.Errorf("%s %s = %d (present %v), want at least %d", c.name, c.extra, v, ok, c.min)
		}
	}
	if v, ok := value(ctrMetrics, "container_spec_memory_limit_bytes", ""); v != 64<<20 {
		t.Errorf("memory limit %d (present %v)", v, ok)
	}
	// The pod's cgroup holds the container's: at least as much CPU and memory.
	if got := pod[0].LabelValues[:6]; got[0] != "" || got[1] != cfg.Linux.CgroupParent || got[3] != podID || got[5] != "metrics" {
		t.Errorf("pod labels %q", got)
	}
	for _, name := range []string{"container_cpu_usage_seconds_total", "container_memory_usage_bytes"} {
		pv, ok := value(pod, name, "")
		if cv, _ := value(ctrMetrics, name, ""); !ok || pv < cv || pv == 0 {
			t.Errorf("pod %s = %d (present %v), container's %d", name, pv, ok, cv)
		}
	}
	// The pod's traffic, counted inside its network namespace.
	if v, ok := value(pod, "container_network_transmit_bytes_total", "eth0"); !ok || v < 20000 {
		t.Errorf("eth0 transmitted %d bytes (present %v), want at least 20000", v, ok)
	}
	if v, ok := value(pod, "container_network_receive_packets_total", "eth0"); !ok || v == 0 {
		t.Errorf("eth0 received %d packets (present %v)", v, ok)
	}
}
