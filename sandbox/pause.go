package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/nsexec"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/proc"
	"github.com/cri-mini/cri-mini/internal/safeexec"
	"github.com/cri-mini/cri-mini/sandbox/pause"
)

// pauseEnv marks a pod's pause process (package pause, a C constructor);
// its value is the pod id, which lets start-up find the pause processes of
// pods a crash left half made.
const pauseEnv = pause.Env

// startPause starts the pause process of a pod with a shared pid namespace
// (see startPause and package pause), in the pod's net, uts and ipc
// namespaces and its cgroup. A pod with a user namespace of its own has
// none of them yet: the pause is born in a new user namespace and new
// namespaces owned by it, which are then pinned as the pod's.
func (m *Manager) startPause(ctx context.Context, p *Pod) error {
	dir := m.podDir(p.ID)
	if err := os.MkdirAll(nsDir(dir), 0o700); err != nil {
		return err
	}
	filter, err := m.pauseFilter()
	if err != nil {
		return err
	}
	s := pauseSpec{
		podID:  p.ID,
		pidNS:  filepath.Join(nsDir(dir), "pid"),
		joins:  map[specs.LinuxNamespaceType]string{},
		config: pause.Config{UID: defaultPauseID, GID: defaultPauseID, Filter: filter},
	}
	for t, path := range map[specs.LinuxNamespaceType]string{
		specs.NetworkNamespace: p.NetNS, specs.UTSNamespace: p.UTSNS, specs.IPCNamespace: p.IPCNS,
	} {
		if path != "" {
			s.joins[t] = path
		}
	}
	if u := p.Spec.RunAsUser; u != nil {
		s.config.UID = uint32(*u)
	}
	if g := p.Spec.RunAsGroup; g != nil {
		s.config.GID = uint32(*g)
	}
	if u := p.Spec.UserNS; u != nil {
		s.userNS = u
		s.pin = func(pid int) error { return m.pinUserNS(p, pid) }
	}
	pid, err := startPause(ctx, m.pauseExe, s)
	if err != nil {
		return err
	}
	p.PIDNS, p.PausePID = s.pidNS, pid
	if m.cgroups != nil && p.Spec.CgroupParent != "" {
		// A cgroup of its own below the pod's: on v2 a cgroup holding
		// processes cannot enable controllers for its children (the
		// containers), and a systemd slice holds none, only units.
		// kubelet makes pod cgroups only in the hierarchies it manages (on
		// v1 not in devices): the missing levels are made (cpusets seeded),
		// as runc makes them for a container; kubelet removes the pod
		// cgroup from every hierarchy.
		cg := pauseCgroup(m.cgroupDriver, p)
		if err := m.cgroups.Create(cg, nil); err != nil {
			return fmt.Errorf("pause process cgroup: %w", err)
		}
		if err := m.cgroups.Apply(cg, pid); err != nil {
			return fmt.Errorf("move pause process into its cgroup: %w", err)
		}
	}
	return nil
}

// defaultPauseID is the uid and gid of a pause process whose pod names
// none: the pause image's 65535, as containerd and CRI-O run it.
const defaultPauseID = 65535

// pauseSpec is what a pod's pause process is started with.
type pauseSpec struct {
	podID string
	// pidNS is where the new pid namespace is pinned.
	pidNS string
	// joins are the pod's namespaces the pause joins (type -> pinned path):
	// its network, uts and ipc ones, unless the pod uses the host's.
	joins map[specs.LinuxNamespaceType]string
	// userNS, when set, starts the pause in a new user namespace with
	// these mappings, which owns new network, uts and ipc namespaces
	// (there is nothing to join), and pin pins them, before the pause can
	// be reaped.
	userNS *UserNamespace
	pin    func(pid int) error
	// config confines the pause (package pause).
	config pause.Config
}

