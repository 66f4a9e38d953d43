package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/mountfd"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
)

// The recipe's mounts (R6-R11), in its order. A spec mount with the same
// destination replaces the recipe's one in place, so the CRI layer can
// substitute, for example, the pod's shared /dev/shm.
func recipeMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},                                                     // R6
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},                             // R7
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}}, // R8
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "nodev", "noexec"}},                                           // R9
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "nodev", "noexec", "mode=1777", "size=65536k"}},                      // R10
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "nodev", "noexec", "ro"}},                                              // R11
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "nodev", "noexec", "relatime", "ro"}},                      // R11
	}
}

// defaultMaskedPaths and defaultReadonlyPaths are R17 and R16's lists, used
// when the spec gives none.
var (
	defaultMaskedPaths = []string{"/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/acpi", "/proc/scsi", "/sys/firmware"}
	defaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

type device struct {
	name         string
	major, minor int64
}

// R7's character devices, all mode 0666 and owned by root.
var defaultDevices = []device{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}

// R7 and R8's symlinks in /dev.
var devSymlinks = [][2]string{{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
	{"stderr", "/proc/self/fd/2"}, {"core", "/proc/kcore"}, {"ptmx", "pts/ptmx"}}

// mountsInOrder merges the recipe's mounts, the R12 files and the spec's
// own mounts into the order in which they are made.
func mountsInOrder(spec *specs.Spec, etcFiles map[string]string) []specs.Mount {
	mounts := recipeMounts()
	index := map[string]int{}
	for i, m := range mounts {
		index[m.Destination] = i
	}
	// R12: hosts, hostname and resolv.conf, unless the spec binds its own.
	for _, dst := range []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"} {
		if src, ok := etcFiles[dst]; ok {
			index[dst] = len(mounts)
			mounts = append(mounts, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"bind", "rprivate"}})
		}
	}
	for _, m := range spec.Mounts {
		dst := filepath.Clean(m.Destination)
		m.Destination = dst
		if i, ok := index[dst]; ok {
			mounts[i] = m
			continue
		}
		index[dst] = len(mounts)
		mounts = append(mounts, m)
	}
	return mounts
}

// mountStep performs one of the plan's steps inside the rootfs before
// pivot_root (R6-R12 and the spec's mounts, R7's /dev contents), each on a
// descriptor resolved in root (R18). src is the step's source as the
// supervisor prepared it (prepareSources), nil when it has none.
func mountStep(root *os.File, s Step, src *os.File) error {
	switch s.Kind {
	case KindMount:
		return mountSpec(root, *s.Mount, src)
	case KindCgroupfs:
		return mountCgroups(root, *s.Mount, s.Hierarchies) // R11
	case KindDevice:
		if s.Device.Bind != "" {
			return bindDevice(root, *s.Device, src) // R7 in a user namespace
		}
		return makeDevice(root, *s.Device) // R7
	case KindSymlink:
		return inDev(root, func(dfd int) error { // R7, R8
			if s.Symlink.Replace {
				if err := unix.Unlinkat(dfd, s.Symlink.Path, 0); err != nil && err != unix.ENOENT {
					return fmt.Errorf("replace /dev/%s: %w", s.Symlink.Path, err)
				}
			}
			if err := unix.Symlinkat(s.Symlink.Target, dfd, s.Symlink.Path); err != nil {
				return fmt.Errorf("symlink /dev/%s: %w", s.Symlink.Path, err)
			}
			return nil
		})
	case KindMkdir:
		return inDev(root, func(dfd int) error {
			name := strings.TrimPrefix(s.Path, "/dev/")
			if err := unix.Mkdirat(dfd, name, 0o755); err != nil && err != unix.EEXIST {
				return fmt.Errorf("mkdir /dev/%s: %w", name, err)
			}
			return nil
		})
	}
	return fmt.Errorf("plan step %s %s: not a mount step", s.Recipe, s.Kind)
}

