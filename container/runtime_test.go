package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/proc"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

func TestLifecycle(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "life", rootfs, "sh", "-c", "echo pid=$$; echo to-stderr >&2; exit 3")
	rt.create(t, "life", b)
	st, err := rt.State("life")
	if err != nil || st.Status != StatusCreated || st.Pid <= 0 {
		t.Fatalf("after create: %+v, %v", st, err)
	}
	// Created: the init waits and nothing of the app has run yet.
	time.Sleep(50 * time.Millisecond)
	if data, _ := os.ReadFile(b.LogPath); len(data) != 0 {
		t.Fatalf("app ran before start: %q", data)
	}
	if err := rt.Create(context.Background(), "life", b); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rt.Start(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	st, err = rt.Wait(ctx, "life")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusStopped || st.ExitCode != 3 || st.Signal != 0 || st.Finished.IsZero() || st.Started.IsZero() {
		t.Errorf("after exit 3: %+v", st)
	}
	if err := rt.Start(ctx, "life"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("start of a stopped container: %v, want FailedPrecondition", err)
	}
	out, errOut := readCRILog(t, b.LogPath)
	if out != "pid=1\n" || errOut != "to-stderr\n" {
		t.Errorf("stdout %q stderr %q, want pid=1 (the app is PID 1) and to-stderr", out, errOut)
	}
	list, err := rt.List()
	if err != nil || len(list) != 1 || list[0].ID != "life" {
		t.Errorf("list: %v, %v", list, err)
	}
}

func TestKill(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	for _, tc := range []struct {
		name   string
		args   []string
		sig    syscall.Signal
		code   int
		stdout string
	}{
		// PID 1 gets only the signals it handles (and SIGKILL).
		{"sigkill", []string{"sleep", "1000"}, syscall.SIGKILL, 137, ""},
		{"sigterm", []string{"sh", "-c", `trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.05; done`}, syscall.SIGTERM, 7, "ready\ngot TERM\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := rt.bundle(t, tc.name, rootfs, tc.args...)
			rt.startRunning(t, tc.name, b)
			if tc.stdout != "" {
				waitForLog(t, b.LogPath, "ready")
			}
			if err := rt.Kill(context.Background(), tc.name, tc.sig); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			st, err := rt.Wait(ctx, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if st.ExitCode != tc.code {
				t.Errorf("exit code %d, want %d (%+v)", st.ExitCode, tc.code, st)
			}
			if tc.sig == syscall.SIGKILL && st.Signal != int(syscall.SIGKILL) {
				t.Errorf("signal %d, want SIGKILL", st.Signal)
			}
			if out, _ := readCRILog(t, b.LogPath); out != tc.stdout {
				t.Errorf("stdout %q, want %q", out, tc.stdout)
			}
			// Killing a stopped container is no error.
			if err := rt.Kill(context.Background(), tc.name, syscall.SIGKILL); err != nil {
				t.Errorf("kill after exit: %v", err)
			}
		})
	}
}

// waitForLog polls the CRI log until it holds want.
func waitForLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if data, _ := os.ReadFile(path); strings.Contains(string(data), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("log %s never got %q", path, want)
}

func TestDeleteRunningLeavesNothing(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "running", rootfs, "sh", "-c", "sleep 1000 & sleep 1000")
	st := rt.startRunning(t, "running", b)
	pidns := nsOf(t, st.Pid, "pid")
	waitFor(t, func() bool { return len(pidsInNamespace(pidns, "sleep 1000")) == 2 })
	rt.deleteAndCheck(t, "running")
	if left := pidsInNamespace(pidns, "sleep 1000"); len(left) != 0 {
		t.Errorf("processes %v left after delete", left)
	}
	if _, err := rt.State("running"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("state after delete: %v, want NotFound", err)
	}
	if err := rt.Delete(context.Background(), "running"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second delete: %v, want NotFound", err)
	}
}

