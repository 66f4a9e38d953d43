package seccomp

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// call is a struct seccomp_data as the kernel hands it to a filter.
type call struct {
	arch uint32
	nr   uint32
	args [6]uint64
}

func (c call) bytes() []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], c.nr)
	binary.LittleEndian.PutUint32(b[4:], c.arch)
	for i, a := range c.args {
		binary.LittleEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

// run interprets prog the way the kernel's seccomp checker allows it to be
// written (loads of seccomp_data words, ALU AND, jumps, returns) and fails
// the test on anything else, on a jump out of the program, or on falling off
// its end.
func run(t testing.TB, prog []unix.SockFilter, c call) uint32 {
	t.Helper()
	ret, _ := runSteps(t, prog, c)
	return ret
}

// runSteps is run that also counts the instructions executed.
func runSteps(t testing.TB, prog []unix.SockFilter, c call) (uint32, int) {
	t.Helper()
	data := c.bytes()
	var acc uint32
	for pc, steps := 0, 1; pc < len(prog); pc, steps = pc+1, steps+1 {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			if in.K%4 != 0 || in.K+4 > uint32(len(data)) {
				t.Fatalf("pc %d: load at %d", pc, in.K)
			}
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			acc &= in.K
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(in.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K,
			unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			var ok bool
			switch in.Code &^ (unix.BPF_JMP | unix.BPF_K) {
			case unix.BPF_JEQ:
				ok = acc == in.K
			case unix.BPF_JGT:
				ok = acc > in.K
			case unix.BPF_JGE:
				ok = acc >= in.K
			}
			if ok {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K, steps
		default:
			t.Fatalf("pc %d: unexpected instruction %#x", pc, in.Code)
		}
	}
	t.Fatalf("fell off the end of a %d-instruction program", len(prog))
	return 0, 0
}

func errnoRet(e unix.Errno) *uint { n := uint(e); return &n }

func mustCompile(t testing.TB, s *specs.LinuxSeccomp) []unix.SockFilter {
	t.Helper()
	prog, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

const (
	allow = unix.SECCOMP_RET_ALLOW
	kill  = unix.SECCOMP_RET_KILL_PROCESS
)

func errnoOf(e unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e) }

func TestCompileRules(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the table below uses x86_64 numbers")
	}
	s := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: errnoRet(unix.ENOSYS),
		Architectures:   []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchAARCH64},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read", "write", "no_such_call"}, Action: specs.ActAllow},
			{Names: []string{"openat"}, Action: specs.ActErrno, ErrnoRet: errnoRet(unix.EACCES)},
			{Names: []string{"mkdirat"}, Action: specs.ActErrno},
			{Names: []string{"kill"}, Action: specs.ActKillThread},
			{Names: []string{"ptrace"}, Action: specs.ActTrap},
			{Names: []string{"uname"}, Action: specs.ActLog},
			{Names: []string{"getpid"}, Action: specs.ActTrace, ErrnoRet: errnoRet(7)},
			// AND of two arguments.
			{Names: []string{"dup3"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 3, Op: specs.OpEqualTo},
				{Index: 2, Value: unix.O_CLOEXEC, ValueTwo: unix.O_CLOEXEC, Op: specs.OpMaskedEqual},
			}},
			// The same index twice: either comparison allows (runc's reading).
			{Names: []string{"personality"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 0, Op: specs.OpEqualTo},
				{Index: 0, Value: 0xffffffff, Op: specs.OpEqualTo},
			}},
			// A narrow exception listed after the blanket rule still wins.
			{Names: []string{"socket"}, Action: specs.ActAllow},
			{Names: []string{"socket"}, Action: specs.ActErrno, ErrnoRet: errnoRet(unix.EAFNOSUPPORT),
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: unix.AF_PACKET, Op: specs.OpEqualTo}}},
		},
	}
	prog := mustCompile(t, s)
	x64 := func(nr uint32, args ...uint64) call {
		c := call{arch: unix.AUDIT_ARCH_X86_64, nr: nr}
		copy(c.args[:], args)
		return c
	}
	for _, tc := range []struct {
		name string
		c    call
		want uint32
	}{
		{"read", x64(unix.SYS_READ), allow},
		{"write", x64(unix.SYS_WRITE), allow},
		{"not listed", x64(unix.SYS_CHDIR), errnoOf(unix.ENOSYS)},
		{"errnoRet", x64(unix.SYS_OPENAT), errnoOf(unix.EACCES)},
		{"errno defaults to EPERM", x64(unix.SYS_MKDIRAT), errnoOf(unix.EPERM)},
		{"kill thread", x64(unix.SYS_KILL), unix.SECCOMP_RET_KILL_THREAD},
		{"trap", x64(unix.SYS_PTRACE), unix.SECCOMP_RET_TRAP},
		{"log", x64(unix.SYS_UNAME), unix.SECCOMP_RET_LOG},
		{"trace", x64(unix.SYS_GETPID), unix.SECCOMP_RET_TRACE | 7},
		{"and: both hold", x64(unix.SYS_DUP3, 3, 9, unix.O_CLOEXEC|unix.O_NONBLOCK), allow},
		{"and: first fails", x64(unix.SYS_DUP3, 4, 9, unix.O_CLOEXEC), errnoOf(unix.ENOSYS)},
		{"and: second fails", x64(unix.SYS_DUP3, 3, 9, 0), errnoOf(unix.ENOSYS)},
		{"and: high word differs", x64(unix.SYS_DUP3, 3|1<<32, 9, unix.O_CLOEXEC), errnoOf(unix.ENOSYS)},
		{"or: first", x64(unix.SYS_PERSONALITY, 0), allow},
		{"or: second", x64(unix.SYS_PERSONALITY, 0xffffffff), allow},
		{"or: neither", x64(unix.SYS_PERSONALITY, 8), errnoOf(unix.ENOSYS)},
		{"exception", x64(unix.SYS_SOCKET, unix.AF_PACKET), errnoOf(unix.EAFNOSUPPORT)},
		{"blanket", x64(unix.SYS_SOCKET, unix.AF_INET), allow},
		{"x32 not listed", x64(unix.SYS_READ | x32SyscallBit), kill},
		{"i386 read", call{arch: unix.AUDIT_ARCH_I386, nr: 3}, allow},
		{"i386 mkdir", call{arch: unix.AUDIT_ARCH_I386, nr: 39}, errnoOf(unix.ENOSYS)},
		{"i386 socketcall not listed", call{arch: unix.AUDIT_ARCH_I386, nr: 102}, errnoOf(unix.ENOSYS)},
		{"arm not listed", call{arch: unix.AUDIT_ARCH_ARM, nr: 3}, kill},
		{"aarch64 on x86_64 host", call{arch: unix.AUDIT_ARCH_AARCH64, nr: 63}, kill},
	} {
		if got := run(t, prog, tc.c); got != tc.want {
			t.Errorf("%s: got %#x, want %#x", tc.name, got, tc.want)
		}
	}

	// Listing x32 filters x32 numbers, including its own 512+ calls.
	s.Architectures = append(s.Architectures, specs.ArchX32)
	s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: []string{"ioctl"}, Action: specs.ActAllow})
	prog = mustCompile(t, s)
	for _, tc := range []struct {
		nr   uint32
		want uint32
	}{
		{unix.SYS_READ | x32SyscallBit, allow},
		{514 | x32SyscallBit, allow}, // x32 ioctl
		{unix.SYS_OPENAT | x32SyscallBit, errnoOf(unix.EACCES)},
		{unix.SYS_CHDIR | x32SyscallBit, errnoOf(unix.ENOSYS)},
		{unix.SYS_IOCTL, allow},
	} {
		if got := run(t, prog, call{arch: unix.AUDIT_ARCH_X86_64, nr: tc.nr}); got != tc.want {
			t.Errorf("x32 %#x: got %#x, want %#x", tc.nr, got, tc.want)
		}
	}

	// Without a list, only the native ABI passes.
	s.Architectures = nil
	prog = mustCompile(t, s)
	if got := run(t, prog, call{arch: unix.AUDIT_ARCH_I386, nr: 3}); got != kill {
		t.Errorf("i386 without architectures: %#x", got)
	}
	if got := run(t, prog, x64(unix.SYS_READ)); got != allow {
		t.Errorf("native without architectures: %#x", got)
	}
}