// inDev calls f with a descriptor of the container's /dev.
func inDev(root *os.File, f func(dfd int) error) error {
	dev, err := openInRoot(root, "/dev")
	if err != nil {
		return err
	}
	defer dev.Close()
	return f(int(dev.Fd()))
}

// makeDevice makes one node in the fresh /dev tmpfs (R7, and the spec's
// devices, which may replace a default one).
func makeDevice(root *os.File, d DeviceNode) error {
	typ := uint32(unix.S_IFCHR)
	switch d.Type {
	case "b":
		typ = unix.S_IFBLK
	case "p":
		typ = unix.S_IFIFO
	}
	mode := typ | uint32(d.Mode.Perm())
	dev := int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))
	name := strings.TrimPrefix(filepath.Clean("/"+d.Path), "/")
	dir := "/dev"
	if strings.Contains(name, "/") {
		dir = filepath.Dir("/dev/" + name)
	}
	dh, err := mkdirInRoot(root, dir)
	if err != nil {
		return err
	}
	defer dh.Close()
	dfd, base := int(dh.Fd()), filepath.Base(name)
	_ = unix.Unlinkat(dfd, base, 0)
	if err := unix.Mknodat(dfd, base, mode, dev); err != nil {
		return fmt.Errorf("mknod /dev/%s: %w", name, err)
	}
	if err := unix.Fchownat(dfd, base, int(d.UID), int(d.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown /dev/%s: %w", name, err)
	}
	return nil
}

// bindDevice binds the host's node (src, prepared) onto an empty file at
// d.Path in the fresh /dev: the node keeps the host's owner and mode.
func bindDevice(root *os.File, d DeviceNode, src *os.File) error {
	if src == nil {
		return fmt.Errorf("device /dev/%s: no prepared source for %s", d.Path, d.Bind)
	}
	target, err := mkfileInRoot(root, "/dev/"+d.Path)
	if err != nil {
		return fmt.Errorf("device /dev/%s: %w", d.Path, err)
	}
	defer target.Close()
	if err := mountfd.Attach(int(src.Fd()), target); err != nil {
		return fmt.Errorf("device /dev/%s: %w", d.Path, err)
	}
	return nil
}

// hostCgroups reads from mountinfo the cgroup hierarchies the host mounts:
// a single cgroup2 at /sys/fs/cgroup (unified), or v1 hierarchies.
func hostCgroups() ([]CgroupHierarchy, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	return cgroupHierarchies(mounts), nil
}

// cgroupHierarchies are the cgroup mounts below /sys/fs/cgroup a container
// gets. A hybrid host's cgroup2 (systemd's /sys/fs/cgroup/unified, beside
// the v1 hierarchies) is left out, as runc leaves it out (libcontainer
// mounts only the "cgroup" file systems of a v1 host): a container that
// saw a cgroup2 below /sys/fs/cgroup would take itself for a v2 one, as
// Kubernetes' e2e checks do (`mount -t cgroup2` naming /sys/fs/cgroup),
// and look for memory.max where memory.limit_in_bytes is.
func cgroupHierarchies(mounts []mountinfo.Mount) []CgroupHierarchy {
	var out []CgroupHierarchy
	for _, m := range mounts {
		mp := m.Mountpoint
		if (m.FSType != "cgroup" && m.FSType != "cgroup2") || (mp != "/sys/fs/cgroup" && !strings.HasPrefix(mp, "/sys/fs/cgroup/")) {
			continue
		}
		if m.FSType == "cgroup2" && mp != "/sys/fs/cgroup" {
			continue
		}
		hm := CgroupHierarchy{Dir: strings.TrimPrefix(strings.TrimPrefix(mp, "/sys/fs/cgroup"), "/"), FSType: m.FSType}
		for o := range strings.SplitSeq(m.SuperOptions, ",") {
			switch o {
			case "rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec":
			default:
				if m.FSType == "cgroup" {
					hm.Params = append(hm.Params, o)
				}
			}
		}
		out = append(out, hm)
	}
	return out
}

