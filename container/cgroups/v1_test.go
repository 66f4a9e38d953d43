package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

func v1Manager(t *testing.T, driver string) *v1 {
	t.Helper()
	m, err := Open(Options{Driver: driver, Version: 1})
	if err != nil {
		t.Skipf("no cgroup v1 on this host: %v", err)
	}
	return m.(*v1)
}

// create makes the cgroup and removes it (checking that it is gone from
// every hierarchy) when the test ends.
func create(t *testing.T, m Manager, path string, r *specs.LinuxResources) {
	t.Helper()
	if err := m.Create(path, r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(path); err != nil {
			t.Errorf("destroy: %v", err)
		}
		p, _ := m.Path(path)
		top := "/" + strings.Split(p, "/")[1]
		if err := cgroupfsManager(m).Destroy(top); err != nil {
			t.Errorf("destroy %s: %v", top, err)
		}
		if v, ok := m.(*v1); ok {
			for _, h := range v.hierarchies {
				if _, err := os.Stat(filepath.Join(h, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still exists after Destroy", filepath.Join(h, p))
				}
			}
		}
	})
}

func TestV1MemoryLimitKillsHog(t *testing.T) {
	m := v1Manager(t, "")
	path := testPath(t)
	const limit = 32 << 20
	create(t, m, path, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](limit), Swap: ptr[int64](limit)}})
	d, _ := m.dir("memory", mustPath(t, m, path))
	if got := mustRead(t, d, "memory.limit_in_bytes"); got != "33554432" {
		t.Errorf("memory.limit_in_bytes = %s", got)
	}
	if killed, err := m.OOMKilled(path); err != nil || killed {
		t.Fatalf("OOMKilled before the hog: %v, %v", killed, err)
	}
	// The string doubles until it no longer fits in 32 MiB.
	h := startHeld(t, m, path, "a=x; while :; do a=$a$a; done")
	h.release(t)
	err := h.cmd.Wait()
	if sig := signaled(err); sig != syscall.SIGKILL {
		t.Fatalf("hog ended with %v (stderr %q), want SIGKILL", err, h.stderr.String())
	}
	if killed, err := m.OOMKilled(path); err != nil || !killed {
		t.Errorf("OOMKilled after the hog: %v, %v", killed, err)
	}
	st, err := m.Stats(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Memory.Limit != limit || st.Memory.OOMKills != 1 || st.Memory.PageFaults == 0 || st.CPU.UsageNanos == 0 ||
		st.Memory.MaxUsage < limit/2 || (hasMemsw(d) && st.Memory.SwapLimit != limit) {
		t.Errorf("stats after the hog: %+v", st)
	}
}

func TestV1PidsLimitStopsForkLoop(t *testing.T) {
	m := v1Manager(t, "")
	path := testPath(t)
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
	// The sleeps outlived their shell: Destroy must kill them.
	if err := m.Destroy(path); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err == nil && !strings.Contains(string(b), ") Z ") {
			t.Errorf("pid %d survived Destroy: %s", pid, b)
		}
	}
}

func TestV1CPUAndCpuset(t *testing.T) {
	m := v1Manager(t, "")
	path := testPath(t)
	r := &specs.LinuxResources{CPU: &specs.LinuxCPU{
		Shares: ptr[uint64](512), Quota: ptr[int64](50000), Period: ptr[uint64](200000), Cpus: "0", Mems: "0",
	}}
	create(t, m, path, r)
	p := mustPath(t, m, path)
	cpu, _ := m.dir("cpu", p)
	cpuset, _ := m.dir("cpuset", p)
	for _, c := range []struct{ dir, file, want string }{
		{cpu, "cpu.shares", "512"}, {cpu, "cpu.cfs_quota_us", "50000"}, {cpu, "cpu.cfs_period_us", "200000"},
		{cpuset, "cpuset.cpus", "0"}, {cpuset, "cpuset.mems", "0"},
	} {
		if got := mustRead(t, c.dir, c.file); got != c.want {
			t.Errorf("%s = %q, want %q", c.file, got, c.want)
		}
	}
	// Update: unlimited quota, other cpus; untouched fields stay.
	if err := m.Update(path, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](-1), Cpus: "0-1"}}); err != nil {
		t.Fatal(err)
	}
	if q, c, s := mustRead(t, cpu, "cpu.cfs_quota_us"), mustRead(t, cpuset, "cpuset.cpus"), mustRead(t, cpu, "cpu.shares"); q != "-1" || c != "0-1" || s != "512" {
		t.Errorf("after update: quota %s cpus %s shares %s", q, c, s)
	}
	h := startHeld(t, m, path, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	h.release(t)
	if err := h.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	st, err := m.Stats(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU.UsageNanos < 1000000 {
		t.Errorf("cpu usage %d ns for a busy loop", st.CPU.UsageNanos)
	}
}

func TestV1FreezeKillDestroy(t *testing.T) {
	m := v1Manager(t, "")
	path := testPath(t)
	create(t, m, path, nil)
	h := startHeld(t, m, path, "sleep 600 & wait")
	h.release(t)
	pid := h.cmd.Process.Pid
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
	if err := m.Freeze(path); err != nil {
		t.Fatal(err)
	}
	d, _ := m.dir("freezer", mustPath(t, m, path))
	if got := mustRead(t, d, "freezer.state"); got != "FROZEN" {
		t.Errorf("freezer.state %s", got)
	}
	if err := m.Thaw(path); err != nil {
		t.Fatal(err)
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
}

func TestV1CreateRollsBack(t *testing.T) {
	m := v1Manager(t, "")
	path := testPath(t)
	err := m.Create(path, &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "64-65"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("impossible cpuset: %v", err)
	}
	err = m.Create(path, &specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unified on v1: %v", err)
	}
	top := "/" + strings.Split(path, "/")[1]
	for _, h := range m.hierarchies {
		if _, err := os.Stat(filepath.Join(h, top)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failed Create left %s", filepath.Join(h, top))
		}
	}
}

func TestV1DevicesAndSystemdDriver(t *testing.T) {
	m := v1Manager(t, "systemd")
	slice := testPrefix + "_devices.slice"
	path := slice + ":cri-mini:ctr"
	create(t, m, path, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: ptr[int64](1), Minor: ptr[int64](3), Access: "rwm"},
		{Allow: true, Type: "c", Major: ptr[int64](136), Access: "rw"},
	}})
	p := mustPath(t, m, path)
	if p != "/"+slice+"/cri-mini-ctr.scope" {
		t.Fatalf("systemd path %s", p)
	}
	d, _ := m.dir("devices", p)
	if got := mustRead(t, d, "devices.list"); got != "c 1:3 rwm\nc 136:* rw" {
		t.Errorf("devices.list = %q", got)
	}
}

