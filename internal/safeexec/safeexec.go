// Package safeexec keeps a process that enters a container from leading
// back to the host through what it was started with:
//
//   - It inherits no descriptor it was not meant to (the CVE-2024-21626
//     class): CloseOnExec marks every descriptor above those a step still
//     needs close-on-exec, whatever flags they were opened with, because
//     Go's os/exec passes on every descriptor it did not open itself unless
//     it is close-on-exec, and a descriptor inherited from whatever started
//     the daemon may name a host directory.
//   - It runs from a sealed in-memory copy of its binary (CVE-2019-5736):
//     /proc/PID/exe of a process in a container's pid namespace is
//     reachable from the container, and must not lead to a host file that
//     could be read whole or written. Sealed makes the copy.
package safeexec

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// CloseOnExec marks every descriptor from fd on close-on-exec
// (close_range(2) with CLOSE_RANGE_CLOEXEC). The descriptors stay usable
// until the next exec; marking rather than closing leaves alone those the
// Go runtime holds.
func CloseOnExec(from int) error {
	if err := unix.CloseRange(uint(from), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("mark descriptors from %d close-on-exec: %w", from, err)
	}
	return nil
}

// seals are what a sealed copy can no longer have changed: its size, its
// content, and its seals.
const seals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

var copies struct {
	mu    sync.Mutex
	files map[string]*os.File // source path -> its sealed copy, open for the process's life
}

// Sealed returns a path that executes a sealed copy of the executable at
// path: a memfd (close-on-exec) holding the binary, sealed against any
// change, named as /proc/<our pid>/fd/<n>. A child of this process execs it
// by that name before its close-on-exec descriptors go, and the name does
// not depend on the descriptor numbers the child sets up for itself. The
// copy is made on the first call for path and reused after: every process
// executing it shares its pages, so it costs the binary's size once.
func Sealed(path string) (string, error) {
	copies.mu.Lock()
	defer copies.mu.Unlock()
	f, ok := copies.files[path]
	if !ok {
		var err error
		if f, err = sealedCopy(path); err != nil {
			return "", err
		}
		if copies.files == nil {
			copies.files = map[string]*os.File{}
		}
		copies.files[path] = f
	}
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(int(f.Fd())), nil
}

func sealedCopy(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seal a copy of %s: %w", path, err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return nil, fmt.Errorf("seal a copy of %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("seal a copy of %s: not a regular file", path)
	}
	// The name is what /proc/PID/exe shows ("/memfd:NAME (deleted)"): the
	// binary's base name, never a host path.
	name := filepath.Base(path)
	if target, err := os.Readlink(path); err == nil {
		name = filepath.Base(target)
	}
	// MFD_EXEC (Linux 6.3) says the copy is meant to be executed, which a
	// kernel with vm.memfd_noexec=1 otherwise refuses; older kernels do not
	// know the flag and execute any memfd.
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("seal a copy of %s: memfd_create: %w", path, err)
	}
	mem := os.NewFile(uintptr(fd), "memfd:"+name)
	n, err := io.Copy(mem, src)
	if err == nil && n != st.Size() {
		err = fmt.Errorf("copied %d bytes of %d: the file changed meanwhile", n, st.Size())
	}
	if err == nil {
		_, err = unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, seals)
	}
	if err != nil {
		mem.Close()
		return nil, fmt.Errorf("seal a copy of %s: %w", path, err)
	}
	return mem, nil
}
