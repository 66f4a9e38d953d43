package stats

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/internal/proc"
)

// The metrics (for the CRI's ListMetricDescriptors and
// ListPodSandboxMetrics) let kubelet serve /metrics/cadvisor without cAdvisor. Names, units and
// label keys follow cAdvisor's. Every metric starts with the labels
// below, valued as cAdvisor values them for a CRI container:
//
//	container  the container's name in the pod ("" for pod-level figures)
//	id         its cgroup (cgroupfs form; the pod's cgroup for pod-level figures)
//	image      the image as the container config named it
//	name       the container ID (the pod ID for pod-level figures)
//	namespace  the pod's namespace
//	pod        the pod's name
//
// The CRI carries values as unsigned integers, so *_seconds figures are
// whole seconds (truncated). Unlimited settings read 0, as in cAdvisor.
var ContainerLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

// metricDesc describes one metric: extra are its label keys after
// ContainerLabels.
type metricDesc struct {
	name  string
	help  string
	typ   MetricType
	extra []string
}

// MetricType is a metric's kind.
type MetricType int

const (
	// Counter only grows (until its cgroup is made anew).
	Counter MetricType = iota
	// Gauge goes up and down.
	Gauge
)

const (
	counter = Counter
	gauge   = Gauge
)

var (
	deviceLabel = []string{"device"}
	ifaceLabel  = []string{"interface"}
)

