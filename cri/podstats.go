package cri

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/sandbox"
)

func u64(v uint64) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: v} }

// cgroupUsage is a cgroup's use of CPU, memory, swap and I/O as the CRI
// reports it; pressure (PSI) where the kernel shows it for the cgroup.
type cgroupUsage struct {
	cpu  *runtimeapi.CpuUsage
	mem  *runtimeapi.MemoryUsage
	swap *runtimeapi.SwapUsage
	io   *runtimeapi.IoUsage // nil without I/O pressure, its only figure
	// tasks counts the cgroup's processes and threads, as containerd counts
	// a pod's processes.
	tasks uint64
}

// readCgroupUsage reads the usage of the cgroup at path.
func (s *Service) readCgroupUsage(path string) (cgroupUsage, error) {
	st, err := s.cgroups.Stats(path)
	if err != nil {
		return cgroupUsage{}, err
	}
	now := time.Now().UnixNano()
	m := st.Memory
	mem := &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: u64(m.WorkingSet), UsageBytes: u64(m.Usage),
		RssBytes: u64(m.RSS), PageFaults: u64(m.PageFaults), MajorPageFaults: u64(m.MajorPageFaults), Psi: psiStats(st.Pressure.Memory)}
	if m.Limit > m.WorkingSet {
		mem.AvailableBytes = u64(m.Limit - m.WorkingSet)
	}
	cpu := &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: u64(st.CPU.UsageNanos), Psi: psiStats(st.Pressure.CPU)}
	if rate, ok := s.cpuRates.sample(path, now, st.CPU.UsageNanos); ok {
		cpu.UsageNanoCores = u64(rate)
	}
	// The swap limit counts memory and swap together (v1's memsw).
	swap := &runtimeapi.SwapUsage{Timestamp: now, SwapUsageBytes: u64(m.Swap)}
	if m.SwapLimit > m.Limit && m.Limit > 0 && m.SwapLimit-m.Limit > m.Swap {
		swap.SwapAvailableBytes = u64(m.SwapLimit - m.Limit - m.Swap)
	}
	u := cgroupUsage{cpu: cpu, mem: mem, swap: swap, tasks: st.Pids.Current}
	if p := psiStats(st.Pressure.IO); p != nil {
		u.io = &runtimeapi.IoUsage{Timestamp: now, Psi: p}
	}
	return u, nil
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

// cpuRates remembers each cgroup's last CPU reading, so that a stats call
// reports usage in nano-cores over the interval since the previous one (as
// kubelet's ~10 s stats loop expects); the first call reports none.
// Readings older than cpuSampleTTL are dropped, so cgroups of removed
// containers do not stay in memory.
type cpuRates struct {
	mu     sync.Mutex
	last   map[string]cpuSample
	pruned uint64 // when old readings were last dropped
}

type cpuSample struct{ at, usage uint64 }

const cpuSampleTTL = uint64(10 * time.Minute)

func (r *cpuRates) sample(path string, now int64, usage uint64) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]cpuSample{}
	}
	if uint64(now) > r.pruned+cpuSampleTTL {
		for p, s := range r.last {
			if s.at+cpuSampleTTL < uint64(now) {
				delete(r.last, p)
			}
		}
		r.pruned = uint64(now)
	}
	prev, ok := r.last[path]
	r.last[path] = cpuSample{at: uint64(now), usage: usage}
	if !ok || uint64(now) <= prev.at || usage < prev.usage {
		return 0, false
	}
	// Core-nanoseconds per second of wall time is nano-cores.
	return (usage - prev.usage) * 1e9 / (uint64(now) - prev.at), true
}

// podStats gathers a pod's usage: CPU, memory and processes of its cgroup
// parent, the traffic of the interfaces in its network namespace, and the
// stats of its running containers (ctrs, every container there is), as
// kubelet reads them all from the runtime with
// PodAndContainerStatsFromCRI. A pod without a cgroup parent has no cgroup
// of its own: its usage is the sum of its running containers'. The pod is
// read after its containers, so its counters are never below theirs.
func (s *Service) podStats(p *sandbox.Pod, ctrs []*container.State) (*runtimeapi.PodSandboxStats, error) {
	md := p.Spec.Metadata
	linux := &runtimeapi.LinuxPodSandboxStats{}
	var sum *cgroupUsage
	for _, st := range ctrs {
		if st.Spec.Annotations[annoSandboxID] != p.ID || st.Status != container.StatusRunning {
			continue
		}
		// One that exits while it is read is left out.
		cs, u, err := s.containerUsage(st)
		if err != nil {
			continue
		}
		linux.Containers = append(linux.Containers, cs)
		if u != nil {
			sum = sum.plus(u)
		}
	}
	if p.Spec.CgroupParent != "" && s.cgroups != nil {
		u, err := s.readCgroupUsage(p.Spec.CgroupParent)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", p.ID, err)
		}
		sum = &u
	}
	if sum != nil {
		linux.Cpu, linux.Memory, linux.Io = sum.cpu, sum.mem, sum.io
		linux.Process = &runtimeapi.ProcessUsage{Timestamp: sum.cpu.Timestamp, ProcessCount: u64(sum.tasks)}
	}
	if p.NetNS != "" && p.State == sandbox.Ready {
		var err error
		if linux.Network, err = networkUsage(p.NetNS); err != nil {
			return nil, fmt.Errorf("pod %s: %w", p.ID, err)
		}
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: p.ID, Labels: p.Spec.Labels, Annotations: p.Spec.Annotations,
			Metadata: &runtimeapi.PodSandboxMetadata{Name: md.Name, Namespace: md.Namespace, Uid: md.UID, Attempt: md.Attempt}},
		Linux: linux,
	}, nil
}

