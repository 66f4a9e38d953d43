package stats

import (
	"net"
	"os"
	"testing"

	"github.com/cri-mini/cri-mini/container/cgroups"
)

// TestCgroupAndProcessMetrics turns a full set of cgroup figures and this
// test's own process into metrics, each with its descriptor's labels.
func TestCgroupAndProcessMetrics(t *testing.T) {
	cg, err := cgroups.Open(cgroups.Options{Version: 1})
	if err != nil {
		t.Skipf("no cgroup v1: %v", err)
	}
	r := &Reader{Cgroups: cg}
	stats := &cgroups.Stats{
		CPU:      cgroups.CPUStats{UsageNanos: 2_500_000_000, UserNanos: 1_999_999_999, SystemNanos: 500_000_000, Periods: 9, QuotaMicros: 20000, PeriodMicros: 100000, Shares: 2},
		Memory:   cgroups.MemoryStats{Usage: 4096, PageFaults: 10, MajorPageFaults: 3},
		IO:       []cgroups.IODevice{{Major: 7, Minor: 0, ReadBytes: 512, Reads: 1}},
		Hugetlb:  map[string]cgroups.HugetlbStats{"2MB": {Usage: 2 << 20, MaxUsage: 4 << 20}},
		Pressure: cgroups.PressureStats{CPU: &cgroups.PSI{SomeMicros: 3_000_000, FullMicros: 1_000_000}},
	}
	set := &metricSet{base: []string{"c", "/pod/c", "img", "id", "ns", "pod"}}
	r.cgroupMetrics(set, stats)
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
		if len(m.LabelValues) != len(ContainerLabels)+len(d.extra) || m.Type != d.typ {
			t.Errorf("%s: labels %q type %v", m.Name, m.LabelValues, m.Type)
		}
		key := m.Name
		if len(m.LabelValues) > len(ContainerLabels) {
			key += "/" + m.LabelValues[len(ContainerLabels)]
		}
		values[key] = m.Value
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

}
