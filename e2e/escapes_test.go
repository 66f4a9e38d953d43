package e2e

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Attacks from inside containers on what the runtime puts within their
// reach (issue 15, "Escapes"): the pod's pause as PID 1, descriptors the
// daemon inherited, the runtime's binary, exec'd processes that outlive the
// daemon.

// execSync runs cmd in container id and returns its stdout and stderr.
func execSync(t *testing.T, id string, cmd ...string) string {
	t.Helper()
	resp, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 30})
	if err != nil {
		t.Fatalf("ExecSync %v in %s: %v", cmd, id, err)
	}
	return string(resp.Stdout) + string(resp.Stderr)
}

// withCaps is cfg with the capabilities added.
func withCaps(cfg *runtimeapi.ContainerConfig, caps ...string) *runtimeapi.ContainerConfig {
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Capabilities: &runtimeapi.Capability{AddCapabilities: caps}}}
	return cfg
}

// TestPauseLeadsNowhere: from a container of a shared-PID pod, with and
// without CAP_SYS_PTRACE, PID 1 (the pause) shows nothing of the host: an
// empty root and working directory, its own read-only root as the only
// mount, the pod's network; it runs as 65535 without capabilities, with
// no_new_privs and seccomp, from the sealed shim. So it does in a pod with
// a user namespace of its own, where the pause was born in it (and is
// host+65535 on the host). A pod's run_as_user and run_as_group reach it.
func TestPauseLeadsNowhere(t *testing.T) {
	pullTestImage(t)
	t.Run("host users", func(t *testing.T) {
		podID, podCfg := podWithLogs(t, "pause-nowhere")
		pauseLeadsNowhere(t, podID, podCfg)
	})
	t.Run("user namespace", func(t *testing.T) {
		u := usernsOptions(5)
		podID, podCfg := usernsPod(t, "pause-nowhere-userns", u)
		pauseLeadsNowhere(t, podID, podCfg)
		_, info := podInfo(t, podID)
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.PausePID))
		if id := fmt.Sprint(u.Uids[0].HostId + 65535); err != nil || !strings.Contains(string(st), "\nUid:\t"+strings.Repeat(id+"\t", 3)+id+"\n") {
			t.Errorf("the pause's ids on the host, want %s (%v):\n%s", id, err, st)
		}
	})

	cfg := podConfig("pause-user")
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1234}
	cfg.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 4321}
	_, info := podInfo(t, runPod(t, cfg))
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.PausePID))
	if err != nil || !strings.Contains(string(st), "\nUid:\t1234\t1234\t1234\t1234\n") || !strings.Contains(string(st), "\nGid:\t4321\t4321\t4321\t4321\n") {
		t.Errorf("pause of a pod with run_as_user 1234, run_as_group 4321 (%v):\n%s", err, st)
	}
}