// TestCompileComparisons checks every operator against Go's own 64-bit
// comparison at the values where a word-by-word comparison goes wrong.
func TestCompileComparisons(t *testing.T) {
	ops := map[specs.LinuxSeccompOperator]func(a, v, v2 uint64) bool{
		specs.OpEqualTo:      func(a, v, _ uint64) bool { return a == v },
		specs.OpNotEqual:     func(a, v, _ uint64) bool { return a != v },
		specs.OpGreaterThan:  func(a, v, _ uint64) bool { return a > v },
		specs.OpGreaterEqual: func(a, v, _ uint64) bool { return a >= v },
		specs.OpLessThan:     func(a, v, _ uint64) bool { return a < v },
		specs.OpLessEqual:    func(a, v, _ uint64) bool { return a <= v },
		specs.OpMaskedEqual:  func(a, m, v uint64) bool { return a&m == v },
	}
	values := []uint64{0, 1, 2, 0xffffffff, 1 << 32, 1<<32 + 1, 1<<32 - 2, 0x1_0000_0005, 0x2_0000_0000,
		0x2_0000_0004, math.MaxUint64, math.MaxUint64 - 1, 0x8000_0000_0000_0000}
	nr := amd64Syscalls["getuid"]
	if runtime.GOARCH == "arm64" {
		nr = arm64Syscalls["getuid"]
	}
	for op, want := range ops {
		for _, v := range values {
			for _, idx := range []uint{0, 5} {
				arg := specs.LinuxSeccompArg{Index: idx, Value: v, ValueTwo: v & 0xf0000000f, Op: op}
				prog := mustCompile(t, &specs.LinuxSeccomp{
					DefaultAction: specs.ActAllow,
					Syscalls: []specs.LinuxSyscall{{Names: []string{"getuid"}, Action: specs.ActErrno,
						Args: []specs.LinuxSeccompArg{arg}}},
				})
				for _, a := range values {
					c := call{arch: hostArches[runtime.GOARCH][0].audit, nr: nr}
					c.args[idx] = a
					got := run(t, prog, c) == errnoOf(unix.EPERM)
					if w := want(a, arg.Value, arg.ValueTwo); got != w {
						t.Errorf("%s arg%d=%#x value %#x value2 %#x: matched %v, want %v", op, idx, a, arg.Value, arg.ValueTwo, got, w)
					}
				}
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	ok := func() *specs.LinuxSeccomp {
		return &specs.LinuxSeccomp{DefaultAction: specs.ActErrno,
			Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow}}}
	}
	for _, tc := range []struct {
		name   string
		change func(*specs.LinuxSeccomp) *specs.LinuxSeccomp
		kind   error
	}{
		{"nil", func(*specs.LinuxSeccomp) *specs.LinuxSeccomp { return nil }, errdefs.ErrInvalidArgument},
		{"no default", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp { s.DefaultAction = ""; return s }, errdefs.ErrInvalidArgument},
		{"bad default", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp { s.DefaultAction = "SCMP_ACT_NOPE"; return s }, errdefs.ErrInvalidArgument},
		{"bad action", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp { s.Syscalls[0].Action = "ALLOW"; return s }, errdefs.ErrInvalidArgument},
		{"notify", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp { s.Syscalls[0].Action = specs.ActNotify; return s }, errdefs.ErrUnimplemented},
		{"bad op", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp {
			s.Syscalls[0].Args = []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_LIKE"}}
			return s
		}, errdefs.ErrInvalidArgument},
		{"bad index", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp {
			s.Syscalls[0].Args = []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}
			return s
		}, errdefs.ErrInvalidArgument},
		{"errno too big", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp {
			s.Syscalls[0].Action, s.Syscalls[0].ErrnoRet = specs.ActErrno, errnoRet(70000)
			return s
		}, errdefs.ErrInvalidArgument},
		{"bad flag", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp { s.Flags = []specs.LinuxSeccompFlag{"FAST"}; return s }, errdefs.ErrInvalidArgument},
		{"bad arch", func(s *specs.LinuxSeccomp) *specs.LinuxSeccomp { s.Architectures = []specs.Arch{"x86_64"}; return s }, errdefs.ErrInvalidArgument},
	} {
		_, err := Compile(tc.change(ok()))
		if !errors.Is(err, tc.kind) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.kind)
		}
	}
	if _, err := Compile(ok()); err != nil {
		t.Errorf("valid profile: %v", err)
	}
}

