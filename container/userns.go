package container

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// A container may join its pod's user namespace (spec.Linux.Namespaces has
// it by path, spec.Linux.UIDMappings and GIDMappings say what it maps).
// Then its mount, pid and cgroup namespaces are made inside it (the
// nsenter constructor joins it first), its root is an unprivileged user on
// the host, and what the host's root must do for it is done outside: the
// supervisor prepares every mount of the host's (prepareSources), binds the
// host's device nodes, and idmaps the mounts that carry id mappings.

// validUserNS checks what a container in a user namespace asks for: the
// mappings of the namespace it joins, mounts idmapped with those very
// mappings (the mount is idmapped with the container's user namespace),
// and no device nodes to make.
func validUserNS(s *specs.Spec) error {
	if !hasUserNS(s) {
		for _, m := range s.Mounts {
			if len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0 {
				return fmt.Errorf("mount %s has id mappings but the container has no user namespace: %w", m.Destination, errdefs.ErrInvalidArgument)
			}
		}
		return nil
	}
	l := s.Linux
	if len(l.UIDMappings) == 0 || len(l.GIDMappings) == 0 {
		return fmt.Errorf("a container joining a user namespace needs its uid and gid mappings in the spec: %w", errdefs.ErrInvalidArgument)
	}
	for _, m := range s.Mounts {
		if len(m.UIDMappings)+len(m.GIDMappings) > 0 && (!slices.Equal(m.UIDMappings, l.UIDMappings) || !slices.Equal(m.GIDMappings, l.GIDMappings)) {
			return fmt.Errorf("mount %s: its id mappings differ from the container's user namespace's, which it would be idmapped with: %w", m.Destination, errdefs.ErrInvalidArgument)
		}
	}
	if len(l.Devices) > 0 {
		return fmt.Errorf("device %s: a container in a user namespace cannot have device nodes made (mknod needs CAP_MKNOD on the host): bind the host's node as a mount: %w", l.Devices[0].Path, errdefs.ErrInvalidArgument)
	}
	return nil
}

// rootOnHost returns the host's uid and gid of a container's root: 0 and 0
// without a user namespace, or what its mappings map 0 to.
func rootOnHost(s *specs.Spec) (uid, gid int) {
	if !hasUserNS(s) {
		return 0, 0
	}
	hostID := func(m []specs.LinuxIDMapping) int {
		for _, x := range m {
			if x.ContainerID == 0 {
				return int(x.HostID)
			}
		}
		return 0
	}
	return hostID(s.Linux.UIDMappings), hostID(s.Linux.GIDMappings)
}

// ownByRoot gives the container's root the files Create made for it in
// its state directory that the init opens (the start fifo, reopened for
// writing) or binds (the R2 files): in a user namespace, files of the
// host's root are nobody's.
func ownByRoot(dir string, s *specs.Spec) error {
	uid, gid := rootOnHost(s)
	if uid == 0 && gid == 0 {
		return nil
	}
	for _, name := range []string{fifoFile, "hosts", "hostname", "resolv.conf"} {
		if err := os.Lchown(filepath.Join(dir, name), uid, gid); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("give %s to the container's root: %w", name, err)
		}
	}
	return nil
}
