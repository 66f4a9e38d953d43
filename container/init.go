package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/mountfd"
)

// runInit is the container's init: started by the supervisor in new
// namespaces (R3), it builds the container's file system view (R4-R18),
// reports ready, waits for start and execs the application (R19). All of it
// runs on one locked OS thread: the cgroup namespace, capabilities and
// credentials it sets are per thread, and the exec keeps that thread's.
func runInit() {
	runtime.LockOSThread()
	conn, err := fileConn(os.NewFile(initSyncFD, "sync"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-mini init: %v\n", err)
		os.Exit(1)
	}
	err = initContainer(conn)
	// Only failures come back here; a successful exec never returns.
	_ = sendMsg(conn, errorMsg(err))
	fmt.Fprintf(os.Stderr, "cri-mini init: %v\n", err)
	os.Exit(1)
}

func initContainer(conn *net.UnixConn) error {
	var in initInput
	if err := json.NewDecoder(os.NewFile(initInputFD, "input")).Decode(&in); err != nil {
		return fmt.Errorf("read the supervisor's input: %w", err)
	}
	sources := map[int]*os.File{}
	for step, fd := range in.Sources {
		sources[step] = os.NewFile(uintptr(fd), "source")
	}
	defer func() {
		for _, f := range sources {
			f.Close()
		}
	}()
	spec := in.Config.Spec
	// The supervisor says go once the cgroup is applied, so that the
	// cgroup namespace made next is rooted at the container's cgroup.
	if _, _, err := expectMsg(conn, msgGo); err != nil {
		return fmt.Errorf("wait for go: %w", err)
	}
	unix.Umask(0)
	if nsWanted(spec, specs.CgroupNamespace) {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("new cgroup namespace: %w", err)
		}
	}
	fifo := initFifoFD
	// The plan is the single description of what follows; explain renders
	// the same one. The daemon did its cgroup and the supervisor the
	// namespaces; all the rest is executed from the plan, the process steps
	// too: of the spec's process only the terminal is read here.
	plan, err := BuildPlan(spec, in.Plan)
	if err != nil {
		return err
	}
	terminal := spec.Process.Terminal
	if err := setupRootfs(plan, sources); err != nil {
		return err
	}
	for _, f := range sources {
		f.Close()
	}
	if err := hardenRootfs(plan); err != nil {
		return err
	}
	var ttyFDs []int
	if terminal {
		master, err := setupTTY()
		if err != nil {
			return err
		}
		ttyFDs = []int{master}
	}
	path, err := prepareSteps(plan)
	if err != nil {
		return err
	}
	if err := sendMsg(conn, readyMsg(0), ttyFDs...); err != nil {
		return err
	}
	for _, fd := range ttyFDs {
		unix.Close(fd)
	}
	// Created: block until start opens the fifo for reading.
	w, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fifo), unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("wait for start: %w", err)
	}
	if _, err := unix.Write(w, []byte{0}); err != nil {
		return fmt.Errorf("wait for start: %w", err)
	}
	unix.Close(w)
	unix.Close(fifo)
	conn.Close()
	return execSteps(plan, path, false) // R19
}

// nsWanted reports whether the spec asks for a new namespace of type t.
func nsWanted(spec *specs.Spec, t specs.LinuxNamespaceType) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == t {
			return ns.Path == ""
		}
	}
	return false
}