func TestRuntimeDefaultCompiles(t *testing.T) {
	p := RuntimeDefault()
	names := 0
	for _, sc := range p.Syscalls {
		names += len(sc.Names)
	}
	if p.DefaultAction != specs.ActErrno || names < 300 {
		t.Fatalf("unexpected default profile: %s with %d syscall names", p.DefaultAction, names)
	}
	prog := mustCompile(t, p)
	t.Logf("default profile: %d rules, %d names, %d BPF instructions", len(p.Syscalls), names, len(prog))
	if runtime.GOARCH != "amd64" {
		return
	}
	x64 := func(name string, args ...uint64) uint32 {
		c := call{arch: unix.AUDIT_ARCH_X86_64, nr: amd64Syscalls[name]}
		copy(c.args[:], args)
		return run(t, prog, c)
	}
	for name, want := range map[string]uint32{
		"read": allow, "execve": allow, "clone": allow, "mount": errnoOf(unix.EPERM),
		"unshare": errnoOf(unix.EPERM), "keyctl": errnoOf(unix.EPERM), "clone3": errnoOf(unix.ENOSYS),
		"kexec_load": errnoOf(unix.EPERM), "bpf": errnoOf(unix.EPERM),
	} {
		if got := x64(name); got != want {
			t.Errorf("default profile, %s: got %#x, want %#x", name, got, want)
		}
	}
	if got := x64("clone", unix.CLONE_NEWNS); got != errnoOf(unix.EPERM) {
		t.Errorf("clone(CLONE_NEWNS) allowed: %#x", got)
	}
	// With CAP_SYS_ADMIN in the bounding set, mount and unshare are allowed.
	admin, err := RuntimeDefaultFor(append(caps.DefaultSet(), "CAP_SYS_ADMIN"))
	if err != nil {
		t.Fatal(err)
	}
	prog = mustCompile(t, admin)
	if got := x64("mount"); got != allow {
		t.Errorf("with CAP_SYS_ADMIN, mount: %#x", got)
	}
}

