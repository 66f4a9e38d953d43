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
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// v1 manages a cgroup as one directory per mounted hierarchy.
type v1 struct {
	conv func(string) (string, error)
	// hierarchies are the distinct mount points (co-mounted controllers
	// such as cpu,cpuacct share one), the hybrid layout's unified one too.
	hierarchies []string
	// mounts maps a controller name to its hierarchy.
	mounts map[string]string
	// unified is the cgroup2 mount of a hybrid host (systemd mounts it at
	// /sys/fs/cgroup/unified), "" on a pure v1 host. It holds no
	// controller, but its cgroups have pressure stall information: a
	// cgroup is made and joined there too, as runc's fs manager does.
	unified string
}

func openV1(root string, conv func(string) (string, error)) (*v1, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("cgroup v1 root: %w", err)
	}
	m := &v1{conv: conv, mounts: map[string]string{}}
	for _, e := range entries {
		dir, err := filepath.EvalSymlinks(filepath.Join(root, e.Name()))
		if err != nil {
			continue
		}
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) != nil {
			continue
		}
		if st.Type == unix.CGROUP2_SUPER_MAGIC && m.unified == "" {
			m.unified = dir
			continue
		}
		if st.Type != unix.CGROUP_SUPER_MAGIC {
			continue
		}
		for _, c := range strings.Split(e.Name(), ",") {
			m.mounts[c] = dir
		}
		if !slices.Contains(m.hierarchies, dir) {
			m.hierarchies = append(m.hierarchies, dir)
		}
	}
	if len(m.hierarchies) == 0 {
		return nil, fmt.Errorf("no cgroup v1 hierarchy mounted below %s: %w", root, errdefs.ErrFailedPrecondition)
	}
	if m.unified != "" {
		m.hierarchies = append(m.hierarchies, m.unified)
	}
	return m, nil
}

func (m *v1) Version() int { return 1 }

func (m *v1) Path(path string) (string, error) { return m.conv(path) }

// dir is the cgroup's directory in the hierarchy of controller.
func (m *v1) dir(controller, p string) (string, bool) {
	h, ok := m.mounts[controller]
	return filepath.Join(h, p), ok
}

func (m *v1) Create(path string, r *specs.LinuxResources) error {
	p, err := m.conv(path)
	if err != nil {
		return err
	}
	var created []string
	for _, h := range m.hierarchies {
		var seed func(string) error
		if h == m.mounts["cpuset"] {
			seed = seedCpuset
		}
		made, err := mkdirPath(h, p, seed)
		if err != nil {
			removeAll(created)
			return err
		}
		created = append(created, made...)
	}
	if err := m.Update(path, r); err != nil {
		removeAll(created)
		return err
	}
	return nil
}

// seedCpuset copies the parent's cpus and mems into a new v1 cpuset
// cgroup: they start empty, and no process may join an empty cpuset.
func seedCpuset(dir string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := readFile(dir, f)
		if err != nil {
			return fmt.Errorf("read %s/%s: %w", dir, f, err)
		}
		if cur != "" {
			continue
		}
		parent, err := readFile(filepath.Dir(dir), f)
		if err != nil {
			return fmt.Errorf("read parent %s: %w", f, err)
		}
		if err := writeFile(dir, f, parent); err != nil {
			return err
		}
	}
	return nil
}

