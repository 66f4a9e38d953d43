// Package cgroups places containers in control groups and applies their
// linux.resources, on cgroup v1 (one hierarchy per controller, as on hosts
// booted with the legacy or hybrid layout) and on cgroup v2 (one unified
// hierarchy).
//
// Paths are the ones kubelet hands to a runtime: cgroupfs-style
// ("/kubepods/burstable/pod123/ctr"), or a systemd triple
// ("kubepods-burstable-pod123.slice:cri-mini:ctr") when the driver is
// "systemd". Either way a path is relative to the root of each hierarchy,
// not to the cgroup the runtime itself runs in: kubelet sizes the kubepods
// tree from the root, and a runtime running inside its own cgroup (as this
// one may, e.g. memory:/process_api/...) must not nest pods below itself.
// The systemd driver asks systemd for a transient unit per container (see
// systemd.go) and needs systemd as PID 1 and cgroup v2.
//
// Device rules (linux.resources.devices) go to the devices controller on
// v1 and become an eBPF device program on v2, with the same meaning.
// Create makes missing parents too (a pod's cgroup); Destroy removes only
// the path it is given and what is below it.
package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// DefaultRoot is where cgroup file systems are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// Manager creates, fills, limits, inspects and removes cgroups. Every path
// argument is in the driver's syntax (see the package doc).
type Manager interface {
	// Create makes the cgroup (in every hierarchy on v1) and applies r,
	// which may be nil. A failure removes what it created.
	Create(path string, r *specs.LinuxResources) error
	// Apply moves process pid (all its threads) into the cgroup.
	Apply(path string, pid int) error
	// Update applies r to an existing cgroup; unset fields stay as they are.
	Update(path string, r *specs.LinuxResources) error
	Stats(path string) (*Stats, error)
	// Usage reads the part of Stats the CRI's stats report, at a fraction
	// of its reads (kubelet asks for every container every ten seconds):
	// CPU usage, memory usage with memory.stat's figures and the memory and
	// swap limits, the number of tasks, and pressure. The rest is zero.
	Usage(path string) (*Stats, error)
	// Freeze stops every process in the cgroup and its descendants, and
	// returns once they are frozen; Thaw lets them run again.
	Freeze(path string) error
	Thaw(path string) error
	// Pids lists the processes directly in the cgroup.
	Pids(path string) ([]int, error)
	// KillAll sends SIGKILL to every process in the cgroup and below.
	KillAll(path string) error
	// OOMKilled reports whether the kernel's OOM killer has killed a
	// process in the cgroup (because of its memory limit) since it was
	// made; Stats has the count.
	OOMKilled(path string) (bool, error)
	// Destroy kills what still runs, waits for it to exit, and removes the
	// cgroup and its descendants from every hierarchy. A cgroup that does
	// not exist is not an error.
	Destroy(path string) error
	// Path converts a driver path into the cgroupfs path below each
	// hierarchy's root ("/kubepods/pod1/ctr").
	Path(path string) (string, error)
	// Version is 1 or 2.
	Version() int
}

// Stats is what kubelet's container and pod statistics and the CRI
// metrics (cAdvisor's container_* figures) need. Settings read back from
// the cgroup (quota, shares, limits) sit beside the usage they bound.
type Stats struct {
	CPU    CPUStats
	Memory MemoryStats
	Pids   PidsStats
	// IO is the block I/O the kernel charged to the cgroup, one entry per
	// device; empty when it charged none.
	IO []IODevice
	// Hugetlb is keyed by page size ("2MB"), for the sizes the hugetlb
	// controller shows in this cgroup.
	Hugetlb map[string]HugetlbStats
	// Pressure is the cgroup's pressure stall information; a resource is
	// nil when the kernel does not show it for this cgroup (v1 without
	// cgroup1 PSI).
	Pressure PressureStats
}

// CPUStats: cumulative CPU time, CFS bandwidth accounting, and the CPU
// settings in force.
type CPUStats struct {
	UsageNanos       uint64
	UserNanos        uint64
	SystemNanos      uint64
	Periods          uint64 // CFS enforcement periods elapsed
	ThrottledPeriods uint64
	ThrottledNanos   uint64
	// Shares is cpu.shares (v2: cpu.weight converted to shares).
	Shares       uint64
	PeriodMicros uint64
	QuotaMicros  int64 // -1 when unlimited
}