func TestCreateBadInput(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	good := rt.bundle(t, "x", rootfs, "true")
	for name, id := range map[string]string{"empty id": "", "slash": "a/b", "dots": ".."} {
		if err := rt.Create(context.Background(), id, good); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	noRoot := rt.bundle(t, "x", filepath.Join(rootfs, "missing"), "true")
	if err := rt.Create(context.Background(), "x", noRoot); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("missing rootfs: %v, want InvalidArgument", err)
	}
	for name, change := range map[string]func(*specs.Spec){
		"rlimit":     func(s *specs.Spec) { s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS"}} },
		"capability": func(s *specs.Spec) { s.Process.Capabilities.Bounding = []string{"CAP_BOGUS"} },
		"seccomp": func(s *specs.Spec) {
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_BOGUS"}
		},
	} {
		b := rt.bundle(t, "bad", rootfs, "true")
		change(b.Spec)
		if err := rt.Create(context.Background(), "bad", b); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("bad %s: %v, want InvalidArgument", name, err)
		}
		assertGone(t, filepath.Join(rt.StateDir, "bad"), config{Spec: b.Spec, CgroupPath: b.CgroupPath})
	}
	// A command that is not in the rootfs fails create and leaves nothing.
	missing := rt.bundle(t, "nocmd", rootfs, "/bin/nonexistent")
	err := rt.Create(context.Background(), "nocmd", missing)
	if err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Fatalf("create with a missing executable: %v", err)
	}
	assertGone(t, filepath.Join(rt.StateDir, "nocmd"), config{Spec: missing.Spec, CgroupPath: missing.CgroupPath})
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExec(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "exec", rootfs, "sleep", "999")
	st := rt.startRunning(t, "exec", b)

	code, out := rt.execOut(t, "exec", "sh", "-c", `hostname; for n in pid mnt net ipc uts; do readlink /proc/self/ns/$n; done; cat /proc/1/cmdline | tr '\0' ' '; echo; echo err >&2; exit 5`)
	want := strings.Join([]string{"ctr-exec",
		nsOf(t, st.Pid, "pid"), nsOf(t, st.Pid, "mnt"), nsOf(t, st.Pid, "net"), nsOf(t, st.Pid, "ipc"), nsOf(t, st.Pid, "uts"),
		"sleep 999 ", "err", ""}, "\n")
	if code != 5 || out != want {
		t.Errorf("exec: exit %d, output %q, want 5 and %q", code, out, want)
	}
	// Same cgroups as the init, in every hierarchy, at the root of the
	// container's cgroup namespace.
	code, out = rt.execOut(t, "exec", "sh", "-c", `a=$(cat /proc/self/cgroup); [ "$a" = "$(cat /proc/1/cgroup)" ] && echo same; echo "$a" | grep -vc ':/$'`)
	if code != 1 || out != "same\n0\n" {
		t.Errorf("exec cgroup vs init's: exit %d, %q; want the same cgroups, all the namespace's root", code, out)
	}
	// Death by signal is 128+n.
	if code, _ := rt.execOut(t, "exec", "sh", "-c", "kill -9 $$"); code != 137 {
		t.Errorf("exec killed by SIGKILL: exit %d, want 137", code)
	}
	// User, env and cwd of the exec, not the container's.
	code, out = rt.execOut(t, "exec", "sh", "-c", "id -u; pwd; echo $V")
	if code != 0 || out != "0\n/\n\n" {
		t.Errorf("exec defaults: %d %q", code, out)
	}
	var sb strings.Builder
	code, err := rt.Exec(context.Background(), "exec", ExecOptions{Args: []string{"sh", "-c", "id -u; pwd; echo $V; grep CapEff /proc/self/status"},
		Env: []string{"V=1", "PATH=/bin"}, Cwd: "/tmp", User: &b.Spec.Process.User, Stdout: &sb})
	if err != nil || code != 0 || sb.String() != "0\n/tmp\n1\nCapEff:\t00000000a80425fb\n" {
		t.Errorf("exec with options: %d %q %v", code, sb.String(), err)
	}
	sb.Reset()
	code, err = rt.Exec(context.Background(), "exec", ExecOptions{Args: []string{"sh", "-c", "id; grep CapEff /proc/self/status"},
		User: &specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{7}}, Stdout: &sb})
	if err != nil || code != 0 || sb.String() != "uid=1000 gid=1000 groups=7\nCapEff:\t0000000000000000\n" {
		t.Errorf("exec as a user: %d %q %v", code, sb.String(), err)
	}
	sb.Reset()
	code, err = rt.Exec(context.Background(), "exec", ExecOptions{Args: []string{"sh", "-c", "tty; test -t 0 && echo in-tty"}, Tty: true, Stdout: &sb})
	if err != nil || code != 0 || !strings.HasPrefix(sb.String(), "/dev/pts/") || !strings.HasSuffix(sb.String(), "\r\nin-tty\r\n") {
		t.Errorf("exec with a tty: %d %q %v", code, sb.String(), err)
	}
	code, err = rt.Exec(context.Background(), "exec", ExecOptions{Args: []string{"cat"}, Stdin: strings.NewReader("from stdin\n"), Stdout: &sb})
	if err != nil || code != 0 || !strings.HasSuffix(sb.String(), "in-tty\r\nfrom stdin\n") {
		t.Errorf("exec with stdin: %d %q %v", code, sb.String(), err)
	}
	if _, err := rt.Exec(context.Background(), "exec", ExecOptions{Args: []string{"/bin/nonexistent"}}); err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("exec of a missing command: %v", err)
	}
	if _, err := rt.Exec(context.Background(), "nope", ExecOptions{Args: []string{"true"}}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("exec in a missing container: %v, want NotFound", err)
	}
}