// cgroupfsManager is m with the cgroupfs driver, to clean up by path.
func cgroupfsManager(m Manager) Manager {
	switch m := m.(type) {
	case *v1:
		return &v1{conv: cgroupfsPath, hierarchies: m.hierarchies, mounts: m.mounts}
	case *v2:
		return &v2{root: m.root, conv: cgroupfsPath}
	}
	return m
}

func mustPath(t *testing.T, m Manager, path string) string {
	t.Helper()
	p, err := m.Path(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestV1StatsSettingsAndAccounting runs a busy loop under a CPU quota and
// a memory limit and reads back both the settings and what the kernel
// counted against them.
func TestV1StatsSettingsAndAccounting(t *testing.T) {
	m := v1Manager(t, "")
	path := testPath(t)
	r := &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Shares: ptr[uint64](256), Quota: ptr[int64](20000), Period: ptr[uint64](100000)},
		Memory: &specs.LinuxMemory{Limit: ptr[int64](64 << 20), Reservation: ptr[int64](16 << 20)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](50)},
	}
	create(t, m, path, r)
	// A second or two of two spinners at 20% of a CPU spans many 100ms
	// periods and is throttled in them even on a busy host.
	h := startHeld(t, m, path, `a=x; i=0; while [ $i -lt 16 ]; do a=$a$a; i=$((i+1)); done
		spin() { end=$(($(date +%s)+1)); while [ $(date +%s) -le $end ]; do :; done; }; spin & spin; wait`)
	h.release(t)
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, h.stderr.String())
	}
	st, err := m.Stats(path)
	if err != nil {
		t.Fatal(err)
	}
	c := st.CPU
	if c.Shares != 256 || c.PeriodMicros != 100000 || c.QuotaMicros != 20000 {
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
	if d, _ := m.dir("memory", mustPath(t, m, path)); hasMemsw(d) && mem.SwapLimit != 0 {
		t.Errorf("memsw limit %d, want 0 (unlimited)", mem.SwapLimit)
	}
	if st.Pids.Limit != 50 {
		t.Errorf("pids limit %d", st.Pids.Limit)
	}
}

func TestV1IOFiles(t *testing.T) {
	d := t.TempDir()
	for file, content := range map[string]string{
		"blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n259:1 Read 512\nTotal 12800\n",
		"blkio.throttle.io_serviced_recursive":      "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
	} {
		if err := os.WriteFile(filepath.Join(d, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := v1IO(d)
	want := []IODevice{{Major: 8, ReadBytes: 4096, WriteBytes: 8192, Reads: 1, Writes: 2}, {Major: 259, Minor: 1, ReadBytes: 512}}
	if !slices.Equal(got, want) {
		t.Errorf("v1IO = %+v, want %+v", got, want)
	}
	if got := v1IO(t.TempDir()); len(got) != 0 {
		t.Errorf("no blkio files: %+v", got)
	}
}

// hasMemsw: swap accounting is on (the kernel shows memsw files).
func hasMemsw(memoryDir string) bool {
	_, err := os.Stat(filepath.Join(memoryDir, "memory.memsw.limit_in_bytes"))
	return err == nil
}
