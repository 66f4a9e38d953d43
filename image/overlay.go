package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/mountfd"
)

// How overlayfs takes its lower layers depends on the kernel:
//
//   - by descriptor, one by one ("lowerdir+" with FSCONFIG_SET_FD): Linux
//     6.13, the only way that needs no path for an idmapped layer;
//   - by path, one by one ("lowerdir+"): Linux 6.8;
//   - as one list ("lowerdir=a:b:c"): always. fsconfig takes no value
//     longer than 255 bytes (a list of three layers of the store is
//     longer), so the list goes through mount(2), whose options are one
//     page; a list too long for that is given relative to the layers'
//     directory (containerd's way), and an image with more layers than
//     even that fits is copied (mountCopy).
//
// An idmapped layer given by path must be a mount in the mount namespace
// (Linux 5.19): it is attached below the container's directory while the
// overlay is made (overlayfs keeps a private clone of it) and detached
// right after.

// overlayWays are the newer ways above that mountOverlay and
// mountIdmappedOverlay try first, each where the kernel has it. Tests turn
// them off to take an older kernel's way on a new one.
var overlayWays = struct {
	layerFD      bool // idmapped layers by descriptor (6.13)
	layerByLayer bool // layers one by one by path (6.8)
}{layerFD: true, layerByLayer: true}

// layersAttached, when a test sets it, runs once an overlay is made of
// idmapped layers attached by path, before they are detached: the moment
// a crash leaves the most mounted.
var layersAttached func()

// errLayerListTooLong: the lower layers do not fit overlayfs's one page of
// options on a kernel that takes them only as one list.
var errLayerListTooLong = errors.New("the lower layers do not fit in overlayfs's one page of options")

// overlayError is the error of an overlay that no way could make: EINVAL
// (overlayfs says why only in the kernel log) is FailedPrecondition, the
// node's kernel or store being at fault, not the request.
func overlayError(err error, layers int, idmapped bool) error {
	if !errors.Is(err, unix.EINVAL) {
		return err
	}
	what := fmt.Sprintf("overlayfs refused the image's %d layers", layers)
	if idmapped {
		what += " idmapped (by descriptor it takes them from Linux 6.13, by path from 5.19)"
	}
	return fmt.Errorf("%s: %v (the kernel log says why: dmesg | grep overlay; the image store must be on a file system overlayfs takes layers from, such as ext4 or xfs): %w",
		what, err, errdefs.ErrFailedPrecondition)
}

// mountOverlay mounts at target an overlay of lowers (top first) under
// upper and work (read-only when upper is ""): one by one where the kernel
// takes "lowerdir+", else as one list.
func mountOverlay(lowers []string, upper, work, target string) error {
	if overlayWays.layerByLayer {
		err := mountOverlayByLayer(lowers, upper, work, target)
		// EINVAL: no "lowerdir+", refused when it is set (Linux 6.5-6.7)
		// or only at create (before 6.5 overlayfs took its options as one
		// string and accepted any key until then), or a path longer than
		// fsconfig takes. ENOSYS: no fsopen (before 5.2).
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return err
		}
	}
	return mountOverlayList(lowers, upper, work, target)
}

// mountOverlayByLayer is mountOverlay with "lowerdir+".
func mountOverlayByLayer(lowers []string, upper, work, target string) error {
	fs, err := mountfd.Open("overlay")
	if err != nil {
		return err
	}
	defer fs.Close()
	for _, l := range lowers {
		if err := fs.Set("lowerdir+", l); err != nil {
			return err
		}
	}
	return finishOverlay(fs, upper, work, target)
}

// mountOverlayList is mountOverlay with the lower layers as one list, in
// mount(2)'s page of options: with their full paths where they fit,
// else relative to their directory (all must share one), from a thread
// that changed to it; errLayerListTooLong when neither fits.
func mountOverlayList(lowers []string, upper, work, target string) error {
	var flags uintptr
	if upper == "" {
		flags = unix.MS_RDONLY
	}
	opts := overlayOptions(lowers, upper, work)
	// mount(2) reads one page and cuts what is longer.
	if len(opts) < os.Getpagesize() {
		return os.NewSyscallError("mount overlay", unix.Mount("overlay", target, "overlay", flags, opts))
	}
	dir := filepath.Dir(lowers[0])
	rel := make([]string, len(lowers))
	for i, l := range lowers {
		if filepath.Dir(l) != dir {
			return fmt.Errorf("%d layers in %d bytes of options: %w", len(lowers), len(opts), errLayerListTooLong)
		}
		rel[i] = filepath.Base(l)
	}
	if short := overlayOptions(rel, upper, work); len(short) < os.Getpagesize() {
		return os.NewSyscallError("mount overlay", mountIn(dir, target, flags, short))
	}
	return fmt.Errorf("%d layers in %d bytes of options, relative to %s too: %w", len(lowers), len(opts), dir, errLayerListTooLong)
}

// overlayOptions are overlayfs's mount(2) options, each path escaped as
// overlayfs reads it (a backslash before ':', ',' and itself).
func overlayOptions(lowers []string, upper, work string) string {
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	escaped := make([]string, len(lowers))
	for i, l := range lowers {
		escaped[i] = esc.Replace(l)
	}
	opts := "lowerdir=" + strings.Join(escaped, ":")
	if upper != "" {
		opts += ",upperdir=" + esc.Replace(upper) + ",workdir=" + esc.Replace(work)
	}
	return opts
}

