package cgroups

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// The tests here run against the kernel's real controllers with every
// manager that works on this host.

// forEachDriver runs f as a subtest with each manager that can work on
// this host's cgroups, and a cgroup path for the subtest in its syntax: v1
// where v1 hierarchies are mounted, v2 (cgroupfs driver) where a cgroup2
// tree offers the controllers (a hybrid host's offers few), systemd where
// systemd is the init system of a unified host. controllers are those f
// needs.
func forEachDriver(t *testing.T, controllers []string, f func(t *testing.T, m Manager, path string)) {
	t.Run("v1", func(t *testing.T) { f(t, v1Manager(t, ""), testPath(t)) })
	t.Run("v2", func(t *testing.T) {
		m := realV2(t)
		needControllers(t, m, controllers...)
		f(t, m, testPath(t))
	})
	t.Run("systemd", func(t *testing.T) { f(t, realSystemd(t), systemdTestPath(t)) })
}

// needControllers skips t where the cgroup2 tree of m does not offer the
// controllers.
func needControllers(t *testing.T, m Manager, controllers ...string) {
	t.Helper()
	avail, err := readFile(m.(*v2).root, "cgroup.controllers")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range controllers {
		if !slices.Contains(strings.Fields(avail), c) {
			t.Skipf("the cgroup2 tree offers no %s controller (only %q)", c, avail)
		}
	}
}

// cgroupDir is the directory of path in m's hierarchy of controller (v1),
// or in its one tree.
func cgroupDir(t *testing.T, m Manager, controller, path string) string {
	t.Helper()
	switch m := m.(type) {
	case *v1:
		d, _ := m.dir(controller, mustPath(t, m, path))
		return d
	case *v2:
		return filepath.Join(m.root, mustPath(t, m, path))
	}
	return filepath.Join(DefaultRoot, mustPath(t, m, path))
}

func TestLifecycle(t *testing.T) {
	roottest.Require(t)
	forEachDriver(t, nil, func(t *testing.T, m Manager, path string) {
		create(t, m, path, nil)
		h := startHeld(t, m, path, "sleep 600 & wait")
		h.release(t)
		pid := h.cmd.Process.Pid
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup"); !strings.Contains(string(b), ":"+mustPath(t, m, path)+"\n") {
			t.Errorf("process not in its cgroup: %s", b)
		}
		var pids []int
		err := retry(func() (err error) {
			if pids, err = m.Pids(path); err == nil && len(pids) != 2 {
				err = errors.New("sleep not started yet")
			}
			return err
		})
		if err != nil || !slices.Contains(pids, pid) {
			t.Errorf("Pids = %v, %v; want the shell %d and its sleep", pids, err, pid)
		}
		// frozen reads back the freezer's state.
		frozen := func() string {
			if m.Version() == 1 {
				return mustRead(t, cgroupDir(t, m, "freezer", path), "freezer.state")
			}
			ev, _ := readKeyed(cgroupDir(t, m, "", path), "cgroup.events")
			return map[uint64]string{0: "THAWED", 1: "FROZEN"}[ev["frozen"]]
		}
		if err := m.Freeze(path); err != nil {
			t.Fatal(err)
		}
		if got := frozen(); got != "FROZEN" {
			t.Errorf("after Freeze: %s", got)
		}
		if err := m.Thaw(path); err != nil {
			t.Fatal(err)
		}
		if got := frozen(); got != "THAWED" {
			t.Errorf("after Thaw: %s", got)
		}
		if err := m.KillAll(path); err != nil {
			t.Fatal(err)
		}
		if sig := signaled(h.cmd.Wait()); sig != syscall.SIGKILL {
			t.Errorf("shell ended by %v, want SIGKILL", sig)
		}
		if err := m.Destroy(path); err != nil {
			t.Fatal(err)
		}
		if err := m.Destroy(path); err != nil {
			t.Errorf("second Destroy: %v", err)
		}
		if _, err := m.Pids(path); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Pids after Destroy: %v", err)
		}
		if _, err := m.Stats(path); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Stats after Destroy: %v", err)
		}
	})
}