// MemoryStats in bytes (faults and failures in events). WorkingSet is
// usage minus inactive file pages, the figure kubelet evicts and reports
// on.
type MemoryStats struct {
	Usage           uint64
	WorkingSet      uint64
	RSS             uint64
	Cache           uint64
	MappedFile      uint64
	KernelUsage     uint64
	MaxUsage        uint64 // peak usage (v2: memory.peak, kernel 5.19+)
	Swap            uint64 // swap in use (0 without swap accounting)
	Limit           uint64 // 0 when unlimited
	Reservation     uint64 // soft limit (v2: memory.low); 0 when none
	SwapLimit       uint64 // memory+swap limit as v1's memsw; 0 when unlimited or not accounted
	Failcnt         uint64 // times usage hit the limit (v2: memory.events max)
	PageFaults      uint64
	MajorPageFaults uint64
	OOMKills        uint64
}

// PidsStats: tasks in the cgroup and its limit (0 when unlimited).
type PidsStats struct {
	Current uint64
	Limit   uint64
}

// IODevice is the I/O on one block device (major:minor).
type IODevice struct {
	Major, Minor          uint64
	ReadBytes, WriteBytes uint64
	Reads, Writes         uint64
}

// HugetlbStats: huge page usage of one page size, in bytes. MaxUsage is
// 0 on v2, which keeps no peak.
type HugetlbStats struct {
	Usage    uint64
	MaxUsage uint64
}

// PressureStats: stall time per resource.
type PressureStats struct {
	CPU, Memory, IO *PSI
}

// PSI is cumulative stall time: Some while at least one task waited on
// the resource, Full while all non-idle tasks did; with the kernel's
// running averages of the share of time stalled.
type PSI struct {
	SomeMicros, FullMicros uint64
	SomeAvg, FullAvg       PSIAverages
}

// PSIAverages are the percentages of time stalled over the last 10, 60
// and 300 seconds.
type PSIAverages struct {
	Avg10, Avg60, Avg300 float64
}

// Options select the driver, the cgroup version and where cgroup file
// systems are mounted.
type Options struct {
	// Driver is "cgroupfs" (also when empty) or "systemd".
	Driver string
	// Version is 1 or 2; 0 detects it from Root.
	Version int
	// Root is the mount point of the unified hierarchy (v2) or the
	// directory holding one mount per v1 hierarchy. Default DefaultRoot.
	Root string
}

// New returns a manager for this host's cgroups at DefaultRoot: v2 when
// the unified hierarchy is mounted there, v1 otherwise.
func New(driver string) (Manager, error) {
	return Open(Options{Driver: driver})
}

// Open returns a manager as o says.
func Open(o Options) (Manager, error) {
	if o.Root == "" {
		o.Root = DefaultRoot
	}
	var conv func(string) (string, error)
	switch o.Driver {
	case "", "cgroupfs":
		conv = cgroupfsPath
	case "systemd":
		conv = systemdPath
	default:
		return nil, fmt.Errorf("cgroup driver %q: want cgroupfs or systemd: %w", o.Driver, errdefs.ErrInvalidArgument)
	}
	if o.Version == 0 {
		o.Version = 1
		if _, err := os.Stat(filepath.Join(o.Root, "cgroup.controllers")); err == nil {
			o.Version = 2
		}
	}
	if o.Driver == "systemd" {
		if err := checkSystemd(o.Version, o.Root); err != nil {
			return nil, err
		}
	}
	switch o.Version {
	case 1:
		return openV1(o.Root, conv)
	case 2:
		if _, err := os.Stat(o.Root); err != nil {
			return nil, fmt.Errorf("cgroup v2 root: %w", err)
		}
		m := &v2{root: o.Root, conv: conv}
		if o.Driver == "systemd" {
			return openSystemd(m)
		}
		return m, nil
	}
	return nil, fmt.Errorf("cgroup version %d: %w", o.Version, errdefs.ErrInvalidArgument)
}

