package container

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/container/seccomp"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

func TestMemoryLimitOOMKill(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "oom", rootfs, "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived")
	limit := int64(32 << 20)
	b.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
	st, out, _ := rt.run(t, "oom", b)
	if st.ExitCode != 137 || !st.OOMKilled || out != "" {
		t.Errorf("memory hog under 32 MiB: exit %d, OOMKilled %v, stdout %q; want 137, true", st.ExitCode, st.OOMKilled, out)
	}
}

// TestPidsLimit: a fork loop stops at pids.max, and even the tightest
// limit lets the init build the container (its Go threads are not held
// against the application's limit).
func TestPidsLimit(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	for _, tc := range []struct {
		limit  int64
		script string
		stdout string
	}{
		// The cgroup namespace is rooted at the container's cgroup.
		{5, "cat " + ctrCgroupFile(t, "pids", "pids.max") + "; grep -vc ':/$' /proc/self/cgroup; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1 & done; echo done", "5\n0\n"},
		{1, "read max < " + ctrCgroupFile(t, "pids", "pids.max") + "; echo $max; sleep 0 & wait", "1\n"},
	} {
		id := "pids-" + strconv.FormatInt(tc.limit, 10)
		b := rt.bundle(t, id, rootfs, "sh", "-c", tc.script)
		b.Spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &tc.limit}}
		st, out, errOut := rt.run(t, id, b)
		// busybox sh gives up at the first failed fork.
		if st.ExitCode == 0 || out != tc.stdout || !strings.Contains(errOut, "can't fork: Resource temporarily unavailable") {
			t.Errorf("pids.max %d: exit %d, stdout %q, stderr %q; want %q and a failed fork", tc.limit, st.ExitCode, out, errOut, tc.stdout)
		}
	}
}

// TestSeccompDenies: CAP_SYS_ADMIN allows mount; the default profile for
// the default capabilities still refuses it with EPERM.
func TestSeccompDenies(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	for _, withSeccomp := range []bool{false, true} {
		id := fmt.Sprintf("seccomp-%v", withSeccomp)
		b := rt.bundle(t, id, rootfs, "sh", "-c", "mkdir -p /m && mount -t tmpfs t /m && echo mounted")
		all := append(caps.DefaultSet(), "CAP_SYS_ADMIN")
		b.Spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
		want, wantErr := "mounted\n", ""
		if withSeccomp {
			b.Spec.Linux.Seccomp = seccomp.RuntimeDefault()
			want, wantErr = "", "mount: permission denied" // busybox's words for EPERM
		}
		_, out, errOut := rt.run(t, id, b)
		if out != want || !strings.Contains(errOut, wantErr) {
			t.Errorf("seccomp %v: stdout %q stderr %q, want %q and %q", withSeccomp, out, errOut, want, wantErr)
		}
	}
}

func TestReadonlyRoot(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "roroot", rootfs, "sh", "-c", "touch /tmp/x 2>/dev/null && echo written || echo refused; echo y > /dev/shm/y && echo shm")
	b.Spec.Root.Readonly = true
	_, out, errOut := rt.run(t, "roroot", b)
	if out != "refused\nshm\n" {
		t.Errorf("read-only root: stdout %q stderr %q", out, errOut)
	}
}

func TestTerminal(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "tty", rootfs, "sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty; tty")
	b.Tty = true
	st, out, errOut := rt.run(t, "tty", b)
	if st.ExitCode != 0 || out != "is-a-tty\n/dev/pts/0\n" || errOut != "" {
		t.Errorf("terminal: exit %d stdout %q stderr %q", st.ExitCode, out, errOut)
	}
}

// TestRestartedRuntime: a daemon that restarts makes a new Runtime on the
// same state directory and finds, execs into, kills and waits for the
// containers it had.
func TestRestartedRuntime(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "restart", rootfs, "sh", "-c", "trap 'exit 9' TERM; echo ready; while :; do sleep 0.05; done")
	st := rt.startRunning(t, "restart", b)
	// A SIGTERM before the trap is set would go unheard (PID 1).
	waitForLog(t, b.LogPath, "ready")
	again := &testRuntime{Runtime: &Runtime{StateDir: rt.StateDir, Cgroups: rt.Cgroups}, cgroupParent: rt.cgroupParent}
	st2, err := again.State("restart")
	if err != nil || st2.Status != StatusRunning || st2.Pid != st.Pid {
		t.Fatalf("state after restart: %+v, %v", st2, err)
	}
	if code, out := again.execOut(t, "restart", "hostname"); code != 0 || out != "ctr-restart\n" {
		t.Errorf("exec after restart: %d %q", code, out)
	}
	if err := again.Kill(context.Background(), "restart", 15); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err := again.Wait(ctx, "restart"); err != nil || st.ExitCode != 9 {
		t.Errorf("wait after restart: %+v, %v", st, err)
	}
}

// TestJoinPidNamespace: a container that joins another's pid namespace by
// path (a pod's shared one) sees its processes.
func TestJoinPidNamespace(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	first := rt.startRunning(t, "first", rt.bundle(t, "first", rootfs, "sleep", "999"))
	b := rt.bundle(t, "second", rootfs, "sh", "-c", "cat /proc/1/cmdline; echo; echo $$")
	for i, ns := range b.Spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			b.Spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/pid", first.Pid)
		}
	}
	_, out, errOut := rt.run(t, "second", b)
	if !strings.HasPrefix(out, "sleep\x00999\x00\n") || strings.HasSuffix(out, "\n1\n") {
		t.Errorf("joined pid namespace: stdout %q stderr %q", out, errOut)
	}
	if s, err := rt.State("first"); err != nil || s.Status != StatusRunning {
		t.Errorf("first container after the second ended: %+v, %v", s, err)
	}
}