// TestOOMKill: a shell doubling a string under a 32 MiB limit is killed by
// the kernel's OOM killer, its sleep lives on, and the kill shows in
// OOMKilled and the stats.
func TestOOMKill(t *testing.T) {
	roottest.Require(t)
	forEachDriver(t, []string{"memory"}, func(t *testing.T, m Manager, path string) {
		const limit = 32 << 20
		create(t, m, path, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](limit), Swap: ptr[int64](limit)}})
		// The sleep's output goes elsewhere: it must not keep the test's
		// pipe. It keeps the cgroup (and a systemd scope) in being.
		h := startHeld(t, m, path, "sleep 600 >/dev/null 2>&1 & a=x; while :; do a=$a$a; done")
		if killed, err := m.OOMKilled(path); err != nil || killed {
			t.Fatalf("OOMKilled before the hog: %v, %v", killed, err)
		}
		h.release(t)
		if sig := signaled(h.cmd.Wait()); sig != syscall.SIGKILL {
			t.Fatalf("hog ended with %v (stderr %q), want SIGKILL", sig, h.stderr.String())
		}
		if killed, err := m.OOMKilled(path); err != nil || !killed {
			t.Errorf("OOMKilled after the hog: %v, %v", killed, err)
		}
		st, err := m.Stats(path)
		if err != nil {
			t.Fatal(err)
		}
		if mem := st.Memory; mem.Limit != limit || mem.OOMKills != 1 || mem.MaxUsage < limit/2 || mem.PageFaults == 0 || st.CPU.UsageNanos == 0 {
			t.Errorf("stats after the hog: memory %+v cpu %+v", mem, st.CPU)
		}
		// v2 counts each time usage hit the limit (memory.events max).
		if m.Version() == 2 && (st.Memory.Failcnt == 0 || st.Pressure.Memory == nil) {
			t.Errorf("v2 figures: failcnt %d, memory pressure %v", st.Memory.Failcnt, st.Pressure.Memory)
		}
		// v2 limits swap alone: none on top of the memory.
		if d := cgroupDir(t, m, "memory", path); m.Version() == 2 && mustRead(t, d, "memory.swap.max") != "0" || hasMemsw(d) && st.Memory.SwapLimit != limit {
			t.Errorf("swap limit: %+v", st.Memory)
		}
	})
}

// TestPidsLimit: a fork loop stops at pids.max; the sleeps that fitted
// outlive their shell, and Destroy kills them.
func TestPidsLimit(t *testing.T) {
	roottest.Require(t)
	forEachDriver(t, []string{"pids"}, func(t *testing.T, m Manager, path string) {
		create(t, m, path, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr[int64](8)}})
		h := startHeld(t, m, path, "i=0; while [ $i -lt 40 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); done; wait")
		h.release(t)
		err := h.cmd.Wait()
		if !strings.Contains(h.stderr.String(), "can't fork") {
			t.Errorf("fork loop was not stopped: %v, stderr %q", err, h.stderr.String())
		}
		st, err := m.Stats(path)
		if err != nil {
			t.Fatal(err)
		}
		pids, err := m.Pids(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pids.Limit != 8 || st.Pids.Current > 8 || st.Pids.Current == 0 || len(pids) != int(st.Pids.Current) {
			t.Errorf("pids stats %+v, pids %v", st.Pids, pids)
		}
		if ev, _ := readKeyed(cgroupDir(t, m, "pids", path), "pids.events"); ev["max"] == 0 {
			t.Errorf("pids.events: %v, want the refused forks counted", ev)
		}
		if err := m.Destroy(path); err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
			// Z: a zombie; X: dead, being reaped (seen on v2 now and then).
			if err == nil && !strings.Contains(string(b), ") Z ") && !strings.Contains(string(b), ") X ") {
				t.Errorf("pid %d survived Destroy: %s", pid, b)
			}
		}
	})
}

