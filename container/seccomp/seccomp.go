// Package seccomp compiles an OCI seccomp profile (specs.LinuxSeccomp) into a
// classic BPF program and installs it, and provides the default container
// profile.
//
// The compiler is pure Go rather than libseccomp through cgo: cri-mini ships
// as one static binary that re-executes itself as the container init, and a
// C library would bring a shared-library dependency (or a static libseccomp
// build) to every node and cgo into the init path. What a runtime needs from
// libseccomp is small: architecture checks, syscall tables (generated from
// golang.org/x/sys, see gen_tables.go) and 64-bit argument comparisons, all of
// which are written out below and tested against an interpreter and the kernel.
//
// Semantics, chosen to match what profiles written for runc expect:
//   - A syscall name unknown on an architecture is skipped for it.
//   - Arguments of one rule are AND-ed; when one argument index appears more
//     than once, each comparison becomes a rule of its own (OR-ed), as runc
//     does, because profiles such as Docker's rely on that.
//   - For one syscall, rules with conditions are tried in profile order
//     before the first unconditional rule, so that narrow exceptions win over
//     a blanket rule; the first match decides.
//   - Architectures not listed (and x32 calls on x86_64 unless SCMP_ARCH_X32
//     is listed) kill the process; listed architectures the kernel cannot
//     present to this host are ignored. With no list, only the native one.
package seccomp

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

//go:generate go run gen_tables.go

// x32SyscallBit marks x32 system calls on x86_64.
const x32SyscallBit = 0x40000000

// arch is one syscall ABI a filter can see.
type arch struct {
	name  specs.Arch
	audit uint32            // seccomp_data.arch
	table map[string]uint32 // name -> number
	x32   bool              // numbers carry x32SyscallBit
}

var (
	archX86_64  = &arch{specs.ArchX86_64, unix.AUDIT_ARCH_X86_64, amd64Syscalls, false}
	archX32     = &arch{specs.ArchX32, unix.AUDIT_ARCH_X86_64, x32Syscalls, true}
	archX86     = &arch{specs.ArchX86, unix.AUDIT_ARCH_I386, i386Syscalls, false}
	archAArch64 = &arch{specs.ArchAARCH64, unix.AUDIT_ARCH_AARCH64, arm64Syscalls, false}
	archARM     = &arch{specs.ArchARM, unix.AUDIT_ARCH_ARM, armSyscalls, false}
)

// hostArches lists, per GOARCH, the native ABI first and then the ones the
// kernel may also run for a process of this host.
var hostArches = map[string][]*arch{
	"amd64": {archX86_64, archX32, archX86},
	"arm64": {archAArch64, archARM},
}

// goarch selects the host's entry of hostArches; tests compile for the
// other architecture through it.
var goarch = runtime.GOARCH

// x32Syscalls: x32 uses the x86_64 numbers except for the calls whose
// arguments differ in layout, which have their own numbers from 512 on.
var x32Syscalls = func() map[string]uint32 {
	m := make(map[string]uint32, len(amd64Syscalls))
	for n, nr := range amd64Syscalls {
		m[n] = nr
	}
	for i, n := range []string{
		"rt_sigaction", "rt_sigreturn", "ioctl", "readv", "writev", "recvfrom",
		"sendmsg", "recvmsg", "execve", "ptrace", "rt_sigpending",
		"rt_sigtimedwait", "rt_sigqueueinfo", "sigaltstack", "timer_create",
		"mq_notify", "kexec_load", "waitid", "set_robust_list",
		"get_robust_list", "vmsplice", "move_pages", "preadv", "pwritev",
		"rt_tgsigqueueinfo", "recvmmsg", "sendmmsg", "process_vm_readv",
		"process_vm_writev", "setsockopt", "getsockopt", "io_setup",
		"io_submit", "execveat", "preadv2", "pwritev2",
	} {
		m[n] = 512 + uint32(i)
	}
	return m
}()

// badArch is what a call from an architecture the profile does not list gets.
const badArch = unix.SECCOMP_RET_KILL_PROCESS

// flagBits are the filter flags Load accepts from a profile.
var flagBits = map[specs.LinuxSeccompFlag]uint{
	specs.LinuxSeccompFlagLog:       unix.SECCOMP_FILTER_FLAG_LOG,
	specs.LinuxSeccompFlagSpecAllow: unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
	"SECCOMP_FILTER_FLAG_TSYNC":     unix.SECCOMP_FILTER_FLAG_TSYNC,
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("seccomp: "+format+": %w", append(a, errdefs.ErrInvalidArgument)...)
}

