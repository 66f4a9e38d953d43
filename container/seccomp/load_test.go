package seccomp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// Filters cannot be removed, so every real load happens in a child: the
// test binary re-executed with childEnv naming a role.
const noSuchID = 0x3ffffff0

const (
	childEnv   = "SECCOMP_TEST_CHILD"
	profileEnv = "SECCOMP_TEST_PROFILE"
	dirEnv     = "SECCOMP_TEST_DIR"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		runtime.LockOSThread()
		if err := runChild(role); err != nil {
			fmt.Println("error:", err)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(role string) error {
	var p specs.LinuxSeccomp
	if err := json.Unmarshal([]byte(os.Getenv(profileEnv)), &p); err != nil {
		return err
	}
	if role == "no-nnp" {
		// Root without CAP_SYS_ADMIN and without no_new_privs may not load.
		def := caps.DefaultSet()
		if err := caps.Apply(&specs.LinuxCapabilities{Bounding: caps.All(), Effective: def, Permitted: def}, nil); err != nil {
			return err
		}
		err := Load(&p)
		fmt.Println("precondition:", errors.Is(err, errdefs.ErrFailedPrecondition), err)
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	if p.DefaultAction != "" {
		if err := Load(&p); err != nil {
			return err
		}
	}
	switch role {
	case "probe":
		dir := os.Getenv(dirEnv)
		report := func(name string, err error) {
			e := "ok"
			var errno unix.Errno
			if errors.As(err, &errno) {
				e = unix.ErrnoName(errno)
			} else if err != nil {
				e = err.Error()
			}
			fmt.Printf("%s=%s\n", name, e)
		}
		report("mkdirat", unix.Mkdirat(unix.AT_FDCWD, filepath.Join(dir, "d"), 0o755))
		report("symlinkat", unix.Symlinkat("x", unix.AT_FDCWD, filepath.Join(dir, "l")))
		// noSuchID is neither a pid (pid_max is at most 2^22) nor a uid
		// with processes, so unfiltered calls fail with ESRCH.
		_, err := unix.Getpriority(unix.PRIO_USER, noSuchID)
		report("getpriority-user-nosuch", err)
		_, err = unix.Getpriority(unix.PRIO_USER, 0)
		report("getpriority-user-0", err)
		_, err = unix.Getpriority(unix.PRIO_PROCESS, noSuchID)
		report("getpriority-process-nosuch", err)
		report("dup3-cloexec", unix.Dup3(1, 100, unix.O_CLOEXEC))
		report("dup3-plain", unix.Dup3(1, 101, 0))
		_, err = os.ReadFile("/proc/self/status")
		report("read", err)
		// TSYNC: another OS thread is filtered too.
		done := make(chan error)
		go func() {
			runtime.LockOSThread()
			done <- unix.Mkdirat(unix.AT_FDCWD, filepath.Join(dir, "t"), 0o755)
		}()
		report("mkdirat-other-thread", <-done)
	case "bench":
		// Time n getppid calls (near the end of the default profile's
		// list, so a linear chain walks far) under the loaded filter.
		n, _ := strconv.Atoi(os.Getenv(dirEnv))
		start := time.Now()
		for range n {
			unix.Getppid()
		}
		fmt.Println(time.Since(start).Nanoseconds())
	case "exec":
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv(dirEnv)), &args); err != nil {
			return err
		}
		return unix.Exec(args[0], args, []string{"PATH=/bin"})
	}
	return nil
}

func child(t *testing.T, role string, p *specs.LinuxSeccomp, arg string) string {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+role, profileEnv+"="+string(b), dirEnv+"="+arg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s: %v\nstdout: %s\nstderr: %s", role, err, out, stderr.String())
	}
	return string(out)
}