// TestStatsAndThrottling runs two spinners under a 20% CPU quota, with a
// memory limit and reservation, and reads back both the settings and what
// the kernel counted against them.
func TestStatsAndThrottling(t *testing.T) {
	roottest.Require(t)
	forEachDriver(t, []string{"cpu", "cpuset", "memory", "pids"}, func(t *testing.T, m Manager, path string) {
		create(t, m, path, &specs.LinuxResources{
			CPU:    &specs.LinuxCPU{Shares: ptr[uint64](256), Quota: ptr[int64](20000), Period: ptr[uint64](100000), Cpus: "0"},
			Memory: &specs.LinuxMemory{Limit: ptr[int64](64 << 20), Reservation: ptr[int64](16 << 20)},
			Pids:   &specs.LinuxPids{Limit: ptr[int64](50)},
		})
		// A second or two of two spinners at 20% of a CPU spans many 100ms
		// periods and is throttled in them even on a busy host. The sleep
		// outlives them: a systemd scope goes with its last process.
		h := startHeld(t, m, path, `sleep 600 >/dev/null 2>&1 &
			grep Cpus_allowed_list /proc/self/status
			a=x; i=0; while [ $i -lt 16 ]; do a=$a$a; i=$((i+1)); done
			spin() { end=$(($(date +%s)+1)); while [ $(date +%s) -le $end ]; do :; done; }; spin & s=$!; spin; wait $s`)
		h.release(t)
		if err := h.cmd.Wait(); err != nil {
			t.Fatalf("%v: %s", err, h.stderr.String())
		}
		if got := h.stdout.String(); got != "Cpus_allowed_list:\t0\n" {
			t.Errorf("cpuset 0: %q", got)
		}
		st, err := m.Stats(path)
		if err != nil {
			t.Fatal(err)
		}
		c := st.CPU
		// v2 keeps a weight, read back as the shares it stands for.
		if SharesToWeight(c.Shares) != SharesToWeight(256) || c.PeriodMicros != 100000 || c.QuotaMicros != 20000 {
			t.Errorf("cpu settings shares %d period %d quota %d", c.Shares, c.PeriodMicros, c.QuotaMicros)
		}
		if c.Periods < 3 || c.ThrottledPeriods == 0 || c.ThrottledPeriods > c.Periods || c.ThrottledNanos == 0 {
			t.Errorf("cfs accounting: periods %d throttled %d (%d ns)", c.Periods, c.ThrottledPeriods, c.ThrottledNanos)
		}
		if c.UserNanos+c.SystemNanos == 0 || c.UsageNanos < c.UserNanos {
			t.Errorf("cpu time: usage %d user %d system %d", c.UsageNanos, c.UserNanos, c.SystemNanos)
		}
		mem := st.Memory
		// The shell's string reached 64 KiB; its peak stays after it exits.
		if mem.Limit != 64<<20 || mem.Reservation != 16<<20 || mem.MaxUsage < 64<<10 || mem.MaxUsage < mem.Usage {
			t.Errorf("memory: limit %d reservation %d max usage %d usage %d", mem.Limit, mem.Reservation, mem.MaxUsage, mem.Usage)
		}
		if d := cgroupDir(t, m, "memory", path); hasMemsw(d) && mem.SwapLimit != 0 {
			t.Errorf("memsw limit %d, want 0 (unlimited)", mem.SwapLimit)
		}
		if st.Pids.Limit != 50 || st.Pids.Current != 1 {
			t.Errorf("pids %+v, want the sleep under a limit of 50", st.Pids)
		}
		if m.Version() == 2 && (st.Pressure.CPU == nil || st.Pressure.CPU.SomeMicros == 0) {
			t.Errorf("cpu pressure %+v: two spinners on a fifth of a CPU stall", st.Pressure.CPU)
		}
		// Usage is Stats' part the CRI reports, the rest left zero; nothing
		// runs but the sleep, so the figures are Stats' own.
		u, err := m.Usage(path)
		if err != nil {
			t.Fatal(err)
		}
		want := Stats{CPU: CPUStats{UsageNanos: c.UsageNanos}, Pids: PidsStats{Current: st.Pids.Current}, Pressure: u.Pressure,
			Memory: MemoryStats{Usage: u.Memory.Usage, WorkingSet: u.Memory.WorkingSet, RSS: mem.RSS, Cache: u.Memory.Cache,
				MappedFile: mem.MappedFile, KernelUsage: u.Memory.KernelUsage, Swap: mem.Swap, PageFaults: u.Memory.PageFaults,
				MajorPageFaults: mem.MajorPageFaults, Limit: mem.Limit, SwapLimit: mem.SwapLimit}}
		if !reflect.DeepEqual(*u, want) || u.Memory.Usage == 0 || u.Memory.PageFaults < mem.PageFaults {
			t.Errorf("Usage %+v\nwant %+v", *u, want)
		}
		if (u.Pressure.CPU == nil) != (st.Pressure.CPU == nil) || (u.Pressure.Memory == nil) != (st.Pressure.Memory == nil) {
			t.Errorf("pressure: Usage %+v, Stats %+v", u.Pressure, st.Pressure)
		}
	})
}

