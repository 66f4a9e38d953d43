// Package nspin creates namespaces and pins them to files by bind mounts, so
// that they outlive the thread that made them and can be joined by path.
// netns/ pins pod network namespaces with it, sandbox/ the uts and ipc ones.
package nspin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/mountfd"
	"github.com/cri-mini/cri-mini/internal/nsexec"
)

// Kind names a namespace type as in /proc/<pid>/ns/<kind>.
type Kind string

// The kinds a thread can create and join on its own (mount, user and pid
// namespaces need a single-threaded process or a child, so they are not here).
const (
	Net Kind = "net"
	UTS Kind = "uts"
	IPC Kind = "ipc"
)

// nsType is the OCI name of kind k, which internal/nsexec joins by; its
// table, not this package, knows the names.
func (k Kind) nsType() (specs.LinuxNamespaceType, error) {
	if k == Net || k == UTS || k == IPC {
		return nsexec.TypeOf(string(k))
	}
	return "", fmt.Errorf("namespace kind %q (want net, uts or ipc): %w", k, errdefs.ErrInvalidArgument)
}

func (k Kind) cloneFlag() (int, error) {
	t, err := k.nsType()
	if err != nil {
		return 0, err
	}
	return nsexec.CloneFlag(t)
}

// Path is where Pin puts the namespace of kind k under dir.
func Path(dir string, k Kind) string { return filepath.Join(dir, string(k)) }

// Pin creates one new namespace of each kind, runs setup inside them (for
// example sethostname in a new uts namespace; setup may be nil) and
// bind-mounts each onto dir/<kind>, all on one locked OS thread that then
// returns to its own namespaces. It returns the pinned paths by kind.
// A namespace already pinned there is ErrAlreadyExists. On failure nothing
// stays pinned.
func Pin(dir string, kinds []Kind, setup func() error) (map[Kind]string, error) {
	flags := 0
	for _, k := range kinds {
		f, err := k.cloneFlag()
		if err != nil {
			return nil, err
		}
		flags |= f
	}
	if flags == 0 {
		return nil, fmt.Errorf("pin namespaces in %s: no kind given: %w", dir, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pin namespaces: %w", err)
	}

	var paths map[Kind]string
	err := onThread(kinds, func() (err error) {
		paths, err = pinOnThread(dir, kinds, flags, setup)
		return err
	})
	if err != nil {
		return nil, err
	}
	return paths, nil
}

// onThread runs fn on a locked OS thread that afterwards returns to its
// own namespaces of kinds (see nsexec.OnThread).
func onThread(kinds []Kind, fn func() error) error {
	types := make([]specs.LinuxNamespaceType, 0, len(kinds))
	for _, k := range kinds {
		t, err := k.nsType()
		if err != nil {
			return err
		}
		types = append(types, t)
	}
	return nsexec.OnThread(types, fn)
}

func pinOnThread(dir string, kinds []Kind, flags int, setup func() error) (map[Kind]string, error) {
	if err := unix.Unshare(flags); err != nil {
		return nil, fmt.Errorf("unshare %v: %w", kinds, err)
	}
	if setup != nil {
		if err := setup(); err != nil {
			return nil, fmt.Errorf("set up new namespaces %v: %w", kinds, err)
		}
	}
	paths := make(map[Kind]string, len(kinds))
	for _, k := range kinds {
		if _, ok := paths[k]; ok {
			continue
		}
		target := Path(dir, k)
		if err := bindThreadNS(k, target); err != nil {
			for _, p := range paths {
				_ = UnpinFile(p)
			}
			return nil, err
		}
		paths[k] = target
	}
	return paths, nil
}

// bindThreadNS mounts the calling thread's namespace of kind k onto target.
func bindThreadNS(k Kind, target string) error {
	if err := PinFile(fmt.Sprintf("/proc/thread-self/ns/%s", k), target); err != nil {
		return fmt.Errorf("pin %s namespace: %w", k, err)
	}
	return nil
}

// PinFile pins the namespace file src (a /proc/PID/ns/* link, or a pin)
// at target, which it creates empty: a detached bind of src (open_tree)
// moved into place by file descriptor, so that the namespace lives as long
// as the mount. A file already at target is ErrAlreadyExists. For a
// process's namespace, src must name that process while the pin is made:
// its parent pins it before reaping it.
func PinFile(src, target string) error {
	f, err := os.OpenFile(target, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pin %s at %s: %w", src, target, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("pin %s: %w", src, err)
	}
	f.Close()
	treeFD, err := mountfd.Clone(src, false)
	if err != nil {
		os.Remove(target)
		return fmt.Errorf("pin %s: %w", src, err)
	}
	defer unix.Close(treeFD)
	if err := mountfd.MoveTo(treeFD, target); err != nil {
		os.Remove(target)
		return fmt.Errorf("pin %s: %w", src, err)
	}
	return nil
}

// Unpin unmounts and removes dir/<kind> for each kind (dir itself is the
// caller's). Missing pins are not an error, so Unpin can be repeated.
func Unpin(dir string, kinds ...Kind) error {
	var errs []error
	for _, k := range kinds {
		if _, err := k.cloneFlag(); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, UnpinFile(Path(dir, k)))
	}
	return errors.Join(errs...)
}

// UnpinFile detaches every mount stacked on path and removes the file: the
// undoing of PinFile. A missing file is not an error.
func UnpinFile(path string) error {
	for {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not (or no longer) a mount point
		}
		return fmt.Errorf("unpin %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpin %s: %w", path, err)
	}
	return nil
}

// IsPinned reports whether path is a namespace file (a pinned or live nsfs
// entry) rather than a plain file or nothing.
func IsPinned(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// Run calls fn on a locked OS thread that has joined the namespace of kind k
// pinned at nsPath. Sockets fn creates belong to that namespace and keep it
// after Run returns; goroutines fn starts run elsewhere, outside it. The
// thread rejoins its own namespace afterwards (see nsexec.OnThread).
func Run(nsPath string, k Kind, fn func() error) error {
	t, err := k.nsType()
	if err != nil {
		return err
	}
	return onThread([]Kind{k}, func() error {
		if err := nsexec.Join(t, nsPath); err != nil {
			return err
		}
		return fn()
	})
}
