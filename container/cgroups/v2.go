package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// v2 manages cgroups in the unified hierarchy mounted at root.
type v2 struct {
	root string
	conv func(string) (string, error)
}

func (m *v2) Version() int { return 2 }

func (m *v2) Path(path string) (string, error) { return m.conv(path) }

// dir converts and joins, and reports a missing cgroup as ErrNotFound.
func (m *v2) dir(path string) (string, error) {
	p, err := m.conv(path)
	if err != nil {
		return "", err
	}
	d := filepath.Join(m.root, p)
	if _, err := os.Stat(d); err != nil {
		return "", notFound(path, err)
	}
	return d, nil
}

func (m *v2) Create(path string, r *specs.LinuxResources) error {
	p, err := m.conv(path)
	if err != nil {
		return err
	}
	created, err := mkdirPath(m.root, p, nil)
	if err != nil {
		return err
	}
	// A cgroup has the files of the controllers enabled for it only, limits
	// or not: all of them are enabled down to it (as runc does), so that a
	// container without limits still shows its memory, pids and I/O to
	// kubelet's stats. One that cannot be enabled here fails only a limit
	// that needs it, in Update.
	if avail, err := readFile(m.root, "cgroup.controllers"); err == nil {
		if _, err := m.enable(p, strings.Fields(avail)); err != nil {
			klog.V(2).InfoS("Not every cgroup controller could be enabled", "cgroup", p, "err", err)
		}
	}
	if err := m.Update(path, r); err != nil {
		removeAll(created)
		return err
	}
	return nil
}

// enable turns the controllers on in cgroup.subtree_control of every
// ancestor of p, so that p gets their files. Controllers the hierarchy
// does not offer are an error, except hugetlb (see Update).
func (m *v2) enable(p string, controllers []string) ([]string, error) {
	if len(controllers) == 0 {
		return nil, nil
	}
	avail, err := readFile(m.root, "cgroup.controllers")
	if err != nil {
		return nil, fmt.Errorf("read root cgroup.controllers: %w", err)
	}
	var use []string
	for _, c := range controllers {
		switch {
		case slices.Contains(strings.Fields(avail), c):
			use = append(use, c)
		case c == "hugetlb":
		default:
			return nil, fmt.Errorf("the %s controller is not available in the cgroup v2 hierarchy at %s (it offers %q): %w",
				c, m.root, avail, errdefs.ErrFailedPrecondition)
		}
	}
	dir := m.root
	for _, part := range strings.Split(p[1:], "/") {
		enabled, err := readFile(dir, "cgroup.subtree_control")
		if err != nil {
			return nil, fmt.Errorf("read %s/cgroup.subtree_control: %w", dir, err)
		}
		var add []string
		for _, c := range use {
			if !slices.Contains(strings.Fields(enabled), c) {
				add = append(add, "+"+c)
			}
		}
		if len(add) > 0 {
			if err := writeFile(dir, "cgroup.subtree_control", strings.Join(add, " ")); err != nil {
				return nil, err
			}
		}
		dir = filepath.Join(dir, part)
	}
	return use, nil
}

func (m *v2) Apply(path string, pid int) error {
	d, err := m.dir(path)
	if err != nil {
		return err
	}
	return writeFile(d, "cgroup.procs", strconv.Itoa(pid))
}

func (m *v2) Update(path string, r *specs.LinuxResources) error {
	p, err := m.conv(path)
	if err != nil || r == nil {
		return err
	}
	d, err := m.dir(path)
	if err != nil {
		return err
	}
	writes, err := m.v2Writes(d, r)
	if err != nil {
		return err
	}
	return m.apply(p, d, writes, r.Devices)
}

// apply enables the controllers of writes along p, makes the writes in
// the cgroup d (at p) and sets the device filter when there are rules.
func (m *v2) apply(p, d string, writes []kv, devices []specs.LinuxDeviceCgroup) error {
	enabled, err := m.enable(p, controllersOf(writes))
	if err != nil {
		return err
	}
	for _, w := range writes {
		c, _, _ := strings.Cut(w.file, ".")
		if !slices.Contains(enabled, c) {
			// Only hugetlb may be absent: kubelet sends a limit for every
			// page size it knows of, whether the host can enforce it or not.
			klog.V(2).InfoS("Hugetlb controller not available, limit ignored", "cgroup", p, "file", w.file)
			continue
		}
		if err := writeFile(d, w.file, w.value); err != nil {
			return err
		}
	}
	if len(devices) > 0 {
		return setDeviceFilter(d, devices)
	}
	return nil
}