func (m *v1) Apply(path string, pid int) error {
	p, err := m.conv(path)
	if err != nil {
		return err
	}
	for _, h := range m.hierarchies {
		if err := writeFile(filepath.Join(h, p), "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

func (m *v1) Update(path string, r *specs.LinuxResources) error {
	p, err := m.conv(path)
	if err != nil || r == nil {
		return err
	}
	writes, err := m.writes(p, r)
	if err != nil {
		return err
	}
	for _, w := range writes {
		if err := writeFile(filepath.Join(w.Root, p), w.File, w.Value); err != nil {
			return err
		}
	}
	return nil
}

// Writes lists the files Update (and Create) write for r, in order.
func (m *v1) Writes(path string, r *specs.LinuxResources) ([]FileWrite, error) {
	p, err := m.conv(path)
	if err != nil || r == nil {
		return nil, err
	}
	return m.writes(p, r)
}

// writes translates r into v1 file writes, controller by controller in a
// fixed order; each controller's writes go to its hierarchy, which must be
// mounted when there are any.
func (m *v1) writes(p string, r *specs.LinuxResources) ([]FileWrite, error) {
	if len(r.Unified) > 0 {
		return nil, fmt.Errorf("unified (cgroup v2) resources on a cgroup v1 host: %w", errdefs.ErrInvalidArgument)
	}
	var out []FileWrite
	for _, c := range []struct {
		controller string
		writes     func() ([]kv, error) // none for what r leaves unset
	}{
		{"cpu", func() ([]kv, error) { return cpuWrites(r.CPU), nil }},
		{"cpuset", func() ([]kv, error) { return cpusetWrites(r.CPU), nil }},
		{"memory", func() ([]kv, error) { return m.memoryWrites(p, r.Memory) }},
		{"pids", func() ([]kv, error) { return pidsWrites(r.Pids), nil }},
		{"hugetlb", func() ([]kv, error) { return m.hugetlbWrites(p, r.HugepageLimits) }},
		{"devices", func() ([]kv, error) { return deviceWrites(r.Devices) }},
	} {
		writes, err := c.writes()
		if err != nil {
			return nil, err
		}
		if len(writes) == 0 {
			continue
		}
		h, ok := m.mounts[c.controller]
		if !ok {
			return nil, notMounted(c.controller)
		}
		for _, w := range writes {
			out = append(out, FileWrite{Root: h, File: w.file, Value: w.value})
		}
	}
	return out, nil
}

// cpuWrites are the cpu controller's: shares, CFS and realtime periods.
func cpuWrites(c *specs.LinuxCPU) []kv {
	if c == nil {
		return nil
	}
	var writes []kv
	if c.Shares != nil && *c.Shares != 0 {
		writes = append(writes, kv{"cpu.shares", strconv.FormatUint(*c.Shares, 10)})
	}
	if c.Period != nil && *c.Period != 0 {
		writes = append(writes, kv{"cpu.cfs_period_us", strconv.FormatUint(*c.Period, 10)})
	}
	if c.Quota != nil && *c.Quota != 0 {
		writes = append(writes, kv{"cpu.cfs_quota_us", strconv.FormatInt(*c.Quota, 10)})
	}
	if c.RealtimePeriod != nil && *c.RealtimePeriod != 0 {
		writes = append(writes, kv{"cpu.rt_period_us", strconv.FormatUint(*c.RealtimePeriod, 10)})
	}
	if c.RealtimeRuntime != nil && *c.RealtimeRuntime != 0 {
		writes = append(writes, kv{"cpu.rt_runtime_us", strconv.FormatInt(*c.RealtimeRuntime, 10)})
	}
	return writes
}

// cpusetWrites are the cpuset controller's: the CPUs and memory nodes.
func cpusetWrites(c *specs.LinuxCPU) []kv {
	if c == nil {
		return nil
	}
	var writes []kv
	if c.Cpus != "" {
		writes = append(writes, kv{"cpuset.cpus", c.Cpus})
	}
	if c.Mems != "" {
		writes = append(writes, kv{"cpuset.mems", c.Mems})
	}
	return writes
}

// memoryWrites are the memory controller's for the cgroup p (see memory);
// they depend on its current files, so the controller must be mounted
// even when mem sets nothing.
func (m *v1) memoryWrites(p string, mem *specs.LinuxMemory) ([]kv, error) {
	if mem == nil {
		return nil, nil
	}
	d, ok := m.dir("memory", p)
	if !ok {
		return nil, notMounted("memory")
	}
	return m.memory(d, mem)
}

// pidsWrites is the pids controller's limit.
func pidsWrites(pids *specs.LinuxPids) []kv {
	if pids == nil || pids.Limit == nil || *pids.Limit == 0 {
		return nil
	}
	return []kv{{"pids.max", pidsMax(*pids.Limit)}}
}

// hugetlbWrites are the hugetlb controller's limits, one per page size;
// none without the controller.
func (m *v1) hugetlbWrites(p string, limits []specs.LinuxHugepageLimit) ([]kv, error) {
	_, ok := m.mounts["hugetlb"]
	var writes []kv
	for _, h := range limits {
		f, err := hugepageFile(h.Pagesize)
		if err != nil {
			return nil, err
		}
		if !ok {
			// kubelet sends a limit for every page size it knows;
			// without the controller none can be used either.
			klog.V(2).InfoS("Hugetlb controller not mounted, limit ignored", "cgroup", p, "pagesize", h.Pagesize)
			continue
		}
		writes = append(writes, kv{f + ".limit_in_bytes", strconv.FormatUint(h.Limit, 10)})
	}
	return writes, nil
}

// deviceWrites are the devices controller's rules, in order, each checked
// first.
func deviceWrites(devices []specs.LinuxDeviceCgroup) ([]kv, error) {
	var writes []kv
	for _, dev := range devices {
		if _, _, err := deviceAccess(dev); err != nil {
			return nil, err
		}
		file := "devices.deny"
		if dev.Allow {
			file = "devices.allow"
		}
		writes = append(writes, kv{file, deviceRule(dev)})
	}
	return writes, nil
}

func notMounted(controller string) error {
	return fmt.Errorf("the %s cgroup controller is not mounted: %w", controller, errdefs.ErrFailedPrecondition)
}

type kv struct{ file, value string }

func pidsMax(limit int64) string {
	if limit < 0 {
		return "max"
	}
	return strconv.FormatInt(limit, 10)
}

// deviceRule formats a v1 devices.allow/deny line ("c 1:3 rwm").
func deviceRule(d specs.LinuxDeviceCgroup) string {
	num := func(n *int64) string {
		if n == nil || *n < 0 {
			return "*"
		}
		return strconv.FormatInt(*n, 10)
	}
	typ, access := d.Type, d.Access
	if typ == "" {
		typ = "a"
	}
	if access == "" {
		access = "rwm"
	}
	return fmt.Sprintf("%s %s:%s %s", typ, num(d.Major), num(d.Minor), access)
}

// memory lists the writes of memory settings for the cgroup at d. OCI's
// swap is memory plus swap, which is v1's memsw; the kernel insists memsw >=
// limit at every moment, so the order of the two writes depends on whether
// the limit grows.
func (m *v1) memory(d string, mem *specs.LinuxMemory) ([]kv, error) {
	_, err := os.Stat(filepath.Join(d, "memory.memsw.limit_in_bytes"))
	hasMemsw := err == nil
	swap := mem.Swap != nil && *mem.Swap != 0
	if swap && !hasMemsw {
		klog.V(2).InfoS("Swap accounting is off, memory+swap limit ignored", "cgroup", d, "swap", *mem.Swap)
		swap = false
	}
	var writes []kv
	if mem.Limit != nil && *mem.Limit != 0 {
		writes = append(writes, kv{"memory.limit_in_bytes", strconv.FormatInt(*mem.Limit, 10)})
	}
	if swap {
		w := kv{"memory.memsw.limit_in_bytes", strconv.FormatInt(*mem.Swap, 10)}
		cur, err := readUint(d, "memory.memsw.limit_in_bytes")
		if err != nil {
			return nil, fmt.Errorf("read memsw limit: %w", err)
		}
		if *mem.Swap < 0 || uint64(*mem.Swap) > cur {
			writes = append([]kv{w}, writes...)
		} else {
			writes = append(writes, w)
		}
	}
	if mem.Reservation != nil && *mem.Reservation != 0 {
		writes = append(writes, kv{"memory.soft_limit_in_bytes", strconv.FormatInt(*mem.Reservation, 10)})
	}
	if mem.Swappiness != nil {
		writes = append(writes, kv{"memory.swappiness", strconv.FormatUint(*mem.Swappiness, 10)})
	}
	if mem.DisableOOMKiller != nil && *mem.DisableOOMKiller {
		writes = append(writes, kv{"memory.oom_control", "1"})
	}
	return writes, nil
}

func (m *v1) Stats(path string) (*Stats, error) {
	s, err := m.Usage(path)
	if err != nil {
		return nil, err
	}
	p, _ := m.conv(path) // Usage has converted it
	if d, ok := m.dir("cpuacct", p); ok {
		s.CPU.UserNanos, _ = readUint(d, "cpuacct.usage_user")
		s.CPU.SystemNanos, _ = readUint(d, "cpuacct.usage_sys")
	}
	if d, ok := m.dir("cpu", p); ok {
		if st, err := readKeyed(d, "cpu.stat"); err == nil {
			s.CPU.Periods, s.CPU.ThrottledPeriods, s.CPU.ThrottledNanos = st["nr_periods"], st["nr_throttled"], st["throttled_time"]
		}
		s.CPU.Shares, _ = readUint(d, "cpu.shares")
		s.CPU.PeriodMicros, _ = readUint(d, "cpu.cfs_period_us")
		s.CPU.QuotaMicros = -1
		if q, err := readFile(d, "cpu.cfs_quota_us"); err == nil {
			if n, err := strconv.ParseInt(q, 10, 64); err == nil && n > 0 {
				s.CPU.QuotaMicros = n
			}
		}
	}
	if d, ok := m.dir("memory", p); ok {
		v1MemoryExtra(d, &s.Memory)
	}
	if d, ok := m.dir("pids", p); ok {
		s.Pids.Limit, _ = readUint(d, "pids.max")
	}
	if d, ok := m.dir("blkio", p); ok {
		s.IO = v1IO(d)
	}
	if d, ok := m.dir("hugetlb", p); ok {
		for _, size := range hugepageSizes(d, "usage_in_bytes") {
			var h HugetlbStats
			h.Usage, _ = readUint(d, "hugetlb."+size+".usage_in_bytes")
			h.MaxUsage, _ = readUint(d, "hugetlb."+size+".max_usage_in_bytes")
			if s.Hugetlb == nil {
				s.Hugetlb = map[string]HugetlbStats{}
			}
			s.Hugetlb[size] = h
		}
	}
	return s, nil
}

// v1Unlimited is the smallest value v1 shows for "no limit" (the largest
// page-aligned int64, 9223372036854771712 with 4k pages).
const v1Unlimited = 1 << 62

// Usage reads what the CRI's stats report (see Manager): 6 files and
// pressure where Stats reads some 30.
func (m *v1) Usage(path string) (*Stats, error) {
	p, err := m.conv(path)
	if err != nil {
		return nil, err
	}
	s := &Stats{}
	if d, ok := m.dir("cpuacct", p); ok {
		if s.CPU.UsageNanos, err = readUint(d, "cpuacct.usage"); err != nil {
			return nil, notFound(path, err)
		}
	}
	if d, ok := m.dir("memory", p); ok {
		if err := v1MemoryUsage(d, &s.Memory); err != nil {
			return nil, notFound(path, err)
		}
	}
	if d, ok := m.dir("pids", p); ok {
		if s.Pids.Current, err = readUint(d, "pids.current"); err != nil {
			return nil, notFound(path, err)
		}
	}
	m.pressure(p, &s.Pressure)
	return s, nil
}

// pressure reads the cgroup's pressure stall information: v1's own files,
// which need the psi=1 cgroup1 boot option, and, on a hybrid host, those
// of its cgroup in the unified hierarchy, where the kernel keeps it.
func (m *v1) pressure(p string, ps *PressureStats) {
	for _, r := range []struct {
		controller, file string
		psi              **PSI
	}{{"cpu", "cpu.pressure", &ps.CPU}, {"memory", "memory.pressure", &ps.Memory}, {"blkio", "io.pressure", &ps.IO}} {
		if d, ok := m.dir(r.controller, p); ok {
			*r.psi = readPSI(d, r.file)
		}
		if m.unified != "" {
			if psi := readPSI(filepath.Join(m.unified, p), r.file); psi != nil {
				*r.psi = psi
			}
		}
	}
}

// v1MemoryUsage reads the memory figures Usage reports.
func v1MemoryUsage(d string, mem *MemoryStats) error {
	var err error
	if mem.Usage, err = readUint(d, "memory.usage_in_bytes"); err != nil {
		return err
	}
	st, err := readKeyed(d, "memory.stat")
	if err != nil {
		return err
	}
	mem.RSS, mem.Cache, mem.MappedFile = st["total_rss"], st["total_cache"], st["total_mapped_file"]
	mem.Swap = st["total_swap"]
	mem.PageFaults, mem.MajorPageFaults = st["total_pgfault"], st["total_pgmajfault"]
	mem.WorkingSet = workingSet(mem.Usage, st["total_inactive_file"])
	mem.Limit = v1Limit(d, "memory.limit_in_bytes")
	mem.SwapLimit = v1Limit(d, "memory.memsw.limit_in_bytes") // absent without swap accounting
	return nil
}

// v1Limit is a limit file's value, 0 for none.
func v1Limit(d, file string) uint64 {
	if n, err := readUint(d, file); err == nil && n < v1Unlimited {
		return n
	}
	return 0
}

// v1MemoryExtra reads the memory figures Stats adds to Usage's.
func v1MemoryExtra(d string, mem *MemoryStats) {
	mem.Reservation = v1Limit(d, "memory.soft_limit_in_bytes")
	mem.MaxUsage, _ = readUint(d, "memory.max_usage_in_bytes")
	mem.Failcnt, _ = readUint(d, "memory.failcnt")
	mem.KernelUsage, _ = readUint(d, "memory.kmem.usage_in_bytes")
	if oom, err := readKeyed(d, "memory.oom_control"); err == nil {
		mem.OOMKills = oom["oom_kill"]
	}
}

// v1IO reads the blkio throttle counters, which the kernel keeps on every
// queue ("8:0 Read 4096" lines; the CFQ files are gone with blk-mq).
func v1IO(d string) []IODevice {
	const bytesFile, opsFile = "blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"
	var devs []IODevice
	for _, file := range []string{bytesFile, opsFile} {
		b, err := fsutil.ReadKernelFile(filepath.Join(d, file))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			fields := strings.Fields(line)
			if len(fields) != 3 {
				continue // the closing "Total n"
			}
			major, minor, ok := parseDevice(fields[0])
			n, err := strconv.ParseUint(fields[2], 10, 64)
			if !ok || err != nil || (fields[1] != "Read" && fields[1] != "Write") {
				continue
			}
			x := ioDevice(&devs, major, minor)
			switch {
			case file == bytesFile && fields[1] == "Read":
				x.ReadBytes = n
			case file == bytesFile:
				x.WriteBytes = n
			case fields[1] == "Read":
				x.Reads = n
			default:
				x.Writes = n
			}
		}
	}
	return devs
}

func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}

// notFound marks a missing cgroup as ErrNotFound.
func notFound(path string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cgroup %s: %w", path, errdefs.ErrNotFound)
	}
	return fmt.Errorf("cgroup %s: %w", path, err)
}

