package stats

import (
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/cri-mini/cri-mini/container/cgroups"
)

func TestCPURates(t *testing.T) {
	var r cpuRates
	if _, ok := r.sample("/a", 1_000_000_000, 5_000); ok {
		t.Error("a first sample gave a rate")
	}
	// 0.5 s of CPU over 2 s of wall time: half a core.
	if rate, ok := r.sample("/a", 3_000_000_000, 500_005_000); !ok || rate != 250_000_000 {
		t.Errorf("rate %d %v, want 250000000 nano-cores", rate, ok)
	}
	if _, ok := r.sample("/a", 3_000_000_000, 600_000_000); ok {
		t.Error("no time passed, yet a rate")
	}
	if _, ok := r.sample("/a", 4_000_000_000, 10); ok {
		t.Error("a counter that went back (a new cgroup) gave a rate")
	}
	if _, ok := r.sample("/b", 4_000_000_000, 10); ok {
		t.Error("another cgroup shares the first one's sample")
	}
	// A cgroup not read for longer than the TTL (a removed container's) is forgotten.
	later := int64(4_000_000_000 + 2*cpuSampleTTL)
	r.sample("/b", later, 20)
	if _, kept := r.last["/a"]; kept || len(r.last) != 1 {
		t.Errorf("readings after the TTL: %v, want only /b", r.last)
	}
}

// fakeCgroups serves Stats, and Usage alike, from a table and records the
// order of reads.
type fakeCgroups struct {
	cgroups.Manager
	stats map[string]*cgroups.Stats
	read  []string
}

func (f *fakeCgroups) Stats(path string) (*cgroups.Stats, error) {
	f.read = append(f.read, path)
	if st, ok := f.stats[path]; ok {
		return st, nil
	}
	return nil, fmt.Errorf("cgroup %s: %w", path, os.ErrNotExist)
}

func (f *fakeCgroups) Usage(path string) (*cgroups.Stats, error) { return f.Stats(path) }

func cgroupOf(cpu, ws, limit, tasks uint64) *cgroups.Stats {
	return &cgroups.Stats{CPU: cgroups.CPUStats{UsageNanos: cpu}, Memory: cgroups.MemoryStats{WorkingSet: ws, Usage: ws, Limit: limit},
		Pids: cgroups.PidsStats{Current: tasks}, Pressure: cgroups.PressureStats{IO: &cgroups.PSI{SomeMicros: 1}}}
}

// TestPodUsage: a pod is read after its running containers (one that is
// not running, or exits while it is read, is left out); without a cgroup
// parent its usage is their sum, counters and rates adding up and what
// does not add up (available bytes, pressure) left out; with one, its
// cgroup's.
func TestPodUsage(t *testing.T) {
	cg := &fakeCgroups{stats: map[string]*cgroups.Stats{"/a": cgroupOf(100, 10, 1000, 1), "/b": cgroupOf(200, 20, 0, 2),
		"/pod": cgroupOf(400, 50, 0, 5)}}
	r := &Reader{Cgroups: cg}
	ctrs := []Container{{ID: "a", CgroupPath: "/a", Running: true}, {ID: "b", CgroupPath: "/b", Running: true},
		{ID: "stopped", CgroupPath: "/stopped"}, {ID: "gone", CgroupPath: "/gone", Running: true}}
	for round := range 2 {
		ps, err := r.Pod(Pod{ID: "p"}, ctrs)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps.Containers) != 2 || ps.Containers[0].ID != "a" || ps.Containers[1].ID != "b" {
			t.Fatalf("containers %+v, want a and b", ps.Containers)
		}
		if a := ps.Containers[0].Usage; a.Memory.Available == nil || *a.Memory.Available != 990 || a.IOPressure == nil {
			t.Errorf("container a: %+v", a)
		}
		u := ps.Usage
		if u == nil || u.CPU.UsageNanos != 300 || u.Memory.WorkingSet != 30 || u.Tasks != 3 ||
			u.Memory.Available != nil || u.IOPressure != nil {
			t.Errorf("round %d: pod usage %+v, want the sum of a and b", round, u)
		}
		if (u.CPU.NanoCores != nil) != (round == 1) {
			t.Errorf("round %d: pod rate %v, want one from the second reading on", round, u.CPU.NanoCores)
		}
	}
	cg.read = nil
	ps, err := r.Pod(Pod{ID: "p", CgroupParent: "/pod"}, ctrs)
	if err != nil {
		t.Fatal(err)
	}
	if u := ps.Usage; u.CPU.UsageNanos != 400 || u.Tasks != 5 || u.IOPressure == nil {
		t.Errorf("pod usage %+v, want its cgroup's", u)
	}
	if want := []string{"/a", "/b", "/gone", "/pod"}; !slices.Equal(cg.read, want) {
		t.Errorf("read %v, want %v: the pod after its containers", cg.read, want)
	}
	if _, err := r.Pod(Pod{ID: "p", CgroupParent: "/gone"}, nil); err == nil {
		t.Error("a pod whose cgroup cannot be read: no error")
	}
}
