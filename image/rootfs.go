package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// containerRecord is written before a container's rootfs is mounted, so the
// layers it uses are never collected and a crash leaves a findable trace.
type containerRecord struct {
	ImageID string   `json:"imageID"`
	Layers  []string `json:"layers"`
}

var containerIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

func (s *Store) containerDir(id string) string { return filepath.Join(s.root, "containers", id) }

// PrepareRootfs mounts at target (an existing empty directory) the root
// filesystem of container ctrID: an overlay of the image's layers under a
// writable layer of its own. Read-only root filesystems are the container
// runtime's job (it remounts the root read-only once its mount points exist).
func (s *Store) PrepareRootfs(ctrID, imageID, target string) error {
	return s.mount(ctrID, imageID, target, true)
}

// MountImage mounts an image read-only at target (an image volume, which
// Kubernetes mounts into a container). id names the mount as a container ID
// does; ReleaseRootfs(id, target) undoes it.
func (s *Store) MountImage(id, imageID, target string) error {
	return s.mount(id, imageID, target, false)
}

func (s *Store) mount(ctrID, imageID, target string, writable bool) (err error) {
	if !containerIDPattern.MatchString(ctrID) {
		return fmt.Errorf("container id %q: %w", ctrID, errdefs.ErrInvalidArgument)
	}
	dir := s.containerDir(ctrID)
	made := false
	defer func() {
		if err != nil && made {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			_ = os.RemoveAll(dir)
		}
	}()
	// Looked up and recorded under one hold of the index lock, so a
	// concurrent Remove sees the layers as used.
	var rec containerRecord
	err = s.locked(func(ix *index) (bool, error) {
		r, _, err := ix.find(imageID)
		if err != nil {
			return false, err
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
	err = mountOverlay(lowers, upper, work, target)
	if errors.Is(err, unix.ENODEV) {
		klog.InfoS("overlayfs is not available: copying the image's layers", "container", ctrID)
		layerDirs := make([]string, len(rec.Layers))
		for i, l := range rec.Layers {
			layerDirs[i] = s.layerDir(l)
		}
		err = mountCopy(layerDirs, filepath.Join(dir, "copy"), target, !writable)
	}
	if err != nil {
		return fmt.Errorf("container %s: root filesystem: %w", ctrID, err)
	}
	return nil
}

// mountCopy is the root filesystem where overlayfs is missing: the layers
// flattened into a private copy, bind-mounted at target.
func mountCopy(layers []string, copyDir, target string, readOnly bool) error {
	if err := os.Mkdir(copyDir, 0o755); err != nil {
		return err
	}
	if err := Flatten(layers, copyDir); err != nil {
		return err
	}
	mfd, err := unix.OpenTree(unix.AT_FDCWD, copyDir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("open_tree", err)
	}
	defer unix.Close(mfd)
	if readOnly {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(mfd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return os.NewSyscallError("mount_setattr", err)
		}
	}
	return os.NewSyscallError("move_mount", unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH))
}

// mountOverlay mounts an overlay (read-only when upper is "") through the file-descriptor mount API,
// adding lower layers one by one ("lowerdir+", Linux 6.8) so no option page
// limits how many layers an image may have; older kernels get the classic
// lowerdir list, and kernels without fsopen a plain mount(2).
func mountOverlay(lowers []string, upper, work, target string) error {
	fsfd, err := overlayContext(lowers, upper, work, true)
	if errors.Is(err, unix.EINVAL) {
		// No "lowerdir+": refused when it is set (Linux 6.5-6.7), or only
		// at create (before 6.5 overlayfs took its options as one string
		// and accepted any key until then).
		fsfd, err = overlayContext(lowers, upper, work, false)
	}
	if errors.Is(err, unix.ENOSYS) {
		opts := "lowerdir=" + strings.Join(lowers, ":")
		if upper != "" {
			opts += ",upperdir=" + upper + ",workdir=" + work
		}
		return os.NewSyscallError("mount overlay", unix.Mount("overlay", target, "overlay", 0, opts))
	}
	if err != nil {
		return err
	}
	defer unix.Close(fsfd)
	var attrs int
	if upper == "" {
		attrs = unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return os.NewSyscallError("fsmount overlay", err)
	}
	defer unix.Close(mfd)
	return os.NewSyscallError("move_mount overlay", unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH))
}

// overlayContext makes a created overlay file-system context: lower layers
// one by one (perLayer) or as one list.
func overlayContext(lowers []string, upper, work string, perLayer bool) (int, error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("fsopen overlay", err)
	}
	params := [][2]string{{"lowerdir", strings.Join(lowers, ":")}}
	if perLayer {
		params = params[:0]
		for _, l := range lowers {
			params = append(params, [2]string{"lowerdir+", l})
		}
	}
	params = append(params, [2]string{"upperdir", upper}, [2]string{"workdir", work})
	for _, kv := range params {
		if kv[1] == "" {
			continue // read-only overlay
		}
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			unix.Close(fsfd)
			return -1, os.NewSyscallError("overlay "+kv[0], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		unix.Close(fsfd)
		return -1, os.NewSyscallError("overlay create", err)
	}
	return fsfd, nil
}

// ReleaseRootfs unmounts a container's root filesystem from target and
// deletes its writable layer, then the layers nothing uses any more.
// Releasing twice, or a container that has none, is not an error.
func (s *Store) ReleaseRootfs(ctrID, target string) error {
	if !containerIDPattern.MatchString(ctrID) {
		return fmt.Errorf("container id %q: %w", ctrID, errdefs.ErrInvalidArgument)
	}
	if target != "" {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("container %s: unmount root filesystem: %w", ctrID, err)
		}
	}
	if err := os.RemoveAll(s.containerDir(ctrID)); err != nil {
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
