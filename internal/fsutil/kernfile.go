package fsutil

import (
	"os"

	"golang.org/x/sys/unix"
)

// ReadKernelFile reads a file of a kernel pseudo file system (/proc,
// /sys/fs/cgroup) whole, with plain system calls. os.ReadFile costs far
// more on these: an os.File registers each descriptor that can be polled,
// as cgroup files can, with the runtime's poller (two epoll_ctl calls per
// file) and sets a finalizer, which the stats of a full node (some twenty
// cgroup files per container, every ten seconds) pay thousands of times.
// The content is kernel-made: callers that read a file a process can write
// use ReadRegularFile.
func ReadKernelFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}