// setupRootfs executes the plan's steps R4-R14: the mount namespace's
// propagation, the rootfs as a private mount, the recipe's and the spec's
// mounts inside it (with the sources the supervisor prepared, by step),
// and the switch of root.
func setupRootfs(plan []Step, sources map[int]*os.File) error {
	var root *os.File
	defer func() {
		if root != nil {
			root.Close()
		}
	}()
	for i, s := range plan {
		var err error
		switch s.Kind {
		case KindPropagation: // R4
			err = stopPropagation(s)
		case KindRootfsBind: // R5
			root, err = bindRootfs(s.Path)
		case KindMount, KindCgroupfs, KindDevice, KindSymlink, KindMkdir: // R6-R12
			if root == nil {
				return fmt.Errorf("plan step %s %s before the rootfs", s.Recipe, s.Kind)
			}
			err = mountStep(root, s, sources[i])
		case KindPivotRoot: // R13
			if root == nil {
				return fmt.Errorf("plan step %s %s before the rootfs", s.Recipe, s.Kind)
			}
			err = pivotRoot(root)
		case KindUnmountOldRoot: // R14
			err = unmountOldRoot(propagationFlags[s.Propagation])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// stopPropagation is R4: nothing we mount from here on propagates back to
// the host, unless a bidirectional mount asked for a shared root (rshared).
func stopPropagation(s Step) error {
	prop := propagationFlags[s.Propagation]
	if err := unix.Mount("", "/", "", unix.MS_REC|prop, ""); err != nil {
		return fmt.Errorf("set / propagation: %w", err)
	}
	if prop != unix.MS_SHARED {
		return nil
	}
	// pivot_root refuses a new root whose parent mount is shared: the
	// mount holding the rootfs (the working directory) goes private, its
	// submounts stay shared.
	if err := mountfd.SetAttrAt(".", 0, 0, unix.MS_PRIVATE, false); err != nil {
		return fmt.Errorf("make the mount holding the rootfs private: %w", err)
	}
	return nil
}

// bindRootfs is R5: the rootfs becomes a mount point of its own, private.
// The rootfs is the working directory the init was started in (named
// rootPath): a container in a user namespace may not search the
// directories above it, and the working directory follows the process into
// its new mount namespace. It returns the rootfs, in which the next steps
// resolve their paths.
func bindRootfs(rootPath string) (*os.File, error) {
	tree, err := mountfd.Clone(".", true)
	if err != nil {
		return nil, fmt.Errorf("bind rootfs %s: %w", rootPath, err)
	}
	root := os.NewFile(uintptr(tree), rootPath)
	if err := mountfd.SetAttr(tree, 0, 0, unix.MS_PRIVATE, true); err != nil {
		root.Close()
		return nil, fmt.Errorf("make rootfs private: %w", err)
	}
	if err := mountfd.MoveTo(tree, "."); err != nil {
		root.Close()
		return nil, fmt.Errorf("bind rootfs %s onto itself: %w", rootPath, err)
	}
	return root, nil
}

// pivotRoot is R13: pivot_root with the old root stacked on the new one,
// so no directory for it is needed inside the rootfs. It leaves the
// working directory in the old root, for R14.
func pivotRoot(root *os.File) error {
	oldRoot, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open old root: %w", err)
	}
	defer oldRoot.Close()
	if err := unix.Fchdir(int(root.Fd())); err != nil {
		return fmt.Errorf("chdir rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// "." must name the old root, not the new one below it: a recursive
	// rslave on the new root would cut its bidirectional mounts off the host.
	if err := unix.Fchdir(int(oldRoot.Fd())); err != nil {
		return fmt.Errorf("chdir old root: %w", err)
	}
	return nil
}

// unmountOldRoot is R14: the old root (the working directory) goes, so
// nothing of the host stays visible; then the new root gets its
// propagation.
func unmountOldRoot(prop uintptr) error {
	if err := unix.Mount("", ".", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make old root rslave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|prop, ""); err != nil {
		return fmt.Errorf("set root propagation: %w", err)
	}
	return nil
}

// propagationFlags maps the plan's root propagation to its mount flag.
var propagationFlags = map[string]uintptr{
	"rprivate": unix.MS_PRIVATE, "rshared": unix.MS_SHARED, "runbindable": unix.MS_UNBINDABLE, "rslave": unix.MS_SLAVE,
}

// hardenRootfs executes the plan's steps after the switch of root: the
// hostname (R15), the namespaced sysctls, R16, R17 and a read-only root.
func hardenRootfs(plan []Step) error {
	root, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer root.Close()
	var devNull *os.File
	defer func() {
		if devNull != nil {
			devNull.Close()
		}
	}()
	for _, s := range plan {
		switch s.Kind {
		case KindHostname: // R15
			if s.Path != "" {
				continue // the pod's, joined in R3
			}
			if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
				return fmt.Errorf("set hostname %q: %w", s.Hostname, err)
			}
		case KindSysctl:
			if err := writeSysctl(root, s.Sysctl.Key, s.Sysctl.Value); err != nil {
				return err
			}
		case KindReadonlyPath: // R16
			if err := readonlyPath(root, s.Path); err != nil {
				return err
			}
		case KindMaskPath: // R17
			if devNull == nil {
				if devNull, err = openInRoot(root, "/dev/null"); err != nil {
					return fmt.Errorf("mask paths: %w", err)
				}
			}
			if err := maskPath(root, devNull, s.Path); err != nil {
				return err
			}
		case KindReadonlyRoot:
			if err := mountfd.SetAttr(int(root.Fd()), unix.MOUNT_ATTR_RDONLY, 0, 0, false); err != nil {
				return fmt.Errorf("make rootfs read-only: %w", err)
			}
		}
	}
	return nil
}

// writeSysctl sets one namespaced sysctl through the container's /proc/sys.
func writeSysctl(root *os.File, key, value string) error {
	if strings.Contains(key, "/") || strings.Contains(key, "..") {
		return fmt.Errorf("sysctl %q: invalid name", key)
	}
	f, err := openInRoot(root, "/proc/sys/"+strings.ReplaceAll(key, ".", "/"))
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	defer f.Close()
	w, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	defer w.Close()
	if _, err := w.WriteString(value); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// setupTTY opens a pty on the container's own devpts instance, makes its
// slave the init's controlling terminal and stdio, and returns the master for
// the supervisor.
func setupTTY() (int, error) {
	master, err := unix.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/pts/ptmx: %w", err)
	}
	slave, err := openPTYPeer(master)
	if err != nil {
		unix.Close(master)
		return -1, err
	}
	defer unix.Close(slave)
	if _, err := unix.Setsid(); err != nil {
		unix.Close(master)
		return -1, fmt.Errorf("setsid: %w", err)
	}
	if err := unix.IoctlSetInt(slave, unix.TIOCSCTTY, 0); err != nil {
		unix.Close(master)
		return -1, fmt.Errorf("set controlling terminal: %w", err)
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			unix.Close(master)
			return -1, fmt.Errorf("dup pty to fd %d: %w", fd, err)
		}
	}
	return master, nil
}

// openPTYPeer unlocks the pty and opens its slave through the master
// (TIOCGPTPEER), never by a path that could name another devpts.
func openPTYPeer(master int) (int, error) {
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return -1, fmt.Errorf("unlock pty: %w", err)
	}
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		return -1, fmt.Errorf("open pty peer: %w", errno)
	}
	return int(fd), nil
}

var errNoCommand = errors.New("process has no args")
