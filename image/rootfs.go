package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/internal/mountfd"
	"github.com/cri-mini/cri-mini/internal/randid"
)

// containerRecord is written before a container's rootfs is mounted, so the
// layers it uses are never collected and a crash leaves a findable trace.
type containerRecord struct {
	ImageID string   `json:"imageID"`
	Layers  []string `json:"layers"`
}

func (s *Store) containerDir(id string) string { return filepath.Join(s.root, "containers", id) }

// IDMap puts a root file system in a user namespace (a pod's with
// hostUsers: false) without a chown of the shared layers: each layer is
// mounted idmapped with the namespace (a file of uid 0 on disk is the
// namespace's root, the host's UID), under a writable layer owned by UID
// and GID, which the container's writes then belong to on the host.
type IDMap struct {
	// UserNS is the user namespace's file (a pinned /proc/PID/ns/user).
	UserNS string
	// UID and GID are the host's ids of the namespace's root.
	UID, GID int
}

// PrepareRootfs mounts at target (an existing empty directory) the root
// filesystem of container ctrID: an overlay of the image's layers under a
// writable layer of its own, idmapped into a user namespace when idmap is
// set. Read-only root filesystems are the container runtime's job (it
// remounts the root read-only once its mount points exist).
func (s *Store) PrepareRootfs(ctrID, imageID, target string, idmap *IDMap) error {
	return s.mount(ctrID, imageID, target, true, idmap)
}

// MountImage mounts an image read-only at target (an image volume, which
// Kubernetes mounts into a container), idmapped into a user namespace when
// idmap is set. id names the mount as a container ID does;
// ReleaseRootfs(id, target) undoes it.
func (s *Store) MountImage(id, imageID, target string, idmap *IDMap) error {
	return s.mount(id, imageID, target, false, idmap)
}

