// Package nsexec runs work on an OS thread that has joined namespaces, and
// starts processes born in namespaces joined by path. A Go program can move
// one locked thread into the net, uts, ipc and cgroup namespaces of another
// process, and into its pid namespace for the thread's children; the mount
// and user namespaces need a single-threaded process (a C constructor, as in
// container/nsenter) and are not here.
//
// Its table of those namespace types (the OCI name, the clone(2) and
// setns(2) flag, the /proc/<pid>/ns entry) is cri-mini's only one:
// CloneFlag and TypeOf read it.
//
// The sandbox manager starts a pod's pause process with it and
// internal/nspin pins namespaces on it. A container's init is started by
// the nsenter constructor (container/nsenter), which can also join a user
// namespace first.
package nsexec

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// kinds maps the namespace types a thread can join to their clone(2) and
// setns(2) flag and their name under /proc/<pid>/ns/.
var kinds = map[specs.LinuxNamespaceType]struct {
	flag int
	proc string
}{
	specs.PIDNamespace:     {unix.CLONE_NEWPID, "pid"},
	specs.NetworkNamespace: {unix.CLONE_NEWNET, "net"},
	specs.UTSNamespace:     {unix.CLONE_NEWUTS, "uts"},
	specs.IPCNamespace:     {unix.CLONE_NEWIPC, "ipc"},
	specs.CgroupNamespace:  {unix.CLONE_NEWCGROUP, "cgroup"},
}

// CloneFlag returns the clone(2) and setns(2) flag of namespace type t, or
// ErrInvalidArgument for a type a thread cannot join (mount, user, time).
func CloneFlag(t specs.LinuxNamespaceType) (int, error) {
	k, ok := kinds[t]
	if !ok {
		return 0, fmt.Errorf("%s namespace: cannot be joined from a thread: %w", t, errdefs.ErrInvalidArgument)
	}
	return k.flag, nil
}

// TypeOf returns the namespace type a thread can join whose entry under
// /proc/<pid>/ns/ is name ("net"), or ErrInvalidArgument.
func TypeOf(name string) (specs.LinuxNamespaceType, error) {
	for t, k := range kinds {
		if k.proc == name {
			return t, nil
		}
	}
	return "", fmt.Errorf("namespace %q: no namespace a thread can join is named so: %w", name, errdefs.ErrInvalidArgument)
}

// OnThread runs fn on a locked OS thread and afterwards returns that thread
// to its own namespaces of the given types, which fn may leave (by setns or
// unshare), so that Go can reuse the thread. Restoring matters even for a
// thread Go would end: a goroutine can run on the main thread, which Go
// never ends but parks, and a parked thread would keep a namespace alive
// after it is unpinned; and a thread that ends sends the parent-death
// signal to every child it started. If restoring fails the thread stays
// locked and Go ends it with the goroutine.
func OnThread(types []specs.LinuxNamespaceType, fn func() error) error {
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
		for _, t := range types {
			k, ok := kinds[t]
			if !ok {
				closeAll()
				runtime.UnlockOSThread()
				_, err := CloneFlag(t)
				done <- err
				return
			}
			f, err := os.Open("/proc/thread-self/ns/" + k.proc)
			if err != nil {
				closeAll()
				runtime.UnlockOSThread()
				done <- fmt.Errorf("open own %s namespace: %w", t, err)
				return
			}
			own = append(own, saved{f, k.flag})
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

// Join moves the calling thread, which must be locked, into the namespace
// pinned or named at path, of type t.
func Join(t specs.LinuxNamespaceType, path string) error {
	flag, err := CloneFlag(t)
	if err != nil {
		return err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("join %s namespace %s: %w", t, path, errdefs.ErrNotFound)
		}
		return fmt.Errorf("open %s namespace %s: %w", t, path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, flag); err != nil {
		return fmt.Errorf("join %s namespace %s: %w", t, path, err)
	}
	return nil
}

// Start starts cmd from an OS thread that first joined the namespaces of
// joins (type -> path), so that the child is born in them (a joined pid
// namespace applies to children only, which is what the child is). New
// namespaces are cmd's SysProcAttr.Cloneflags.
func Start(cmd *exec.Cmd, joins map[specs.LinuxNamespaceType]string) error {
	if len(joins) == 0 {
		return cmd.Start()
	}
	return OnThread(slices.Collect(maps.Keys(joins)), func() error {
		for t, p := range joins {
			if err := Join(t, p); err != nil {
				return err
			}
		}
		return cmd.Start()
	})
}
