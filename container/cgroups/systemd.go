package cgroups

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// systemd is the systemd driver: on a host whose cgroup tree systemd owns,
// every container is a transient scope unit that systemd makes, over
// D-Bus, in the pod's slice, and a pod's slice that does not exist yet is a
// transient slice (systemd makes the slices above it). systemd writes a
// unit's cgroup files from its properties whenever it applies the unit's
// settings again (a daemon-reload does, for every unit), so every limit
// systemd knows is given as a property; the scopes are delegated
// (Delegate=yes), so the files systemd does not manage are written
// directly, as with cgroupfs, and so is everything read.
//
// Only the unified hierarchy is supported: on v1 systemd's settings map
// onto other files, and Kubernetes no longer runs on v1 by default.
type systemd struct {
	*v2
	mu  sync.Mutex
	bus *sddbus.Conn
	// pending holds the resources Create was given for scopes that have
	// no process yet: systemd makes a scope together with its first
	// process, in Apply.
	pending map[string]*specs.LinuxResources
	// noOOMPolicy is set once systemd refused OOMPolicy= on a scope (it
	// takes it from version 253): memory.oom.group is then only written
	// to the file.
	noOOMPolicy bool
}

// systemdBooted is where systemd records that it is the init system
// (sd_booted(3)).
const systemdBooted = "/run/systemd/system"

// jobTimeout bounds the wait for systemd to start or stop a unit.
const jobTimeout = 30 * time.Second

func openSystemd(m *v2) (*systemd, error) {
	bus, err := connectSystemd()
	if err != nil {
		return nil, err
	}
	return &systemd{v2: m, bus: bus, pending: map[string]*specs.LinuxResources{}}, nil
}