func FuzzCompile(f *testing.F) {
	seed, err := json.Marshal(RuntimeDefault())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":5,"valueTwo":3,"op":"SCMP_CMP_MASKED_EQ"},{"index":1,"value":9,"op":"SCMP_CMP_GT"}]}]}`))
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_KILL","architectures":["SCMP_ARCH_X32","SCMP_ARCH_X86"],"syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2,"op":"SCMP_CMP_LT"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s specs.LinuxSeccomp
		if json.Unmarshal(data, &s) != nil {
			return
		}
		prog, err := Compile(&s)
		if err != nil {
			return
		}
		linear, err := compile(&s, math.MaxInt)
		if err != nil {
			t.Fatalf("tree layout compiled, linear failed: %v", err)
		}
		// Every compiled program must be well formed for any input, and
		// both layouts must agree.
		for _, c := range []call{
			{arch: unix.AUDIT_ARCH_X86_64, nr: 0},
			{arch: unix.AUDIT_ARCH_X86_64, nr: 41, args: [6]uint64{2, 1, 0, 1 << 40, math.MaxUint64, 7}},
			{arch: unix.AUDIT_ARCH_X86_64, nr: 1 | x32SyscallBit},
			{arch: unix.AUDIT_ARCH_I386, nr: 102},
			{arch: unix.AUDIT_ARCH_AARCH64, nr: 63},
		} {
			if a, b := run(t, prog, c), run(t, linear, c); a != b {
				t.Fatalf("%+v: tree %#x, linear %#x", c, a, b)
			}
		}
	})
}

func ExampleCompile() {
	prog, err := Compile(&specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdirat"}, Action: specs.ActErrno}},
	})
	fmt.Println(len(prog) > 0, err)
	// Output: true <nil>
}