// cgroupfsPath checks and cleans a cgroupfs path. The root itself is
// refused: nothing here may limit, kill or remove the whole machine.
func cgroupfsPath(p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("cgroup path %q: %w", p, errdefs.ErrInvalidArgument)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("cgroup path %q must not contain '..': %w", p, errdefs.ErrInvalidArgument)
		}
	}
	clean := filepath.Clean("/" + p)
	if clean == "/" {
		return "", fmt.Errorf("cgroup path %q is the root cgroup: %w", p, errdefs.ErrInvalidArgument)
	}
	return clean, nil
}

// ChildPath is the cgroup the runtime makes below parent for the process
// group id (a container, or a pod's pause process), in the driver's
// syntax: parent/ID with cgroupfs (as containerd names them), the scope
// cri-mini-ID.scope in the slice parent with systemd.
func ChildPath(driver, parent, id string) string {
	if driver == "systemd" {
		return parent + ":cri-mini:" + id
	}
	return filepath.Join(parent, id)
}

// systemdUnit is a cgroup named in the systemd driver's syntax: the unit
// that owns it, the slice that unit is in, and where systemd puts its
// cgroup.
type systemdUnit struct {
	// Name is a scope ("cri-mini-abc.scope") or a slice
	// ("kubepods-besteffort-pod1.slice").
	Name string
	// Slice is the slice a scope is in ("-.slice" at the top); empty for
	// a slice, whose parent systemd derives from its name.
	Slice string
	// Path is its cgroupfs path.
	Path string
}

// parseSystemd reads "parent.slice:prefix:name" (the scope
// "prefix-name.scope" in that slice, or name itself when it is a slice or
// there is no prefix) or a lone slice name, as runc and kubelet do. A slice
// may come as its cgroupfs path: kubelet sends a pod's cgroup parent as
// "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
// and critest as "/test.slice"; its last component names it, as for
// containerd and CRI-O.
func parseSystemd(p string) (systemdUnit, error) {
	parts := strings.Split(p, ":")
	var u systemdUnit
	switch len(parts) {
	case 1:
		u.Name = sliceName(p)
	case 3:
		u.Slice, u.Name = sliceName(parts[0]), parts[2]
		if u.Name == "" {
			return u, fmt.Errorf("systemd cgroup %q: no unit name: %w", p, errdefs.ErrInvalidArgument)
		}
		switch {
		case strings.HasSuffix(u.Name, ".slice"):
		case parts[1] != "":
			u.Name = parts[1] + "-" + u.Name + ".scope"
		case !strings.HasSuffix(u.Name, ".scope"):
			return u, fmt.Errorf("systemd cgroup %q: without a prefix the name must be a scope or slice unit: %w", p, errdefs.ErrInvalidArgument)
		}
		if strings.ContainsAny(u.Name, "/") {
			return u, fmt.Errorf("systemd cgroup %q: bad unit name: %w", p, errdefs.ErrInvalidArgument)
		}
		if u.Slice == "" {
			u.Slice = "-.slice"
		}
	default:
		return u, fmt.Errorf("systemd cgroup %q: want slice:prefix:name: %w", p, errdefs.ErrInvalidArgument)
	}
	dir, unit := u.Slice, u.Name
	if strings.HasSuffix(u.Name, ".slice") {
		// A slice's place follows from its own name.
		dir, unit, u.Slice = u.Name, "", ""
	}
	expanded, err := expandSlice(dir)
	if err != nil {
		return u, fmt.Errorf("systemd cgroup %q: %w", p, err)
	}
	if u.Path, err = cgroupfsPath(filepath.Join(expanded, unit)); err != nil {
		return u, err
	}
	return u, nil
}

// sliceName is a slice given by name or by its cgroupfs path.
func sliceName(s string) string {
	if strings.Contains(s, "/") {
		return filepath.Base(s)
	}
	return s
}

// systemdPath converts a systemd driver path into the cgroupfs path systemd
// gives its unit.
func systemdPath(p string) (string, error) {
	u, err := parseSystemd(p)
	return u.Path, err
}

