package cri

import (
	"context"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/internal/proc"
)

// critestMetrics is the list critest v1.37.0 expects from
// ListMetricDescriptors (pkg/validate/pod.go, expectedMetricDescriptorNames).
var critestMetrics = []string{
	"container_blkio_device_usage_total", "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
	"container_cpu_cfs_throttled_seconds_total", "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
	"container_cpu_user_seconds_total", "container_file_descriptors", "container_fs_inodes_free", "container_fs_inodes_total",
	"container_fs_limit_bytes", "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_usage_bytes",
	"container_fs_writes_bytes_total", "container_fs_writes_total", "container_hugetlb_max_usage_bytes",
	"container_hugetlb_usage_bytes", "container_last_seen", "container_memory_cache", "container_memory_failcnt",
	"container_memory_failures_total", "container_memory_kernel_usage", "container_memory_mapped_file",
	"container_memory_max_usage_bytes", "container_memory_rss", "container_memory_swap", "container_memory_usage_bytes",
	"container_memory_working_set_bytes", "container_network_receive_bytes_total", "container_network_receive_errors_total",
	"container_network_receive_packets_dropped_total", "container_network_receive_packets_total",
	"container_network_transmit_bytes_total", "container_network_transmit_errors_total",
	"container_network_transmit_packets_dropped_total", "container_network_transmit_packets_total",
	"container_oom_events_total", "container_pressure_cpu_stalled_seconds_total", "container_pressure_cpu_waiting_seconds_total",
	"container_pressure_io_stalled_seconds_total", "container_pressure_io_waiting_seconds_total",
	"container_pressure_memory_stalled_seconds_total", "container_pressure_memory_waiting_seconds_total",
	"container_processes", "container_sockets", "container_spec_cpu_period", "container_spec_cpu_quota",
	"container_spec_cpu_shares", "container_spec_memory_limit_bytes", "container_spec_memory_reservation_limit_bytes",
	"container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_threads", "container_threads_max",
	"container_ulimits_soft",
}

func TestMetricDescriptorsCoverCritest(t *testing.T) {
	resp, err := (&Service{}).ListMetricDescriptors(context.Background(), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*runtimeapi.MetricDescriptor{}
	for _, d := range resp.Descriptors {
		if got[d.Name] != nil {
			t.Errorf("%s described twice", d.Name)
		}
		got[d.Name] = d
		if d.Help == "" || len(d.LabelKeys) < len(containerLabels) {
			t.Errorf("%s: help %q, label keys %q", d.Name, d.Help, d.LabelKeys)
		}
		for i, k := range containerLabels {
			if d.LabelKeys[i] != k {
				t.Errorf("%s: label keys %q do not start with %q", d.Name, d.LabelKeys, containerLabels)
				break
			}
		}
	}
	for _, name := range critestMetrics {
		if got[name] == nil {
			t.Errorf("no descriptor for %s", name)
		}
	}
	if len(got) != len(critestMetrics) {
		t.Errorf("%d descriptors, critest knows %d", len(got), len(critestMetrics))
	}
}

// TestCgroupAndProcessMetrics turns a full set of cgroup figures and this
// test's own process into metrics, each with its descriptor's labels.
func TestCgroupAndProcessMetrics(t *testing.T) {
	cg, err := cgroups.Open(cgroups.Options{Version: 1})
	if err != nil {
		t.Skipf("no cgroup v1: %v", err)
	}
	s := &Service{cgroups: cg}
	stats := &cgroups.Stats{
		CPU:      cgroups.CPUStats{UsageNanos: 2_500_000_000, UserNanos: 1_999_999_999, SystemNanos: 500_000_000, Periods: 9, QuotaMicros: 20000, PeriodMicros: 100000, Shares: 2},
		Memory:   cgroups.MemoryStats{Usage: 4096, PageFaults: 10, MajorPageFaults: 3},
		IO:       []cgroups.IODevice{{Major: 7, Minor: 0, ReadBytes: 512, Reads: 1}},
		Hugetlb:  map[string]cgroups.HugetlbStats{"2MB": {Usage: 2 << 20, MaxUsage: 4 << 20}},
		Pressure: cgroups.PressureStats{CPU: &cgroups.PSI{SomeMicros: 3_000_000, FullMicros: 1_000_000}},
	}
	set := &metricSet{base: []string{"c", "/pod/c", "img", "id", "ns", "pod"}}
	s.cgroupMetrics(set, stats)
	// A socket of our own, so the count has one to find.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	processMetrics(set, []int{os.Getpid()})

	values := map[string]uint64{}
	for _, m := range set.out {
		d := metricDescByName[m.Name]
		if len(m.LabelValues) != len(containerLabels)+len(d.extra) || m.MetricType != d.typ {
			t.Errorf("%s: labels %q type %v", m.Name, m.LabelValues, m.MetricType)
		}
		key := m.Name
		if len(m.LabelValues) > len(containerLabels) {
			key += "/" + m.LabelValues[len(containerLabels)]
		}
		values[key] = m.Value.Value
	}
	for key, want := range map[string]uint64{
		"container_cpu_usage_seconds_total": 2, "container_cpu_user_seconds_total": 1, "container_cpu_system_seconds_total": 0,
		"container_spec_cpu_quota": 20000, "container_memory_failures_total/pgfault": 7,
		"container_memory_failures_total/pgmajfault": 3, "container_fs_reads_bytes_total/" + blockDeviceName(7, 0): 512,
		"container_hugetlb_usage_bytes/2MB": 2 << 20, "container_hugetlb_max_usage_bytes/2MB": 4 << 20,
		"container_pressure_cpu_waiting_seconds_total": 3, "container_pressure_cpu_stalled_seconds_total": 1,
		"container_processes": 1,
	} {
		if got, ok := values[key]; !ok || got != want {
			t.Errorf("%s = %d (present %v), want %d", key, got, ok, want)
		}
	}
	if values["container_threads"] < 2 || values["container_file_descriptors"] < 3 || values["container_sockets"] < 1 {
		t.Errorf("this process: %d threads, %d fds, %d sockets", values["container_threads"], values["container_file_descriptors"], values["container_sockets"])
	}
	if _, ok := values["container_pressure_io_waiting_seconds_total"]; ok {
		t.Errorf("io pressure reported where the kernel showed none")
	}

	if got := blockDeviceName(0, 99999); got != "0:99999" {
		t.Errorf("device without sysfs entry named %q", got)
	}
	if _, err := os.Stat("/sys/dev/block/7:0"); err == nil && blockDeviceName(7, 0) != "/dev/loop0" {
		t.Errorf("7:0 named %q, want /dev/loop0", blockDeviceName(7, 0))
	}

	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if soft, ok := proc.OpenFilesSoftLimit(os.Getpid()); !ok || soft != lim.Cur {
		t.Errorf("open files soft limit %d (%v), want %d", soft, ok, lim.Cur)
	}
}
