package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// ReadFileInRoot reads file p of the untrusted tree at root (an image's
// rootfs), resolving p and every symlink on the way with root as "/"
// (openat2 RESOLVE_IN_ROOT), so nothing outside root can be read through it.
// Only a regular file of at most max bytes is read: a FIFO, a device or a
// huge file there (the image chose it) is refused without blocking. Errors
// name p, not the host path of root. A missing file is fs.ErrNotExist.
func ReadFileInRoot(root, p string, max int64) ([]byte, error) {
	dir, err := os.Open(root)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	fd, err := unix.Openat2(int(dir.Fd()), rel, &unix.OpenHow{
		// O_NONBLOCK: opening a FIFO for reading would wait for a writer.
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return readRegular(os.NewFile(uintptr(fd), p), p, max)
}

// ReadRegularFile reads the host file at name, which must be a regular file
// of at most max bytes. It never blocks on a FIFO or a device, so a path a
// client names cannot stall the caller. Errors name only name.
func ReadRegularFile(name string, max int64) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return readRegular(os.NewFile(uintptr(fd), name), name, max)
}

// readRegular reads f (named name in errors) after checking it is a
// regular file, and closes it. More than max bytes is an error: the size
// fstat gives is checked first, and the read stops after max+1 bytes, as
// a file may grow meanwhile.
func readRegular(f *os.File, name string, max int64) ([]byte, error) {
	defer f.Close()
	size, err := regularSize(f, name)
	if err != nil {
		return nil, err
	}
	if size > max {
		return nil, tooLarge(name, max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err // a *PathError naming name, as f was opened so
	}
	if int64(len(data)) > max {
		return nil, tooLarge(name, max)
	}
	return data, nil
}

func tooLarge(name string, max int64) error {
	return fmt.Errorf("%s is larger than %d bytes: %w", name, max, errdefs.ErrInvalidArgument)
}

// regularSize returns the size of f, refusing anything but a regular file
// and naming what it is.
func regularSize(f *os.File, name string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, fmt.Errorf("%s is %s, not a regular file: %w", name, FileKind(st.Mode), errdefs.ErrInvalidArgument)
	}
	return st.Size, nil
}

// FileKind names the type of a file by its mode (unix S_IF* bits), for
// errors: "a FIFO", "a directory".
func FileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFREG:
		return "a regular file"
	}
	return "of an unknown type"
}

// beneath resolves below a directory descriptor without following any
// symlink, so a link planted in a shared directory (a pod's log directory)
// cannot redirect a write of this root process elsewhere.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// OpenBeneath opens the regular file rel below dir with flags (os.O_*;
// O_CREATE makes it with mode) without following symlinks anywhere on the
// way, the file itself included, and without leaving dir. A FIFO or a
// device there is refused, without blocking on it. Errors name rel.
func OpenBeneath(dir, rel string, flags int, mode os.FileMode) (*os.File, error) {
	if !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("%q leaves its directory: %w", rel, errdefs.ErrInvalidArgument)
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, rel, &unix.OpenHow{
		Flags:   uint64(flags) | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Mode:    uint64(mode.Perm()),
		Resolve: beneath,
	})
	if err != nil {
		return nil, beneathError(rel, err)
	}
	f := os.NewFile(uintptr(fd), rel)
	if _, err := regularSize(f, rel); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// MkdirAllBeneath makes the directory rel and its missing parents below
// dir, one component at a time through descriptors, never following a
// symlink: a link in place of one of them is an error.
func MkdirAllBeneath(dir, rel string, perm os.FileMode) error {
	if !filepath.IsLocal(rel) {
		return fmt.Errorf("%q leaves its directory: %w", rel, errdefs.ErrInvalidArgument)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	done := ""
	for _, name := range strings.Split(filepath.Clean(rel), "/") {
		done = path.Join(done, name)
		if err := unix.Mkdirat(fd, name, uint32(perm.Perm())); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return &os.PathError{Op: "mkdir", Path: done, Err: err}
		}
		next, err := unix.Openat2(fd, name, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: beneath})
		unix.Close(fd)
		if err != nil {
			return beneathError(done, err)
		}
		fd = next
	}
	unix.Close(fd)
	return nil
}

// beneathError says why openat2 refused a path below a directory: a
// symlink on the way (ELOOP) is named as such.
func beneathError(rel string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%s is, or passes through, a symlink, which is not followed: %w", rel, errdefs.ErrInvalidArgument)
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%s leaves its directory: %w", rel, errdefs.ErrInvalidArgument)
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%s: a component is not a directory: %w", rel, errdefs.ErrInvalidArgument)
	case errors.Is(err, unix.ENXIO):
		// O_WRONLY|O_NONBLOCK on a FIFO without a reader, or a device
		// without a driver.
		return fmt.Errorf("%s is a FIFO or a device, not a regular file: %w", rel, errdefs.ErrInvalidArgument)
	}
	return &os.PathError{Op: "open", Path: rel, Err: err}
}