func TestOOMScoreAdjAndDefaultPath(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	// No PATH in the environment: the command is found in the default one.
	b := rt.bundle(t, "oomscore", rootfs, "cat", "/proc/self/oom_score_adj")
	b.Spec.Process.Env = nil
	score := 500
	b.Spec.Process.OOMScoreAdj = &score
	st, out, errOut := rt.run(t, "oomscore", b)
	if st.ExitCode != 0 || out != "500\n" {
		t.Errorf("oom_score_adj: exit %d, stdout %q, stderr %q", st.ExitCode, out, errOut)
	}
}

func TestUnsupportedNamespace(t *testing.T) {
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "userns", rootfs, "true")
	b.Spec.Linux.Namespaces = append(b.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	if err := rt.Create(context.Background(), "userns", b); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("user namespace: %v, want InvalidArgument", err)
	}
	b.Spec.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.MountNamespace, Path: "/proc/self/ns/mnt"}}
	if err := rt.Create(context.Background(), "userns", b); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("joining a mount namespace: %v, want InvalidArgument", err)
	}
}

// TestExecUnderPidsLimit: an exec joins the container's cgroup only when
// it is about to exec, so its setup threads do not count against a pids
// limit the container nearly uses up.
func TestExecUnderPidsLimit(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "execpids", rootfs, "sleep", "999")
	limit := int64(2)
	b.Spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}
	rt.startRunning(t, "execpids", b)
	for range 10 {
		code, out := rt.execOut(t, "execpids", "sh", "-c", "read n < "+ctrCgroupFile(t, "pids", "pids.current")+"; echo $n; grep -vc ':/$' /proc/self/cgroup")
		if code != 1 || out != "2\n0\n" {
			t.Fatalf("exec under pids.max 2: exit %d, output %q; want 2 tasks and every cgroup the container's", code, out)
		}
	}
}

// TestUpdateResources: an in-place resize reaches the cgroup and the
// record, so State, the plan and a restarted runtime report it; an update
// the kernel refuses half way leaves both as they were; a stopped
// container cannot be resized.
func TestUpdateResources(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "resize", rootfs, "sleep", "999")
	limit, shares := int64(64<<20), uint64(512)
	b.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}, CPU: &specs.LinuxCPU{Shares: &shares}}
	rt.startRunning(t, "resize", b)
	ctx := context.Background()

	inForce := func(r *Runtime) (uint64, uint64, *specs.LinuxResources) {
		t.Helper()
		stats, err := r.Cgroups.(cgroups.Manager).Stats(b.CgroupPath)
		if err != nil {
			t.Fatal(err)
		}
		st, err := r.State("resize")
		if err != nil {
			t.Fatal(err)
		}
		return stats.Memory.Limit, stats.CPU.Shares, st.Spec.Linux.Resources
	}
	// What the cgroup shows for shares: v2 keeps a weight, read back as
	// shares with the conversion's rounding.
	cpuFigure := func(shares uint64) uint64 {
		if rt.Cgroups.(cgroups.Manager).Version() == 2 {
			return cgroups.WeightToShares(cgroups.SharesToWeight(shares))
		}
		return shares
	}
	newLimit, newShares := int64(96<<20), uint64(1024)
	if err := rt.Update(ctx, "resize", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &newLimit}, CPU: &specs.LinuxCPU{Shares: &newShares}}); err != nil {
		t.Fatal(err)
	}
	again := &Runtime{StateDir: rt.StateDir, Cgroups: rt.Cgroups}
	for name, r := range map[string]*Runtime{"this runtime": rt.Runtime, "a restarted runtime": again} {
		mem, cpu, rec := inForce(r)
		if mem != 96<<20 || cpu != cpuFigure(1024) || *rec.Memory.Limit != newLimit || *rec.CPU.Shares != newShares {
			t.Errorf("%s after the update: cgroup memory %d shares %d, recorded memory %d shares %d; want 96 MiB and 1024",
				name, mem, cpu, *rec.Memory.Limit, *rec.CPU.Shares)
		}
	}
	plan, err := again.Plan("resize")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(plan, func(s Step) bool {
		return s.Kind == KindCgroup && slices.ContainsFunc(s.Cgroup.Writes, func(w CgroupFileWrite) bool { return w.Value == strconv.Itoa(96<<20) })
	}) {
		t.Errorf("the plan does not write the new memory limit: %+v", plan)
	}

	// cpu.shares is written before the cpuset the kernel refuses: it goes
	// back to 1024.
	bad := uint64(2048)
	err = rt.Update(ctx, "resize", &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &bad, Cpus: "4095"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("update with a cpuset the machine lacks: %v, want InvalidArgument", err)
	}
	if mem, cpu, rec := inForce(rt.Runtime); mem != 96<<20 || cpu != cpuFigure(1024) || *rec.CPU.Shares != 1024 || rec.CPU.Cpus != "" {
		t.Errorf("after the refused update: cgroup memory %d shares %d, recorded %+v; want it as before", mem, cpu, rec.CPU)
	}

	if err := rt.Kill(ctx, "resize", 9); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := rt.Wait(wctx, "resize"); err != nil {
		t.Fatal(err)
	}
	if err := rt.Update(ctx, "resize", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("update of a stopped container: %v, want FailedPrecondition", err)
	}
}
