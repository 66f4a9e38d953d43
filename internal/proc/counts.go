package proc

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// Threads is the number of threads of process pid, from
// /proc/<pid>/status.
func Threads(pid int) (uint64, error) {
	status, err := fsutil.ReadKernelFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	var threads uint64
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			threads += n
		}
	}
	return threads, nil
}

// FDs counts the open file descriptors of process pid and, of those, the
// sockets, from /proc/<pid>/fd. The directory is read a batch at a time:
// a container's process may hold a million descriptors, and the daemon's
// memory must not grow with them.
func FDs(pid int) (fds, sockets uint64, err error) {
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	d, err := os.Open(fdDir)
	if err != nil {
		return 0, 0, err
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(fdBatch)
		for _, name := range names {
			fds++
			if target, err := os.Readlink(filepath.Join(fdDir, name)); err == nil && strings.HasPrefix(target, "socket:[") {
				sockets++
			}
		}
		if errors.Is(err, io.EOF) {
			return fds, sockets, nil
		}
		if err != nil {
			return 0, 0, err
		}
	}
}

// fdBatch is how many descriptors FDs reads at a time.
const fdBatch = 1024

// OpenFilesSoftLimit reads the soft RLIMIT_NOFILE of process pid from
// /proc/<pid>/limits.
func OpenFilesSoftLimit(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	data, err := fsutil.ReadKernelFile(filepath.Join("/proc", strconv.Itoa(pid), "limits"))
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			n, err := strconv.ParseUint(f[0], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