// mountIn mounts an overlay with options whose relative paths are from
// dir: on a thread of its own, which leaves the process's working
// directory (unshare CLONE_FS) for dir and then ends with its goroutine
// (it stays locked: no other goroutine may run where dir is the working
// directory).
func mountIn(dir, target string, flags uintptr, opts string) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			done <- fmt.Errorf("unshare CLONE_FS: %w", err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			done <- fmt.Errorf("chdir %s: %w", dir, err)
			return
		}
		done <- unix.Mount("overlay", target, "overlay", flags, opts)
	}()
	return <-done
}

// finishOverlay gives the overlay being configured on fs its writable
// layer (none when upper is ""), creates it and mounts it at target.
func finishOverlay(fs *mountfd.FS, upper, work, target string) error {
	for _, kv := range [][2]string{{"upperdir", upper}, {"workdir", work}} {
		if kv[1] == "" {
			continue // read-only overlay
		}
		if err := fs.Set(kv[0], kv[1]); err != nil {
			return err
		}
	}
	var attrs uint64
	if upper == "" {
		attrs = unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := fs.Mount(attrs)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	return mountfd.MoveTo(mfd, target)
}

// errNoLayerFD: overlayfs takes no layer by descriptor on this kernel.
var errNoLayerFD = errors.New("overlayfs takes no layer by descriptor on this kernel (Linux 6.13 or later needed)")

// mountIdmappedOverlay mounts at target an overlay whose lower layers are
// idmapped with userNS, the shared layers staying as they are on disk:
// each a detached idmapped mount of its directory, given to overlayfs by
// descriptor where the kernel takes that, else attached below attachDir
// (a directory of the container's that does not exist yet) and given by
// path. An overlay mount itself cannot be idmapped (overlayfs does not
// allow it), nor can a file system without idmap support be a layer:
// FailedPrecondition.
func mountIdmappedOverlay(lowers []string, upper, work, target string, userNS *os.File, attachDir string) error {
	if overlayWays.layerFD {
		err := mountIdmappedByFD(lowers, upper, work, target, userNS)
		if !errors.Is(err, errNoLayerFD) {
			return err
		}
	}
	return mountIdmappedByPath(lowers, upper, work, target, userNS, attachDir)
}

// mountIdmappedByFD is mountIdmappedOverlay by descriptor ("lowerdir+"
// with FSCONFIG_SET_FD): errNoLayerFD where the kernel has it not
// (EOPNOTSUPP before 6.5, EINVAL from 6.5).
func mountIdmappedByFD(lowers []string, upper, work, target string, userNS *os.File) error {
	fs, err := mountfd.Open("overlay")
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("%v: %w", err, errNoLayerFD)
		}
		return err
	}
	defer fs.Close()
	for _, l := range lowers {
		mfd, err := idmappedTree(l, userNS)
		if err != nil {
			return err
		}
		// Held until the overlay is made: overlayfs clones the layer's
		// mount then, and a detached mount goes with its last descriptor.
		defer unix.Close(mfd)
		if err := fs.SetFD("lowerdir+", mfd); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("idmapped layer %s: %v: %w", l, err, errNoLayerFD)
			}
			return fmt.Errorf("idmapped layer %s: %w", l, err)
		}
	}
	return finishOverlay(fs, upper, work, target)
}

// mountIdmappedByPath is mountIdmappedOverlay by path: each layer's
// idmapped mount attached at attachDir/N (the Nth lower), the overlay
// made of those paths, and then each detached (overlayfs holds a private
// clone of every layer's mount), whether or not the overlay was made. A
// crash in between leaves them for ReleaseRootfs to detach.
func mountIdmappedByPath(lowers []string, upper, work, target string, userNS *os.File, attachDir string) (err error) {
	if err := os.Mkdir(attachDir, 0o700); err != nil {
		return err
	}
	defer func() {
		if derr := detachLayers(attachDir); derr != nil && err == nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			err = derr
		}
	}()
	paths := make([]string, len(lowers))
	for i, l := range lowers {
		paths[i] = filepath.Join(attachDir, strconv.Itoa(i))
		if err := attachIdmapped(l, paths[i], userNS); err != nil {
			return err
		}
	}
	if err := mountOverlay(paths, upper, work, target); err != nil {
		return err
	}
	if layersAttached != nil {
		layersAttached()
	}
	return nil
}

// attachIdmapped mounts dir idmapped with userNS at at, a new directory.
func attachIdmapped(dir, at string, userNS *os.File) error {
	if err := os.Mkdir(at, 0o700); err != nil {
		return err
	}
	mfd, err := idmappedTree(dir, userNS)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if err := mountfd.MoveTo(mfd, at); err != nil {
		return fmt.Errorf("idmapped layer %s: %w", dir, err)
	}
	return nil
}

// detachLayers unmounts the idmapped layers attached below dir and
// removes them and dir; none there is no error. A layer that stays
// mounted stops it with an error (the directory is then busy): removing
// it would remove the shared layer's files.
func detachLayers(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("attached layers: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		for range 8 { // a mount over a mount, should one be there
			if unix.Unmount(p, unix.MNT_DETACH) != nil {
				break
			}
		}
		// rmdir refuses a mount point (EBUSY): the layer below is safe.
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("detach idmapped layer: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil {
		return fmt.Errorf("attached layers: %w", err)
	}
	return nil
}
