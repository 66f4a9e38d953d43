package fsutil

import (
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// maxInRootRead bounds what ReadFileInRoot reads: the files read this way
// (/etc/passwd, /etc/group of an image) are small, and the image is untrusted.
const maxInRootRead = 4 << 20

// ReadFileInRoot reads file p of the untrusted tree at root (an image's
// rootfs), resolving p and every symlink on the way with root as "/"
// (openat2 RESOLVE_IN_ROOT), so nothing outside root can be read through it.
func ReadFileInRoot(root, p string) ([]byte, error) {
	dir, err := os.Open(root)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	fd, err := unix.Openat2(int(dir.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "openat2 in " + root, Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInRootRead+1))
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", p, root, err)
	}
	if len(data) > maxInRootRead {
		return nil, fmt.Errorf("read %s in %s: larger than %d bytes", p, root, maxInRootRead)
	}
	return data, nil
}
