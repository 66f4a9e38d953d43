package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/randid"
)

// ContainerFsUsage is what one container's writable layer occupies, and
// the size of the file system that holds it (the layer can grow until
// that is full: cri-mini sets no per-container quota).
type ContainerFsUsage struct {
	FsUsage // the layer: its mount point, allocated bytes and inodes
	// Major and Minor number the device of the file system.
	Major, Minor uint32
	// CapacityBytes and AvailableBytes are the file system's size and
	// what an unprivileged writer may still use; InodesTotal and
	// InodesFree likewise for inodes.
	CapacityBytes, AvailableBytes uint64
	InodesTotal, InodesFree       uint64
}

// ContainerUsage measures the writable layer of container ctrID. A
// container without one (never prepared, or released) is ErrNotFound.
func (s *Store) ContainerUsage(ctrID string) (ContainerFsUsage, error) {
	var u ContainerFsUsage
	if !randid.Valid(ctrID) {
		return u, fmt.Errorf("container id %q: %w", ctrID, errdefs.ErrInvalidArgument)
	}
	upper := filepath.Join(s.containerDir(ctrID), "upper")
	var st unix.Stat_t
	if err := unix.Stat(upper, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return u, fmt.Errorf("writable layer of container %s: %w", ctrID, errdefs.ErrNotFound)
		}
		return u, fmt.Errorf("writable layer of container %s: %w", ctrID, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(upper, &fs); err != nil {
		return u, fmt.Errorf("file system of container %s: %w", ctrID, err)
	}
	mp, err := s.mountpointOf(upper, st.Dev)
	if err != nil {
		return u, err
	}
	u.Mountpoint = mp
	u.Bytes, u.Inodes = diskUsage(upper)
	u.Major, u.Minor = unix.Major(st.Dev), unix.Minor(st.Dev)
	bsize := uint64(fs.Bsize)
	u.CapacityBytes, u.AvailableBytes = fs.Blocks*bsize, fs.Bavail*bsize
	u.InodesTotal, u.InodesFree = fs.Files, fs.Ffree
	return u, nil
}

// mountpointOf is where the file system of path (on device dev) is
// mounted, read from the mount table the first time dev is seen.
func (s *Store) mountpointOf(path string, dev uint64) (string, error) {
	if mp, ok := s.upperMount.Load(dev); ok {
		return mp.(string), nil
	}
	mp, err := mountinfo.MountpointOf(path)
	if err != nil {
		return "", err
	}
	s.upperMount.Store(dev, mp)
	return mp, nil
}