// TestExecOnHostPIDNamespace: in a container on the host's pid namespace
// (hostPID) the exec's parent is visible to its child; the check that the
// parent still lives must take it for alive (critest's HostPID spec).
func TestExecOnHostPIDNamespace(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "hostpid", rootfs, "sleep", "999")
	b.Spec.Linux.Namespaces = slices.DeleteFunc(b.Spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == specs.PIDNamespace })
	rt.startRunning(t, "hostpid", b)
	code, out := rt.execOut(t, "hostpid", "sh", "-c", "readlink /proc/self/ns/pid")
	if own, _ := os.Readlink("/proc/self/ns/pid"); code != 0 || strings.TrimSpace(out) != own {
		t.Errorf("exec on the host's pid namespace: exit %d, %q, want %s", code, out, own)
	}
}

func TestExecStoppedContainer(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	rt.run(t, "stopped", rt.bundle(t, "stopped", rootfs, "true"))
	if _, err := rt.Exec(context.Background(), "stopped", ExecOptions{Args: []string{"true"}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("exec in a stopped container: %v, want FailedPrecondition", err)
	}
}

// TestExecTimeout: when the exec's context ends, the exec'd process and
// what it started in the container are killed, and the error says why.
func TestExecTimeout(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	st := rt.startRunning(t, "timeout", rt.bundle(t, "timeout", rootfs, "sleep", "999"))
	pidns := nsOf(t, st.Pid, "pid")
	for _, tty := range []bool{false, true} {
		t.Run("tty="+strconv.FormatBool(tty), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			var out strings.Builder
			start := time.Now()
			_, err := rt.Exec(ctx, "timeout", ExecOptions{Args: []string{"sh", "-c", "sleep 1000 & sleep 1001; echo not killed"}, Stdout: &out, Tty: tty})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("exec past its deadline: %v, want DeadlineExceeded", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("exec returned %v after its deadline", d)
			}
			waitFor(t, func() bool {
				return len(pidsInNamespace(pidns, "sleep 1000"))+len(pidsInNamespace(pidns, "sleep 1001"))+len(pidsInNamespace(pidns, "sh -c sleep 1000 & sleep 1001; echo not killed")) == 0
			})
			if strings.Contains(out.String(), "not killed") {
				t.Errorf("output %q", out.String())
			}
		})
	}
}

