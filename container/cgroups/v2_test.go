package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// realV2 is the host's cgroup2 mount: /sys/fs/cgroup itself on a unified
// host, /sys/fs/cgroup/unified on a hybrid one.
func realV2(t *testing.T) Manager {
	t.Helper()
	for _, root := range []string{DefaultRoot, filepath.Join(DefaultRoot, "unified")} {
		var st syscall.Statfs_t
		if syscall.Statfs(root, &st) == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
			m, err := Open(Options{Version: 2, Root: root})
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Skip("no cgroup2 mount")
	return nil
}

func TestV2RealMissingController(t *testing.T) {
	roottest.Require(t)
	m := realV2(t)
	root := m.(*v2).root
	if avail, _ := readFile(root, "cgroup.controllers"); strings.Contains(avail, "pids") {
		t.Skip("this cgroup2 mount has the pids controller")
	}
	path := testPath(t)
	err := m.Create(path, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr[int64](5)}})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "pids") {
		t.Errorf("Create with pids on a mount without it: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, strings.Split(path, "/")[1])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Create left its cgroup behind")
	}
	// Hugetlb limits are dropped, not fatal, where they cannot apply;
	// OOM counts need the memory controller.
	create(t, m, path, nil)
	if _, err := m.OOMKilled(path); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("OOMKilled without memory controller: %v", err)
	}
}

// fakeV2 lays out a cgroup2 tree of plain files under a temp dir, with the
// files the kernel would show for path once its controllers are enabled.
func fakeV2(t *testing.T, path string) (Manager, string) {
	t.Helper()
	root := t.TempDir()
	write := func(dir, file, content string) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := root
	for _, part := range append([]string{""}, strings.Split(path[1:], "/")...) {
		dir = filepath.Join(dir, part)
		write(dir, "cgroup.controllers", "cpuset cpu io memory hugetlb pids")
		write(dir, "cgroup.subtree_control", "")
	}
	for _, f := range []string{"cpu.weight", "cpuset.cpus", "cpuset.mems", "memory.max", "memory.swap.max",
		"memory.low", "memory.high", "pids.max", "hugetlb.2MB.max", "hugetlb.1GB.max"} {
		write(dir, f, "")
	}
	write(dir, "cpu.max", "max 100000")
	m, err := Open(Options{Version: 2, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return m, dir
}

func TestV2LimitFiles(t *testing.T) {
	path := "/kubepods/pod1/ctr"
	m, dir := fakeV2(t, path)
	r := &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Shares: ptr[uint64](1024), Quota: ptr[int64](50000), Cpus: "0-1", Mems: "0"},
		Memory: &specs.LinuxMemory{Limit: ptr[int64](64 << 20), Swap: ptr[int64](96 << 20), Reservation: ptr[int64](16 << 20)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](100)},
		HugepageLimits: []specs.LinuxHugepageLimit{
			{Pagesize: "2MB", Limit: 4 << 20}, {Pagesize: "1GB", Limit: 0},
		},
		Unified: map[string]string{"memory.high": "50331648"},
	}
	if err := m.Create(path, r); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"cpu.weight": "39", "cpu.max": "50000 100000", "cpuset.cpus": "0-1", "cpuset.mems": "0",
		"memory.max": "67108864", "memory.swap.max": "33554432", "memory.low": "16777216", "memory.high": "50331648",
		"pids.max": "100", "hugetlb.2MB.max": "4194304", "hugetlb.1GB.max": "0",
	} {
		if got := mustRead(t, dir, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	// Every ancestor enables the controllers in use for its children.
	root := m.(*v2).root
	for _, d := range []string{root, filepath.Join(root, "kubepods"), filepath.Join(root, "kubepods/pod1")} {
		if got := mustRead(t, d, "cgroup.subtree_control"); got != "+cpu +cpuset +memory +pids +hugetlb" {
			t.Errorf("%s/cgroup.subtree_control = %q", d, got)
		}
	}
	// Update changes only what it names; period alone keeps the quota.
	if err := m.Update(path, &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Period: ptr[uint64](200000)},
		Memory: &specs.LinuxMemory{Limit: ptr[int64](-1), Swap: ptr[int64](-1)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](-1)},
	}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"cpu.max": "50000 200000", "memory.max": "max", "memory.swap.max": "max", "pids.max": "max", "cpu.weight": "39",
	} {
		if got := mustRead(t, dir, file); got != want {
			t.Errorf("after update %s = %q, want %q", file, got, want)
		}
	}
	if err := m.Update(path, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](-1)}}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, dir, "cpu.max"); got != "max 200000" {
		t.Errorf("unlimited quota: cpu.max = %q", got)
	}
}

func TestV2BadResources(t *testing.T) {
	path := "/pod/ctr"
	m, _ := fakeV2(t, path)
	for name, r := range map[string]*specs.LinuxResources{
		"unified path":     {Unified: map[string]string{"../../memory.max": "1"}},
		"unified no dot":   {Unified: map[string]string{"memory": "1"}},
		"unified core":     {Unified: map[string]string{"cgroup.procs": "1"}},
		"swap below limit": {Memory: &specs.LinuxMemory{Limit: ptr[int64](100), Swap: ptr[int64](50)}},
		"swap no limit":    {Memory: &specs.LinuxMemory{Swap: ptr[int64](50)}},
		"hugepage size":    {HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "huge"}}},
	} {
		if err := m.Update(path, r); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", name, err)
		}
	}
	if err := m.Update("/nope/ctr", &specs.LinuxResources{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing cgroup: %v", err)
	}
}