func (s *Store) mount(ctrID, imageID, target string, writable bool, idmap *IDMap) (err error) {
	if !randid.Valid(ctrID) {
		return fmt.Errorf("container id %q: %w", ctrID, errdefs.ErrInvalidArgument)
	}
	dir := s.containerDir(ctrID)
	made := false
	defer func() {
		if err != nil && made {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			_ = removeContainerDir(dir)
		}
	}()
	// Looked up and recorded under one hold of the index lock, so a
	// concurrent Remove sees the layers as used.
	var rec containerRecord
	var volumes []string
	err = s.locked(func(ix *index) (bool, error) {
		r, _, err := ix.find(imageID, s.opts.ShortNames)
		if err != nil {
			return false, err
		}
		if writable && r.ArtifactType != "" {
			return false, fmt.Errorf("image %s is an OCI artifact (%s), not a container image: mount it as an image volume: %w",
				imageID, r.ArtifactType, errdefs.ErrInvalidArgument)
		}
		if writable && !s.opts.IgnoreImageVolumes {
			img, err := ix.image(r)
			if err != nil {
				return false, err
			}
			for v := range img.Config.Config.Volumes {
				volumes = append(volumes, v)
			}
			slices.Sort(volumes)
		}
		rec = containerRecord{ImageID: r.ID, Layers: slices.Clone(r.Layers)}
		for _, l := range rec.Layers {
			if ix.Layers[l] == nil {
				return false, fmt.Errorf("image %s: layer %s is gone: %w", rec.ImageID, l, errdefs.ErrNotFound)
			}
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return false, fmt.Errorf("it already has a root filesystem: %w", errdefs.ErrAlreadyExists)
			}
			return false, err
		}
		made = true
		data, err := json.Marshal(rec)
		if err != nil {
			return false, err
		}
		return false, fsutil.WriteFileAtomic(filepath.Join(dir, "record.json"), data, 0o600)
	})
	if err != nil {
		return fmt.Errorf("container %s: %w", ctrID, err)
	}
	upper, work := "", ""
	if writable {
		upper, work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
		for _, d := range []string{upper, work} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return fmt.Errorf("container %s: %w", ctrID, err)
			}
		}
		if idmap != nil {
			if err := os.Chown(upper, idmap.UID, idmap.GID); err != nil {
				return fmt.Errorf("container %s: writable layer: %w", ctrID, err)
			}
		}
	}
	var userNS *os.File
	if idmap != nil {
		if userNS, err = os.Open(idmap.UserNS); err != nil {
			return fmt.Errorf("container %s: user namespace: %w", ctrID, err)
		}
		defer userNS.Close()
	}
	// overlayfs lists lower directories top first.
	lowers := make([]string, 0, len(rec.Layers)+1)
	for i := len(rec.Layers) - 1; i >= 0; i-- {
		lowers = append(lowers, s.layerDir(rec.Layers[i]))
	}
	// Overlay needs one lower under an upper, two without: pad with an empty one.
	if len(lowers) == 0 || (!writable && len(lowers) == 1) {
		empty := filepath.Join(dir, "empty")
		if err := os.Mkdir(empty, 0o755); err != nil {
			return err
		}
		lowers = append(lowers, empty)
	}
	if userNS != nil {
		err = mountIdmappedOverlay(lowers, upper, work, target, userNS, filepath.Join(dir, "lower"))
	} else {
		err = mountOverlay(lowers, upper, work, target)
	}
	if why, remedy := copyReason(err); why != "" {
		klog.InfoS("Copying the image's layers: "+why, "container", ctrID, "layers", len(rec.Layers), "reason", err)
		layerDirs := make([]string, len(rec.Layers))
		for i, l := range rec.Layers {
			layerDirs[i] = s.layerDir(l)
		}
		if cerr := mountCopy(layerDirs, filepath.Join(dir, "copy"), target, !writable, userNS); cerr != nil {
			err = copyFailed(why, remedy, err, cerr)
		} else {
			err = nil
		}
	} else if err != nil {
		err = overlayError(err, len(rec.Layers), userNS != nil)
	}
	if err != nil {
		return fmt.Errorf("container %s: root filesystem: %w", ctrID, err)
	}
	if err := makeVolumeDirs(target, volumes, idmap); err != nil {
		return fmt.Errorf("container %s: %w", ctrID, err)
	}
	return nil
}

// idmappedTree returns a detached mount of dir idmapped with userNS.
func idmappedTree(dir string, userNS *os.File) (int, error) {
	mfd, err := mountfd.Clone(dir, false)
	if err != nil {
		return -1, err
	}
	if err := mountfd.Idmap(mfd, userNS, false); err != nil {
		unix.Close(mfd)
		return -1, fmt.Errorf("%s: %w", dir, err)
	}
	return mfd, nil
}

