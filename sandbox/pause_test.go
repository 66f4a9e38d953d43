package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/nspin"
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

func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(data))
	return len(fields) > 2 && fields[2] != "Z"
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
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid) {
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
	id := newID()
	dir := m.podDir(id)
	if err := os.MkdirAll(nsDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.save(&Pod{ID: id, State: Creating, Spec: spec("orphan")}); err != nil {
		t.Fatal(err)
	}
	pid, err := startPause("", id, nsDir(dir)+"/pid")
	if err != nil {
		t.Fatal(err)
	}
	e.manager(t) // start-up collects the orphan
	if alive(pid) {
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
	for alive(p.PausePID) && time.Now().Before(deadline) {
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