// plus is the usage of u's cgroups and v's together (u may be nil), as a
// pod without a cgroup of its own reports its containers': the counters,
// rates and sizes add up; available bytes and pressure, which do not, are
// left out, and so is swap, which the CRI has no place for in a pod.
func (u *cgroupUsage) plus(v *cgroupUsage) *cgroupUsage {
	add := func(a, b *runtimeapi.UInt64Value) *runtimeapi.UInt64Value {
		if a == nil || b == nil {
			return nil
		}
		return u64(a.Value + b.Value)
	}
	if u == nil {
		cpu := &runtimeapi.CpuUsage{Timestamp: v.cpu.Timestamp, UsageCoreNanoSeconds: v.cpu.UsageCoreNanoSeconds, UsageNanoCores: v.cpu.UsageNanoCores}
		m := v.mem
		mem := &runtimeapi.MemoryUsage{Timestamp: m.Timestamp, WorkingSetBytes: m.WorkingSetBytes, UsageBytes: m.UsageBytes,
			RssBytes: m.RssBytes, PageFaults: m.PageFaults, MajorPageFaults: m.MajorPageFaults}
		return &cgroupUsage{cpu: cpu, mem: mem, tasks: v.tasks}
	}
	u.cpu.Timestamp = max(u.cpu.Timestamp, v.cpu.Timestamp)
	u.cpu.UsageCoreNanoSeconds = add(u.cpu.UsageCoreNanoSeconds, v.cpu.UsageCoreNanoSeconds)
	// A rate only where every container has one (none on the first call).
	u.cpu.UsageNanoCores = add(u.cpu.UsageNanoCores, v.cpu.UsageNanoCores)
	m, n := u.mem, v.mem
	m.Timestamp = max(m.Timestamp, n.Timestamp)
	m.WorkingSetBytes, m.UsageBytes, m.RssBytes = add(m.WorkingSetBytes, n.WorkingSetBytes), add(m.UsageBytes, n.UsageBytes), add(m.RssBytes, n.RssBytes)
	m.PageFaults, m.MajorPageFaults = add(m.PageFaults, n.PageFaults), add(m.MajorPageFaults, n.MajorPageFaults)
	u.tasks += v.tasks
	return u
}

// allContainers lists every container for podStats; none without a
// container runtime.
func (s *Service) allContainers() ([]*container.State, error) {
	if s.containers == nil {
		return nil, nil
	}
	return s.containers.List()
}

// netDevice is one interface's counters from /proc/net/dev.
type netDevice struct {
	name                                  string
	rxBytes, rxPackets, rxErrors, rxDrops uint64
	txBytes, txPackets, txErrors, txDrops uint64
}

// netDevices reads /proc/net/dev as seen from inside the network namespace
// at nsPath; lo is left out.
func netDevices(nsPath string) ([]netDevice, error) {
	var data []byte
	if err := nspin.Run(nsPath, nspin.Net, func() (err error) {
		data, err = os.ReadFile("/proc/thread-self/net/dev")
		return err
	}); err != nil {
		return nil, fmt.Errorf("network usage: %w", err)
	}
	var devs []netDevice
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		name, counters, ok := strings.Cut(sc.Text(), ":")
		name = strings.TrimSpace(name)
		f := strings.Fields(counters)
		if !ok || len(f) < 12 || name == "lo" {
			continue // the two header lines, and loopback
		}
		n := func(i int) uint64 {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			return v
		}
		// Fields: rx bytes packets errs drop fifo frame compressed multicast, tx bytes packets errs drop ...
		devs = append(devs, netDevice{name: name, rxBytes: n(0), rxPackets: n(1), rxErrors: n(2), rxDrops: n(3),
			txBytes: n(8), txPackets: n(9), txErrors: n(10), txDrops: n(11)})
	}
	return devs, nil
}

// networkUsage is the CRI's view of the pod's interfaces, nil when it has
// no eth0 (see criNetwork).
func networkUsage(nsPath string) (*runtimeapi.NetworkUsage, error) {
	devs, err := netDevices(nsPath)
	if err != nil {
		return nil, err
	}
	return criNetwork(devs, time.Now().UnixNano()), nil
}

// criNetwork reports the interfaces with eth0, the interface kubelet has
// CNI make, as the default one; without eth0 there is no usage to report:
// kubelet reads a default interface wherever network usage is reported (a
// pod's without one panicked kubelet v1.37).
func criNetwork(devs []netDevice, now int64) *runtimeapi.NetworkUsage {
	usage := &runtimeapi.NetworkUsage{Timestamp: now}
	for _, d := range devs {
		iface := &runtimeapi.NetworkInterfaceUsage{Name: d.name, RxBytes: u64(d.rxBytes), RxErrors: u64(d.rxErrors),
			TxBytes: u64(d.txBytes), TxErrors: u64(d.txErrors)}
		usage.Interfaces = append(usage.Interfaces, iface)
		if d.name == "eth0" {
			usage.DefaultInterface = iface
		}
	}
	if usage.DefaultInterface == nil {
		return nil
	}
	return usage
}

func (s *Service) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	p, err := s.sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	ctrs, err := s.allContainers()
	if err != nil {
		return nil, err
	}
	stats, err := s.podStats(p, ctrs)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: stats}, nil
}

func (s *Service) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	ctrs, err := s.allContainers()
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListPodSandboxStatsResponse{}
	for _, p := range s.sandboxes.List() {
		if (f.GetId() != "" && !strings.HasPrefix(p.ID, f.GetId())) || !matchLabels(p.Spec.Labels, f.GetLabelSelector()) {
			continue
		}
		stats, err := s.podStats(p, ctrs)
		if err != nil {
			// A pod removed while it is read: leave it out of the list.
			continue
		}
		resp.Stats = append(resp.Stats, stats)
	}
	return resp, nil
}