func TestLoadEnforces(t *testing.T) {
	dir := t.TempDir()
	p := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32, specs.ArchAARCH64},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdirat", "mkdir"}, Action: specs.ActErrno},
			{Names: []string{"symlinkat", "symlink"}, Action: specs.ActErrno, ErrnoRet: errnoRet(unix.EBADFD)},
			{Names: []string{"getpriority"}, Action: specs.ActErrno, ErrnoRet: errnoRet(unix.ENOTTY),
				Args: []specs.LinuxSeccompArg{
					{Index: 0, Value: unix.PRIO_USER, Op: specs.OpEqualTo},
					{Index: 1, Value: noSuchID, Op: specs.OpEqualTo},
				}},
			{Names: []string{"dup3"}, Action: specs.ActErrno, ErrnoRet: errnoRet(unix.E2BIG),
				Args: []specs.LinuxSeccompArg{{Index: 2, Value: unix.O_CLOEXEC, ValueTwo: unix.O_CLOEXEC, Op: specs.OpMaskedEqual}}},
		},
	}
	out := child(t, "probe", p, dir)
	for _, want := range []string{
		"mkdirat=EPERM", "symlinkat=EBADFD", "getpriority-user-nosuch=ENOTTY", "getpriority-user-0=ok",
		"getpriority-process-nosuch=ESRCH", "dup3-cloexec=E2BIG", "dup3-plain=ok", "read=ok",
		"mkdirat-other-thread=EPERM",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %s in child output:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the filter let %d entries be created", len(entries))
	}
}

func TestLoadNeedsNoNewPrivsOrSysAdmin(t *testing.T) {
	roottest.Require(t)
	out := child(t, "no-nnp", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}, "")
	if !strings.HasPrefix(out, "precondition: true") {
		t.Errorf("want ErrFailedPrecondition, got %q", out)
	}
}

func TestLoadNil(t *testing.T) {
	if err := Load(nil); err != nil {
		t.Fatal(err)
	}
}

func TestRuntimeDefaultRunsBusybox(t *testing.T) {
	roottest.Require(t)
	p := RuntimeDefault()
	script := `echo start; ls / >/dev/null && echo ls-ok; cat /proc/self/status | grep '^Seccomp:'; ` +
		`id -u; echo x | sha256sum >/dev/null && echo sha-ok; sleep 0 && echo sleep-ok; ` +
		`unshare -m true 2>/dev/null || echo unshare-blocked; ` +
		`mount -t tmpfs none /mnt 2>/dev/null || echo mount-blocked; ` +
		`ping -c1 -W1 127.0.0.1 >/dev/null 2>&1; echo end`
	args, _ := json.Marshal([]string{"/bin/busybox", "sh", "-c", script})
	out := child(t, "exec", p, string(args))
	for _, want := range []string{"start", "ls-ok", "Seccomp:\t2", "0", "sha-ok", "sleep-ok", "unshare-blocked", "mount-blocked", "end"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in output:\n%s", want, out)
		}
	}
}

// BenchmarkSyscallUnderFilter measures what a filter adds to a cheap
// syscall, in a child that loads it: none, the default profile, and the
// default profile with every syscall allowed unconditionally (a long flat
// list).
func BenchmarkSyscallUnderFilter(b *testing.B) {
	long := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	for name := range amd64Syscalls {
		long.Syscalls = append(long.Syscalls, specs.LinuxSyscall{Names: []string{name}, Action: specs.ActAllow})
	}
	for _, bc := range []struct {
		name string
		p    *specs.LinuxSeccomp
	}{{"none", &specs.LinuxSeccomp{}}, {"default", RuntimeDefault()}, {"all-allowed", long}} {
		b.Run(bc.name, func(b *testing.B) {
			js, err := json.Marshal(bc.p)
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), childEnv+"=bench", profileEnv+"="+string(js), dirEnv+"="+strconv.Itoa(b.N))
			out, err := cmd.Output()
			if err != nil {
				b.Fatal(err)
			}
			ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			if err != nil {
				b.Fatalf("child said %q", out)
			}
			b.ReportMetric(ns/float64(b.N), "ns/syscall")
		})
	}
}