// makeVolumeDirs makes each of an image's VOLUMEs a directory of the
// container's root filesystem, in its writable layer (containerd's default,
// without its copy to a separate host directory): a program finds the
// directory it declared, writable, with what the image has there. The
// paths come from the image: they are resolved inside root, a symlink on
// the way followed only within it, a dangling one (an absolute target the
// image lacks) to where its target would be in root.
//
// With an idmap the directories made here are the namespace's root's, as
// the image's own are: through the idmapped layers no file shows the
// host's uid 0, so one that does was made now.
func makeVolumeDirs(root string, volumes []string, idmap *IDMap) error {
	for _, v := range volumes {
		p, err := securejoin.SecureJoin(root, v)
		if err == nil {
			err = securejoin.MkdirAll(root, strings.TrimPrefix(p, root), 0o755)
		}
		if err == nil && idmap != nil {
			for d := p; d != root && strings.HasPrefix(d, root+"/"); d = filepath.Dir(d) {
				var st unix.Stat_t
				if err = unix.Lstat(d, &st); err != nil || st.Uid != 0 {
					break
				}
				if err = os.Lchown(d, idmap.UID, idmap.GID); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("image VOLUME %q: %v: %w", v, err, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// mountCopy is the root filesystem where overlayfs is missing: the layers
// flattened into a private copy, bind-mounted at target (idmapped with
// userNS when set).
func mountCopy(layers []string, copyDir, target string, readOnly bool, userNS *os.File) error {
	if err := os.Mkdir(copyDir, 0o755); err != nil {
		return err
	}
	if err := Flatten(layers, copyDir); err != nil {
		return err
	}
	var mfd int
	var err error
	if userNS != nil {
		mfd, err = idmappedTree(copyDir, userNS)
	} else {
		mfd, err = mountfd.Clone(copyDir, false)
	}
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if readOnly {
		if err := mountfd.SetAttr(mfd, unix.MOUNT_ATTR_RDONLY, 0, 0, false); err != nil {
			return err
		}
	}
	return mountfd.MoveTo(mfd, target)
}

// copyReason says why the layers of a root filesystem that err stopped
// are to be copied instead, and what would spare the copy ("" when they
// are not): no overlayfs, or more layers than this kernel's overlayfs
// takes.
func copyReason(err error) (why, remedy string) {
	switch {
	case errors.Is(err, unix.ENODEV):
		return "overlayfs is not available", "load it (modprobe overlay)"
	case errors.Is(err, errLayerListTooLong):
		return "the image has more layers than overlayfs takes on this kernel",
			"run Linux 6.8 or later (it takes any number), or squash the image into fewer layers"
	}
	return "", ""
}

// copyFailed is the error of a copy of the layers (copyReason's why) that
// failed too: ResourceExhausted when the disk or quota is full, else
// FailedPrecondition (the node cannot mount the image), saying what would
// do.
func copyFailed(why, remedy string, err, cerr error) error {
	kind := errdefs.ErrFailedPrecondition
	if errors.Is(cerr, unix.ENOSPC) || errors.Is(cerr, unix.EDQUOT) {
		kind = errdefs.ErrResourceExhausted
	}
	return fmt.Errorf("%s (%v), and copying them failed (%v): %s, or make room for the copy: %w", why, err, cerr, remedy, kind)
}

// removeContainerDir removes a container's directory in the store, after
// detaching the idmapped layers a crash may have left attached in it
// (which a recursive removal would otherwise empty).
func removeContainerDir(dir string) error {
	if err := detachLayers(filepath.Join(dir, "lower")); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// ReleaseRootfs unmounts a container's root filesystem from target and
// deletes its writable layer, then the layers nothing uses any more.
// Releasing twice, or a container that has none, is not an error.
func (s *Store) ReleaseRootfs(ctrID, target string) error {
	if !randid.Valid(ctrID) {
		return fmt.Errorf("container id %q: %w", ctrID, errdefs.ErrInvalidArgument)
	}
	if target != "" {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("container %s: unmount root filesystem: %w", ctrID, err)
		}
	}
	if err := removeContainerDir(s.containerDir(ctrID)); err != nil {
		return fmt.Errorf("container %s: remove writable layer: %w", ctrID, err)
	}
	return s.updateAndCollect(func(*index) (bool, error) { return false, nil })
}

// Containers lists the containers that have a writable layer, so the
// caller can release those it no longer knows (after a crash or reboot).
func (s *Store) Containers() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "containers"))
	if err != nil {
		return nil, fmt.Errorf("container layers: %w", err)
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	return ids, nil
}

// containerRecords reads every container's record; a container whose
// record is missing (a crash before it was written) uses no layer.
func (s *Store) containerRecords() ([]containerRecord, error) {
	ids, err := s.Containers()
	if err != nil {
		return nil, err
	}
	var recs []containerRecord
	for _, id := range ids {
		data, err := os.ReadFile(filepath.Join(s.containerDir(id), "record.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("container %s layer record: %w", id, err)
		}
		var rec containerRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			klog.ErrorS(err, "Unreadable container layer record; its layers may be collected", "container", id)
			continue
		}
		recs = append(recs, rec)
	}
	return recs, nil
}