func (m *v1) Freeze(path string) error { return m.setFreezer(path, "FROZEN") }

func (m *v1) Thaw(path string) error { return m.setFreezer(path, "THAWED") }

// setFreezer writes the state and waits for it: freezing is asynchronous
// (FREEZING) while tasks reach a safe point; the write is repeated, as
// that retries tasks that were busy.
func (m *v1) setFreezer(path, state string) error {
	p, err := m.conv(path)
	if err != nil {
		return err
	}
	d, ok := m.dir("freezer", p)
	if !ok {
		return fmt.Errorf("the freezer cgroup controller is not mounted: %w", errdefs.ErrFailedPrecondition)
	}
	return retry(func() error {
		if err := writeFile(d, "freezer.state", state); err != nil {
			return notFound(path, err)
		}
		got, err := readFile(d, "freezer.state")
		if err != nil {
			return err
		}
		if got != state {
			return fmt.Errorf("cgroup %s is %s, not %s: %w", path, got, state, errdefs.ErrDeadlineExceeded)
		}
		return nil
	})
}

func (m *v1) Pids(path string) ([]int, error) {
	p, err := m.conv(path)
	if err != nil {
		return nil, err
	}
	h := m.hierarchies[0]
	if d, ok := m.mounts["pids"]; ok {
		h = d
	}
	pids, err := readPids(filepath.Join(h, p))
	if err != nil {
		return nil, notFound(path, err)
	}
	return pids, nil
}

