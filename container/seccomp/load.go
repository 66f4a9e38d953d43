package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Load compiles s and installs it on every thread of the calling process
// (SECCOMP_FILTER_FLAG_TSYNC), so the Go runtime's other threads cannot
// escape it. The kernel requires no_new_privs or CAP_SYS_ADMIN; the caller
// sets no_new_privs when the spec asks for it. A nil s installs nothing.
func Load(s *specs.LinuxSeccomp) error {
	if s == nil {
		return nil
	}
	prog, err := Compile(s)
	if err != nil {
		return err
	}
	flags, err := Flags(s)
	if err != nil {
		return err
	}
	flags |= unix.SECCOMP_FILTER_FLAG_TSYNC
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags),
		uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	switch {
	case errors.Is(errno, unix.EACCES):
		return fmt.Errorf("seccomp: loading a filter needs no_new_privs or CAP_SYS_ADMIN: %w",
			errdefs.ErrFailedPrecondition)
	case errno != 0:
		return fmt.Errorf("seccomp: install filter of %d instructions: %w", len(prog), errno)
	case r != 0:
		return fmt.Errorf("seccomp: thread %d could not be synchronized to the filter: %w",
			r, errdefs.ErrFailedPrecondition)
	}
	return nil
}
