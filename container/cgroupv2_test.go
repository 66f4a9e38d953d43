package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/randid"
)

// TestCgroupNamespaceDelegation (v2): a container's cgroup is the root of
// its cgroup namespace, and with nsdelegate (systemd mounts cgroup2 so)
// that root's limits are its parent's to set: even a container with
// CAP_SYS_ADMIN and no seccomp, mounting cgroup2 itself, cannot lift its
// memory limit. Below its root it may make cgroups (delegation).
func TestCgroupNamespaceDelegation(t *testing.T) {
	if !unifiedHost(t) {
		t.Skip("cgroup v2 only: v1 hierarchies have no delegation boundary")
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Mountpoint == "/sys/fs/cgroup" && !strings.Contains(m.SuperOptions, "nsdelegate") {
			t.Skipf("cgroup2 is mounted without nsdelegate (%s)", m.SuperOptions)
		}
	}
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "nsdelegate", rootfs, "sh", "-c", `mkdir -p /mnt/cg && mount -t cgroup2 cgroup2 /mnt/cg || exit 9
		cat /mnt/cg/memory.max; (echo max > /mnt/cg/memory.max) 2>/dev/null && echo lifted; cat /mnt/cg/memory.max
		mkdir /mnt/cg/sub && echo $$ > /mnt/cg/sub/cgroup.procs && cat /proc/self/cgroup`)
	all := append(caps.DefaultSet(), "CAP_SYS_ADMIN")
	b.Spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
	limit := int64(64 << 20)
	b.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	st, out, errOut := rt.run(t, "nsdelegate", b)
	if st.ExitCode != 0 || out != "67108864\n67108864\n0::/sub\n" {
		t.Errorf("exit %d, stdout %q, stderr %q; want the limit unchanged and a cgroup of its own below its root", st.ExitCode, out, errOut)
	}
}

// TestSystemdDriver (where systemd is the init of a v2 host): a container
// is a scope in its pod's slice holding the init, not the supervisor; an
// exec joins it; the pids limit set after create is the unit's TasksMax;
// an OOM kill is reported after systemd has collected the scope; deletion
// leaves no unit and no cgroup.
func TestSystemdDriver(t *testing.T) {
	cg, err := cgroups.New("systemd")
	if errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Skipf("no systemd driver here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	suffix := randid.New()[:8]
	slice := "crimini_test_" + suffix + ".slice"
	rt := &testRuntime{Runtime: &Runtime{StateDir: filepath.Join(t.TempDir(), "state"), Cgroups: cg}}
	t.Cleanup(func() {
		if err := cg.Destroy(slice); err != nil {
			t.Errorf("remove test slice: %v", err)
		}
	})
	rootfs := busyboxRootfs(t)
	bundle := func(id string, args ...string) Bundle {
		b := rt.bundle(t, id, rootfs, args...)
		b.CgroupPath = slice + ":cri-mini:" + id
		return b
	}
	show := func(unit, prop string) string {
		out, err := exec.Command("systemctl", "show", unit, "--value", "-p", prop).Output()
		if err != nil {
			t.Fatalf("systemctl show %s: %v", unit, err)
		}
		return strings.TrimSpace(string(out))
	}

	id := "sd-" + suffix
	unit := "cri-mini-" + id + ".scope"
	b := bundle(id, "sleep", "999")
	pids, mem := int64(20), int64(64<<20)
	b.Spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids}, Memory: &specs.LinuxMemory{Limit: &mem}}
	st := rt.startRunning(t, id, b)
	cgPath, err := cg.Path(b.CgroupPath)
	if err != nil {
		t.Fatal(err)
	}
	for prop, want := range map[string]string{"ActiveState": "active", "Slice": slice, "ControlGroup": cgPath, "TasksMax": "20", "MemoryMax": "67108864"} {
		if got := show(unit, prop); got != want {
			t.Errorf("unit %s: %s=%q, want %q", unit, prop, got, want)
		}
	}
	if got, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid)); string(got) != "0::"+cgPath+"\n" {
		t.Errorf("init in %q, want %s", got, cgPath)
	}
	sup, err := readProcess(filepath.Join(rt.StateDir, id), supFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sup.Pid)); strings.Contains(string(got), unit) {
		t.Errorf("the supervisor is in the container's scope: %s", got)
	}
	code, out := rt.execOut(t, id, "sh", "-c", `a=$(cat /proc/self/cgroup); [ "$a" = "$(cat /proc/1/cgroup)" ] && echo "$a"`)
	if code != 0 || out != "0::/\n" {
		t.Errorf("exec: exit %d, %q; want the init's cgroup, the namespace's root", code, out)
	}

	oomID := "sdoom-" + suffix
	// As critest's: dd's buffer is over the limit at once, so the victim
	// is dead, and its scope may be gone, before the kernel notifies the
	// kill (at most every 10 ms per file).
	ob := bundle(oomID, "sh", "-c", "busybox dd if=/dev/zero of=/dev/null bs=20M")
	limit := int64(15 << 20)
	ob.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
	ost, out, _ := rt.run(t, oomID, ob)
	if ost.ExitCode != 137 || !ost.OOMKilled || out != "" {
		t.Errorf("memory hog under 15 MiB: exit %d, OOMKilled %v, stdout %q; want 137, true", ost.ExitCode, ost.OOMKilled, out)
	}
	// A child OOM-killed while the init lives on and exits 0: only the
	// supervisor's watch of the scope can tell (the init did not die of
	// SIGKILL, and the scope is gone with its last process).
	childID := "sdoomchild-" + suffix
	cb := bundle(childID, "sh", "-c", "busybox dd if=/dev/zero of=/dev/null bs=20M; sleep 0.2; exit 0")
	cb.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
	if cst, _, _ := rt.run(t, childID, cb); cst.ExitCode != 0 || !cst.OOMKilled {
		t.Errorf("a child OOM-killed, the init exiting 0: exit %d, OOMKilled %v; want 0, true", cst.ExitCode, cst.OOMKilled)
	}
	deadline := time.Now().Add(10 * time.Second)
	for show("cri-mini-"+oomID+".scope", "LoadState") != "not-found" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := show("cri-mini-"+oomID+".scope", "LoadState"); got != "not-found" {
		t.Errorf("scope of the ended container: %s, want it collected", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rt.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := show(unit, "LoadState"); got != "not-found" {
		t.Errorf("unit after delete: %s", got)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", cgPath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s after delete: %v", cgPath, err)
	}
}