// startPause starts the pod's pause process as PID 1 of a new pid namespace
// and in a new mount namespace, in its own session so that it outlives the
// daemon, and pins the pid namespace. It runs from a sealed copy of
// executable (empty: this process's own), so that /proc/1/exe leads to no
// host file, and returns once the pause has confined itself (package pause)
// or failed to, which is then the error. It returns the pause's pid.
func startPause(ctx context.Context, executable string, s pauseSpec) (int, error) {
	if executable == "" {
		executable = "/proc/self/exe"
	}
	exe, err := safeexec.Sealed(executable)
	if err != nil {
		return 0, fmt.Errorf("start pod pause process: %w", err)
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("start pod pause process: %w", err)
	}
	defer cfgW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		return 0, fmt.Errorf("start pod pause process: %w", err)
	}
	defer errR.Close()
	cmd := exec.Command(exe)
	cmd.Args = []string{"cri-mini-pause"}
	cmd.Env = []string{pauseEnv + "=" + s.podID}
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{pause.ConfigFD - 3: cfgR, pause.ErrFD - 3: errW} // ExtraFiles[i] is descriptor 3+i
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS, Setsid: true}
	if s.userNS != nil {
		f, uerr := inUserNS(cmd, exe, s.userNS)
		if uerr != nil {
			cfgR.Close()
			errW.Close()
			return 0, fmt.Errorf("start pod pause process: %w", uerr)
		}
		defer f.Close()
	}
	err = nsexec.Start(cmd, s.joins)
	cfgR.Close()
	errW.Close()
	if err != nil {
		return 0, fmt.Errorf("start pod pause process: %w", err)
	}
	// The pause reads all of it before anything else, or exits, which
	// closes its end: the write cannot block for good.
	_, werr := cfgW.Write(s.config.Encode())
	cfgW.Close()
	stop := context.AfterFunc(ctx, func() { _ = errR.SetReadDeadline(time.Now()) })
	report, rerr := io.ReadAll(io.LimitReader(errR, 4096))
	stop()
	if rerr != nil && ctx.Err() != nil {
		rerr = fmt.Errorf("waiting for it: %w", ctx.Err())
	}
	if err := errors.Join(werr, rerr); len(report) > 0 || err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if len(report) > 0 {
			err = errors.New(string(report))
		}
		return 0, fmt.Errorf("pod pause process did not confine itself: %w", err)
	}
	pid := cmd.Process.Pid
	// Not reaped before the pin is made, the pid cannot name another process.
	err = nspin.PinFile(fmt.Sprintf("/proc/%d/ns/pid", pid), s.pidNS)
	if err == nil && s.pin != nil {
		err = s.pin(pid)
	}
	go func() { _ = cmd.Wait() }()
	if err != nil {
		_ = cmd.Process.Kill()
		return 0, fmt.Errorf("pin pod pid namespace: %w", err)
	}
	return pid, nil
}

// pauseAlive reports whether pid is still the running pause process of podID.
func pauseAlive(pid int, podID string) bool {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil || !bytes.Equal(bytes.TrimRight(env, "\x00"), []byte(pauseEnv+"="+podID)) {
		return false
	}
	return proc.Alive(pid)
}

// killPause kills the pause process of podID, if one runs, and waits for it
// to exit; the kernel then kills every other process of the pod's pid
// namespace. It finds the process by the pod id in its environment and
// signals it through a pidfd, so a recycled pid is never hit.
func killPause(podID string) error {
	marker := []byte(pauseEnv + "=" + podID)
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range procs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		fd, err := proc.Open(pid)
		if err != nil {
			continue // gone already
		}
		env, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil || !bytes.Equal(bytes.TrimRight(env, "\x00"), marker) {
			unix.Close(fd)
			continue
		}
		if err := proc.Signal(fd, unix.SIGKILL); err != nil {
			errs = append(errs, fmt.Errorf("kill pod pause process %d: %w", pid, err))
		} else if err := waitExit(fd, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("pod pause process %d: %w", pid, err))
		} else {
			klog.V(2).InfoS("Pod pause process killed", "pod", podID, "pid", pid)
		}
		unix.Close(fd)
	}
	return errors.Join(errs...)
}

// waitExit waits until the process of pidfd has exited.
func waitExit(pidfd int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := proc.Wait(ctx, pidfd)
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("did not exit after SIGKILL")
	}
	return err
}
