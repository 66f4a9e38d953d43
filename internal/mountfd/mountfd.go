// Package mountfd is cri-mini's one way into the kernel's new mount API
// (fsopen, fsconfig, fsmount, open_tree, mount_setattr, move_mount). A
// mount is made detached, set up through its descriptor and attached last,
// so that no path is resolved between deciding on a mount and making it.
// Errors name the system call and what it was given, and wrap the errno.
package mountfd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// FS is a file system being configured (an fsopen context), not mounted
// yet: its parameters are set one by one so that a layer given by
// descriptor, or a value holding commas, needs no option string.
type FS struct {
	fd     int
	fstype string
}

// Open starts configuring a new file system of type fstype. Close it once
// Mount has made the mount (or failed).
func Open(fstype string) (*FS, error) {
	fd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	return &FS{fd: fd, fstype: fstype}, nil
}

// Close releases the configuration; a mount made from it stays.
func (f *FS) Close() error { return unix.Close(f.fd) }

// Set sets the string parameter key.
func (f *FS) Set(key, value string) error {
	if err := unix.FsconfigSetString(f.fd, key, value); err != nil {
		return fmt.Errorf("fsconfig %s %s=%s: %w", f.fstype, key, value, err)
	}
	return nil
}

// SetFlag sets the parameter key that takes no value ("newinstance").
func (f *FS) SetFlag(key string) error {
	if err := unix.FsconfigSetFlag(f.fd, key); err != nil {
		return fmt.Errorf("fsconfig %s %s: %w", f.fstype, key, err)
	}
	return nil
}

// SetFD sets the parameter key to the file or mount fd refers to.
func (f *FS) SetFD(key string, fd int) error {
	if err := unix.FsconfigSetFd(f.fd, key, fd); err != nil {
		return fmt.Errorf("fsconfig %s %s=<fd %d>: %w", f.fstype, key, fd, err)
	}
	return nil
}

// Param sets a parameter as a mount option names it: "key=value", or a bare
// flag.
func (f *FS) Param(p string) error {
	if k, v, hasValue := strings.Cut(p, "="); hasValue {
		return f.Set(k, v)
	}
	return f.SetFlag(p)
}

// Mount creates the file system and returns a detached mount of it with
// the mount attributes attrs (MOUNT_ATTR_*).
func (f *FS) Mount(attrs uint64) (int, error) {
	if err := unix.FsconfigCreate(f.fd); err != nil {
		return -1, fmt.Errorf("create %s file system: %w", f.fstype, err)
	}
	mfd, err := unix.Fsmount(f.fd, unix.FSMOUNT_CLOEXEC, int(attrs))
	if err != nil {
		return -1, fmt.Errorf("fsmount %s: %w", f.fstype, err)
	}
	return mfd, nil
}

// New returns a detached mount of a fresh file system of type fstype, with
// source (none when "") and params as Param takes them.
func New(fstype, source string, params []string, attrs uint64) (int, error) {
	f, err := Open(fstype)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	if source != "" {
		if err := f.Set("source", source); err != nil {
			return -1, err
		}
	}
	for _, p := range params {
		if err := f.Param(p); err != nil {
			return -1, err
		}
	}
	return f.Mount(attrs)
}

// Clone returns a detached copy of the mount (the whole tree below it when
// recursive) at path: the source of a bind mount.
func Clone(path string, recursive bool) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, cloneFlags(recursive))
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", path, err)
	}
	return fd, nil
}

// CloneFD is Clone for a source already held open, which no path could
// name as safely.
func CloneFD(src *os.File, recursive bool) (int, error) {
	fd, err := unix.OpenTree(int(src.Fd()), "", cloneFlags(recursive)|unix.AT_EMPTY_PATH)
	if err != nil {
		return -1, fmt.Errorf("open_tree %s: %w", src.Name(), err)
	}
	return fd, nil
}

func cloneFlags(recursive bool) uint {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	return flags
}

// SetAttr sets and clears mount attributes (MOUNT_ATTR_*) and changes the
// propagation (MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_UNBINDABLE; 0 keeps it)
// of the mount mfd refers to, and of every mount below it when recursive.
// Nothing to change is no system call.
func SetAttr(mfd int, set, clr, propagation uint64, recursive bool) error {
	return setAttr(mfd, "", unix.AT_EMPTY_PATH, set, clr, propagation, recursive)
}

// SetAttrAt is SetAttr for the mount at path, for a caller that holds no
// descriptor of it (the working directory of a process about to pivot).
func SetAttrAt(path string, set, clr, propagation uint64, recursive bool) error {
	return setAttr(unix.AT_FDCWD, path, 0, set, clr, propagation, recursive)
}

func setAttr(dirfd int, path string, flags uint, set, clr, propagation uint64, recursive bool) error {
	if set == 0 && clr == 0 && propagation == 0 {
		return nil
	}
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: set, Attr_clr: clr, Propagation: propagation}
	if err := unix.MountSetattr(dirfd, path, flags, &attr); err != nil {
		return fmt.Errorf("mount_setattr set %#x clear %#x propagation %#x: %w", set, clr, propagation, err)
	}
	return nil
}

// Idmap makes the detached mount mfd (and the mounts below it when
// recursive) show the files of ids 0..n-1 on disk as the user namespace's
// (MOUNT_ATTR_IDMAP): a file of uid 0 is its root's. A file system that
// cannot be idmapped (overlayfs, proc, ramfs: EINVAL or EOPNOTSUPP) is
// ErrFailedPrecondition: the node, not the request, is at fault.
func Idmap(mfd int, userNS *os.File, recursive bool) error {
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

// Attach moves the detached mount mfd onto the file or directory target
// holds open, so that the target cannot be swapped for a symlink between
// its lookup and the mount.
func Attach(mfd int, target *os.File) error {
	err := unix.MoveMount(mfd, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("move_mount onto %s: %w", target.Name(), err)
	}
	return nil
}

// MoveTo moves the detached mount mfd onto the path target, for targets
// the caller made itself and no one else can change.
func MoveTo(mfd int, target string) error {
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", target, err)
	}
	return nil
}
