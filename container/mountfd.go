package container

import (
	"errors"
	"fmt"
	"os"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// mountOpts is a spec mount's option list split into what the new mount API
// takes separately: per-mount attributes (for the top mount, and recursive
// ones for every mount of a bind's tree), propagation, bind-ness and the
// file-system parameters that go to fsconfig.
type mountOpts struct {
	attrSet, attrClr       uint64
	recAttrSet, recAttrClr uint64 // "rro", "rnosuid", ...: the whole tree
	propagation            uint64 // MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_UNBINDABLE or 0
	recursiveProp          bool
	bind, rbind            bool
	fsParams               []string // "mode=755", "newinstance"
}

// mountAttrOptions maps an option to the mount attribute it sets or clears.
// The same name with an "r" in front ("rro", "rnosuid") applies it to every
// mount of a recursive bind, not only to the top one (runc's semantics: a
// plain "ro" on an rbind leaves the submounts as they are).
var mountAttrOptions = map[string]struct {
	attr uint64
	set  bool
}{
	"ro": {unix.MOUNT_ATTR_RDONLY, true}, "rw": {unix.MOUNT_ATTR_RDONLY, false},
	"nosuid": {unix.MOUNT_ATTR_NOSUID, true}, "suid": {unix.MOUNT_ATTR_NOSUID, false},
	"nodev": {unix.MOUNT_ATTR_NODEV, true}, "dev": {unix.MOUNT_ATTR_NODEV, false},
	"noexec": {unix.MOUNT_ATTR_NOEXEC, true}, "exec": {unix.MOUNT_ATTR_NOEXEC, false},
	"noatime": {unix.MOUNT_ATTR_NOATIME, true}, "strictatime": {unix.MOUNT_ATTR_STRICTATIME, true},
	"relatime": {unix.MOUNT_ATTR_RELATIME, true}, "nodiratime": {unix.MOUNT_ATTR_NODIRATIME, true},
}

func parseMountOptions(opts []string) mountOpts {
	var o mountOpts
	for _, opt := range opts {
		if a, ok := mountAttrOptions[opt]; ok {
			if a.set {
				o.attrSet |= a.attr
			} else {
				o.attrClr |= a.attr
			}
			continue
		}
		if a, ok := mountAttrOptions[strings.TrimPrefix(opt, "r")]; ok && opt[0] == 'r' {
			if a.set {
				o.recAttrSet |= a.attr
			} else {
				o.recAttrClr |= a.attr
			}
			continue
		}
		switch opt {
		case "bind":
			o.bind = true
		case "rbind":
			o.bind, o.rbind = true, true
		case "private", "rprivate":
			o.propagation, o.recursiveProp = unix.MS_PRIVATE, opt[0] == 'r'
		case "slave", "rslave":
			o.propagation, o.recursiveProp = unix.MS_SLAVE, opt[0] == 'r'
		case "shared", "rshared":
			o.propagation, o.recursiveProp = unix.MS_SHARED, opt[0] == 'r'
		case "unbindable", "runbindable":
			o.propagation, o.recursiveProp = unix.MS_UNBINDABLE, opt[0] == 'r'
		case "atime", "diratime", "async", "defaults", "nostrictatime", "norelatime":
			// Defaults of the new mount API already.
		default:
			o.fsParams = append(o.fsParams, opt)
		}
	}
	// The atime attributes form one field: keep only the last one named.
	if o.attrSet&unix.MOUNT_ATTR__ATIME != 0 {
		o.attrClr |= unix.MOUNT_ATTR__ATIME
	}
	if o.recAttrSet&unix.MOUNT_ATTR__ATIME != 0 {
		o.recAttrClr |= unix.MOUNT_ATTR__ATIME
	}
	return o
}

// newFSMount creates a detached mount of a fresh file system (fsopen,
// fsconfig, fsmount) and returns its descriptor.
func newFSMount(fstype, source string, params []string, attrs uint64) (int, error) {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	defer unix.Close(fsfd)
	if source != "" {
		if err := unix.FsconfigSetString(fsfd, "source", source); err != nil {
			return -1, fmt.Errorf("fsconfig %s source=%s: %w", fstype, source, err)
		}
	}
	for _, p := range params {
		k, v, hasValue := strings.Cut(p, "=")
		if hasValue {
			err = unix.FsconfigSetString(fsfd, k, v)
		} else {
			err = unix.FsconfigSetFlag(fsfd, k)
		}
		if err != nil {
			return -1, fmt.Errorf("fsconfig %s %s: %w", fstype, p, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create %s file system: %w", fstype, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(attrs))
	if err != nil {
		return -1, fmt.Errorf("fsmount %s: %w", fstype, err)
	}
	return mfd, nil
}

// cloneTree returns a detached copy of the mount (tree, when recursive) at
// the host path source: the source of a bind mount.
func cloneTree(source string, recursive bool) (int, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, source, flags)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", source, err)
	}
	return fd, nil
}

// cloneFD is cloneTree for a source already held as a descriptor.
func cloneFD(src *os.File, recursive bool) (int, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(int(src.Fd()), "", flags)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src.Name(), err)
	}
	return fd, nil
}

