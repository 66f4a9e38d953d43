package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"k8s.io/klog/v2"
)

// ContainerFS owns the file systems of containers: each container's root
// file system and image volumes, mounted from a Store's layers at mount
// points below one directory (in the run directory: a reboot empties it).
// It alone knows how they are named there and in the store, so that what
// a crash cut short can be found and released at the next start.
type ContainerFS struct {
	store *Store
	dir   string
}

// NewContainerFS returns the owner of the container file systems made
// from store, mounted below dir.
func NewContainerFS(store *Store, dir string) *ContainerFS {
	return &ContainerFS{store: store, dir: dir}
}

// imageVolumeSep joins a container ID and the index of an image volume
// into the name of the volume's mount (in the mount directory and the
// image store).
const imageVolumeSep = ".vol"

// FSSpec is what a container's file system is made of.
type FSSpec struct {
	// Image names the image of the root file system.
	Image string
	// IDMap idmaps the root file system into the pod's user namespace
	// (nil: none).
	IDMap *IDMap
	// Volumes are the images mounted read-only into the container.
	Volumes []VolumeSpec
}

// VolumeSpec is one image volume.
type VolumeSpec struct {
	// Image names the image mounted.
	Image string
	// IDMap idmaps it (nil: none).
	IDMap *IDMap
	// Path is where the container sees it, for error messages.
	Path string
}

// MountedFS is where a container's file system is mounted.
type MountedFS struct {
	// Image is the image of the root file system, as resolved.
	Image *Image
	// Rootfs is the mount point of the root file system.
	Rootfs string
	// Volumes are the image volumes, in the order of FSSpec.Volumes.
	Volumes []MountedVolume
}

// MountedVolume is one mounted image volume.
type MountedVolume struct {
	// Path is its mount point.
	Path string
	// ImageID is the ID of the image it shows.
	ImageID string
}

// resolve finds the image ref names, which the signature policy, as it is
// now, must allow.
func (c *ContainerFS) resolve(ref string) (*Image, error) {
	img, err := c.store.Get(ref)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	if err := c.store.CheckPolicy(img.ID); err != nil {
		return nil, err
	}
	return img, nil
}

// Prepare mounts container id's root file system (writable, idmapped as
// spec.IDMap says) and, read-only, each of its image volumes, every image
// checked against the signature policy. On failure nothing of it stays
// mounted; a crash half way leaves traces CollectOrphans finds.
func (c *ContainerFS) Prepare(id string, spec FSSpec) (_ *MountedFS, err error) {
	img, err := c.resolve(spec.Image)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if rerr := c.Release(id); rerr != nil {
				klog.ErrorS(rerr, "Roll back container file system", "container", id)
			}
		}
	}()
	out := &MountedFS{Image: img, Rootfs: c.mountPoint(id)}
	if err := c.mount(id, img.ID, out.Rootfs, true, spec.IDMap); err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	for i, v := range spec.Volumes {
		vol, err := c.resolve(v.Image)
		if err == nil {
			name := id + imageVolumeSep + strconv.Itoa(i)
			target := c.mountPoint(name)
			if err = c.mount(name, vol.ID, target, false, v.IDMap); err == nil {
				out.Volumes = append(out.Volumes, MountedVolume{Path: target, ImageID: vol.ID})
				continue
			}
		}
		return nil, fmt.Errorf("image volume at %s: %w", v.Path, err)
	}
	return out, nil
}

func (c *ContainerFS) mountPoint(name string) string { return filepath.Join(c.dir, name) }

// mount makes the mount point of name, then mounts the image there: the
// mount point is the trace a crash before the store's record leaves.
func (c *ContainerFS) mount(name, imageID, target string, writable bool, idmap *IDMap) error {
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	return c.store.mount(name, imageID, target, writable, idmap)
}

// Release unmounts container id's root file system and image volumes and
// releases their layers; releasing what is not there is not an error.
func (c *ContainerFS) Release(id string) error {
	mounts, err := c.traces()
	if err != nil {
		return err
	}
	names := mounts[id]
	if !slices.Contains(names, id) {
		names = append(names, id) // a rootfs whose mount point is already gone
	}
	for _, name := range names {
		target := c.mountPoint(name)
		if err := c.store.ReleaseRootfs(name, target); err != nil {
			return fmt.Errorf("container %s: release rootfs: %w", id, err)
		}
		if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("container %s: %w", id, err)
		}
	}
	return nil
}

// traces lists, by container ID, the names of the root file systems and
// image volumes there are traces of: a mount point in the mount directory
// or a record in the image store.
func (c *ContainerFS) traces() (map[string][]string, error) {
	var names []string
	if entries, err := os.ReadDir(c.dir); err == nil {
		for _, e := range entries {
			names = append(names, e.Name())
		}
	}
	recorded, err := c.store.Containers()
	if err != nil {
		return nil, err
	}
	names = append(names, recorded...)
	byID := map[string][]string{}
	for _, name := range names {
		id, _, _ := strings.Cut(name, imageVolumeSep)
		if !slices.Contains(byID[id], name) {
			byID[id] = append(byID[id], name)
		}
	}
	return byID, nil
}

// CollectOrphans releases the file systems (mount points and writable
// layers) of the containers that known says the runtime does not know:
// their creation was cut short by a crash, or a reboot emptied the run
// directory. It returns the IDs it released.
func (c *ContainerFS) CollectOrphans(known func(id string) bool) []string {
	mounts, err := c.traces()
	if err != nil {
		klog.ErrorS(err, "List container root filesystems")
	}
	var released []string
	for id := range mounts {
		if known(id) {
			continue
		}
		klog.InfoS("Releasing the root filesystem of a container that no longer exists", "container", id)
		if err := c.Release(id); err != nil {
			klog.ErrorS(err, "Release orphaned root filesystem", "container", id)
			continue
		}
		released = append(released, id)
	}
	slices.Sort(released)
	return released
}