// Writes lists the files Update (and Create) write for r, in order; device
// rules are an eBPF program, not a file write, and are not listed.
func (m *v2) Writes(path string, r *specs.LinuxResources) ([]FileWrite, error) {
	p, err := m.conv(path)
	if err != nil || r == nil {
		return nil, err
	}
	writes, err := m.v2Writes(filepath.Join(m.root, p), r)
	if err != nil {
		return nil, err
	}
	// As apply: the controllers enabled above first; hugetlb limits only
	// where there is a hugetlb controller.
	avail, _ := readFile(m.root, "cgroup.controllers")
	writes = slices.DeleteFunc(writes, func(w kv) bool {
		return strings.HasPrefix(w.file, "hugetlb.") && !slices.Contains(strings.Fields(avail), "hugetlb")
	})
	var out []FileWrite
	if cs := controllersOf(writes); len(cs) > 0 {
		out = append(out, FileWrite{Root: m.root, File: "cgroup.subtree_control", Value: "+" + strings.Join(cs, " +"), Ancestors: true})
	}
	for _, w := range writes {
		out = append(out, FileWrite{Root: m.root, File: w.file, Value: w.value})
	}
	return out, nil
}

// controllersOf lists the controllers whose files writes name, in order.
func controllersOf(writes []kv) []string {
	var controllers []string
	for _, w := range writes {
		c, _, _ := strings.Cut(w.file, ".")
		if !slices.Contains(controllers, c) {
			controllers = append(controllers, c)
		}
	}
	return controllers
}

// v2Writes translates OCI resources (v1 terms) and the unified map into
// v2 file writes. Unified keys come last, so they override conversions.
func (m *v2) v2Writes(d string, r *specs.LinuxResources) ([]kv, error) {
	var writes []kv
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares != 0 {
			writes = append(writes, kv{"cpu.weight", strconv.FormatUint(SharesToWeight(*c.Shares), 10)})
		}
		if (c.Quota != nil && *c.Quota != 0) || (c.Period != nil && *c.Period != 0) {
			quota, period := "max", "100000"
			if cur, err := readFile(d, "cpu.max"); err == nil {
				if f := strings.Fields(cur); len(f) == 2 {
					quota, period = f[0], f[1]
				}
			}
			if c.Quota != nil && *c.Quota > 0 {
				quota = strconv.FormatInt(*c.Quota, 10)
			} else if c.Quota != nil && *c.Quota < 0 {
				quota = "max"
			}
			if c.Period != nil && *c.Period != 0 {
				period = strconv.FormatUint(*c.Period, 10)
			}
			writes = append(writes, kv{"cpu.max", quota + " " + period})
		}
		if c.Cpus != "" {
			writes = append(writes, kv{"cpuset.cpus", c.Cpus})
		}
		if c.Mems != "" {
			writes = append(writes, kv{"cpuset.mems", c.Mems})
		}
	}
	if mem := r.Memory; mem != nil {
		if mem.Limit != nil && *mem.Limit != 0 {
			writes = append(writes, kv{"memory.max", limitValue(*mem.Limit)})
		}
		if mem.Swap != nil && *mem.Swap != 0 {
			// OCI's swap counts memory plus swap; v2 limits swap alone.
			switch {
			case *mem.Swap < 0:
				writes = append(writes, kv{"memory.swap.max", "max"})
			case mem.Limit == nil || *mem.Limit <= 0 || *mem.Swap < *mem.Limit:
				return nil, fmt.Errorf("memory+swap limit %d needs a memory limit no larger than it: %w",
					*mem.Swap, errdefs.ErrInvalidArgument)
			default:
				writes = append(writes, kv{"memory.swap.max", strconv.FormatInt(*mem.Swap-*mem.Limit, 10)})
			}
		}
		if mem.Reservation != nil && *mem.Reservation != 0 {
			writes = append(writes, kv{"memory.low", limitValue(*mem.Reservation)})
		}
	}
	if r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit != 0 {
		writes = append(writes, kv{"pids.max", pidsMax(*r.Pids.Limit)})
	}
	for _, h := range r.HugepageLimits {
		f, err := hugepageFile(h.Pagesize)
		if err != nil {
			return nil, err
		}
		writes = append(writes, kv{f + ".max", strconv.FormatUint(h.Limit, 10)})
	}
	keys := make([]string, 0, len(r.Unified))
	for k := range r.Unified {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		c, rest, ok := strings.Cut(k, ".")
		if !ok || c == "" || rest == "" || c == "cgroup" || strings.ContainsAny(k, "/\x00") {
			return nil, fmt.Errorf("unified resource %q: want a controller file such as memory.high: %w",
				k, errdefs.ErrInvalidArgument)
		}
		writes = append(writes, kv{k, r.Unified[k]})
	}
	return writes, nil
}