// TestExecDiesWithItsCaller: a process run by Exec does not outlive the
// process that called Exec (the daemon, killed with kill -9), whatever user
// it runs as (a change of user clears a parent-death signal).
func TestExecDiesWithItsCaller(t *testing.T) {
	roottest.Require(t)
	if id := os.Getenv("CRI_MINI_TEST_EXEC_IN"); id != "" {
		// The caller, in a process of its own that the test kills.
		rt := &Runtime{StateDir: os.Getenv("CRI_MINI_TEST_STATE")}
		uid, _ := strconv.Atoi(os.Getenv("CRI_MINI_TEST_UID"))
		_, err := rt.Exec(context.Background(), id, ExecOptions{Args: []string{"sleep", "3000" + strconv.Itoa(uid)},
			User: &specs.User{UID: uint32(uid), GID: uint32(uid)}})
		t.Fatalf("exec returned before its caller was killed: %v", err)
	}
	rt := newTestRuntime(t)
	st := rt.startRunning(t, "orphan", rt.bundle(t, "orphan", busyboxRootfs(t), "sleep", "999"))
	// In a user namespace the nsenter parent becomes root there, which
	// clears its parent-death signal: it must set it again.
	pins := podNamespaces(t, usernsHost)
	stU := rt.startRunning(t, "orphan-userns", rt.usernsBundle(t, "orphan-userns", usernsRootfs(t, usernsHost), pins, usernsHost, "sleep", "999"))
	for _, tc := range []struct {
		id  string
		pid int
		uid int
	}{{"orphan", st.Pid, 0}, {"orphan", st.Pid, 1000}, {"orphan-userns", stU.Pid, 0}, {"orphan-userns", stU.Pid, 1000}} {
		uid, pidns := tc.uid, nsOf(t, tc.pid, "pid")
		t.Run(tc.id+"/uid="+strconv.Itoa(uid), func(t *testing.T) {
			caller := exec.Command(os.Args[0], "-test.run=^TestExecDiesWithItsCaller$")
			caller.Env = append(os.Environ(), "CRI_MINI_TEST_EXEC_IN="+tc.id, "CRI_MINI_TEST_STATE="+rt.StateDir,
				"CRI_MINI_TEST_UID="+strconv.Itoa(uid))
			log := filepath.Join(t.TempDir(), "caller.log")
			out, err := os.Create(log)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			caller.Stdout, caller.Stderr = out, out
			if err := caller.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = caller.Process.Kill()
				_ = caller.Wait()
				if t.Failed() {
					data, _ := os.ReadFile(log)
					t.Logf("the caller's output:\n%s", data)
				}
			})
			sleep := "sleep 3000" + strconv.Itoa(uid)
			waitFor(t, func() bool { return len(pidsInNamespace(pidns, sleep)) == 1 })
			if err := caller.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return len(pidsInNamespace(pidns, sleep)) == 0 })
		})
	}
}

func TestCRILog(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "log", rootfs, "sh", "-c", `echo out1; echo err1 >&2; head -c 20000 /dev/zero | tr '\0' a; echo; printf 'no newline'`)
	st, _, _ := rt.run(t, "log", b)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d", st.ExitCode)
	}
	var stdout []criRecord
	var stderr []criRecord
	for _, r := range criRecords(t, b.LogPath) {
		if r.stream == "stdout" {
			stdout = append(stdout, r)
		} else {
			stderr = append(stderr, r)
		}
	}
	long := strings.Repeat("a", 20000)
	want := []criRecord{
		{"stdout", false, "out1"},
		{"stdout", true, long[:maxLogLine]},
		{"stdout", false, long[maxLogLine:]},
		{"stdout", true, "no newline"}, // partial: the output ends without one
	}
	if len(stdout) != len(want) {
		t.Fatalf("stdout records %d, want %d: %+v", len(stdout), len(want), stdout)
	}
	for i := range want {
		if stdout[i] != want[i] {
			t.Errorf("stdout record %d: %s %v %d bytes, want %s %v %d bytes", i, stdout[i].stream, stdout[i].partial, len(stdout[i].content), want[i].stream, want[i].partial, len(want[i].content))
		}
	}
	if len(stderr) != 1 || stderr[0] != (criRecord{"stderr", false, "err1"}) {
		t.Errorf("stderr records %+v", stderr)
	}
}

