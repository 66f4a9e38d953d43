// Package stats computes the resource figures of containers and pods: CPU,
// memory, swap, I/O and pressure from their cgroups, processes from
// /proc, network traffic from the pod's network namespace, and the
// writable layer's usage from the image store; as plain usage structs for
// the CRI's stats and as a metric set, with its descriptors, for its
// metrics. It reads and computes only: the CRI's messages are cri/'s.
package stats

import (
	"fmt"
	"sync"
	"time"

	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/image"
)

// Reader reads the figures. Its zero value (with no cgroups and no image
// store) reads what needs neither.
type Reader struct {
	// Cgroups reads pod and container cgroups; nil: none are read.
	Cgroups cgroups.Manager
	// Images measures writable layers; nil: none are measured.
	Images *image.Store

	rates cpuRates // last CPU samples, for usage in nano-cores
}

// Container is what the figures of a container are read from.
type Container struct {
	ID         string
	Name       string // its name in the pod (the metrics' container label)
	Image      string // the image as its config named it (the metrics' image label)
	CgroupPath string // "" for none
	Running    bool
	Pid        int // its init's
	Started    time.Time
}

// Pod is what the figures of a pod are read from.
type Pod struct {
	ID, Name, Namespace string
	// CgroupParent is the pod's cgroup; "" for none: its usage is then
	// the sum of its running containers'.
	CgroupParent string
	// NetNS is the pod's network namespace file; "" when it has none to
	// read (host network, or not ready).
	NetNS string
}

// Usage is a cgroup's use of CPU, memory, swap and I/O as the CRI's stats
// report it.
type Usage struct {
	// Timestamp is when it was read, in nanoseconds since the epoch.
	Timestamp int64
	CPU       CPUUsage
	Memory    MemoryUsage
	Swap      SwapUsage
	// IOPressure is I/O pressure, nil where the kernel shows none.
	IOPressure *cgroups.PSI
	// Tasks counts the cgroup's processes and threads, as containerd
	// counts a pod's processes.
	Tasks uint64
}

// CPUUsage is CPU time used.
type CPUUsage struct {
	UsageNanos uint64 // cumulative
	// NanoCores is the rate since the previous reading of the cgroup; nil
	// on the first.
	NanoCores *uint64
	Pressure  *cgroups.PSI // nil where the kernel shows none
}

// MemoryUsage is memory used.
type MemoryUsage struct {
	WorkingSet, Usage, RSS, PageFaults, MajorPageFaults uint64
	// Available is the limit less the working set; nil without a limit
	// above it.
	Available *uint64
	Pressure  *cgroups.PSI // nil where the kernel shows none
}

// SwapUsage is swap used.
type SwapUsage struct {
	Usage uint64
	// Available is what the swap limit leaves; nil without one.
	Available *uint64
}

// ContainerStats are a container's figures for the CRI's stats.
type ContainerStats struct {
	ID string
	// Usage is nil for a container that does not run or has no cgroup.
	Usage *Usage
	// WritableLayer is read with Usage (at its Timestamp); nil when the
	// container has none.
	WritableLayer *image.ContainerFsUsage
}

// PodStats are a pod's figures for the CRI's stats.
type PodStats struct {
	// Usage is nil without a cgroup to read.
	Usage *Usage
	// Containers are the pod's running containers, those that exited
	// while they were read left out.
	Containers []ContainerStats
	// Network is nil for a pod without a network namespace to read.
	Network *Network
}

// Network is the traffic of a pod's interfaces.
type Network struct {
	Timestamp int64
	Devices   []NetDevice
}

func ptr(v uint64) *uint64 { return &v }

// usage reads the usage of the cgroup at path.
func (r *Reader) usage(path string) (Usage, error) {
	st, err := r.Cgroups.Usage(path)
	if err != nil {
		return Usage{}, err
	}
	now := time.Now().UnixNano()
	m := st.Memory
	u := Usage{Timestamp: now, Tasks: st.Pids.Current, IOPressure: st.Pressure.IO,
		CPU: CPUUsage{UsageNanos: st.CPU.UsageNanos, Pressure: st.Pressure.CPU},
		Memory: MemoryUsage{WorkingSet: m.WorkingSet, Usage: m.Usage, RSS: m.RSS, PageFaults: m.PageFaults,
			MajorPageFaults: m.MajorPageFaults, Pressure: st.Pressure.Memory},
		Swap: SwapUsage{Usage: m.Swap}}
	if m.Limit > m.WorkingSet {
		u.Memory.Available = ptr(m.Limit - m.WorkingSet)
	}
	if rate, ok := r.rates.sample(path, now, st.CPU.UsageNanos); ok {
		u.CPU.NanoCores = ptr(rate)
	}
	// The swap limit counts memory and swap together (v1's memsw).
	if m.SwapLimit > m.Limit && m.Limit > 0 && m.SwapLimit-m.Limit > m.Swap {
		u.Swap.Available = ptr(m.SwapLimit - m.Limit - m.Swap)
	}
	return u, nil
}