func limitValue(n int64) string {
	if n < 0 {
		return "max"
	}
	return strconv.FormatInt(n, 10)
}

func (m *v2) Stats(path string) (*Stats, error) {
	s, err := m.Usage(path)
	if err != nil {
		return nil, err
	}
	d, _ := m.dir(path) // Usage has found it
	// Files of controllers not enabled for this cgroup are absent; their
	// figures stay zero.
	s.CPU.QuotaMicros = -1
	if st, err := readKeyed(d, "cpu.stat"); err == nil {
		s.CPU.UserNanos, s.CPU.SystemNanos = st["user_usec"]*1000, st["system_usec"]*1000
		s.CPU.Periods, s.CPU.ThrottledPeriods, s.CPU.ThrottledNanos = st["nr_periods"], st["nr_throttled"], st["throttled_usec"]*1000
	}
	if w, err := readUint(d, "cpu.weight"); err == nil {
		s.CPU.Shares = WeightToShares(w)
	}
	if cpuMax, err := readFile(d, "cpu.max"); err == nil {
		quota, period, _ := strings.Cut(cpuMax, " ")
		s.CPU.PeriodMicros, _ = strconv.ParseUint(period, 10, 64)
		if q, err := strconv.ParseInt(quota, 10, 64); err == nil {
			s.CPU.QuotaMicros = q
		}
	}
	v2MemoryExtra(d, &s.Memory)
	s.Pids.Limit, _ = readUint(d, "pids.max")
	if st, err := fsutil.ReadKernelFile(filepath.Join(d, "io.stat")); err == nil {
		s.IO = parseIOStat(string(st))
	}
	for _, size := range hugepageSizes(d, "current") {
		usage, _ := readUint(d, "hugetlb."+size+".current")
		if s.Hugetlb == nil {
			s.Hugetlb = map[string]HugetlbStats{}
		}
		s.Hugetlb[size] = HugetlbStats{Usage: usage}
	}
	return s, nil
}

func (m *v2) Usage(path string) (*Stats, error) {
	d, err := m.dir(path)
	if err != nil {
		return nil, err
	}
	s := &Stats{}
	if st, err := readKeyed(d, "cpu.stat"); err == nil {
		s.CPU.UsageNanos = st["usage_usec"] * 1000
	}
	if usage, err := readUint(d, "memory.current"); err == nil {
		if err := v2MemoryUsage(d, usage, &s.Memory); err != nil {
			return nil, notFound(path, err)
		}
	}
	s.Pids.Current, _ = readUint(d, "pids.current")
	s.Pressure = v2Pressure(d)
	return s, nil
}

func v2Pressure(d string) PressureStats {
	return PressureStats{CPU: readPSI(d, "cpu.pressure"), Memory: readPSI(d, "memory.pressure"), IO: readPSI(d, "io.pressure")}
}