// TestV2DeviceFilter attaches the eBPF device filter to a real cgroup2
// cgroup and opens devices from inside it.
func TestV2DeviceFilter(t *testing.T) {
	roottest.Require(t)
	m := realV2(t)
	path := testPath(t)
	nullOnly := []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: ptr[int64](1), Minor: ptr[int64](3), Access: "rwm"},
		{Allow: true, Type: "c", Major: ptr[int64](1), Access: "r"},
		{Allow: false, Type: "c", Major: ptr[int64](1), Minor: ptr[int64](8), Access: "w"},
	}
	create(t, m, path, &specs.LinuxResources{Devices: nullOnly})
	probe := func() string {
		h := startHeld(t, m, path, `for d in null zero random; do
			(: > /dev/$d) 2>/dev/null && echo $d-w; (: < /dev/$d) 2>/dev/null && echo $d-r; done`)
		h.release(t)
		if err := h.cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(h.stdout.String()), " ")
	}
	// null fully; any 1:* for reading, but random (1:8) denied writing.
	if got := probe(); got != "null-w null-r zero-r random-r" {
		t.Errorf("with the first rules: %q", got)
	}
	if err := m.Update(path, &specs.LinuxResources{Devices: DefaultDevices()}); err != nil {
		t.Fatal(err)
	}
	if got := probe(); got != "null-w null-r zero-w zero-r random-w random-r" {
		t.Errorf("with the default rules: %q", got)
	}
	cg, err := syscall.Open(filepath.Join(m.(*v2).root, mustPath(t, m, path)), syscall.O_DIRECTORY|syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(cg)
	if ids, err := deviceFilters(cg); err != nil || len(ids) != 1 {
		t.Errorf("attached filters after Update: %v, %v; want exactly one", ids, err)
	}
	err = m.Update(path, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Type: "x"}}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad device type: %v", err)
	}
}

// TestV2StatsFiles reads every figure Stats takes from a cgroup2 tree
// laid out as the kernel shows it.
func TestV2StatsFiles(t *testing.T) {
	path := "/kubepods/pod1/ctr"
	m, dir := fakeV2(t, path)
	for file, content := range map[string]string{
		"cpu.stat":            "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 900\n",
		"cpu.weight":          "39",
		"cpu.max":             "20000 100000",
		"memory.current":      "10485760",
		"memory.stat":         "anon 4096\nfile 8192\nfile_mapped 1024\nkernel 2048\ninactive_file 4096\npgfault 11\npgmajfault 2\n",
		"memory.max":          "67108864",
		"memory.low":          "16777216",
		"memory.peak":         "20971520",
		"memory.swap.current": "512",
		"memory.swap.max":     "33554432",
		"memory.events":       "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
		"pids.current":        "3",
		"pids.max":            "max",
		"io.stat":             "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=0 wbytes=512 rios=0 wios=1 dbytes=0 dios=0\n",
		"hugetlb.2MB.current": "2097152",
		"hugetlb.2MB.max":     "max",
		"cpu.pressure":        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=700\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := m.Stats(path)
	if err != nil {
		t.Fatal(err)
	}
	wantCPU := CPUStats{UsageNanos: 3000000, UserNanos: 2000000, SystemNanos: 1000000, Periods: 40, ThrottledPeriods: 7,
		ThrottledNanos: 900000, Shares: WeightToShares(39), PeriodMicros: 100000, QuotaMicros: 20000}
	if st.CPU != wantCPU {
		t.Errorf("cpu %+v, want %+v", st.CPU, wantCPU)
	}
	wantMem := MemoryStats{Usage: 10485760, WorkingSet: 10485760 - 4096, RSS: 4096, Cache: 8192, MappedFile: 1024, KernelUsage: 2048,
		MaxUsage: 20971520, Swap: 512, Limit: 64 << 20, Reservation: 16 << 20, SwapLimit: 96 << 20, Failcnt: 5,
		PageFaults: 11, MajorPageFaults: 2, OOMKills: 1}
	if st.Memory != wantMem {
		t.Errorf("memory %+v, want %+v", st.Memory, wantMem)
	}
	if st.Pids != (PidsStats{Current: 3}) {
		t.Errorf("pids %+v", st.Pids)
	}
	wantIO := []IODevice{{Major: 8, ReadBytes: 4096, WriteBytes: 8192, Reads: 1, Writes: 2}, {Major: 253, Minor: 1, WriteBytes: 512, Writes: 1}}
	if !slices.Equal(st.IO, wantIO) {
		t.Errorf("io %+v, want %+v", st.IO, wantIO)
	}
	if len(st.Hugetlb) != 1 || st.Hugetlb["2MB"] != (HugetlbStats{Usage: 2 << 20}) {
		t.Errorf("hugetlb %+v", st.Hugetlb)
	}
	if p := st.Pressure; p.CPU == nil || *p.CPU != (PSI{SomeMicros: 1500, FullMicros: 700}) || p.Memory != nil || p.IO != nil {
		t.Errorf("pressure cpu %+v memory %+v io %+v", p.CPU, p.Memory, p.IO)
	}
	// Unlimited CPU and swap read back as -1 and 0.
	for file, content := range map[string]string{"cpu.max": "max 100000", "memory.swap.max": "max"} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if st, err = m.Stats(path); err != nil || st.CPU.QuotaMicros != -1 || st.Memory.SwapLimit != 0 {
		t.Errorf("unlimited: quota %d swap limit %d, %v", st.CPU.QuotaMicros, st.Memory.SwapLimit, err)
	}
}