// Container reads a container's figures: none but its identity for one
// that does not run or has no cgroup.
func (r *Reader) Container(c Container) (ContainerStats, error) {
	out := ContainerStats{ID: c.ID}
	if c.CgroupPath == "" || r.Cgroups == nil || !c.Running {
		return out, nil
	}
	u, err := r.usage(c.CgroupPath)
	if err != nil {
		return out, err
	}
	out.Usage = &u
	if r.Images != nil {
		if l, err := r.Images.ContainerUsage(c.ID); err == nil {
			out.WritableLayer = &l
		}
	}
	return out, nil
}

// Pod reads a pod's figures: the usage of its cgroup parent, the traffic
// of the interfaces in its network namespace, and the figures of its
// running containers (of ctrs, the pod's containers), as kubelet reads
// them all from the runtime with PodAndContainerStatsFromCRI. A pod
// without a cgroup parent has no cgroup of its own: its usage is the sum
// of its running containers'. The pod is read after its containers, so
// its counters are never below theirs.
func (r *Reader) Pod(p Pod, ctrs []Container) (PodStats, error) {
	var out PodStats
	for _, c := range ctrs {
		if !c.Running {
			continue
		}
		// One that exits while it is read is left out.
		cs, err := r.Container(c)
		if err != nil {
			continue
		}
		out.Containers = append(out.Containers, cs)
		if cs.Usage != nil {
			out.Usage = out.Usage.plus(cs.Usage)
		}
	}
	if p.CgroupParent != "" && r.Cgroups != nil {
		u, err := r.usage(p.CgroupParent)
		if err != nil {
			return out, fmt.Errorf("pod %s: %w", p.ID, err)
		}
		out.Usage = &u
	}
	if p.NetNS != "" {
		devs, err := NetDevices(p.NetNS)
		if err != nil {
			return out, fmt.Errorf("pod %s: %w", p.ID, err)
		}
		out.Network = &Network{Timestamp: time.Now().UnixNano(), Devices: devs}
	}
	return out, nil
}

// plus is the usage of u's cgroups and v's together (u may be nil), as a
// pod without a cgroup of its own reports its containers': the counters,
// rates and sizes add up; available bytes and pressure, which do not, are
// left out, and so is swap, which the CRI has no place for in a pod.
func (u *Usage) plus(v *Usage) *Usage {
	if u == nil {
		return &Usage{Timestamp: v.Timestamp, Tasks: v.Tasks,
			CPU: CPUUsage{UsageNanos: v.CPU.UsageNanos, NanoCores: v.CPU.NanoCores},
			Memory: MemoryUsage{WorkingSet: v.Memory.WorkingSet, Usage: v.Memory.Usage, RSS: v.Memory.RSS,
				PageFaults: v.Memory.PageFaults, MajorPageFaults: v.Memory.MajorPageFaults}}
	}
	u.Timestamp = max(u.Timestamp, v.Timestamp)
	u.CPU.UsageNanos += v.CPU.UsageNanos
	// A rate only where every container has one (none on the first call).
	if u.CPU.NanoCores != nil && v.CPU.NanoCores != nil {
		u.CPU.NanoCores = ptr(*u.CPU.NanoCores + *v.CPU.NanoCores)
	} else {
		u.CPU.NanoCores = nil
	}
	m, n := &u.Memory, &v.Memory
	m.WorkingSet, m.Usage, m.RSS = m.WorkingSet+n.WorkingSet, m.Usage+n.Usage, m.RSS+n.RSS
	m.PageFaults, m.MajorPageFaults = m.PageFaults+n.PageFaults, m.MajorPageFaults+n.MajorPageFaults
	u.Tasks += v.Tasks
	return u
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