func BenchmarkCompileRuntimeDefault(b *testing.B) {
	p := RuntimeDefault()
	for b.Loop() {
		if _, err := Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSearchTree compares the tree dispatch with a linear chain on the
// default profile: same verdict for every syscall number, fewer
// instructions executed on average.
func TestSearchTree(t *testing.T) {
	p := RuntimeDefault()
	tree, err := compile(p, linearMax)
	if err != nil {
		t.Fatal(err)
	}
	linear, err := compile(p, math.MaxInt)
	if err != nil {
		t.Fatal(err)
	}
	native := hostArches[runtime.GOARCH][0].audit
	var treeSteps, linearSteps int
	for nr := uint32(0); nr < 600; nr++ {
		c := call{arch: native, nr: nr, args: [6]uint64{uint64(nr) * 7}}
		r1, s1 := runSteps(t, tree, c)
		r2, s2 := runSteps(t, linear, c)
		if r1 != r2 {
			t.Errorf("nr %d: tree says %#x, linear %#x", nr, r1, r2)
		}
		treeSteps += s1
		linearSteps += s2
	}
	t.Logf("default profile: %d instructions as a tree, %d linear; executed per syscall on average: %.1f vs %.1f",
		len(tree), len(linear), float64(treeSteps)/600, float64(linearSteps)/600)
	if treeSteps*3 > linearSteps {
		t.Errorf("the tree executes %d instructions, linear %d", treeSteps, linearSteps)
	}
}

// TestCompileFallsBackToLinear grows a profile past the kernel's
// instruction limit: Compile must succeed exactly as long as some layout
// fits, and pass from the tree to the linear layout on the way.
func TestCompileFallsBackToLinear(t *testing.T) {
	names := slices.Sorted(maps.Keys(hostArches[runtime.GOARCH][0].table))
	s := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32, specs.ArchAARCH64, specs.ArchARM}}
	fellBack := false
	for _, n := range names {
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: []string{n}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: 1, Op: specs.OpEqualTo}}})
		_, treeErr := compile(s, linearMax)
		_, linearErr := compile(s, math.MaxInt)
		_, err := Compile(s)
		if (err == nil) != (linearErr == nil) {
			t.Fatalf("%d syscalls: Compile %v, linear layout %v", len(s.Syscalls), err, linearErr)
		}
		fellBack = fellBack || (treeErr != nil && linearErr == nil)
		if linearErr != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("too large: %v", err)
			}
			break
		}
	}
	if !fellBack {
		t.Error("never needed the linear layout")
	}
}

// TestCompileARM64 compiles for an arm64 host (whatever this one is) and
// checks the aarch64 and arm sections with arm64's own numbers.
func TestCompileARM64(t *testing.T) {
	defer func(g string) { goarch = g }(goarch)
	goarch = "arm64"
	prog := mustCompile(t, &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Architectures: []specs.Arch{specs.ArchAARCH64, specs.ArchARM, specs.ArchX86},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read", "openat", "open"}, Action: specs.ActAllow},
			{Names: []string{"mount"}, Action: specs.ActErrno, ErrnoRet: errnoRet(unix.EACCES)},
		},
	})
	for _, tc := range []struct {
		c    call
		want uint32
	}{
		{call{arch: unix.AUDIT_ARCH_AARCH64, nr: 63}, allow},                               // read
		{call{arch: unix.AUDIT_ARCH_AARCH64, nr: 56}, allow},                               // openat
		{call{arch: unix.AUDIT_ARCH_AARCH64, nr: 40}, errnoOf(unix.EACCES)},                // mount
		{call{arch: unix.AUDIT_ARCH_AARCH64, nr: 0}, errnoOf(unix.EPERM)},                  // io_setup
		{call{arch: unix.AUDIT_ARCH_ARM, nr: 3}, allow},                                    // read
		{call{arch: unix.AUDIT_ARCH_ARM, nr: 5}, allow},                                    // open
		{call{arch: unix.AUDIT_ARCH_ARM, nr: 21}, errnoOf(unix.EACCES)},                    // mount
		{call{arch: unix.AUDIT_ARCH_X86_64, nr: 0}, kill},                                  // not this host's
		{call{arch: unix.AUDIT_ARCH_I386, nr: 3}, kill},                                    // listed, but foreign
		{call{arch: unix.AUDIT_ARCH_AARCH64, nr: 63 | x32SyscallBit}, errnoOf(unix.EPERM)}, // no x32 on arm64
	} {
		if got := run(t, prog, tc.c); got != tc.want {
			t.Errorf("%+v: got %#x, want %#x", tc.c, got, tc.want)
		}
	}
}