// TestV2Limits: every kind of limit on the real v2 controllers, as each v2
// driver sets it, read back from the files and, for the device filter, by
// opening devices from inside; every cgroup above enables the controllers.
// With systemd the cgroup is a delegated scope in its slice holding the
// limits as properties: a daemon-reload (systemd writes every unit's files
// again) leaves every one in force, also after Update, and Destroy leaves
// no unit.
func TestV2Limits(t *testing.T) {
	forEachDriver(t, []string{"cpu", "cpuset", "io", "memory", "pids"}, func(t *testing.T, m Manager, path string) {
		if m.Version() == 1 {
			t.Skip("unified resources and eBPF device filters are v2's")
		}
		r := &specs.LinuxResources{
			CPU:            &specs.LinuxCPU{Shares: ptr[uint64](512), Quota: ptr[int64](50000), Period: ptr[uint64](100000), Cpus: "0"},
			Memory:         &specs.LinuxMemory{Limit: ptr[int64](64 << 20), Reservation: ptr[int64](8 << 20)},
			Pids:           &specs.LinuxPids{Limit: ptr[int64](50)},
			Unified:        map[string]string{"memory.high": "50331648", "memory.oom.group": "1"},
			HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}},
			Devices: append(DefaultDevices(), specs.LinuxDeviceCgroup{Allow: false, Type: "c", Major: ptr[int64](1), Minor: ptr[int64](5),
				Access: "w"}),
		}
		if dev, ok := rootDisk(); ok {
			r.Unified["io.max"] = dev + " rbps=1048576 wbps=max riops=max wiops=max"
		}
		create(t, m, path, r)
		h := startHeld(t, m, path, "sleep 600")
		d := cgroupDir(t, m, "", path)
		want := map[string]string{
			"memory.max": "67108864", "memory.low": "8388608", "memory.high": "50331648", "memory.oom.group": "1",
			"cpu.max": "50000 100000", "cpu.weight": "20", "cpuset.cpus": "0", "pids.max": "50",
		}
		if io, ok := r.Unified["io.max"]; ok {
			want["io.max"] = io
		}
		root := strings.TrimSuffix(d, mustPath(t, m, path))
		if avail, _ := readFile(root, "cgroup.controllers"); strings.Contains(avail, "hugetlb") {
			want["hugetlb.2MB.max"] = "4194304"
		}
		check := func(when string) {
			t.Helper()
			for file, v := range want {
				if got, err := readFile(d, file); err != nil || got != v {
					t.Errorf("%s: %s = %q (%v), want %q", when, file, got, err, v)
				}
			}
			// /dev/zero (1:5) may be read, not written.
			probe := exec.Command("/bin/busybox", "sh", "-c", "echo $$ > "+d+"/cgroup.procs; head -c1 /dev/zero >/dev/null && echo r; echo > /dev/zero && echo w")
			if out, _ := probe.Output(); string(out) != "r\n" {
				t.Errorf("%s: /dev/zero from the cgroup: %q, want only read", when, out)
			}
		}
		check("created")
		for above := filepath.Dir(d); strings.HasPrefix(above, root); above = filepath.Dir(above) {
			enabled := strings.Fields(mustRead(t, above, "cgroup.subtree_control"))
			for _, c := range []string{"cpu", "cpuset", "io", "memory", "pids"} {
				if !slices.Contains(enabled, c) {
					t.Errorf("%s/cgroup.subtree_control %q lacks %s", above, enabled, c)
				}
			}
			if above == root {
				break
			}
		}
		_, isSystemd := m.(*systemd)
		var u systemdUnit
		if isSystemd {
			u, _ = parseSystemd(path)
			props := unitShow(t, u.Name, "ActiveState", "Slice", "Delegate", "MemoryMax", "MemoryHigh", "MemoryLow", "CPUWeight",
				"CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec", "TasksMax", "AllowedCPUs", "OOMPolicy", "ControlGroup")
			for k, v := range map[string]string{"ActiveState": "active", "Slice": u.Slice, "Delegate": "yes", "MemoryMax": "67108864",
				"MemoryHigh": "50331648", "MemoryLow": "8388608", "CPUWeight": "20", "CPUQuotaPerSecUSec": "500ms", "CPUQuotaPeriodUSec": "100ms",
				"TasksMax": "50", "AllowedCPUs": "0", "OOMPolicy": "kill", "ControlGroup": u.Path} {
				if props[k] != v {
					t.Errorf("unit %s: %s=%q, want %q", u.Name, k, props[k], v)
				}
			}
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", os.Getpid())); strings.Contains(string(b), u.Name) {
				t.Errorf("the test process itself landed in the scope: %s", b)
			}
		}
		reload := func(when string) {
			t.Helper()
			if !isSystemd {
				return
			}
			if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
				t.Fatalf("daemon-reload: %v %s", err, out)
			}
			check(when + ", after daemon-reload")
		}
		reload("created")

		if err := m.Update(path, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](96 << 20)},
			CPU: &specs.LinuxCPU{Quota: ptr[int64](-1)}, Pids: &specs.LinuxPids{Limit: ptr[int64](-1)}}); err != nil {
			t.Fatal(err)
		}
		want["memory.max"], want["cpu.max"], want["pids.max"] = "100663296", "max 100000", "max"
		check("updated")
		reload("updated")

		if err := m.Destroy(path); err != nil {
			t.Fatal(err)
		}
		if sig := signaled(h.cmd.Wait()); sig != syscall.SIGKILL {
			t.Errorf("the cgroup's process ended by %v, want SIGKILL", sig)
		}
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s remains after Destroy", d)
		}
		if isSystemd {
			if p := unitShow(t, u.Name, "LoadState"); p["LoadState"] != "not-found" {
				t.Errorf("unit after Destroy: %v", p)
			}
		}
	})
}
