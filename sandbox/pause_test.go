package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/nstest"
	"github.com/cri-mini/cri-mini/internal/proc"
	"github.com/cri-mini/cri-mini/internal/randid"
	"github.com/cri-mini/cri-mini/sandbox/pause"
)

// nsPids returns the pids of process pid in each pid namespace it is in,
// outermost first (the NSpid line of /proc/<pid>/status).
func nsPids(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no NSpid for %d", pid)
	return nil
}

// startIn starts cmd as a member of the pid namespace pinned at nsPath, as
// a container joining the pod would be.
func startIn(t *testing.T, nsPath string, cmd *exec.Cmd) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// This thread's children go into the pod's namespace; the thread is
		// never unlocked, so Go ends it instead of reusing it.
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWPID); err != nil {
			errc <- err
			return
		}
		errc <- cmd.Start()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("start in %s: %v", nsPath, err)
	}
	go func() { _ = cmd.Wait() }()
}

func TestSharedPidNamespace(t *testing.T) {
	e := newEnv(t, 6)
	m := e.manager(t)
	ctx := context.Background()
	s := spec("shared")
	s.SharedPID = true
	s.HostNetwork = true
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, p.ID) })
	if ok, _ := nspin.IsPinned(p.PIDNS); !ok || p.PausePID == 0 {
		t.Fatalf("pid namespace %q pause %d", p.PIDNS, p.PausePID)
	}
	if ids := nsPids(t, p.PausePID); len(ids) != 2 || ids[1] != "1" {
		t.Fatalf("pause process pids %v, want PID 1 of a namespace of its own", ids)
	}

	// A process joining the pod's namespace is PID 2 there, and it dies
	// with the pod when the pod stops.
	member := exec.Command("/bin/busybox", "sleep", "600")
	startIn(t, p.PIDNS, member)
	if ids := nsPids(t, member.Process.Pid); len(ids) != 2 || ids[1] == "1" {
		t.Fatalf("member pids %v", ids)
	}
	if got, _ := m.Get(p.ID); got.State != Ready {
		t.Errorf("pod with a live pause: %s", got.State)
	}
	if err := m.Stop(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{p.PausePID, member.Process.Pid} {
		deadline := time.Now().Add(5 * time.Second)
		for proc.Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if proc.Alive(pid) {
			t.Errorf("pid %d still alive after Stop", pid)
		}
	}
	if err := m.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.PIDNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid namespace pin left: %v", err)
	}
}

