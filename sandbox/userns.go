package sandbox

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/safeexec"
	"github.com/cri-mini/cri-mini/sandbox/pause"
)

// UserNamespacePolicy is what the node's admin allows of the mappings a
// pod's user namespace asks for.
type UserNamespacePolicy struct {
	// AllowHostRoot admits a range that maps the host's uid or gid 0 into
	// the pod (a process escaping it would be the host's root).
	AllowHostRoot bool
}

// validUserNS checks the user namespace a pod asks for, before anything is
// made: one range of uids and one of gids (kubelet allocates one contiguous
// range per pod) that map the pod's root, stay within the host's ids, leave
// the host's root out unless the admin allows it, and hold the pause
// process's ids. kubelet's ranges start at and span multiples of 65536,
// but nothing depends on that (critest's do not): what keeps pods apart
// is that no two running pods overlap, checked when the pod is made.
func (m *Manager) validUserNS(spec *Spec) error {
	u := spec.UserNS
	if u == nil {
		return nil
	}
	if spec.HostNetwork || spec.HostIPC || spec.HostPID {
		return fmt.Errorf("a pod with a user namespace of its own cannot use the host's network, ipc or pid namespace (Kubernetes refuses hostUsers: false with them): %w", errdefs.ErrInvalidArgument)
	}
	for _, ids := range []struct {
		kind     string
		mappings []specs.LinuxIDMapping
		pause    *int64
	}{{"uid", u.UIDs, spec.RunAsUser}, {"gid", u.GIDs, spec.RunAsGroup}} {
		if len(ids.mappings) != 1 {
			return fmt.Errorf("pod user namespace has %d %s mappings: give exactly one, the contiguous range kubelet allocated to the pod: %w", len(ids.mappings), ids.kind, errdefs.ErrInvalidArgument)
		}
		mp := ids.mappings[0]
		switch {
		case mp.ContainerID != 0:
			return fmt.Errorf("pod user namespace: the %s mapping starts at container id %d: it must map the pod's root, container id 0: %w", ids.kind, mp.ContainerID, errdefs.ErrInvalidArgument)
		case mp.Size == 0:
			return fmt.Errorf("pod user namespace: the %s mapping is empty: %w", ids.kind, errdefs.ErrInvalidArgument)
		case uint64(mp.HostID)+uint64(mp.Size) > math.MaxUint32:
			// 2^32-1 is no id (it means "unchanged" to setresuid).
			return fmt.Errorf("pod user namespace: host %ss %d-%d run past the largest id %d: %w", ids.kind, mp.HostID, uint64(mp.HostID)+uint64(mp.Size)-1, uint32(math.MaxUint32-1), errdefs.ErrInvalidArgument)
		case mp.HostID == 0 && !m.userNS.AllowHostRoot:
			return fmt.Errorf("pod user namespace: the %s mapping includes the host's %s 0: a process escaping the pod would be the host's root (the admin can allow it with userns_allow_host_root): %w", ids.kind, ids.kind, errdefs.ErrInvalidArgument)
		}
		if spec.SharedPID {
			id := int64(defaultPauseID)
			if ids.pause != nil {
				id = *ids.pause
			}
			if id >= int64(mp.Size) {
				return fmt.Errorf("pod user namespace maps %d %ss: the pause process's %s %d is not among them: %w", mp.Size, ids.kind, ids.kind, id, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// overlaps reports whether the host ids of two pods' user namespaces
// overlap (a pod without one overlaps nothing).
func (u *UserNamespace) overlaps(o *UserNamespace) bool {
	if u == nil || o == nil {
		return false
	}
	meet := func(a, b []specs.LinuxIDMapping) bool {
		for _, x := range a {
			for _, y := range b {
				if uint64(x.HostID) < uint64(y.HostID)+uint64(y.Size) && uint64(y.HostID) < uint64(x.HostID)+uint64(x.Size) {
					return true
				}
			}
		}
		return false
	}
	return meet(u.UIDs, o.UIDs) || meet(u.GIDs, o.GIDs)
}

// inUserNS makes cmd start in a new user namespace with the pod's
// mappings, owning new network, uts and ipc namespaces (the kernel makes
// the user namespace first and the others owned by it), as the pod's
// root: uid and gid 0 inside, with every capability there and none on the
// host. exe is the sealed binary: its /proc/<daemon>/fd name cannot be
// followed from inside (that would take ptrace rights over the daemon), so
// the child execs it as its own descriptor, which the returned file is
// (close it once cmd has started).
func inUserNS(cmd *exec.Cmd, exe string, u *UserNamespace) (*os.File, error) {
	f, err := os.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("open the sealed executable: %w", err)
	}
	cmd.Path = fmt.Sprintf("/proc/self/fd/%d", 3+len(cmd.ExtraFiles))
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	attr := cmd.SysProcAttr
	attr.Cloneflags |= unix.CLONE_NEWUSER | unix.CLONE_NEWNET | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC
	attr.UidMappings = procIDMap(u.UIDs)
	attr.GidMappings = procIDMap(u.GIDs)
	// The pod's processes set their own groups (the pause none, a
	// container its supplemental ones).
	attr.GidMappingsEnableSetgroups = true
	attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	return f, nil
}

func procIDMap(m []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(m))
	for i, x := range m {
		out[i] = syscall.SysProcIDMap{ContainerID: int(x.ContainerID), HostID: int(x.HostID), Size: int(x.Size)}
	}
	return out
}

// createUserNS makes the user namespace of a pod that has one and the
// network, uts and ipc namespaces it owns, and pins them: through the pause
// process, born in them, when the pod shares a pid namespace; otherwise
// through a holder process that exits once they are pinned.
func (m *Manager) createUserNS(ctx context.Context, p *Pod) error {
	if p.Spec.SharedPID {
		return m.startPause(ctx, p)
	}
	exe := m.pauseExe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	sealed, err := safeexec.Sealed(exe)
	if err != nil {
		return fmt.Errorf("pod user namespace: %w", err)
	}
	stdin, release, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pod user namespace: %w", err)
	}
	defer release.Close()
	cmd := exec.Command(sealed)
	cmd.Args = []string{"cri-mini-hold"}
	cmd.Env = []string{pause.HoldEnv + "=" + p.ID}
	cmd.Dir = "/"
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	f, err := inUserNS(cmd, sealed, p.Spec.UserNS)
	if err != nil {
		stdin.Close()
		return fmt.Errorf("pod user namespace: %w", err)
	}
	err = cmd.Start()
	f.Close()
	stdin.Close()
	if err != nil {
		return fmt.Errorf("pod user namespace: start its holder: %w", err)
	}
	// Not reaped before the pins are made, the pid names the holder.
	err = m.pinUserNS(p, cmd.Process.Pid)
	release.Close()
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("pod user namespace: its holder: %w", werr)
	}
	return err
}

// pinUserNS pins the user, network, uts and ipc namespaces of process pid
// (the pod's pause or holder, born in them) as the pod's, and sets the
// pod's hostname in its uts namespace.
func (m *Manager) pinUserNS(p *Pod, pid int) error {
	dir := nsDir(m.podDir(p.ID))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pod namespaces: %w", err)
	}
	proc := func(kind string) string { return fmt.Sprintf("/proc/%d/ns/%s", pid, kind) }
	for _, pin := range []struct {
		kind string
		path *string
	}{{"user", &p.UserNS}, {string(nspin.UTS), &p.UTSNS}, {string(nspin.IPC), &p.IPCNS}} {
		target := filepath.Join(dir, pin.kind)
		if err := nspin.PinFile(proc(pin.kind), target); err != nil {
			return fmt.Errorf("pod %s namespace: %w", pin.kind, err)
		}
		*pin.path = target
	}
	netNS, err := m.net.Adopt(p.ID, proc(string(nspin.Net)))
	if err != nil {
		return err
	}
	p.NetNS = netNS
	// A thread of the daemon may join the pod's uts namespace: the host's
	// root has every capability in the user namespaces below its own.
	return nspin.Run(p.UTSNS, nspin.UTS, func() error { return setHostname(p.Hostname) })
}

// userNSPin is where a pod's user namespace is pinned.
func userNSPin(podDir string) string { return filepath.Join(nsDir(podDir), "user") }
