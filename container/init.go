package container

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/mountinfo"
)

// runInit is the container's init: started by the supervisor in new
// namespaces (R3), it builds the container's file system view (R4-R18),
// reports ready, waits for start and execs the application (R19). All of it
// runs on one locked OS thread: the cgroup namespace, capabilities and
// credentials it sets are per thread, and the exec keeps that thread's.
func runInit() {
	runtime.LockOSThread()
	conn, err := fileConn(os.NewFile(3, "sync"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-mini init: %v\n", err)
		os.Exit(1)
	}
	err = initContainer(conn, os.Getenv(envStateDir))
	// Only failures come back here; a successful exec never returns.
	_ = sendMsg(conn, syncMsg{Type: msgError, Error: err.Error()})
	fmt.Fprintf(os.Stderr, "cri-mini init: %v\n", err)
	os.Exit(1)
}

func initContainer(conn *net.UnixConn, dir string) error {
	var cfg config
	if err := readJSON(dir, configFile, &cfg); err != nil {
		return err
	}
	spec := cfg.Spec
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
	fifo, err := unix.Open(filepath.Join(dir, fifoFile), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open start fifo: %w", err)
	}
	if err := setupRootfs(spec, etcFiles(dir)); err != nil {
		return err
	}
	if nsWanted(spec, specs.UTSNamespace) && spec.Hostname != "" { // R15
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", spec.Hostname, err)
		}
	}
	if err := hardenRootfs(spec); err != nil {
		return err
	}
	p := spec.Process
	var ttyFDs []int
	if p.Terminal {
		master, err := setupTTY()
		if err != nil {
			return err
		}
		ttyFDs = []int{master}
	}
	path, err := prepareProcess(p)
	if err != nil {
		return err
	}
	if err := sendMsg(conn, syncMsg{Type: msgReady}, ttyFDs...); err != nil {
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
	return execProcess(p, seccompOf(spec), path) // R19
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

// etcFiles lists the R2 files Create wrote into the state directory.
func etcFiles(dir string) map[string]string {
	files := map[string]string{}
	for _, name := range []string{"hosts", "hostname", "resolv.conf"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			files["/etc/"+name] = p
		}
	}
	return files
}

// setupRootfs is R4-R14: the mount namespace's propagation, the rootfs as a
// private mount, the recipe's and the spec's mounts inside it, and the switch
// of root.
func setupRootfs(spec *specs.Spec, etc map[string]string) error {
	if spec.Root == nil || spec.Root.Path == "" {
		return fmt.Errorf("spec has no root path")
	}
	rootPath := spec.Root.Path
	// R4: nothing we mount from here on propagates back to the host, unless
	// a bidirectional mount asked for a shared root (rshared).
	prop := rootPropagation(spec)
	if err := unix.Mount("", "/", "", unix.MS_REC|uintptr(prop), ""); err != nil {
		return fmt.Errorf("set / propagation: %w", err)
	}
	if prop == unix.MS_SHARED {
		// pivot_root refuses a new root whose parent mount is shared: the
		// mount holding the rootfs goes private (its submounts stay shared).
		mp, err := mountinfo.MountpointOf(rootPath)
		if err != nil {
			return err
		}
		if err := unix.Mount("", mp, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", mp, err)
		}
	}
	// R5: the rootfs becomes a mount point of its own, private.
	if err := unix.Mount(rootPath, rootPath, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs %s onto itself: %w", rootPath, err)
	}
	if err := unix.Mount("", rootPath, "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make rootfs private: %w", err)
	}
	root, err := os.OpenFile(rootPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open rootfs: %w", err)
	}
	defer root.Close()
	// R6-R12 and the spec's mounts, each on a descriptor resolved in root (R18).
	for _, m := range containerMounts(spec, etc) {
		if err := doMount(root, m, spec); err != nil {
			return err
		}
	}
	// R13: pivot_root with the old root stacked on the new one, so no
	// directory for it is needed inside the rootfs.
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
	if err := unix.Mount("", ".", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make old root rslave: %w", err)
	}
	// R14: the old root goes; nothing of the host stays visible.
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|uintptr(prop), ""); err != nil {
		return fmt.Errorf("set root propagation: %w", err)
	}
	return nil
}

// rootPropagation is the spec's root propagation as a mount flag; rslave
// by default, as in runc.
func rootPropagation(spec *specs.Spec) int {
	if spec.Linux != nil {
		switch spec.Linux.RootfsPropagation {
		case "private", "rprivate":
			return unix.MS_PRIVATE
		case "shared", "rshared":
			return unix.MS_SHARED
		case "unbindable", "runbindable":
			return unix.MS_UNBINDABLE
		}
	}
	return unix.MS_SLAVE
}

// hardenRootfs writes the namespaced sysctls, then applies R16 and R17 and
// a read-only root when the spec asks for one.
func hardenRootfs(spec *specs.Spec) error {
	root, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer root.Close()
	masked, readonly := defaultMaskedPaths, defaultReadonlyPaths
	if spec.Linux != nil {
		for k, v := range spec.Linux.Sysctl {
			if err := writeSysctl(root, k, v); err != nil {
				return err
			}
		}
		if spec.Linux.MaskedPaths != nil {
			masked = spec.Linux.MaskedPaths
		}
		if spec.Linux.ReadonlyPaths != nil {
			readonly = spec.Linux.ReadonlyPaths
		}
	}
	for _, p := range readonly { // R16
		if err := readonlyPath(root, p); err != nil {
			return err
		}
	}
	devNull, err := openInRoot(root, "/dev/null")
	if err != nil {
		return fmt.Errorf("mask paths: %w", err)
	}
	defer devNull.Close()
	for _, p := range masked { // R17
		if err := maskPath(root, devNull, p); err != nil {
			return err
		}
	}
	if spec.Root.Readonly {
		if err := unix.MountSetattr(int(root.Fd()), "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("make rootfs read-only: %w", err)
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