// metricDescs is every metric cri-mini reports; both RPCs use it, so a
// value cannot carry other labels than its descriptor declares.
var metricDescs = []metricDesc{
	{"container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", counter, nil},
	{"container_cpu_user_seconds_total", "Cumulative user CPU time consumed in seconds.", counter, nil},
	{"container_cpu_system_seconds_total", "Cumulative system CPU time consumed in seconds.", counter, nil},
	{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", counter, nil},
	{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", counter, nil},
	{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled, in seconds.", counter, nil},
	{"container_spec_cpu_period", "CPU period of the container, in microseconds.", gauge, nil},
	{"container_spec_cpu_quota", "CPU quota of the container, in microseconds per period (absent when unlimited).", gauge, nil},
	{"container_spec_cpu_shares", "CPU share of the container.", gauge, nil},

	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", gauge, nil},
	{"container_memory_working_set_bytes", "Current working set in bytes.", gauge, nil},
	{"container_memory_rss", "Size of RSS in bytes.", gauge, nil},
	{"container_memory_cache", "Number of bytes of page cache memory.", gauge, nil},
	{"container_memory_mapped_file", "Size of memory mapped files in bytes.", gauge, nil},
	{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", gauge, nil},
	{"container_memory_swap", "Container swap usage in bytes.", gauge, nil},
	{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", gauge, nil},
	{"container_memory_failcnt", "Number of memory usage hits limits.", counter, nil},
	{"container_memory_failures_total", "Cumulative count of memory allocation failures (page faults).", counter, []string{"failure_type", "scope"}},
	{"container_oom_events_total", "Count of out of memory events observed for the container.", counter, nil},
	{"container_spec_memory_limit_bytes", "Memory limit for the container, in bytes (0 when unlimited).", gauge, nil},
	{"container_spec_memory_reservation_limit_bytes", "Memory reservation (soft limit) for the container, in bytes.", gauge, nil},
	{"container_spec_memory_swap_limit_bytes", "Memory plus swap limit for the container, in bytes (0 when unlimited).", gauge, nil},
	{"container_hugetlb_usage_bytes", "Huge page usage of the container, in bytes.", gauge, []string{"pagesize"}},
	{"container_hugetlb_max_usage_bytes", "Maximum huge page usage recorded, in bytes.", gauge, []string{"pagesize"}},

	{"container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion, in seconds.", counter, nil},
	{"container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion, in seconds.", counter, nil},
	{"container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion, in seconds.", counter, nil},
	{"container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion, in seconds.", counter, nil},
	{"container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion, in seconds.", counter, nil},
	{"container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion, in seconds.", counter, nil},

	{"container_blkio_device_usage_total", "Blkio device bytes usage.", counter, []string{"device", "major", "minor", "operation"}},
	{"container_fs_reads_bytes_total", "Cumulative count of bytes read.", counter, deviceLabel},
	{"container_fs_reads_total", "Cumulative count of reads completed.", counter, deviceLabel},
	{"container_fs_writes_bytes_total", "Cumulative count of bytes written.", counter, deviceLabel},
	{"container_fs_writes_total", "Cumulative count of writes completed.", counter, deviceLabel},
	{"container_fs_usage_bytes", "Number of bytes consumed by the container's writable layer.", gauge, deviceLabel},
	{"container_fs_limit_bytes", "Number of bytes the container's writable layer can grow to (the size of its file system).", gauge, deviceLabel},
	{"container_fs_inodes_total", "Number of inodes of the file system holding the container's writable layer.", gauge, deviceLabel},
	{"container_fs_inodes_free", "Number of free inodes on the file system holding the container's writable layer.", gauge, deviceLabel},

	{"container_network_receive_bytes_total", "Cumulative count of bytes received.", counter, ifaceLabel},
	{"container_network_receive_packets_total", "Cumulative count of packets received.", counter, ifaceLabel},
	{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving.", counter, ifaceLabel},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", counter, ifaceLabel},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", counter, ifaceLabel},
	{"container_network_transmit_packets_total", "Cumulative count of packets transmitted.", counter, ifaceLabel},
	{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting.", counter, ifaceLabel},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", counter, ifaceLabel},

	{"container_processes", "Number of processes running inside the container.", gauge, nil},
	{"container_threads", "Number of threads running inside the container.", gauge, nil},
	{"container_threads_max", "Maximum number of tasks allowed in the container (0 when unlimited).", gauge, nil},
	{"container_file_descriptors", "Number of open file descriptors of the container's processes.", gauge, nil},
	{"container_sockets", "Number of open sockets of the container's processes.", gauge, nil},
	{"container_ulimits_soft", "Soft ulimit values of the container's init process.", gauge, []string{"ulimit"}},
	{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", gauge, nil},
	{"container_last_seen", "Last time the container was seen by the runtime, in seconds since the unix epoch.", gauge, nil},
}

var metricDescByName = func() map[string]*metricDesc {
	m := make(map[string]*metricDesc, len(metricDescs))
	for i := range metricDescs {
		m[metricDescs[i].name] = &metricDescs[i]
	}
	return m
}()

// Descriptor describes a metric: LabelKeys start with ContainerLabels.
type Descriptor struct {
	Name, Help string
	Type       MetricType
	LabelKeys  []string
}

// Descriptors describe every metric the Reader reports.
func Descriptors() []Descriptor {
	out := make([]Descriptor, 0, len(metricDescs))
	for _, d := range metricDescs {
		out = append(out, Descriptor{Name: d.name, Help: d.help, Type: d.typ,
			LabelKeys: append(append([]string{}, ContainerLabels...), d.extra...)})
	}
	return out
}

// Metric is one value, its label values in the order of its descriptor's
// keys.
type Metric struct {
	Name        string
	Type        MetricType
	Value       uint64
	LabelValues []string
}

// metricSet collects the metrics of one container (or of a pod), all
// starting with the same container label values.
type metricSet struct {
	base []string
	out  []Metric
}

// add appends a value. The extra label values must match the descriptor's
// extra keys; a mismatch is a programming error the unit test catches.
func (m *metricSet) add(name string, v uint64, extra ...string) {
	d := metricDescByName[name]
	if d == nil || len(extra) != len(d.extra) {
		panic(fmt.Sprintf("metric %s: labels %q do not match its descriptor", name, extra))
	}
	m.out = append(m.out, Metric{Name: name, Type: d.typ, Value: v,
		LabelValues: append(append([]string{}, m.base...), extra...)})
}

func seconds(nanos uint64) uint64 { return nanos / uint64(time.Second) }

// PodMetrics are the metrics of a pod and of its running containers.
type PodMetrics struct {
	Metrics    []Metric
	Containers []ContainerMetrics
}

// ContainerMetrics are the metrics of one container.
type ContainerMetrics struct {
	ID      string
	Metrics []Metric
}

// PodMetrics reads the metrics of pod p and of its running containers (of
// ctrs, the pod's containers); one that exits while it is read is left
// out. The pod is read after its containers, so its counters (which
// include theirs) are never below theirs in one answer.
func (r *Reader) PodMetrics(p Pod, ctrs []Container) PodMetrics {
	var out PodMetrics
	for _, c := range ctrs {
		if !c.Running {
			continue
		}
		metrics, err := r.containerMetrics(p, c)
		if err != nil {
			klog.V(2).InfoS("No metrics for container", "container", c.ID, "err", err)
			continue
		}
		out.Containers = append(out.Containers, ContainerMetrics{ID: c.ID, Metrics: metrics})
	}
	out.Metrics = r.podMetrics(p, ctrs)
	return out
}

// podMetrics are the pod-level figures: its cgroup (the sum of its
// containers and the pause process, as cAdvisor shows a pod's cgroup) and
// its network namespace. A pod without a cgroup parent has no cgroup of its
// own: its figures are the sum of its running containers' (of ctrs).
func (r *Reader) podMetrics(p Pod, ctrs []Container) []Metric {
	set := &metricSet{base: []string{"", r.cgroupID(p.CgroupParent), "", p.ID, p.Namespace, p.Name}}
	switch {
	case r.Cgroups == nil:
	case p.CgroupParent != "":
		if cg, err := r.Cgroups.Stats(p.CgroupParent); err == nil {
			r.cgroupMetrics(set, cg)
		} else {
			klog.V(2).InfoS("No cgroup metrics for pod", "pod", p.ID, "err", err)
		}
	default:
		var sum *cgroups.Stats
		for _, c := range ctrs {
			if !c.Running || c.CgroupPath == "" {
				continue
			}
			// One that exits while it is read is left out.
			if cg, err := r.Cgroups.Stats(c.CgroupPath); err == nil {
				sum = addUsage(sum, cg)
			}
		}
		if sum != nil {
			r.cgroupMetrics(set, sum)
		}
	}
	if p.NetNS != "" {
		if err := networkMetrics(set, p.NetNS); err != nil {
			klog.V(2).InfoS("No network metrics for pod", "pod", p.ID, "err", err)
		}
	}
	return set.out
}

// addUsage adds the usage counters of b to a (nil: none yet), for a pod
// without a cgroup of its own. Settings (shares, quota, limits), peaks and
// pressure, which do not add up, are left at zero (unlimited) or out.
func addUsage(a, b *cgroups.Stats) *cgroups.Stats {
	if a == nil {
		a = &cgroups.Stats{CPU: cgroups.CPUStats{QuotaMicros: -1}}
	}
	c, d, m, n := &a.CPU, &b.CPU, &a.Memory, &b.Memory
	for _, f := range [][2]*uint64{
		{&c.UsageNanos, &d.UsageNanos}, {&c.UserNanos, &d.UserNanos}, {&c.SystemNanos, &d.SystemNanos},
		{&c.Periods, &d.Periods}, {&c.ThrottledPeriods, &d.ThrottledPeriods}, {&c.ThrottledNanos, &d.ThrottledNanos},
		{&m.Usage, &n.Usage}, {&m.WorkingSet, &n.WorkingSet}, {&m.RSS, &n.RSS}, {&m.Cache, &n.Cache},
		{&m.MappedFile, &n.MappedFile}, {&m.KernelUsage, &n.KernelUsage}, {&m.Swap, &n.Swap}, {&m.Failcnt, &n.Failcnt},
		{&m.PageFaults, &n.PageFaults}, {&m.MajorPageFaults, &n.MajorPageFaults}, {&m.OOMKills, &n.OOMKills},
		{&a.Pids.Current, &b.Pids.Current},
	} {
		*f[0] += *f[1]
	}
	for _, io := range b.IO {
		i := slices.IndexFunc(a.IO, func(d cgroups.IODevice) bool { return d.Major == io.Major && d.Minor == io.Minor })
		if i < 0 {
			a.IO = append(a.IO, cgroups.IODevice{Major: io.Major, Minor: io.Minor})
			i = len(a.IO) - 1
		}
		d := &a.IO[i]
		d.ReadBytes, d.WriteBytes, d.Reads, d.Writes = d.ReadBytes+io.ReadBytes, d.WriteBytes+io.WriteBytes, d.Reads+io.Reads, d.Writes+io.Writes
	}
	for size, h := range b.Hugetlb {
		if a.Hugetlb == nil {
			a.Hugetlb = map[string]cgroups.HugetlbStats{}
		}
		a.Hugetlb[size] = cgroups.HugetlbStats{Usage: a.Hugetlb[size].Usage + h.Usage}
	}
	return a
}

// cgroupID is a cgroup in cgroupfs form, the way cAdvisor's id label shows
// it; the driver's form when it cannot be converted.
func (r *Reader) cgroupID(path string) string {
	if r.Cgroups == nil || path == "" {
		return path
	}
	if p, err := r.Cgroups.Path(path); err == nil {
		return p
	}
	return path
}

func networkMetrics(set *metricSet, nsPath string) error {
	devs, err := NetDevices(nsPath)
	if err != nil {
		return err
	}
	for _, d := range devs {
		set.add("container_network_receive_bytes_total", d.RxBytes, d.Name)
		set.add("container_network_receive_packets_total", d.RxPackets, d.Name)
		set.add("container_network_receive_packets_dropped_total", d.RxDrops, d.Name)
		set.add("container_network_receive_errors_total", d.RxErrors, d.Name)
		set.add("container_network_transmit_bytes_total", d.TxBytes, d.Name)
		set.add("container_network_transmit_packets_total", d.TxPackets, d.Name)
		set.add("container_network_transmit_packets_dropped_total", d.TxDrops, d.Name)
		set.add("container_network_transmit_errors_total", d.TxErrors, d.Name)
	}
	return nil
}

// containerMetrics reads one running container's figures: its cgroup, its
// processes in /proc and its writable layer. The network is the pod's,
// reported once at pod level (as cAdvisor reports it on the sandbox only).
func (r *Reader) containerMetrics(p Pod, c Container) ([]Metric, error) {
	set := &metricSet{base: []string{c.Name, r.cgroupID(c.CgroupPath), c.Image, c.ID, p.Namespace, p.Name}}
	if r.Cgroups != nil && c.CgroupPath != "" {
		cg, err := r.Cgroups.Stats(c.CgroupPath)
		if err != nil {
			return nil, err
		}
		r.cgroupMetrics(set, cg)
		pids, err := r.Cgroups.Pids(c.CgroupPath)
		if err != nil {
			return nil, err
		}
		processMetrics(set, pids)
		set.add("container_threads_max", cg.Pids.Limit)
	}
	if r.Images != nil {
		if u, err := r.Images.ContainerUsage(c.ID); err == nil {
			dev := blockDeviceName(uint64(u.Major), uint64(u.Minor))
			set.add("container_fs_usage_bytes", u.Bytes, dev)
			set.add("container_fs_limit_bytes", u.CapacityBytes, dev)
			set.add("container_fs_inodes_total", u.InodesTotal, dev)
			set.add("container_fs_inodes_free", u.InodesFree, dev)
		} else {
			klog.V(2).InfoS("No writable layer usage", "container", c.ID, "err", err)
		}
	}
	if soft, ok := proc.OpenFilesSoftLimit(c.Pid); ok {
		set.add("container_ulimits_soft", soft, "max_open_files")
	}
	set.add("container_start_time_seconds", uint64(c.Started.Unix()))
	set.add("container_last_seen", uint64(time.Now().Unix()))
	return set.out, nil
}

func (r *Reader) cgroupMetrics(set *metricSet, cg *cgroups.Stats) {
	c, m := cg.CPU, cg.Memory
	set.add("container_cpu_usage_seconds_total", seconds(c.UsageNanos))
	set.add("container_cpu_user_seconds_total", seconds(c.UserNanos))
	set.add("container_cpu_system_seconds_total", seconds(c.SystemNanos))
	set.add("container_cpu_cfs_periods_total", c.Periods)
	set.add("container_cpu_cfs_throttled_periods_total", c.ThrottledPeriods)
	set.add("container_cpu_cfs_throttled_seconds_total", seconds(c.ThrottledNanos))
	set.add("container_spec_cpu_period", c.PeriodMicros)
	if c.QuotaMicros > 0 {
		set.add("container_spec_cpu_quota", uint64(c.QuotaMicros))
	}
	set.add("container_spec_cpu_shares", c.Shares)

	set.add("container_memory_usage_bytes", m.Usage)
	set.add("container_memory_working_set_bytes", m.WorkingSet)
	set.add("container_memory_rss", m.RSS)
	set.add("container_memory_cache", m.Cache)
	set.add("container_memory_mapped_file", m.MappedFile)
	set.add("container_memory_kernel_usage", m.KernelUsage)
	set.add("container_memory_swap", m.Swap)
	set.add("container_memory_max_usage_bytes", m.MaxUsage)
	set.add("container_memory_failcnt", m.Failcnt)
	// Both cgroup versions count faults over the whole subtree.
	set.add("container_memory_failures_total", m.PageFaults-m.MajorPageFaults, "pgfault", "hierarchy")
	set.add("container_memory_failures_total", m.MajorPageFaults, "pgmajfault", "hierarchy")
	set.add("container_oom_events_total", m.OOMKills)
	set.add("container_spec_memory_limit_bytes", m.Limit)
	set.add("container_spec_memory_reservation_limit_bytes", m.Reservation)
	set.add("container_spec_memory_swap_limit_bytes", m.SwapLimit)

	for size, h := range cg.Hugetlb {
		set.add("container_hugetlb_usage_bytes", h.Usage, size)
		if r.Cgroups.Version() == 1 { // v2 keeps no peak
			set.add("container_hugetlb_max_usage_bytes", h.MaxUsage, size)
		}
	}
	for _, r := range []struct {
		psi  *cgroups.PSI
		name string
	}{{cg.Pressure.CPU, "cpu"}, {cg.Pressure.Memory, "memory"}, {cg.Pressure.IO, "io"}} {
		if r.psi != nil {
			set.add("container_pressure_"+r.name+"_stalled_seconds_total", r.psi.FullMicros/1e6)
			set.add("container_pressure_"+r.name+"_waiting_seconds_total", r.psi.SomeMicros/1e6)
		}
	}

	for _, d := range cg.IO {
		dev := blockDeviceName(d.Major, d.Minor)
		major, minor := strconv.FormatUint(d.Major, 10), strconv.FormatUint(d.Minor, 10)
		set.add("container_blkio_device_usage_total", d.ReadBytes, dev, major, minor, "Read")
		set.add("container_blkio_device_usage_total", d.WriteBytes, dev, major, minor, "Write")
		set.add("container_fs_reads_bytes_total", d.ReadBytes, dev)
		set.add("container_fs_reads_total", d.Reads, dev)
		set.add("container_fs_writes_bytes_total", d.WriteBytes, dev)
		set.add("container_fs_writes_total", d.Writes, dev)
	}
}

// processMetrics counts the processes, threads, file descriptors and
// sockets of the container's processes from /proc. A process that exits
// meanwhile is skipped.
func processMetrics(set *metricSet, pids []int) {
	var threads, fds, sockets uint64
	for _, pid := range pids {
		if n, err := proc.Threads(pid); err == nil {
			threads += n
		}
		if n, s, err := proc.FDs(pid); err == nil {
			fds, sockets = fds+n, sockets+s
		}
	}
	set.add("container_processes", uint64(len(pids)))
	set.add("container_threads", threads)
	set.add("container_file_descriptors", fds)
	set.add("container_sockets", sockets)
}

// blockDeviceName names a device as cAdvisor's device label does
// ("/dev/sda"), from sysfs; a device with no block device behind it
// (overlay, tmpfs) is "major:minor".
func blockDeviceName(major, minor uint64) string {
	id := fmt.Sprintf("%d:%d", major, minor)
	data, err := os.ReadFile(filepath.Join("/sys/dev/block", id, "uevent"))
	if err != nil {
		return id
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if name, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			return "/dev/" + name
		}
	}
	return id
}