// setAttr changes the attributes and propagation of the mount mfd refers to
// (and of the mounts below it when recursive).
func setAttr(mfd int, set, clr, propagation uint64, recursive bool) error {
	if set == 0 && clr == 0 && propagation == 0 {
		return nil
	}
	flags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: set, Attr_clr: clr, Propagation: propagation}
	if err := unix.MountSetattr(mfd, "", flags, &attr); err != nil {
		return fmt.Errorf("mount_setattr set %#x clear %#x propagation %#x: %w", set, clr, propagation, err)
	}
	return nil
}

// attach moves the detached mount mfd onto the target handle.
func attach(mfd int, target *os.File) error {
	err := unix.MoveMount(mfd, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("move_mount onto %s: %w", target.Name(), err)
	}
	return nil
}

// isBind reports whether m is a bind mount (of a host path).
func isBind(m specs.Mount) bool { return m.Type == "bind" || parseMountOptions(m.Options).bind }

// bindSource makes the source of bind mount m: a detached copy of the tree
// at m.Source (recursive for rbind) with the mount's attributes, idmapped
// with userNS (the container's user namespace) when the mount carries id
// mappings. The supervisor makes it, outside the container's namespaces:
// from inside a user namespace the source may be out of reach, and only the
// host's root may idmap a mount of the host's file systems.
func bindSource(m specs.Mount, userNS *os.File) (*os.File, error) {
	o := parseMountOptions(m.Options)
	mfd, err := cloneTree(m.Source, o.rbind)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	src := os.NewFile(uintptr(mfd), m.Source)
	if len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0 {
		if userNS == nil {
			src.Close()
			return nil, fmt.Errorf("mount %s has id mappings but the container has no user namespace: %w", m.Destination, errdefs.ErrInvalidArgument)
		}
		if err := idmap(mfd, userNS, o.rbind); err != nil {
			src.Close()
			return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
		}
	}
	// The tree's attributes first, then the top mount's own.
	if err := setAttr(mfd, o.recAttrSet, o.recAttrClr, 0, true); err != nil {
		src.Close()
		return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	if err := setAttr(mfd, o.attrSet, o.attrClr, 0, false); err != nil {
		src.Close()
		return nil, fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	return src, nil
}

// idmap makes the detached mount mfd (and the mounts below it when
// recursive) show the files of ids 0..n-1 on disk as the user namespace's
// (MOUNT_ATTR_IDMAP): a file of uid 0 is its root's. A file system that
// cannot be idmapped (overlayfs, proc; EINVAL) is FailedPrecondition.
func idmap(mfd int, userNS *os.File, recursive bool) error {
	flags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userNS.Fd())}
	if err := unix.MountSetattr(mfd, "", flags, &attr); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("idmapped mount: its file system cannot be idmapped on this kernel (%v): %w", err, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("idmapped mount: %w", err)
	}
	return nil
}

// mountSpec performs one spec mount inside root: its target is resolved (and
// created, a directory or a file like its source) in the rootfs, and the
// mount attached on the target's descriptor. A bind's source comes prepared
// (bindSource); any other file system is made here.
func mountSpec(root *os.File, m specs.Mount, src *os.File) error {
	o := parseMountOptions(m.Options)
	var mfd int
	srcIsDir := true
	if isBind(m) {
		if src == nil {
			return fmt.Errorf("mount %s: no prepared source for %s", m.Destination, m.Source)
		}
		mfd, srcIsDir = int(src.Fd()), isDirFD(src)
	} else {
		var err error
		if mfd, err = newFSMount(m.Type, m.Source, o.fsParams, o.attrSet|o.recAttrSet); err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		defer unix.Close(mfd)
	}
	var target *os.File
	var err error
	if srcIsDir {
		target, err = mkdirInRoot(root, m.Destination)
	} else {
		target, err = mkfileInRoot(root, m.Destination)
	}
	if err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	defer target.Close()
	if err := attach(mfd, target); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	if err := setAttr(mfd, 0, 0, o.propagation, o.recursiveProp); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	return nil
}
