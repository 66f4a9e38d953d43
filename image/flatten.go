package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Flatten copies layers (lowest first, each a directory produced by Unpack)
// into dst, an existing directory, so that dst looks like the read-only
// overlay mount of the same layers: a 0/0 character device deletes the
// entry below, a directory marked trusted.overlay.opaque hides everything
// below it, and a non-directory over a directory (or the reverse) replaces
// it. Type, mode, owner, times and xattrs are kept (not the trusted.overlay
// ones, which overlay hides too); hard links within one layer stay links.
// It is the root filesystem for hosts without overlayfs. On error dst
// holds a partial copy, for the caller to remove.
//
// The layers are untrusted (recipe R18): both trees are walked one name at
// a time with *at calls on directory fds, never following a symlink, so a
// symlink a layer made cannot send a copy outside dst.
func Flatten(layers []string, dst string) error {
	dstFd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("flatten into %s: %w", dst, err)
	}
	defer unix.Close(dstFd)
	f := &flattener{dstRoot: dstFd, dirTimes: map[string]unix.Stat_t{}}
	for _, layer := range layers {
		srcFd, err := unix.Open(layer, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("flatten layer %s: %w", layer, err)
		}
		f.layer, f.links = layer, map[uint64]string{}
		err = f.root(srcFd)
		unix.Close(srcFd)
		if err != nil {
			return err
		}
	}
	return f.setDirTimes()
}

type flattener struct {
	dstRoot int
	layer   string            // the layer being copied, for errors
	links   map[uint64]string // inode in this layer -> path copied first, to link the others to
	// dirTimes holds each directory's times from the topmost layer that has
	// it; they are set last, since copying into a directory changes them.
	dirTimes map[string]unix.Stat_t
}

// root merges a layer's root directory: the root itself is never replaced
// (overlay merges all layer roots, opaque or not), only its metadata.
func (f *flattener) root(srcFd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(srcFd, &st); err != nil {
		return fmt.Errorf("flatten layer %s: %w", f.layer, err)
	}
	if err := f.metadata(srcFd, ".", f.dstRoot, ".", &st); err != nil {
		return fmt.Errorf("flatten layer %s: %w", f.layer, err)
	}
	f.dirTimes[""] = st
	return f.dir(srcFd, f.dstRoot, "")
}

// dir copies the children of one layer directory into the matching dst
// directory; rel is their common path below the roots.
func (f *flattener) dir(srcFd, dstFd int, rel string) error {
	names, err := readDirNames(srcFd)
	if err != nil {
		return fmt.Errorf("flatten layer %s: read %q: %w", f.layer, rel, err)
	}
	for _, name := range names {
		if err := f.entry(srcFd, dstFd, name, path.Join(rel, name)); err != nil {
			return fmt.Errorf("flatten layer %s: %s: %w", f.layer, path.Join(rel, name), err)
		}
	}
	return nil
}

func readDirNames(fd int) ([]string, error) {
	// A second fd: reading moves the directory offset, and *at calls use fd.
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(dup), ".")
	defer d.Close()
	names, err := d.Readdirnames(-1)
	slices.Sort(names) // the same tree gives the same result, link sources included
	return names, err
}

func (f *flattener) entry(srcFd, dstFd int, name, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(srcFd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	kind := st.Mode & unix.S_IFMT
	if kind == unix.S_IFCHR && st.Rdev == 0 { // a whiteout
		return removeExisting(dstFd, name, false)
	}
	if kind == unix.S_IFDIR {
		return f.mergeDir(srcFd, dstFd, name, rel, &st)
	}
	if err := removeExisting(dstFd, name, false); err != nil {
		return err
	}
	if first, ok := f.links[st.Ino]; ok {
		return f.link(first, dstFd, name)
	}
	if st.Nlink > 1 {
		f.links[st.Ino] = rel
	}
	switch kind {
	case unix.S_IFREG:
		if err := copyFile(srcFd, dstFd, name); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := readlinkat(srcFd, name)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, dstFd, name); err != nil {
			return err
		}
	default: // fifo, socket, device node
		if err := unix.Mknodat(dstFd, name, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return err
		}
	}
	return f.metadata(srcFd, name, dstFd, name, &st)
}

// mergeDir copies a directory: over a directory of a lower layer it merges
// unless it is opaque, over anything else it replaces.
func (f *flattener) mergeDir(srcFd, dstFd int, name, rel string, st *unix.Stat_t) error {
	opaque, err := isOpaque(srcFd, name)
	if err != nil {
		return err
	}
	if err := removeExisting(dstFd, name, !opaque); err != nil {
		return err
	}
	if err := unix.Mkdirat(dstFd, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	if err := f.metadata(srcFd, name, dstFd, name, st); err != nil {
		return err
	}
	f.dirTimes[rel] = *st
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	sub, err := unix.Openat(srcFd, name, flags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sub)
	dsub, err := unix.Openat(dstFd, name, flags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dsub)
	return f.dir(sub, dsub, rel)
}

func isOpaque(dirFd int, name string) (bool, error) {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(procPath(dirFd, name), overlayOpaque, buf)
	if errors.Is(err, unix.ENODATA) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("xattr %s: %w", overlayOpaque, err)
	}
	return string(buf[:n]) == "y", nil
}

