package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// R18: the rootfs comes from an untrusted image. Every path inside it is
// resolved by the kernel with the rootfs as the root (RESOLVE_IN_ROOT), so a
// symlink or ".." can never lead outside, and the result is a file descriptor
// that later steps mount on: a path swapped after the lookup cannot redirect
// the mount (no TOCTTOU).

const inRootResolve = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// openInRoot opens p (relative to root, symlinks followed only inside it) as
// an O_PATH handle.
func openInRoot(root *os.File, p string) (*os.File, error) {
	fd, err := unix.Openat2(int(root.Fd()), cleanInRoot(p), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: inRootResolve,
	})
	if err != nil {
		return nil, &os.PathError{Op: "openat2 in root", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// cleanInRoot turns an absolute container path into one relative to the root
// directory descriptor ("" names the root itself).
func cleanInRoot(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// resolveInRoot follows p inside root as far as it exists and returns the
// path, relative to root, that it names. A symlink whose target does not exist
// yet (a "dangling" /proc -> /somewhere/else) thereby becomes the in-root
// path of its target, which can then be created safely.
func resolveInRoot(root *os.File, p string) (string, error) {
	base := "/proc/self/fd/" + strconv.Itoa(int(root.Fd()))
	full, err := securejoin.SecureJoin(base, p)
	if err != nil {
		return "", fmt.Errorf("resolve %s inside the rootfs: %w", p, err)
	}
	return cleanInRoot(strings.TrimPrefix(full, base)), nil
}

// mkdirInRoot returns a handle on directory p inside root, creating it and
// its missing parents (mode 0755) without leaving root.
func mkdirInRoot(root *os.File, p string) (*os.File, error) {
	if h, err := openInRoot(root, p); err == nil {
		return h, nil
	}
	rel, err := resolveInRoot(root, p)
	if err != nil {
		return nil, err
	}
	h, err := securejoin.MkdirAllHandle(root, rel, 0o755)
	if err != nil {
		return nil, fmt.Errorf("create directory %s inside the rootfs: %w", p, err)
	}
	return h, nil
}

// mkfileInRoot returns a handle on file p inside root, creating an empty file
// (and its parent directories) when it is missing.
func mkfileInRoot(root *os.File, p string) (*os.File, error) {
	h, err := openInRoot(root, p)
	if err == nil {
		return h, nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	rel, err := resolveInRoot(root, p)
	if err != nil {
		return nil, err
	}
	dir, err := mkdirInRoot(root, path.Dir("/"+rel))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	name := path.Base("/" + rel)
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create file %s inside the rootfs: %w", p, err)
	}
	if err == nil {
		unix.Close(fd)
	}
	fd, err = unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open file %s inside the rootfs: %w", p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// isDirFD reports whether the handle names a directory.
func isDirFD(f *os.File) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR
}