// TestReopenLog: after the log file is rotated away, ReopenLog makes the
// container's further output go to a new file at the log path.
func TestReopenLog(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "reopen", rootfs, "sh", "-c", "echo one; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo two")
	rt.startRunning(t, "reopen", b)
	waitForLog(t, b.LogPath, "one")
	rotated := b.LogPath + ".1"
	if err := os.Rename(b.LogPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := rt.ReopenLog("reopen"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := os.Stat(b.LogPath); return err == nil })
	if code, out := rt.execOut(t, "reopen", "touch", "/tmp/go"); code != 0 {
		t.Fatalf("exec touch: %d %q", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := rt.Wait(ctx, "reopen"); err != nil {
		t.Fatal(err)
	}
	if old, _ := readCRILog(t, rotated); old != "one\n" {
		t.Errorf("rotated log %q, want one", old)
	}
	if cur, _ := readCRILog(t, b.LogPath); cur != "two\n" {
		t.Errorf("new log %q, want two", cur)
	}
	if err := rt.ReopenLog("reopen"); err == nil {
		t.Error("ReopenLog of a stopped container succeeded")
	}
}

func TestCreateCancelled(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "cancelled", rootfs, "true")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := rt.Create(ctx, "cancelled", b)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("create with a cancelled context: %v", err)
	}
	_, serr := rt.State("cancelled")
	if !errors.Is(serr, errdefs.ErrNotFound) {
		t.Errorf("state after a cancelled create: %v", serr)
	}
	assertGone(t, rt.StateDir+"/cancelled", config{Spec: b.Spec, CgroupPath: b.CgroupPath})
}

func TestDeleteCreated(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "created", rootfs, "sh", "-c", "echo ran")
	rt.create(t, "created", b)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := rt.Wait(ctx, "created"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait on a created container past the deadline: %v", err)
	}
	rt.deleteAndCheck(t, "created")
	if data, _ := os.ReadFile(b.LogPath); len(data) != 0 {
		t.Errorf("a deleted, never started container ran: %q", data)
	}
}

// TestSupervisorKilled: a supervisor that dies leaves the container to
// Delete, which still removes all of it.
func TestSupervisorKilled(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	rt.startRunning(t, "orphan", rt.bundle(t, "orphan", rootfs, "sleep", "999"))
	sup, err := readProcess(filepath.Join(rt.StateDir, "orphan"), supFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(sup.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !sup.Alive() })
	if st, err := rt.State("orphan"); err != nil || st.Status != StatusRunning {
		t.Errorf("state with the supervisor gone and the init alive: %+v, %v", st, err)
	}
	rt.deleteAndCheck(t, "orphan")
}

// TestReopenLogRightAfterCreate: the supervisor handles the reopen signal
// from the moment Create returns (its default action would kill it).
func TestReopenLogRightAfterCreate(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	for i := range 10 {
		id := "early-" + strconv.Itoa(i)
		b := rt.bundle(t, id, rootfs, "echo", "hello")
		rt.create(t, id, b)
		if err := rt.ReopenLog(id); err != nil {
			t.Fatalf("reopen right after create: %v", err)
		}
		st, out, _ := rt.start(t, id, b)
		if st.ExitCode != 0 || out != "hello\n" {
			t.Fatalf("container %s after an early reopen: %+v, stdout %q", id, st, out)
		}
		rt.deleteAndCheck(t, id)
	}
}