func TestOrphanPauseCollected(t *testing.T) {
	e := newEnv(t, 7)
	m := e.manager(t)
	id := randid.New()
	dir := m.podDir(id)
	if err := os.MkdirAll(nsDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	p := &Pod{ID: id, State: Creating, Spec: spec("orphan")}
	if err := m.save(p); err != nil {
		t.Fatal(err)
	}
	if err := m.startPause(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	pid := p.PausePID
	e.manager(t) // start-up collects the orphan
	if proc.Alive(pid) {
		t.Errorf("orphan pause %d still alive", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan dir left: %v", err)
	}
}

func TestPodWhosePauseDiedIsNotReady(t *testing.T) {
	e := newEnv(t, 12)
	m := e.manager(t)
	ctx := context.Background()
	s := spec("pause-dies")
	s.SharedPID, s.HostNetwork = true, true
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Remove(ctx, p.ID)
	if err := unix.Kill(p.PausePID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for proc.Alive(p.PausePID) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got, err := m.Get(p.ID)
	if err != nil || got.State != NotReady {
		t.Errorf("after its pause died the pod is %v (%v), want not ready", got.State, err)
	}
	if l := m.List(); len(l) != 1 || l[0].State != NotReady {
		t.Errorf("List: %+v", l)
	}
}

// TestPauseIsConfined: the pause, PID 1 of every container of the pod, leads
// nowhere. Even the host's root, looking through /proc, finds an empty
// read-only root and working directory, one mount, no descriptor, the
// pod's network (not the host's), an unprivileged user without
// capabilities, no_new_privs, seccomp, not dumpable, in the pod's cgroup.
func TestPauseIsConfined(t *testing.T) {
	e := newEnv(t, 13)
	m := e.manager(t)
	ctx := context.Background()
	s := spec("confined")
	s.SharedPID = true
	s.CgroupParent = "/kubepods/besteffort/poduid-confined"
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, p.ID) })
	proc := fmt.Sprintf("/proc/%d/", p.PausePID)

	status := procStatus(t, p.PausePID)
	for key, want := range map[string]string{
		"Uid": "65535\t65535\t65535\t65535", "Gid": "65535\t65535\t65535\t65535", "Groups": "",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2",
	} {
		if status[key] != want {
			t.Errorf("pause %s: %q, want %q", key, status[key], want)
		}
	}
	// The files under /proc/PID of a process that is not dumpable belong
	// to root, not to the process's user.
	if st, err := os.Stat(proc + "status"); err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the pause is dumpable: %sstatus owned by uid %v (%v)", proc, st.Sys().(*syscall.Stat_t).Uid, err)
	}
	for _, dir := range []string{"root", "cwd", "fd"} {
		if entries, err := os.ReadDir(proc + dir); err != nil || len(entries) != 0 {
			t.Errorf("pause %s: %v (%v), want empty", dir, entries, err)
		}
	}
	if err := os.WriteFile(proc+"root/planted", nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing into the pause's root: %v, want EROFS", err)
	}
	mounts, err := os.ReadFile(proc + "mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(mounts)), "\n"); len(lines) != 1 ||
		!strings.Contains(lines[0], " / / ro,") || !strings.Contains(lines[0], " - tmpfs ") {
		t.Errorf("pause mountinfo, want its read-only tmpfs root alone:\n%s", mounts)
	}
	for kind, pin := range map[string]string{"net": p.NetNS, "uts": p.UTSNS, "ipc": p.IPCNS, "pid": p.PIDNS} {
		if !nstest.Same(t, proc+"ns/"+kind, pin) && !(kind == "pid" && nstest.Same(t, proc+"ns/pid_for_children", pin)) {
			t.Errorf("pause %s namespace is not the pod's %s", kind, pin)
		}
	}
	if nstest.Same(t, proc+"ns/mnt", "/proc/self/ns/mnt") {
		t.Errorf("pause in the host's mount namespace")
	}
	podDev := readInNS(t, p.NetNS, nspin.Net, "/proc/thread-self/net/dev")
	if dev, err := os.ReadFile(proc + "net/dev"); err != nil || interfaces(string(dev)) != interfaces(podDev) {
		t.Errorf("pause /proc/PID/net/dev lists %q (%v), want the pod's %q", interfaces(string(dev)), err, interfaces(podDev))
	}
	if exe, err := os.Readlink(proc + "exe"); err != nil || !strings.HasPrefix(exe, "/memfd:") {
		t.Errorf("pause runs %q (%v), want a sealed copy", exe, err)
	}
	if pids, err := m.cgroups.Pids(s.CgroupParent + "/" + p.ID); err != nil || !slices.Equal(pids, []int{p.PausePID}) {
		t.Errorf("pause %d not in its cgroup below the pod's %s: %v (%v)", p.PausePID, s.CgroupParent, pids, err)
	}
	// A Go runtime would be 20 MiB: the pause stays C and small.
	if rss, err := strconv.Atoi(strings.TrimSuffix(status["VmRSS"], " kB")); err != nil || rss > 4096 {
		t.Errorf("pause VmRSS %q, want under 4 MiB", status["VmRSS"])
	}
	t.Logf("pause VmRSS %s", status["VmRSS"])
}

// TestPauseRunsAsThePodUser: the pod's run_as_user and run_as_group name
// the pause's ids; uid 0 keeps no capability either.
func TestPauseRunsAsThePodUser(t *testing.T) {
	e := newEnv(t, 14)
	m := e.manager(t)
	ctx := context.Background()
	for _, tc := range []struct {
		user, group *int64
		uid, gid    string
	}{
		{new(int64(1234)), new(int64(4321)), "1234", "4321"},
		{new(int64(0)), nil, "0", "65535"},
	} {
		s := spec(fmt.Sprintf("user-%s-%s", tc.uid, tc.gid))
		s.SharedPID, s.HostNetwork, s.RunAsUser, s.RunAsGroup = true, true, tc.user, tc.group
		p, err := m.Run(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		status := procStatus(t, p.PausePID)
		ids := func(id string) string { return strings.Repeat(id+"\t", 3) + id }
		if status["Uid"] != ids(tc.uid) || status["Gid"] != ids(tc.gid) || status["CapEff"] != "0000000000000000" ||
			status["CapBnd"] != "0000000000000000" || status["CapPrm"] != "0000000000000000" {
			t.Errorf("pause of %s: Uid %q Gid %q CapEff %s CapPrm %s CapBnd %s, want uid %s gid %s and no capability", s.Metadata.Name,
				status["Uid"], status["Gid"], status["CapEff"], status["CapPrm"], status["CapBnd"], tc.uid, tc.gid)
		}
		if err := m.Remove(ctx, p.ID); err != nil {
			t.Error(err)
		}
	}
}

// TestPauseFailureReported: a pause that cannot confine itself (here, the
// kernel refuses its seccomp program) says why, and nothing of it stays.
func TestPauseFailureReported(t *testing.T) {
	e := newEnv(t, 15)
	m := e.manager(t)
	id := randid.New()
	dir := m.podDir(id)
	if err := os.MkdirAll(nsDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	target := filepath.Join(nsDir(dir), "pid")
	bad := pause.Config{UID: 65535, GID: 65535, Filter: []unix.SockFilter{{Code: 0xffff}}}
	_, err := startPause(context.Background(), "", pauseSpec{podID: id, pidNS: target, config: bad})
	if err == nil || !strings.Contains(err.Error(), "seccomp filter: Invalid argument") {
		t.Errorf("pause with a bad seccomp program: %v, want the kernel's refusal", err)
	}
	if err == nil {
		// Started after all: what a pod's removal does.
		t.Cleanup(func() { _ = killPause(id); _ = unmount(target) })
		return
	}
	if err := killPause(id); err != nil {
		t.Error(err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid namespace pinned for a failed pause (%v)", err)
	}
}

// procStatus returns the fields of /proc/<pid>/status by name.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// interfaces lists the interface names of a /proc/net/dev table.
func interfaces(dev string) string {
	var names []string
	for line := range strings.SplitSeq(dev, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") {
			names = append(names, strings.TrimSpace(name))
		}
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}