// expandSlice: "a-b-c.slice" lives at /a.slice/a-b.slice/a-b-c.slice.
func expandSlice(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, ".slice")
	if !ok || strings.Contains(name, "/") || name == "" {
		return "", fmt.Errorf("%q is not a slice name: %w", slice, errdefs.ErrInvalidArgument)
	}
	if name == "-" {
		return "/", nil
	}
	var path, prefix strings.Builder
	for i, part := range strings.Split(name, "-") {
		if part == "" {
			return "", fmt.Errorf("slice %q has an empty component: %w", slice, errdefs.ErrInvalidArgument)
		}
		if i > 0 {
			prefix.WriteByte('-')
		}
		prefix.WriteString(part)
		path.WriteString("/" + prefix.String() + ".slice")
	}
	return path.String(), nil
}

// SharesToWeight converts v1 cpu.shares (2..262144) to v2 cpu.weight
// (1..10000) on the same linear scale as runc and the kernel docs; 0 stays
// 0 (unset).
func SharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	shares = min(max(shares, 2), 262144)
	return 1 + ((shares-2)*9999)/262142
}

// WeightToShares is the inverse of SharesToWeight (rounded up, so that
// converting back gives the same weight).
func WeightToShares(weight uint64) uint64 {
	if weight == 0 {
		return 0
	}
	weight = min(max(weight, 1), 10000)
	return 2 + ((weight-1)*262142+9998)/9999
}

// writeFile writes one value to a cgroup control file. Bad values come
// back as ErrInvalidArgument naming the file, values the cgroup's present
// use refuses as ErrFailedPrecondition.
func writeFile(dir, file, value string) error {
	path := filepath.Join(dir, file)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ERANGE) {
		return fmt.Errorf("write %q to %s: %w: %w", value, path, err, errdefs.ErrInvalidArgument)
	}
	if errors.Is(err, unix.EBUSY) {
		// A limit below what the cgroup uses now (memory that cannot be
		// reclaimed, a cpuset its tasks need): right value, wrong moment.
		return fmt.Errorf("write %q to %s: %w (the cgroup uses more than that now): %w", value, path, err, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}

func readFile(dir, file string) (string, error) {
	b, err := fsutil.ReadKernelFile(filepath.Join(dir, file))
	return string(bytes.TrimSpace(b)), err
}

func readUint(dir, file string) (uint64, error) {
	s, err := readFile(dir, file)
	if err != nil {
		return 0, err
	}
	if s == "max" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// readKeyed parses "key value" lines (memory.stat, cpu.stat, *.events).
func readKeyed(dir, file string) (map[string]uint64, error) {
	b, err := fsutil.ReadKernelFile(filepath.Join(dir, file))
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			m[k] = n
		}
	}
	return m, nil
}

// readPids reads cgroup.procs of one cgroup directory.
func readPids(dir string) ([]int, error) {
	b, err := fsutil.ReadKernelFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// subtreePids lists the processes in dir and every cgroup below it.
func subtreePids(dir string) ([]int, error) {
	var all []int
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if gone(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		pids, err := readPids(p)
		if err != nil && !gone(err) {
			return err
		}
		all = append(all, pids...)
		return nil
	})
	return all, err
}

// gone says err is of a cgroup that is no more: removed (ENOENT), or being
// removed while it was read (ENODEV), as when a container's cgroup goes
// while its pod's is walked.
func gone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV)
}

// removeTree removes the cgroup dir and its descendants, deepest first.
// Missing directories are fine; a cgroup that stays busy (its last
// processes still exiting) is retried for a while.
func removeTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		err := retry(func() error {
			err := unix.Rmdir(dirs[i])
			if err == unix.ENOENT {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
		}
	}
	return nil
}

// waitTimeout bounds how long Freeze and Destroy wait for the kernel.
const waitTimeout = 10 * time.Second