// allPids is every process in the cgroup or below it, in any hierarchy (a
// process half-way through Apply may be in only some).
func (m *v1) allPids(p string) ([]int, error) {
	var all []int
	for _, h := range m.hierarchies {
		pids, err := subtreePids(filepath.Join(h, p))
		if err != nil {
			return nil, err
		}
		for _, pid := range pids {
			if !slices.Contains(all, pid) {
				all = append(all, pid)
			}
		}
	}
	return all, nil
}

// KillAll freezes the cgroup so nothing can fork meanwhile, kills every
// process in it and below, and thaws it so the kills take effect.
func (m *v1) KillAll(path string) error {
	p, err := m.conv(path)
	if err != nil {
		return err
	}
	frozen := false
	if d, ok := m.dir("freezer", p); ok {
		if _, err := os.Stat(d); err == nil {
			if err := m.Freeze(path); err != nil {
				return err
			}
			frozen = true
		}
	}
	pids, err := m.allPids(p)
	if err == nil {
		err = killPids(pids)
	}
	if frozen {
		if terr := m.Thaw(path); err == nil {
			err = terr
		}
	}
	return err
}

func (m *v1) OOMKilled(path string) (bool, error) {
	p, err := m.conv(path)
	if err != nil {
		return false, err
	}
	d, ok := m.dir("memory", p)
	if !ok {
		return false, fmt.Errorf("the memory cgroup controller is not mounted: %w", errdefs.ErrFailedPrecondition)
	}
	st, err := readKeyed(d, "memory.oom_control")
	if err != nil {
		return false, notFound(path, err)
	}
	return st["oom_kill"] > 0, nil
}

func (m *v1) Destroy(path string) error {
	p, err := m.conv(path)
	if err != nil {
		return err
	}
	if err := m.KillAll(path); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if err := waitEmpty(path, func() ([]int, error) { return m.allPids(p) }); err != nil {
		return err
	}
	for _, h := range m.hierarchies {
		if err := removeTree(filepath.Join(h, p)); err != nil {
			return err
		}
	}
	return nil
}