// TestConcurrentContainers: the daemon drives many containers at once.
func TestConcurrentContainers(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	const n = 6
	bundles := make([]Bundle, n)
	for i := range n {
		bundles[i] = rt.bundle(t, "par-"+strconv.Itoa(i), rootfs, "sh", "-c", "hostname; echo $$")
	}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			id := "par-" + strconv.Itoa(i)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := rt.Create(ctx, id, bundles[i])
			if err == nil {
				err = rt.Start(ctx, id)
			}
			if err == nil {
				var st *State
				if st, err = rt.Wait(ctx, id); err == nil && st.ExitCode != 0 {
					err = fmt.Errorf("%s exited %d", id, st.ExitCode)
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i := range n {
		id := "par-" + strconv.Itoa(i)
		if out, _ := readCRILog(t, bundles[i].LogPath); out != "ctr-"+id+"\n1\n" {
			t.Errorf("%s: stdout %q", id, out)
		}
		rt.deleteAndCheck(t, id)
	}
}

// BenchmarkRunTrue: create, start, wait and delete of /bin/true on a
// prepared rootfs, with a cgroup, as the CRI layer drives it.
func BenchmarkRunTrue(b *testing.B) {
	rt, rootfs := newTestRuntime(b), busyboxRootfs(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		id := "bench-" + strconv.Itoa(i)
		i++
		if err := rt.Create(ctx, id, rt.bundle(b, id, rootfs, "true")); err != nil {
			b.Fatal(err)
		}
		if err := rt.Start(ctx, id); err != nil {
			b.Fatal(err)
		}
		if st, err := rt.Wait(ctx, id); err != nil || st.ExitCode != 0 {
			b.Fatalf("wait: %+v %v", st, err)
		}
		if err := rt.Delete(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// TestJoinPodNamespaces: a container joins a pod's pinned network, uts and
// ipc namespaces by path, and an exec into it lands in them too.
func TestJoinPodNamespaces(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	podDir := filepath.Join(t.TempDir(), "pod")
	kinds := []nspin.Kind{nspin.Net, nspin.UTS, nspin.IPC}
	pins, err := nspin.Pin(podDir, kinds, func() error { return unix.Sethostname([]byte("pod-host")) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nspin.Unpin(podDir, kinds...); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})
	b := rt.bundle(t, "member", rootfs, "sleep", "999")
	b.Spec.Hostname = ""
	for i, ns := range b.Spec.Linux.Namespaces {
		switch ns.Type {
		case specs.NetworkNamespace:
			b.Spec.Linux.Namespaces[i].Path = pins[nspin.Net]
		case specs.UTSNamespace:
			b.Spec.Linux.Namespaces[i].Path = pins[nspin.UTS]
		case specs.IPCNamespace:
			b.Spec.Linux.Namespaces[i].Path = pins[nspin.IPC]
		}
	}
	st := rt.startRunning(t, "member", b)
	want := "pod-host\n"
	for _, k := range []string{"net", "uts", "ipc"} {
		var s unix.Stat_t
		if err := unix.Stat(filepath.Join(podDir, k), &s); err != nil {
			t.Fatal(err)
		}
		want += fmt.Sprintf("%s:[%d]\n", k, s.Ino)
		if got := nsOf(t, st.Pid, k); got != fmt.Sprintf("%s:[%d]", k, s.Ino) {
			t.Errorf("init's %s namespace %s, want the pod's", k, got)
		}
	}
	code, out := rt.execOut(t, "member", "sh", "-c", "hostname; for n in net uts ipc; do readlink /proc/self/ns/$n; done")
	if code != 0 || out != want {
		t.Errorf("exec in a pod member: %d %q, want %q", code, out, want)
	}
}

// TestKillCreated: a created container killed before start is stopped and
// cannot be started any more.
func TestKillCreated(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	rt.create(t, "killed", rt.bundle(t, "killed", rootfs, "true"))
	if err := rt.Kill(context.Background(), "killed", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err := rt.Wait(ctx, "killed"); err != nil || st.Status != StatusStopped || st.ExitCode != 137 {
		t.Errorf("wait after killing a created container: %+v, %v", st, err)
	}
	if err := rt.Start(ctx, "killed"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("start after kill: %v, want FailedPrecondition", err)
	}
}

// TestKillDuringCreate: Kill of a container whose create is under way (a
// supervisor, no init recorded yet) ends the create, which fails and rolls
// back, where it used to fail with "no init to signal" and so held up the
// pod's stop. The supervisor is stopped as soon as it is recorded, so the
// create cannot get as far as the init's record meanwhile.
func TestKillDuringCreate(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "halfway", rootfs, "sleep", "999")
	dir := filepath.Join(rt.StateDir, "halfway")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	created := make(chan error, 1)
	go func() { created <- rt.Create(ctx, "halfway", b) }()
	var sup proc.ID
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if sup, err = readProcess(dir, supFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no supervisor recorded in 10s: %v", err)
		}
	}
	if err := syscall.Kill(sup.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if _, err := readProcess(dir, initFile); err == nil {
		t.Fatal("the init was recorded before the supervisor could be stopped")
	}
	if st, err := rt.State("halfway"); err != nil || st.Status != StatusCreating {
		t.Fatalf("state while the supervisor is held: %+v, %v", st, err)
	}
	if err := rt.Kill(ctx, "halfway", syscall.SIGTERM); err != nil {
		t.Errorf("kill during create: %v", err)
	}
	if err := <-created; err == nil {
		t.Error("create succeeded after a kill ended it")
	}
	if _, err := rt.State("halfway"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("state after the killed create rolled back: %v, want NotFound", err)
	}
	assertGone(t, dir, config{Spec: b.Spec, CgroupPath: b.CgroupPath}, sup)
}

// TestStateReadsFinalRecordsOnce: a started container's records and an
// exited one's exit are read once and kept; what still changes is seen.
// The records are spoiled on disk after they were read: a State that
// decoded them again would fail or report them wrong. A running container
// is still seen to exit (its exit record is new), one removed by another
// Runtime on the same directory is gone, and a later container of the same
// ID starts from its own records.
func TestStateReadsFinalRecordsOnce(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "cached", rootfs, "sh", "-c", "read x; exit 5")
	b.Stdin = true
	running := rt.startRunning(t, "cached", b)
	dir := filepath.Join(rt.StateDir, "cached")
	kept := map[string][]byte{}
	for _, f := range []string{initFile, supFile, startedFile} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		kept[f] = data
		if err := os.WriteFile(filepath.Join(dir, f), []byte("{spoiled"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, err := rt.State("cached")
	if err != nil || st.Status != StatusRunning || st.Pid != running.Pid || !st.Started.Equal(running.Started) {
		t.Fatalf("running, records spoiled after the first read: %+v %v, want %+v", st, err, running)
	}
	// Kill and Delete read the records themselves.
	for f, data := range kept {
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := rt.Kill(context.Background(), "cached", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err = rt.Wait(ctx, "cached"); err != nil || st.Status != StatusStopped || st.ExitCode != 137 {
		t.Fatalf("after SIGKILL: %+v %v, want stopped with 137", st, err)
	}
	if err := os.WriteFile(filepath.Join(dir, exitFile), []byte(`{"exitCode": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if list, err := rt.List(); err != nil || len(list) != 1 || list[0].ExitCode != 137 || list[0].Finished.IsZero() {
		t.Errorf("list after the exit record was read: %+v %v, want the exit as first read", list, err)
	}

	other := &Runtime{StateDir: rt.StateDir}
	if err := other.Delete(context.Background(), "cached"); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.State("cached"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("state of a container another runtime removed: %v, want NotFound", err)
	}
	b = rt.bundle(t, "cached", rootfs, "sleep", "600")
	again := rt.startRunning(t, "cached", b)
	if st, err := rt.State("cached"); err != nil || st.Status != StatusRunning || st.Pid != again.Pid {
		t.Errorf("a new container of the same ID: %+v %v, want running as pid %d", st, err, again.Pid)
	}
}

// BenchmarkList: List of 20 running containers, the call behind every
// kubelet relist (once a second).
func BenchmarkList(b *testing.B) {
	roottest.Require(b)
	rt, rootfs := newTestRuntime(b), busyboxRootfs(b)
	for i := range 20 {
		id := fmt.Sprintf("list-%d", i)
		rt.startRunning(b, id, rt.bundle(b, id, rootfs, "sleep", "600"))
	}
	for b.Loop() {
		if list, err := rt.List(); err != nil || len(list) != 20 {
			b.Fatalf("list: %d containers, %v", len(list), err)
		}
	}
}