// retry calls f until it succeeds or waitTimeout passes, backing off from
// a millisecond to 100ms.
func retry(f func() error) error {
	deadline := time.Now().Add(waitTimeout)
	delay := time.Millisecond
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// mkdirPath creates cgroup p below base one level at a time, calling each
// (when not nil) on every level, and returns the directories it made. On
// error it removes those again.
func mkdirPath(base, p string, each func(dir string) error) ([]string, error) {
	var created []string
	cur := base
	for _, part := range strings.Split(p[1:], "/") {
		cur = filepath.Join(cur, part)
		err := unix.Mkdir(cur, 0o755)
		switch {
		case err == nil:
			created = append(created, cur)
		case err != unix.EEXIST:
			removeAll(created)
			return nil, fmt.Errorf("create cgroup %s: %w", cur, err)
		}
		if each != nil {
			if err := each(cur); err != nil {
				removeAll(created)
				return nil, err
			}
		}
	}
	return created, nil
}

// removeAll removes directories made by mkdirPath, deepest first.
func removeAll(dirs []string) {
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = unix.Rmdir(dirs[i])
	}
}

// waitEmpty waits until list finds no process, killing again whatever
// it finds (one may have been moved in meanwhile).
func waitEmpty(path string, list func() ([]int, error)) error {
	return retry(func() error {
		pids, err := list()
		if err == nil && len(pids) > 0 {
			_ = killPids(pids)
			err = fmt.Errorf("cgroup %s still has processes %v: %w", path, pids, errdefs.ErrDeadlineExceeded)
		}
		return err
	})
}

// killPids sends SIGKILL to every pid; ones already gone are fine.
func killPids(pids []int) error {
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
	}
	return nil
}

// hugepageFile turns an OCI page size ("2MB", "1GB", "64KB") into the
// infix of the kernel's hugetlb files.
func hugepageFile(size string) (string, error) {
	if len(size) < 3 || !strings.HasSuffix(size, "B") {
		return "", fmt.Errorf("hugepage size %q: %w", size, errdefs.ErrInvalidArgument)
	}
	if _, err := strconv.ParseUint(size[:len(size)-2], 10, 32); err != nil || !strings.ContainsAny(size[len(size)-2:], "KMG") {
		return "", fmt.Errorf("hugepage size %q: %w", size, errdefs.ErrInvalidArgument)
	}
	return "hugetlb." + size, nil
}

// readPSI parses a pressure file ("some avg10=0.00 ... total=123" lines).
// A missing file gives nil.
func readPSI(dir, file string) *PSI {
	b, err := fsutil.ReadKernelFile(filepath.Join(dir, file))
	if err != nil {
		return nil
	}
	psi := &PSI{}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var total *uint64
		var avg *PSIAverages
		switch f[0] {
		case "some":
			total, avg = &psi.SomeMicros, &psi.SomeAvg
		case "full":
			total, avg = &psi.FullMicros, &psi.FullAvg
		default:
			continue
		}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "total":
				*total, _ = strconv.ParseUint(v, 10, 64)
			case "avg10":
				avg.Avg10, _ = strconv.ParseFloat(v, 64)
			case "avg60":
				avg.Avg60, _ = strconv.ParseFloat(v, 64)
			case "avg300":
				avg.Avg300, _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return psi
}

// parseDevice splits "8:16" into its numbers.
func parseDevice(s string) (major, minor uint64, ok bool) {
	a, b, found := strings.Cut(s, ":")
	if !found {
		return 0, 0, false
	}
	major, err1 := strconv.ParseUint(a, 10, 64)
	minor, err2 := strconv.ParseUint(b, 10, 64)
	return major, minor, err1 == nil && err2 == nil
}

// ioDevice returns the entry for major:minor in list, adding it if new.
func ioDevice(list *[]IODevice, major, minor uint64) *IODevice {
	for i := range *list {
		if (*list)[i].Major == major && (*list)[i].Minor == minor {
			return &(*list)[i]
		}
	}
	*list = append(*list, IODevice{Major: major, Minor: minor})
	return &(*list)[len(*list)-1]
}

// hugepageSizes lists the page sizes of the hugetlb files in dir that end
// in suffix ("hugetlb.2MB.current" -> "2MB").
func hugepageSizes(dir, suffix string) []string {
	matches, _ := filepath.Glob(filepath.Join(dir, "hugetlb.*."+suffix))
	var sizes []string
	for _, m := range matches {
		size := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "hugetlb."), "."+suffix)
		if !strings.Contains(size, ".") {
			sizes = append(sizes, size)
		}
	}
	return sizes
}