// pauseLeadsNowhere probes the pause of a shared-PID pod from containers
// with and without CAP_SYS_PTRACE (see TestPauseLeadsNowhere).
func pauseLeadsNowhere(t *testing.T, podID string, podCfg *runtimeapi.PodSandboxConfig) {
	probes := map[string]string{
		"root": "ls -a /proc/1/root/ 2>&1", "cwd": "ls -a /proc/1/cwd/ 2>&1",
		"mountinfo": "cat /proc/1/mountinfo 2>&1",
		"net":       "cat /proc/1/net/dev 2>&1 | grep : | cut -d: -f1", "own net": "grep : /proc/self/net/dev | cut -d: -f1",
		"status": "grep -E '^(Uid|Gid|CapPrm|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/1/status",
		"exe":    "busybox readlink /proc/1/exe 2>&1",
	}
	status := "Uid:\t65535\t65535\t65535\t65535\nGid:\t65535\t65535\t65535\t65535\nCapPrm:\t0000000000000000\n" +
		"CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n"
	for _, ptrace := range []bool{false, true} {
		t.Run(fmt.Sprintf("SYS_PTRACE=%v", ptrace), func(t *testing.T) {
			cfg := containerConfig(fmt.Sprintf("looker-%v", ptrace), "sleep", "600")
			if ptrace {
				cfg = withCaps(cfg, "SYS_PTRACE")
			}
			if cfg.Linux == nil {
				cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{}}
			}
			cfg.Linux.SecurityContext.NamespaceOptions = podCfg.Linux.SecurityContext.NamespaceOptions
			id := runContainer(t, podID, podCfg, cfg)
			out := map[string]string{}
			for name, probe := range probes {
				out[name] = execSync(t, id, "sh", "-c", probe)
			}
			for _, dir := range []string{"root", "cwd"} {
				// Without the capability the kernel refuses the look; with
				// it, the look finds the empty root.
				if !ptrace && !strings.Contains(out[dir], "Permission denied") || ptrace && strings.Join(strings.Fields(out[dir]), " ") != ". .." {
					t.Errorf("/proc/1/%s shows:\n%s", dir, out[dir])
				}
			}
			if m := strings.Split(strings.TrimSpace(out["mountinfo"]), "\n"); len(m) != 1 || !strings.Contains(m[0], " / / ro,") || !strings.Contains(m[0], " - tmpfs ") {
				t.Errorf("/proc/1/mountinfo, want the pause's read-only root alone:\n%s", out["mountinfo"])
			}
			if out["net"] != out["own net"] || !strings.Contains(out["net"], "eth0") {
				t.Errorf("/proc/1/net/dev lists %q, the container's own %q", out["net"], out["own net"])
			}
			if out["status"] != status {
				t.Errorf("/proc/1/status:\n%s\nwant:\n%s", out["status"], status)
			}
			if ptrace && !strings.HasPrefix(out["exe"], "/memfd:cri-mini-shim") {
				t.Errorf("/proc/1/exe is %q, want the sealed shim", out["exe"])
			}
		})
	}
}

// TestHelpersRunFromSealedShim: from a container with CAP_SYS_PTRACE, the
// processes in its pid namespace that run the runtime's code (the pause,
// the init of a created sibling container) run the daemon's sealed copy of
// the shim, which cannot be written; the shim on the host is unchanged.
func TestHelpersRunFromSealedShim(t *testing.T) {
	pullTestImage(t)
	shim := filepath.Join(filepath.Dir(suite.bin), "cri-mini-shim") // beside the daemon, built or given
	before := sum(t, shim)
	podID, podCfg := podWithLogs(t, "sealed")
	watcher := runContainer(t, podID, podCfg, withCaps(containerConfig("watcher", "sleep", "600"), "SYS_PTRACE"))
	sibling, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID,
		Config: containerConfig("sibling", "true"), SandboxConfig: podCfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = suite.rt.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: sibling.ContainerId})
	})
	// As an attacker would: every process in view that does not run the
	// image's busybox, its executable, and whether it can be written.
	out := execSync(t, watcher, "sh", "-c", `for p in /proc/[0-9]*; do
		e=$(busybox readlink $p/exe) || continue
		[ "$e" = /bin/busybox ] && continue
		echo ${p#/proc/} $(busybox stat -L -c %d:%i $p/exe) $( (echo evil >> $p/exe) 2>/dev/null && echo written || echo refused) "$e"
	done`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("processes of the runtime in the pod, want the pause and the sibling's init:\n%s", out)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 || !suite.sealed[f[1]] || f[2] != "refused" || !strings.HasPrefix(f[3], "/memfd:cri-mini-shim") {
			t.Errorf("pid, file, write, executable: %q; want the daemon's sealed shim, not writable", l)
		}
	}
	if after := sum(t, shim); after != before {
		t.Errorf("the shim on the host changed")
	}
}

