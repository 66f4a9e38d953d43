package cgroups

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// realSystemd is the systemd driver, where systemd is the init system of a
// unified host.
func realSystemd(t *testing.T) Manager {
	t.Helper()
	if err := checkSystemd(2, DefaultRoot); err != nil {
		t.Skipf("no systemd driver here: %v", err)
	}
	m, err := Open(Options{Driver: "systemd"})
	if errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Skipf("no systemd driver here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.(*systemd).bus.Close)
	return m
}

// systemdTestPath: the test's scope in a slice of this test process, both
// named after testPrefix for the leak check.
func systemdTestPath(t *testing.T) string {
	return fmt.Sprintf("%s-%d.slice:cri-mini:%s-%s", testPrefix, os.Getpid(), testPrefix, strings.ReplaceAll(t.Name(), "/", "_"))
}

// leakedUnits lists the units the tests made that systemd still has.
func leakedUnits() ([]string, error) {
	if _, err := os.Stat(systemdBooted); err != nil {
		return nil, nil
	}
	bus, err := connectSystemd()
	if err != nil {
		return nil, err
	}
	defer bus.Close()
	units, err := bus.ListUnitsByPatterns(nil, []string{testPrefix + "*", "cri-mini-" + testPrefix + "*"})
	var names []string
	for _, u := range units {
		names = append(names, u.Name+" ("+u.ActiveState+")")
	}
	return names, err
}

// unitShow reads properties of a unit as systemctl shows them.
func unitShow(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out, err := exec.Command("systemctl", "show", unit, "-p", strings.Join(props, ",")).Output()
	if err != nil {
		t.Fatalf("systemctl show %s: %v", unit, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

func TestParseSystemd(t *testing.T) {
	for in, want := range map[string]systemdUnit{
		"kubepods-burstable-pod1.slice:cri-mini:abc": {Name: "cri-mini-abc.scope", Slice: "kubepods-burstable-pod1.slice",
			Path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-mini-abc.scope"},
		"kubepods-pod1.slice":       {Name: "kubepods-pod1.slice", Path: "/kubepods.slice/kubepods-pod1.slice"},
		":cri-mini:x":               {Name: "cri-mini-x.scope", Slice: "-.slice", Path: "/cri-mini-x.scope"},
		"system.slice::other.scope": {Name: "other.scope", Slice: "system.slice", Path: "/system.slice/other.scope"},
		"/test.slice:cri-mini:y":    {Name: "cri-mini-y.scope", Slice: "test.slice", Path: "/test.slice/cri-mini-y.scope"},
		"/test-a.slice":             {Name: "test-a.slice", Path: "/test.slice/test-a.slice"},
		"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice:cri-mini:z": {Name: "cri-mini-z.scope",
			Slice: "kubepods-besteffort-pod1.slice", Path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-mini-z.scope"},
	} {
		if got, err := parseSystemd(in); err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"system.slice::bare", "a.slice:p:x/y", "nonslice", "/a.slice/..:p:x", "/x/"} {
		if _, err := parseSystemd(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: %v, want ErrInvalidArgument", bad, err)
		}
	}
}

// TestUnitProperties: each file systemd writes itself maps onto the
// property it writes it from; the others stay file writes.
func TestUnitProperties(t *testing.T) {
	for w, want := range map[kv]string{
		{"memory.max", "67108864"}:     "MemoryMax=@t 67108864",
		{"memory.max", "max"}:          fmt.Sprintf("MemoryMax=@t %d", uint64(math.MaxUint64)),
		{"memory.high", "50331648"}:    "MemoryHigh=@t 50331648",
		{"memory.low", "16777216"}:     "MemoryLow=@t 16777216",
		{"memory.min", "1"}:            "MemoryMin=@t 1",
		{"memory.swap.max", "0"}:       "MemorySwapMax=@t 0",
		{"pids.max", "100"}:            "TasksMax=@t 100",
		{"cpu.weight", "39"}:           "CPUWeight=@t 39",
		{"io.weight", "default 50"}:    "IOWeight=@t 50",
		{"cpu.max", "50000 100000"}:    "CPUQuotaPerSecUSec=@t 500000 CPUQuotaPeriodUSec=@t 100000",
		{"cpu.max", "12345 200000"}:    "CPUQuotaPerSecUSec=@t 61725 CPUQuotaPeriodUSec=@t 200000",
		{"cpu.max", "max 100000"}:      fmt.Sprintf("CPUQuotaPerSecUSec=@t %d CPUQuotaPeriodUSec=@t 100000", uint64(math.MaxUint64)),
		{"cpuset.cpus", "0-2,9"}:       "AllowedCPUs=@ay [0x7, 0x2]",
		{"cpuset.mems", "1"}:           "AllowedMemoryNodes=@ay [0x2]",
		{"memory.oom.group", "1"}:      `OOMPolicy="kill"`,
		{"memory.oom.group", "0"}:      `OOMPolicy="continue"`,
		{"hugetlb.2MB.max", "4194304"}: "",
		{"io.max", "8:0 rbps=1"}:       "",
		{"io.weight", "8:0 50"}:        "",
	} {
		props, err := unitProperties(w)
		var got []string
		for _, p := range props {
			got = append(got, p.Name+"="+p.Value.String())
		}
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("%s=%q: %q, %v; want %q", w.file, w.value, got, err, want)
		}
	}
	for _, w := range []kv{{"memory.max", "lots"}, {"cpu.max", "1"}, {"cpu.max", "x 100000"}, {"cpuset.cpus", "3-1"},
		{"cpuset.cpus", "99999"}, {"memory.oom.group", "2"}, {"cpu.weight", "-1"}} {
		if _, err := unitProperties(w); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s=%q: %v, want ErrInvalidArgument", w.file, w.value, err)
		}
	}
}

// TestSystemdDriverNeedsSystemd: without systemd as init the driver is
// refused with a reason, not run half-way.
func TestSystemdDriverNeedsSystemd(t *testing.T) {
	if _, err := os.Stat(systemdBooted); err == nil {
		t.Skip("systemd is the init system here")
	}
	_, err := Open(Options{Driver: "systemd"})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "cgroupfs") {
		t.Errorf("systemd driver without systemd: %v", err)
	}
}

// TestSystemdExitedScope: once its processes are gone systemd collects a
// scope by itself; Destroy and KillAll of it then succeed or say NotFound.
func TestSystemdExitedScope(t *testing.T) {
	m := realSystemd(t)
	path := systemdTestPath(t)
	create(t, m, path, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr[int64](5)}})
	h := startHeld(t, m, path, "exit 0")
	h.release(t)
	if err := h.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	u, _ := parseSystemd(path)
	err := retry(func() error {
		if p := unitShow(t, u.Name, "LoadState"); p["LoadState"] != "not-found" {
			return fmt.Errorf("unit %s: %v", u.Name, p)
		}
		return nil
	})
	if err != nil {
		t.Errorf("an empty scope stays: %v", err)
	}
	if err := m.KillAll(path); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("KillAll of a collected scope: %v", err)
	}
	if err := m.Destroy(path); err != nil {
		t.Errorf("Destroy of a collected scope: %v", err)
	}
}