// mountCgroups is R11's /sys/fs/cgroup: the host's cgroup2 mount, or on a v1
// host a tmpfs holding each hierarchy (hier, the host's), all rooted at the
// container's cgroup namespace and read-only unless the mount's options
// lack "ro" (a privileged container's).
func mountCgroups(root *os.File, m specs.Mount, hier []CgroupHierarchy) error {
	o := parseMountOptions(m.Options)
	attrs := o.attrSet | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC
	target, err := mkdirInRoot(root, m.Destination)
	if err != nil {
		return fmt.Errorf("mount /sys/fs/cgroup: %w", err)
	}
	defer target.Close()
	if len(hier) == 1 && hier[0].Dir == "" {
		mfd, err := mountfd.New(hier[0].FSType, "cgroup", nil, attrs)
		if err != nil {
			return fmt.Errorf("mount /sys/fs/cgroup: %w", err)
		}
		defer unix.Close(mfd)
		return mountfd.Attach(mfd, target)
	}
	tfd, err := mountfd.New("tmpfs", "cgroup", []string{"mode=755"}, attrs&^unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		return fmt.Errorf("mount /sys/fs/cgroup: %w", err)
	}
	defer unix.Close(tfd)
	if err := mountfd.Attach(tfd, target); err != nil {
		return fmt.Errorf("mount /sys/fs/cgroup: %w", err)
	}
	for _, h := range hier {
		if h.Dir == "" || strings.Contains(h.Dir, "/") {
			continue
		}
		if err := unix.Mkdirat(tfd, h.Dir, 0o555); err != nil {
			return fmt.Errorf("mount /sys/fs/cgroup/%s: %w", h.Dir, err)
		}
		dfd, err := unix.Openat(tfd, h.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("mount /sys/fs/cgroup/%s: %w", h.Dir, err)
		}
		d := os.NewFile(uintptr(dfd), "/sys/fs/cgroup/"+h.Dir)
		mfd, err := mountfd.New(h.FSType, "cgroup", h.Params, attrs)
		if err == nil {
			err = mountfd.Attach(mfd, d)
			unix.Close(mfd)
		}
		d.Close()
		if err != nil {
			return fmt.Errorf("mount /sys/fs/cgroup/%s: %w", h.Dir, err)
		}
	}
	return mountfd.SetAttr(tfd, attrs&unix.MOUNT_ATTR_RDONLY, 0, 0, false)
}

// maskPath is R17 for one path: an empty read-only tmpfs over a directory,
// /dev/null over anything else. Missing paths are skipped.
func maskPath(root, devNull *os.File, p string) error {
	target, err := openInRoot(root, p)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("mask %s: %w", p, err)
	}
	defer target.Close()
	var mfd int
	if isDirFD(target) {
		mfd, err = mountfd.New("tmpfs", "tmpfs", []string{"size=0"}, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	} else {
		mfd, err = mountfd.CloneFD(devNull, false)
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	defer unix.Close(mfd)
	if err := mountfd.Attach(mfd, target); err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

// readonlyPath is R16 for one path: a recursive read-only bind of itself.
// Missing paths are skipped.
func readonlyPath(root *os.File, p string) error {
	target, err := openInRoot(root, p)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("read-only %s: %w", p, err)
	}
	defer target.Close()
	mfd, err := mountfd.CloneFD(target, true)
	if err != nil {
		return fmt.Errorf("read-only %s: %w", p, err)
	}
	defer unix.Close(mfd)
	if err := mountfd.SetAttr(mfd, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC, 0, 0, true); err != nil {
		return fmt.Errorf("read-only %s: %w", p, err)
	}
	if err := mountfd.Attach(mfd, target); err != nil {
		return fmt.Errorf("read-only %s: %w", p, err)
	}
	return nil
}