// v2MemoryUsage reads the memory figures Usage reports.
func v2MemoryUsage(d string, usage uint64, mem *MemoryStats) error {
	st, err := readKeyed(d, "memory.stat")
	if err != nil {
		return err
	}
	mem.Usage = usage
	mem.RSS, mem.Cache, mem.MappedFile = st["anon"], st["file"], st["file_mapped"]
	mem.KernelUsage = st["kernel"] // kernel 6.1+
	mem.PageFaults, mem.MajorPageFaults = st["pgfault"], st["pgmajfault"]
	mem.WorkingSet = workingSet(usage, st["inactive_file"])
	mem.Limit, _ = readUint(d, "memory.max")
	mem.Swap, _ = readUint(d, "memory.swap.current")
	// v2 limits swap alone; report memory+swap as v1 does, when both are set.
	if swapMax, err := readUint(d, "memory.swap.max"); err == nil && swapMax > 0 && mem.Limit > 0 {
		mem.SwapLimit = mem.Limit + swapMax
	}
	return nil
}

// v2MemoryExtra reads the memory figures Stats adds to Usage's.
func v2MemoryExtra(d string, mem *MemoryStats) {
	mem.Reservation, _ = readUint(d, "memory.low")
	mem.MaxUsage, _ = readUint(d, "memory.peak")
	if ev, err := readKeyed(d, "memory.events"); err == nil {
		mem.OOMKills, mem.Failcnt = ev["oom_kill"], ev["max"]
	}
}

// parseIOStat reads io.stat lines: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...".
func parseIOStat(data string) []IODevice {
	var devs []IODevice
	for line := range strings.SplitSeq(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		major, minor, ok := parseDevice(f[0])
		if !ok {
			continue
		}
		x := ioDevice(&devs, major, minor)
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseUint(v, 10, 64)
			switch k {
			case "rbytes":
				x.ReadBytes = n
			case "wbytes":
				x.WriteBytes = n
			case "rios":
				x.Reads = n
			case "wios":
				x.Writes = n
			}
		}
	}
	return devs
}

func (m *v2) Freeze(path string) error { return m.setFrozen(path, "1") }

func (m *v2) Thaw(path string) error { return m.setFrozen(path, "0") }

// setFrozen writes cgroup.freeze and waits until cgroup.events agrees.
func (m *v2) setFrozen(path, state string) error {
	d, err := m.dir(path)
	if err != nil {
		return err
	}
	if err := writeFile(d, "cgroup.freeze", state); err != nil {
		return err
	}
	return retry(func() error {
		ev, err := readKeyed(d, "cgroup.events")
		if err != nil {
			return err
		}
		if strconv.FormatUint(ev["frozen"], 10) != state {
			return fmt.Errorf("cgroup %s: frozen is %d, want %s: %w", path, ev["frozen"], state, errdefs.ErrDeadlineExceeded)
		}
		return nil
	})
}

func (m *v2) Pids(path string) ([]int, error) {
	d, err := m.dir(path)
	if err != nil {
		return nil, err
	}
	return readPids(d)
}

// KillAll uses cgroup.kill (Linux 5.14+), which kills the whole subtree
// atomically; older kernels get freeze, kill, thaw.
func (m *v2) KillAll(path string) error {
	d, err := m.dir(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(d, "cgroup.kill")); err == nil {
		return writeFile(d, "cgroup.kill", "1")
	}
	if err := m.Freeze(path); err != nil {
		return err
	}
	pids, err := subtreePids(d)
	if err == nil {
		err = killPids(pids)
	}
	if terr := m.Thaw(path); err == nil {
		err = terr
	}
	return err
}

func (m *v2) OOMKilled(path string) (bool, error) {
	d, err := m.dir(path)
	if err != nil {
		return false, err
	}
	ev, err := readKeyed(d, "memory.events")
	if errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("cgroup %s has no memory controller: %w", path, errdefs.ErrFailedPrecondition)
	}
	return ev["oom_kill"] > 0, err
}

func (m *v2) Destroy(path string) error {
	d, err := m.dir(path)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := m.KillAll(path); err != nil {
		return err
	}
	if err := waitEmpty(path, func() ([]int, error) { return subtreePids(d) }); err != nil {
		return err
	}
	return removeTree(d)
}