// checkSystemd says why the systemd driver cannot run here. Like runc and
// containerd, cri-mini refuses it without systemd: naming cgroups like
// slices is not what the driver is for, and a tree that systemd does not
// manage is the cgroupfs driver's.
func checkSystemd(version int, root string) error {
	if _, err := os.Stat(systemdBooted); err != nil {
		return fmt.Errorf("the systemd cgroup driver needs systemd as the init system, and this host has none (%w); use cgroup_driver = \"cgroupfs\": %w",
			err, errdefs.ErrFailedPrecondition)
	}
	if version != 2 {
		return fmt.Errorf("the systemd cgroup driver needs the unified cgroup hierarchy (cgroup v2), and %s has v1 hierarchies; boot with systemd.unified_cgroup_hierarchy=1 or use cgroup_driver = \"cgroupfs\": %w",
			root, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func connectSystemd() (*sddbus.Conn, error) {
	// The system bus, or systemd's private socket when there is no bus.
	// The context is the connection's for its whole life: a cancelled one
	// closes it.
	bus, err := sddbus.NewWithContext(context.Background())
	if err != nil {
		return nil, fmt.Errorf("connect to systemd over D-Bus: %w", err)
	}
	return bus, nil
}

// call runs f on the D-Bus connection; when the connection has closed
// (the bus or systemd restarted, as a systemd upgrade does) it connects
// again and runs f once more.
func (m *systemd) call(f func(*sddbus.Conn) error) error {
	m.mu.Lock()
	bus := m.bus
	m.mu.Unlock()
	err := f(bus)
	if !errors.Is(err, dbus.ErrClosed) {
		return err
	}
	klog.InfoS("D-Bus connection to systemd closed, connecting again", "err", err)
	m.mu.Lock()
	if m.bus == bus {
		fresh, cerr := connectSystemd()
		if cerr != nil {
			m.mu.Unlock()
			return errors.Join(err, cerr)
		}
		bus.Close()
		m.bus = fresh
	}
	bus = m.bus
	m.mu.Unlock()
	return f(bus)
}

// job starts a systemd job with start and waits until systemd has done it.
func (m *systemd) job(what string, start func(context.Context, *sddbus.Conn, chan<- string) (int, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), jobTimeout)
	defer cancel()
	// Buffered: the library's signal dispatcher must never block on it,
	// even once this wait has given up.
	done := make(chan string, 1)
	if err := m.call(func(bus *sddbus.Conn) error { _, err := start(ctx, bus, done); return err }); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("%s: systemd's job ended %q", what, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: systemd did not finish the job in %s: %w", what, jobTimeout, errdefs.ErrDeadlineExceeded)
	}
}

// startUnit makes the transient unit u with props and waits for it.
func (m *systemd) startUnit(u systemdUnit, props []sddbus.Property) error {
	start := func(props []sddbus.Property) error {
		return m.job("start unit "+u.Name, func(ctx context.Context, bus *sddbus.Conn, done chan<- string) (int, error) {
			return bus.StartTransientUnitContext(ctx, u.Name, "replace", props, done)
		})
	}
	err := start(props)
	if rest, ok := m.withoutOOMPolicy(err, props); ok {
		err = start(rest)
	}
	return err
}

// setProperties changes properties of the running unit u, for its life.
func (m *systemd) setProperties(u systemdUnit, props []sddbus.Property) error {
	set := func(props []sddbus.Property) error {
		return m.call(func(bus *sddbus.Conn) error {
			ctx, cancel := context.WithTimeout(context.Background(), jobTimeout)
			defer cancel()
			return bus.SetUnitPropertiesContext(ctx, u.Name, true, props...)
		})
	}
	err := set(props)
	if rest, ok := m.withoutOOMPolicy(err, props); ok {
		err = set(rest)
	}
	if err != nil {
		return fmt.Errorf("set properties of unit %s: %w", u.Name, notFoundUnit(u, err))
	}
	return nil
}

// withoutOOMPolicy: when err is systemd refusing OOMPolicy= (before 253
// scopes have none), props without it, to be sent again; memory.oom.group
// is written to the file in any case, it just does not outlive a reload.
func (m *systemd) withoutOOMPolicy(err error, props []sddbus.Property) ([]sddbus.Property, bool) {
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.PropertyReadOnly" || !strings.Contains(fmt.Sprint(de.Body...), "OOMPolicy") {
		return nil, false
	}
	m.mu.Lock()
	m.noOOMPolicy = true
	m.mu.Unlock()
	klog.InfoS("systemd has no OOMPolicy for scopes: memory.oom.group is written to the cgroup only, a daemon-reload resets it", "err", err)
	var rest []sddbus.Property
	for _, p := range props {
		if p.Name != "OOMPolicy" {
			rest = append(rest, p)
		}
	}
	return rest, true
}

// stopUnit stops u and waits for it; a unit that is not loaded (a scope
// whose processes are all gone is collected by systemd) is fine.
func (m *systemd) stopUnit(u systemdUnit) error {
	err := m.job("stop unit "+u.Name, func(ctx context.Context, bus *sddbus.Conn, done chan<- string) (int, error) {
		return bus.StopUnitContext(ctx, u.Name, "replace", done)
	})
	if isDBusError(err, "org.freedesktop.systemd1.NoSuchUnit") {
		return nil
	}
	return err
}

func isDBusError(err error, name string) bool {
	var de dbus.Error
	return errors.As(err, &de) && de.Name == name
}

// notFoundUnit marks an error about a unit systemd does not have as
// ErrNotFound.
func notFoundUnit(u systemdUnit, err error) error {
	if isDBusError(err, "org.freedesktop.systemd1.NoSuchUnit") {
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	return err
}

// Create makes a slice at once; a scope is made by Apply with its first
// process, and r is checked now and kept for it.
func (m *systemd) Create(path string, r *specs.LinuxResources) error {
	u, err := parseSystemd(path)
	if err != nil {
		return err
	}
	d := filepath.Join(m.root, u.Path)
	writes, props, err := m.unitResources(d, r)
	if err != nil {
		return err
	}
	if u.Slice != "" {
		m.mu.Lock()
		m.pending[path] = r
		m.mu.Unlock()
		return nil
	}
	props = append([]sddbus.Property{sddbus.PropDescription("cri-mini pod slice " + u.Name)}, append(accounting(), props...)...)
	if err := m.startUnit(u, props); err != nil {
		return err
	}
	if err := m.apply(u.Path, d, writes, devices(r)); err != nil {
		return errors.Join(err, m.stopUnit(u))
	}
	return nil
}

// Apply starts a scope that does not exist yet with pid as its first
// process and the resources Create was given. A process joining a running
// container (an exec) is moved into its cgroup directly: the scope is
// delegated, and systemd does not mind what moves inside it.
func (m *systemd) Apply(path string, pid int) error {
	u, err := parseSystemd(path)
	if err != nil {
		return err
	}
	m.mu.Lock()
	r, pending := m.pending[path]
	delete(m.pending, path)
	m.mu.Unlock()
	d := filepath.Join(m.root, u.Path)
	if _, err := os.Stat(d); err == nil || u.Slice == "" {
		if err := m.v2.Apply(path, pid); err != nil {
			return err
		}
		if pending {
			return m.Update(path, r)
		}
		return nil
	}
	writes, props, err := m.unitResources(d, r)
	if err != nil {
		return err
	}
	props = append([]sddbus.Property{
		sddbus.PropDescription("cri-mini container " + u.Name),
		sddbus.PropSlice(u.Slice),
		sddbus.PropPids(uint32(pid)),
		// The scope's subtree is cri-mini's: the files systemd does not
		// manage, the device filter, cgroups below it.
		prop("Delegate", true),
		// A scope that ended badly is collected too, so a name never
		// stays taken.
		prop("CollectMode", "inactive-or-failed"),
	}, append(accounting(), props...)...)
	if !slices.ContainsFunc(props, func(p sddbus.Property) bool { return p.Name == "TasksMax" }) {
		// Without a pids limit a container has none; systemd would give
		// the scope its DefaultTasksMax (15% of the pid space).
		props = append(props, prop("TasksMax", uint64(math.MaxUint64)))
	}
	if err := m.startUnit(u, props); err != nil {
		return err
	}
	return m.apply(u.Path, d, writes, devices(r))
}

// Update sets the unit's properties and writes every file, so that the
// limits are in force when it returns, whatever systemd has applied yet.
func (m *systemd) Update(path string, r *specs.LinuxResources) error {
	u, err := parseSystemd(path)
	if err != nil || r == nil {
		return err
	}
	d, err := m.dir(path)
	if err != nil {
		return err
	}
	writes, props, err := m.unitResources(d, r)
	if err != nil {
		return err
	}
	if len(props) > 0 {
		if err := m.setProperties(u, props); err != nil {
			return err
		}
	}
	return m.apply(u.Path, d, writes, r.Devices)
}

// Destroy kills what runs in the unit, stops it, waits for systemd, and
// removes whatever cgroup remains (a scope whose processes are gone is
// stopped and collected by systemd by itself).
func (m *systemd) Destroy(path string) error {
	u, err := parseSystemd(path)
	if err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.pending, path)
	m.mu.Unlock()
	// Killed at once, as with cgroupfs: stopping a unit sends SIGTERM and
	// waits up to its stop timeout (90 s) before SIGKILL.
	if err := m.v2.KillAll(path); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if err := m.stopUnit(u); err != nil {
		return err
	}
	return m.v2.Destroy(path)
}

// unitResources: the writes of r (checked), and the unit properties that
// carry those of them systemd manages.
func (m *systemd) unitResources(d string, r *specs.LinuxResources) ([]kv, []sddbus.Property, error) {
	if r == nil {
		return nil, nil, nil
	}
	writes, err := m.v2Writes(d, r)
	if err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	noOOMPolicy := m.noOOMPolicy
	m.mu.Unlock()
	var props []sddbus.Property
	for _, w := range writes {
		p, err := unitProperties(w)
		if err != nil {
			return nil, nil, err
		}
		for _, p := range p {
			if p.Name == "OOMPolicy" && noOOMPolicy {
				continue
			}
			props = append(props, p)
		}
	}
	return writes, props, nil
}

// limitProperties are the unit properties holding a v2 limit file's
// value as it is ("max" being none).
var limitProperties = map[string]string{
	"memory.max": "MemoryMax", "memory.high": "MemoryHigh", "memory.low": "MemoryLow", "memory.min": "MemoryMin",
	"memory.swap.max": "MemorySwapMax", "pids.max": "TasksMax",
}

// unitProperties maps a cgroup v2 file write onto the unit properties from
// which systemd writes that file itself; none for the files it leaves
// alone (hugetlb, io.max, per-device weights, ...).
func unitProperties(w kv) ([]sddbus.Property, error) {
	bad := func(err error) error {
		return fmt.Errorf("%s value %q: %w: %w", w.file, w.value, err, errdefs.ErrInvalidArgument)
	}
	if name, ok := limitProperties[w.file]; ok {
		n, err := parseMax(w.value)
		if err != nil {
			return nil, bad(err)
		}
		return []sddbus.Property{prop(name, n)}, nil
	}
	switch w.file {
	case "cpu.weight":
		n, err := strconv.ParseUint(w.value, 10, 64)
		if err != nil {
			return nil, bad(err)
		}
		return []sddbus.Property{prop("CPUWeight", n)}, nil
	case "io.weight":
		n, err := strconv.ParseUint(strings.TrimPrefix(w.value, "default "), 10, 64)
		if err != nil {
			return nil, nil // per-device weights: systemd wants device paths; the file keeps them
		}
		return []sddbus.Property{prop("IOWeight", n)}, nil
	case "cpu.max":
		quota, period, ok := strings.Cut(w.value, " ")
		per, err := strconv.ParseUint(period, 10, 64)
		if !ok || err != nil || per == 0 {
			return nil, bad(errors.New("want QUOTA PERIOD"))
		}
		// systemd keeps the quota per second of CPU time and derives the
		// per-period one from it; rounded up so none is lost.
		perSec := uint64(math.MaxUint64)
		if quota != "max" {
			q, err := strconv.ParseUint(quota, 10, 64)
			if err != nil {
				return nil, bad(err)
			}
			perSec = (q*1000000 + per - 1) / per
		}
		return []sddbus.Property{prop("CPUQuotaPerSecUSec", perSec), prop("CPUQuotaPeriodUSec", per)}, nil
	case "cpuset.cpus", "cpuset.mems":
		mask, err := cpusetMask(w.value)
		if err != nil {
			return nil, bad(err)
		}
		name := map[string]string{"cpuset.cpus": "AllowedCPUs", "cpuset.mems": "AllowedMemoryNodes"}[w.file]
		return []sddbus.Property{prop(name, mask)}, nil
	case "memory.oom.group":
		// OOMPolicy=kill is how a unit asks for memory.oom.group.
		policy := map[string]string{"1": "kill", "0": "continue"}[w.value]
		if policy == "" {
			return nil, bad(errors.New("want 0 or 1"))
		}
		return []sddbus.Property{prop("OOMPolicy", policy)}, nil
	}
	return nil, nil
}

// parseMax reads a limit where "max" means none.
func parseMax(s string) (uint64, error) {
	if s == "max" {
		return math.MaxUint64, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// maxCPUs bounds the CPU and memory node numbers a cpuset list may name.
const maxCPUs = 8192

// cpusetMask turns a cpuset list ("0-3,8") into the bitmap systemd's
// AllowedCPUs and AllowedMemoryNodes take: bit n%8 of byte n/8 for CPU n.
func cpusetMask(list string) ([]byte, error) {
	var mask []byte
	for part := range strings.SplitSeq(list, ",") {
		first, last, isRange := strings.Cut(strings.TrimSpace(part), "-")
		lo, err := strconv.ParseUint(first, 10, 32)
		if err != nil {
			return nil, err
		}
		hi := lo
		if isRange {
			if hi, err = strconv.ParseUint(last, 10, 32); err != nil {
				return nil, err
			}
		}
		if hi < lo || hi >= maxCPUs {
			return nil, fmt.Errorf("range %q", part)
		}
		for n := lo; n <= hi; n++ {
			for uint64(len(mask)) <= n/8 {
				mask = append(mask, 0)
			}
			mask[n/8] |= 1 << (n % 8)
		}
	}
	return mask, nil
}

func prop(name string, value any) sddbus.Property {
	return sddbus.Property{Name: name, Value: dbus.MakeVariant(value)}
}

// accounting turns on what systemd reports for a unit (systemctl status,
// systemd-cgtop), whatever the host's defaults.
func accounting() []sddbus.Property {
	return []sddbus.Property{prop("CPUAccounting", true), prop("MemoryAccounting", true),
		prop("IOAccounting", true), prop("TasksAccounting", true)}
}

func devices(r *specs.LinuxResources) []specs.LinuxDeviceCgroup {
	if r == nil {
		return nil
	}
	return r.Devices
}