// TestSystemdSlice: a pod slice that does not exist is made as a transient
// unit, with the slices above it; a scope joins it; Destroy of the slice
// stops it and what is in it.
func TestSystemdSlice(t *testing.T) {
	m := realSystemd(t)
	slice := fmt.Sprintf("%s-%d-pod.slice", testPrefix, os.Getpid())
	create(t, m, slice, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](128 << 20)}})
	d := cgroupDir(t, m, "", slice)
	if got := mustRead(t, d, "memory.max"); got != "134217728" {
		t.Errorf("slice memory.max %s", got)
	}
	if p := unitShow(t, slice, "ActiveState", "MemoryMax"); p["ActiveState"] != "active" || p["MemoryMax"] != "134217728" {
		t.Errorf("slice unit: %v", p)
	}
	ctr := slice + ":cri-mini:" + testPrefix + "-in-pod"
	create(t, m, ctr, nil)
	h := startHeld(t, m, ctr, "sleep 600")
	if got := mustPath(t, m, ctr); !strings.HasPrefix(cgroupDir(t, m, "", ctr), d+"/") {
		t.Errorf("scope %s not in the slice %s", got, d)
	}
	if err := m.Destroy(slice); err != nil {
		t.Fatal(err)
	}
	if sig := signaled(h.cmd.Wait()); sig != syscall.SIGKILL {
		t.Errorf("process in the slice ended by %v, want SIGKILL", sig)
	}
	if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s remains", d)
	}
}

// rootDisk is "major:minor" of the disk / is on, when that is a whole
// disk (io.max takes no partitions).
func rootDisk() (string, bool) {
	var st unix.Stat_t
	if unix.Stat("/", &st) != nil {
		return "", false
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	if _, err := os.Stat("/sys/dev/block/" + dev + "/partition"); err == nil {
		return "", false
	}
	if _, err := os.Stat("/sys/dev/block/" + dev); err != nil {
		return "", false
	}
	return dev, true
}
