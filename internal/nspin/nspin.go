// Package nspin creates namespaces and pins them to files by bind mounts, so
// that they outlive the thread that made them and can be joined by path.
// netns/ pins pod network namespaces with it, sandbox/ the uts and ipc ones.
package nspin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
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

func (k Kind) cloneFlag() (int, error) {
	switch k {
	case Net:
		return unix.CLONE_NEWNET, nil
	case UTS:
		return unix.CLONE_NEWUTS, nil
	case IPC:
		return unix.CLONE_NEWIPC, nil
	}
	return 0, fmt.Errorf("namespace kind %q (want net, uts or ipc): %w", k, errdefs.ErrInvalidArgument)
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

// onThread runs fn on a locked OS thread and afterwards returns that
// thread to the namespaces of kinds it had before, so that Go can reuse
// it. Restoring matters even for a thread Go would end: a goroutine can run
// on the main thread, which Go never ends but parks, and a parked thread
// would keep a namespace alive after it is unpinned. If restoring fails the
// thread stays locked and is not reused.
func onThread(kinds []Kind, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		type saved struct {
			f    *os.File
			flag int
		}
		var own []saved
		closeAll := func() {
			for _, s := range own {
				s.f.Close()
			}
		}
		for _, k := range kinds {
			flag, err := k.cloneFlag()
			if err != nil {
				closeAll()
				runtime.UnlockOSThread()
				done <- err
				return
			}
			f, err := os.Open("/proc/thread-self/ns/" + string(k))
			if err != nil {
				closeAll()
				runtime.UnlockOSThread()
				done <- fmt.Errorf("open own %s namespace: %w", k, err)
				return
			}
			own = append(own, saved{f, flag})
		}
		err := fn()
		var restoreErr error
		for _, s := range own {
			if e := unix.Setns(int(s.f.Fd()), s.flag); e != nil {
				restoreErr = errors.Join(restoreErr, fmt.Errorf("return to own namespace: %w", e))
			}
		}
		closeAll()
		if restoreErr == nil {
			runtime.UnlockOSThread()
		}
		done <- errors.Join(err, restoreErr)
	}()
	return <-done
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
				_ = unpinFile(p)
			}
			return nil, err
		}
		paths[k] = target
	}
	return paths, nil
}

// bindThreadNS mounts the calling thread's namespace of kind k onto target,
// through a detached mount (open_tree) moved into place by file descriptor.
func bindThreadNS(k Kind, target string) error {
	f, err := os.OpenFile(target, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pin %s namespace at %s: %w", k, target, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("pin %s namespace: %w", k, err)
	}
	f.Close()
	src := fmt.Sprintf("/proc/thread-self/ns/%s", k)
	treeFD, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		os.Remove(target)
		return fmt.Errorf("pin %s namespace: open_tree %s: %w", k, src, err)
	}
	defer unix.Close(treeFD)
	if err := unix.MoveMount(treeFD, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		os.Remove(target)
		return fmt.Errorf("pin %s namespace: move_mount to %s: %w", k, target, err)
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
		errs = append(errs, unpinFile(Path(dir, k)))
	}
	return errors.Join(errs...)
}

// unpinFile detaches every mount stacked on path and removes the file.
func unpinFile(path string) error {
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
// thread rejoins its own namespace afterwards (see onThread).
func Run(nsPath string, k Kind, fn func() error) error {
	flag, err := k.cloneFlag()
	if err != nil {
		return err
	}
	target, err := os.Open(nsPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("join %s namespace %s: %w", k, nsPath, errdefs.ErrNotFound)
		}
		return fmt.Errorf("join %s namespace: %w", k, err)
	}
	defer target.Close()

	return onThread([]Kind{k}, func() error {
		if err := unix.Setns(int(target.Fd()), flag); err != nil {
			return fmt.Errorf("join %s namespace %s: %w", k, nsPath, err)
		}
		return fn()
	})
}