// action encodes an OCI action as a seccomp return value. errnoRet, when
// set, is the errno of SCMP_ACT_ERRNO and the message of SCMP_ACT_TRACE;
// both default to EPERM.
func action(a specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	data := uint32(unix.EPERM)
	if errnoRet != nil {
		if *errnoRet > unix.SECCOMP_RET_DATA {
			return 0, invalid("errnoRet %d of %s does not fit in 16 bits", *errnoRet, a)
		}
		data = uint32(*errnoRet)
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case specs.ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case specs.ActTrap:
		return unix.SECCOMP_RET_TRAP, nil
	case specs.ActErrno:
		return unix.SECCOMP_RET_ERRNO | data, nil
	case specs.ActTrace:
		return unix.SECCOMP_RET_TRACE | data, nil
	case specs.ActAllow:
		return unix.SECCOMP_RET_ALLOW, nil
	case specs.ActLog:
		return unix.SECCOMP_RET_LOG, nil
	case specs.ActNotify:
		return 0, fmt.Errorf("seccomp: %s needs a seccomp agent, which cri-mini does not support: %w",
			a, errdefs.ErrUnimplemented)
	}
	return 0, invalid("unknown action %q", a)
}

// rule is one way a syscall can match: all conds hold.
type rule struct {
	ret   uint32
	conds []specs.LinuxSeccompArg
}

// rules expands one profile entry into rules (see the package doc for
// repeated argument indexes) after checking its comparisons.
func rules(sc specs.LinuxSyscall) ([]rule, error) {
	ret, err := action(sc.Action, sc.ErrnoRet)
	if err != nil {
		return nil, err
	}
	seen := map[uint]bool{}
	repeated := false
	for _, a := range sc.Args {
		if a.Index > 5 {
			return nil, invalid("argument index %d of %v: a syscall has 6 arguments", a.Index, sc.Names)
		}
		if _, ok := opEmitters[a.Op]; !ok {
			return nil, invalid("unknown comparison %q for %v", a.Op, sc.Names)
		}
		repeated = repeated || seen[a.Index]
		seen[a.Index] = true
	}
	if !repeated {
		return []rule{{ret, sc.Args}}, nil
	}
	out := make([]rule, len(sc.Args))
	for i, a := range sc.Args {
		out[i] = rule{ret, []specs.LinuxSeccompArg{a}}
	}
	return out, nil
}

// Flags returns the seccomp(2) filter flags a profile asks for.
func Flags(s *specs.LinuxSeccomp) (uint, error) {
	var f uint
	for _, name := range s.Flags {
		b, ok := flagBits[name]
		if !ok {
			return 0, invalid("unsupported filter flag %q", name)
		}
		f |= b
	}
	return f, nil
}

// Compile turns a profile into a BPF program for this host's architectures.
func Compile(s *specs.LinuxSeccomp) ([]unix.SockFilter, error) {
	// The search tree costs instructions; a profile too big for it
	// within the kernel's limit is compiled as one linear chain.
	prog, err := compile(s, linearMax)
	if errors.Is(err, errTooLarge) {
		prog, err = compile(s, math.MaxInt)
	}
	return prog, err
}

// compile is Compile with at most linear syscalls compared in a row.
func compile(s *specs.LinuxSeccomp, linear int) ([]unix.SockFilter, error) {
	if s == nil {
		return nil, invalid("no profile")
	}
	if s.DefaultAction == "" {
		return nil, invalid("defaultAction is required")
	}
	if _, err := Flags(s); err != nil {
		return nil, err
	}
	host, ok := hostArches[goarch]
	if !ok {
		return nil, fmt.Errorf("seccomp: no syscall tables for %s: %w", goarch, errdefs.ErrUnimplemented)
	}
	defRet, err := action(s.DefaultAction, s.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	var all []rule
	var names [][]string
	for _, sc := range s.Syscalls {
		rs, err := rules(sc)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			all = append(all, r)
			names = append(names, sc.Names)
		}
	}

	// The native ABI is always filtered; others only when listed.
	want := []*arch{host[0]}
	for _, name := range s.Architectures {
		if !isSpecArch(name) {
			return nil, invalid("unknown architecture %q", name)
		}
		for _, a := range host[1:] {
			if a.name == name && !slices.Contains(want, a) {
				want = append(want, a)
			}
		}
	}

	asm := assembler{linearMax: linear}
	asm.load(offArch)
	// One dispatch per distinct audit value: x32 shares x86_64's.
	sections := map[uint32]label{}
	for _, a := range want {
		if _, ok := sections[a.audit]; ok {
			continue
		}
		l := asm.newLabel()
		sections[a.audit] = l
		asm.jeq(a.audit, next, skip1)
		asm.ja(l)
	}
	asm.ret(badArch)
	for _, a := range want {
		l, ok := sections[a.audit]
		if !ok || a.x32 {
			continue
		}
		asm.mark(l)
		delete(sections, a.audit)
		asm.load(offNr)
		if a == archX86_64 {
			// x32 calls come with the x86_64 audit value and a flagged number.
			x32 := asm.newLabel()
			asm.jge(x32SyscallBit, next, skip1)
			asm.ja(x32)
			asm.syscalls(a, all, names, defRet)
			asm.mark(x32)
			if slices.Contains(want, archX32) {
				asm.syscalls(archX32, all, names, defRet)
			} else {
				asm.ret(badArch)
			}
			continue
		}
		asm.syscalls(a, all, names, defRet)
	}
	return asm.assemble()
}

func isSpecArch(a specs.Arch) bool {
	return strings.HasPrefix(string(a), "SCMP_ARCH_") && len(a) > len("SCMP_ARCH_")
}
