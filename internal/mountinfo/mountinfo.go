// Package mountinfo reads /proc/self/mountinfo: the mounts of the calling
// thread's mount namespace.
package mountinfo

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	Mountpoint string
	FSType     string
	Source     string
	// SuperOptions are the file system's options (the field after the
	// source), e.g. "rw,memory" for a cgroup v1 hierarchy.
	SuperOptions string
}

// Read returns the mounts of the calling thread's mount namespace in mount
// order.
func Read() ([]Mount, error) {
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	var mounts []Mount
	for line := range strings.SplitSeq(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		mounts = append(mounts, Mount{Mountpoint: unescape(pf[4]), FSType: qf[0], Source: unescape(qf[1]), SuperOptions: qf[2]})
	}
	return mounts, nil
}

// MountedAt reports whether anything is mounted at path.
func MountedAt(path string) (bool, error) {
	mounts, err := Read()
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if m.Mountpoint == path {
			return true, nil
		}
	}
	return false, nil
}

// MountpointOf is the mount point of the mount holding path (an absolute,
// clean path): the longest mount point that is path or a parent of it.
func MountpointOf(path string) (string, error) {
	mounts, err := Read()
	if err != nil {
		return "", err
	}
	best := "/"
	for _, m := range mounts {
		if (path == m.Mountpoint || strings.HasPrefix(path, strings.TrimSuffix(m.Mountpoint, "/")+"/")) && len(m.Mountpoint) > len(best) {
			best = m.Mountpoint
		}
	}
	return best, nil
}

// unescape undoes the kernel's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