// link makes name another link to the inode first copied to first, found
// below dst without following a symlink.
func (f *flattener) link(first string, dstFd int, name string) error {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS}
	fd, err := unix.Openat2(f.dstRoot, first, how)
	if err != nil {
		return fmt.Errorf("hard link to %s: %w", first, err)
	}
	defer unix.Close(fd)
	return unix.Linkat(fd, "", dstFd, name, unix.AT_EMPTY_PATH)
}

func copyFile(srcFd, dstFd int, name string) error {
	in, err := unix.Openat(srcFd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	src := os.NewFile(uintptr(in), name)
	defer src.Close()
	out, err := unix.Openat(dstFd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	dst := os.NewFile(uintptr(out), name)
	_, err = io.Copy(dst, src) // copy_file_range: a reflink or in-kernel copy where the fs allows
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

func readlinkat(dirFd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirFd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// procPath names an entry of a directory fd for the l*xattr calls, which
// have no *at form: the fd's magic link is followed, name is not.
func procPath(dirFd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirFd) + "/" + name
}

// metadata gives dst's entry the owner, mode, xattrs and (except for
// directories, done last) times of the layer's entry.
func (f *flattener) metadata(srcFd int, srcName string, dstFd int, dstName string, st *unix.Stat_t) error {
	if err := unix.Fchownat(dstFd, dstName, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	kind := st.Mode & unix.S_IFMT
	if kind != unix.S_IFLNK { // after chown, which clears setuid; a symlink has no mode of its own
		if err := unix.Fchmodat(dstFd, dstName, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("mode: %w", err)
		}
	}
	if kind == unix.S_IFDIR {
		// A merged directory shows the xattrs of the topmost layer's only.
		if err := removeXattrs(procPath(dstFd, dstName)); err != nil {
			return err
		}
		return copyXattrs(procPath(srcFd, srcName), procPath(dstFd, dstName))
	}
	if err := copyXattrs(procPath(srcFd, srcName), procPath(dstFd, dstName)); err != nil {
		return err
	}
	return unix.UtimesNanoAt(dstFd, dstName, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
}

// xattrNames lists the extended attributes of p but overlay's own, which
// overlay hides from the merged view.
func xattrNames(p string) ([]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	list := make([]byte, size)
	if size, err = unix.Llistxattr(p, list); err != nil {
		return nil, err
	}
	var names []string
	for _, attr := range bytes.Split(list[:size], []byte{0}) {
		if name := string(attr); name != "" && !strings.HasPrefix(name, "trusted.overlay.") {
			names = append(names, name)
		}
	}
	return names, nil
}

func removeXattrs(p string) error {
	names, err := xattrNames(p)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := unix.Lremovexattr(p, name); err != nil {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	return nil
}

func copyXattrs(src, dst string) error {
	names, err := xattrNames(src)
	if err != nil {
		return err
	}
	for _, name := range names {
		n, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
		value := make([]byte, n)
		if n, err = unix.Lgetxattr(src, name, value); err != nil {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
		if err := unix.Lsetxattr(dst, name, value[:n], 0); err != nil {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	return nil
}

// setDirTimes sets directory times deepest first, once all layers are in.
// It walks down from dst's root by name with O_NOFOLLOW, as the copy did,
// so no path length limit applies and a directory a higher layer deleted
// or replaced is skipped.
func (f *flattener) setDirTimes() error {
	children := map[string][]string{}
	for rel := range f.dirTimes {
		if rel != "" {
			parent := path.Dir(rel)
			if parent == "." {
				parent = ""
			}
			children[parent] = append(children[parent], path.Base(rel))
		}
	}
	if err := f.setTimesBelow(f.dstRoot, "", children); err != nil {
		return err
	}
	st := f.dirTimes[""]
	if err := unix.UtimesNanoAt(f.dstRoot, "", []unix.Timespec{st.Atim, st.Mtim}, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("flatten: times of the root: %w", err)
	}
	return nil
}

func (f *flattener) setTimesBelow(dirFd int, rel string, children map[string][]string) error {
	for _, name := range children[rel] {
		child := path.Join(rel, name)
		fd, err := unix.Openat(dirFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			continue // deleted or replaced by a higher layer
		}
		if err != nil {
			return fmt.Errorf("flatten: times of %q: %w", child, err)
		}
		err = f.setTimesBelow(fd, child, children)
		if err == nil {
			st := f.dirTimes[child]
			if err = unix.UtimesNanoAt(fd, "", []unix.Timespec{st.Atim, st.Mtim}, unix.AT_EMPTY_PATH); err != nil {
				err = fmt.Errorf("flatten: times of %q: %w", child, err)
			}
		}
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}