func sum(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// TestInheritedDescriptorReachesNoContainer: a daemon started with an open
// descriptor on a host directory (not close-on-exec) passes it to no
// container process and no exec'd process (ExecSync, crictl exec).
func TestInheritedDescriptorReachesNoContainer(t *testing.T) {
	pullTestImage(t)
	secret := t.TempDir()
	if err := os.WriteFile(filepath.Join(secret, "secret"), []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(secret)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	// Descriptor 10 of the daemon: above what any process it starts lays
	// out for itself, so that it would be passed on as it is.
	const fd = 10
	extra := make([]*os.File, fd-3+1)
	extra[fd-3] = dir
	if err := stopDaemon(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := startDaemon(extra...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stopDaemon(syscall.SIGTERM); err != nil {
			t.Error(err)
		}
		if err := startDaemon(); err != nil {
			t.Fatal(err)
		}
	})
	if held, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", suite.daemon.Process.Pid, fd)); err != nil || held != secret {
		t.Fatalf("the daemon holds %q (%v) as descriptor %d, want %s: the test tests nothing", held, err, fd, secret)
	}

	probe := fmt.Sprintf("ls /proc/self/fd; cat /proc/self/fd/%d/secret 2>/dev/null || echo unreadable", fd)
	// What ls lists: stdio and the directory it reads.
	const want = "0\n1\n2\n3\nunreadable\n"
	podID, podCfg := podWithLogs(t, "inherited")
	id := runContainer(t, podID, podCfg, containerConfig("prober", "sh", "-c", probe+"; exec sleep 600"))
	log := filepath.Join(podCfg.LogDirectory, "prober.log")
	deadline := time.Now().Add(20 * time.Second)
	var got string
	for time.Now().Before(deadline) && !strings.Contains(got, "unreadable") && !strings.Contains(got, "secret") {
		data, _ := os.ReadFile(log)
		got = criLogText(string(data))
		time.Sleep(50 * time.Millisecond)
	}
	if got != want {
		t.Errorf("the container's process sees:\n%s\nwant:\n%s", got, want)
	}
	if got := execSync(t, id, "sh", "-c", probe); got != want {
		t.Errorf("an ExecSync process sees:\n%s\nwant:\n%s", got, want)
	}
	if got, err := crictlStdin("", "exec", id, "sh", "-c", probe); err != nil || got != want {
		t.Errorf("a crictl exec process sees (%v):\n%s\nwant:\n%s", err, got, want)
	}
}

// criLogText is the content of CRI log lines, one per line.
func criLogText(log string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(log, "\n") {
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			b.WriteString(f[3] + "\n")
		}
	}
	return b.String()
}

// TestExecSyncDiesWithTheDaemon: processes run by ExecSync (as root and as
// another user) end when the daemon is killed with kill -9 in the middle,
// instead of running on past their timeout; the restarted daemon serves
// the pod as before.
func TestExecSyncDiesWithTheDaemon(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "exec-orphan")
	root := runContainer(t, podID, podCfg, containerConfig("root", "sleep", "600"))
	user := containerConfig("user", "sleep", "600")
	user.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1000}}}
	nonRoot := runContainer(t, podID, podCfg, user)
	sleeps := map[string]string{root: "sleep 30171", nonRoot: "sleep 30172"}
	var calls sync.WaitGroup
	for id, cmd := range sleeps {
		calls.Go(func() {
			// Ends with the daemon: the error says the connection broke.
			_, _ = suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: strings.Fields(cmd), Timeout: 60})
		})
	}
	for _, cmd := range sleeps {
		if err := waitProcs(cmd, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range sleeps {
		if err := waitProcs(cmd, 0); err != nil {
			t.Errorf("after kill -9 of the daemon: %v", err)
		}
	}
	calls.Wait()
	// Started again whatever the outcome: the test's cleanup needs it.
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{root, nonRoot} {
		if st := containerStatus(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("container %s after the restart: %v", id, st.State)
		}
		if out := execSync(t, id, "echo", "still served"); out != "still served\n" {
			t.Errorf("ExecSync after the restart: %q", out)
		}
	}
	if st, _ := podInfo(t, podID); st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod after the restart: %v", st.State)
	}
}

// waitProcs waits until n processes on the host have the command line cmd.
func waitProcs(cmd string, n int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		var found []string
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			if data, err := os.ReadFile(p); err == nil && strings.ReplaceAll(strings.TrimRight(string(data), "\x00"), "\x00", " ") == cmd {
				found = append(found, filepath.Base(filepath.Dir(p)))
			}
		}
		if len(found) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %q: %v, want %d", cmd, found, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
