package caps

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// The child role: the test binary re-executed with childEnv set applies the
// capabilities given in the environment to its locked main thread and then
// either prints that thread's sets or execs a program, so the test process
// itself keeps every capability.
const (
	childEnv = "CAPS_TEST_CHILD"
	uidEnv   = "CAPS_TEST_UID"
	execEnv  = "CAPS_TEST_EXEC"
)

func init() {
	if os.Getenv(childEnv) != "" {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		runChild(spec)
		return
	}
	os.Exit(m.Run())
}

func runChild(spec string) {
	var c specs.LinuxCapabilities
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		os.Exit(2)
	}
	var setUser func() error
	if u := os.Getenv(uidEnv); u != "" {
		id, _ := strconv.Atoi(u)
		// Raw syscalls change only this thread, as a container init does
		// right before exec.
		setUser = func() error {
			if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
				return e
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(id), uintptr(id), uintptr(id)); e != 0 {
				return e
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(id), uintptr(id), uintptr(id)); e != 0 {
				return e
			}
			return nil
		}
	}
	if err := Apply(&c, setUser); err != nil {
		fmt.Println("error:", err)
		os.Exit(0)
	}
	if argv := os.Getenv(execEnv); argv != "" {
		args := strings.Fields(argv)
		err := unix.Exec(args[0], args, []string{})
		fmt.Fprintln(os.Stderr, "exec:", err)
		os.Exit(2)
	}
	f, err := os.Open("/proc/thread-self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), []byte("Cap")) || bytes.HasPrefix(sc.Bytes(), []byte("Uid")) {
			fmt.Println(sc.Text())
		}
	}
}

// child runs the test binary in the child role and returns what it printed.
func child(t *testing.T, c *specs.LinuxCapabilities, uid string, execArgs string) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+string(b), uidEnv+"="+uid, execEnv+"="+execArgs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v; stderr: %s", err, stderr.String())
	}
	return string(out)
}

// parseStatus reads the Cap* lines of a /proc status file into masks.
func parseStatus(t *testing.T, out string) map[string]uint64 {
	t.Helper()
	sets := map[string]uint64{}
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(k, "Cap") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		sets[k] = n
	}
	if len(sets) != 5 {
		t.Fatalf("expected 5 capability sets in %q", out)
	}
	return sets
}

func mustMask(t *testing.T, names ...string) uint64 {
	t.Helper()
	m, err := Mask(names)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantSets(t *testing.T, got map[string]uint64, want map[string]uint64) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %#x, want %#x", k, got[k], w)
		}
	}
}

func TestNames(t *testing.T) {
	for _, n := range All() {
		c, err := FromName(n)
		if err != nil {
			t.Fatal(err)
		}
		if c.String() != n {
			t.Errorf("%d: String() = %q, want %q", c, c.String(), n)
		}
	}
	if c, _ := FromName("CAP_NET_RAW"); c != unix.CAP_NET_RAW {
		t.Errorf("CAP_NET_RAW = %d", c)
	}
	if c, _ := FromName("CAP_CHECKPOINT_RESTORE"); c != unix.CAP_CHECKPOINT_RESTORE {
		t.Errorf("CAP_CHECKPOINT_RESTORE = %d", c)
	}
	if got := Cap(63).String(); got != "CAP_63" {
		t.Errorf("Cap(63) = %q", got)
	}
	for _, bad := range []string{"NET_RAW", "cap_net_raw", "CAP_BOGUS", ""} {
		_, err := Parse([]string{"CAP_KILL", bad})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("Parse(%q) = %v, want ErrInvalidArgument naming it", bad, err)
		}
	}
}

func TestDefaultSetAndAll(t *testing.T) {
	d, err := Parse(DefaultSet())
	if err != nil || len(d) != 14 {
		t.Fatalf("DefaultSet: %d caps, %v", len(d), err)
	}
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		t.Fatal(err)
	}
	last, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if n := len(All()); n != last+1 {
		t.Errorf("All() has %d caps, kernel knows %d", n, last+1)
	}
}

func TestApplyRejectsUnknownBeforeChanging(t *testing.T) {
	called := false
	err := Apply(&specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Ambient: []string{"CAP_NOPE"}},
		func() error { called = true; return nil })
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "CAP_NOPE") {
		t.Fatalf("Apply = %v", err)
	}
	if called {
		t.Error("setUser called despite the bad name")
	}
	// The test process must still hold its full bounding set.
	out, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	if got := parseStatus(t, string(out))["CapBnd"]; got&(1<<unix.CAP_SYS_ADMIN) == 0 {
		t.Errorf("bounding set lost CAP_SYS_ADMIN: %#x", got)
	}
}

func TestApplyRootDefaultSet(t *testing.T) {
	roottest.Require(t)
	def := DefaultSet()
	m := mustMask(t, def...)
	c := &specs.LinuxCapabilities{Bounding: def, Effective: def, Permitted: def}
	wantSets(t, parseStatus(t, child(t, c, "", "")),
		map[string]uint64{"CapBnd": m, "CapEff": m, "CapPrm": m, "CapInh": 0, "CapAmb": 0})

	// After exec as root the kernel recomputes the sets from the bounding
	// set: the program must still see exactly the default set.
	wantSets(t, parseStatus(t, child(t, c, "", "/bin/busybox cat /proc/self/status")),
		map[string]uint64{"CapBnd": m, "CapEff": m, "CapPrm": m, "CapInh": 0, "CapAmb": 0})
}

func TestApplyNonRootKeepsAmbient(t *testing.T) {
	roottest.Require(t)
	def := DefaultSet()
	keep := []string{"CAP_NET_BIND_SERVICE", "CAP_KILL"}
	c := &specs.LinuxCapabilities{Bounding: def, Effective: keep, Permitted: keep, Inheritable: keep, Ambient: keep}
	m := mustMask(t, keep...)
	out := child(t, c, "1000", "/bin/busybox cat /proc/self/status")
	if !strings.Contains(out, "Uid:\t1000\t1000\t1000\t1000") {
		t.Errorf("not running as uid 1000:\n%s", out)
	}
	wantSets(t, parseStatus(t, out),
		map[string]uint64{"CapBnd": mustMask(t, def...), "CapEff": m, "CapPrm": m, "CapInh": m, "CapAmb": m})

	// Without ambient, a non-root program loses everything at exec.
	c.Ambient = nil
	wantSets(t, parseStatus(t, child(t, c, "1000", "/bin/busybox cat /proc/self/status")),
		map[string]uint64{"CapEff": 0, "CapPrm": 0, "CapAmb": 0, "CapInh": m})
}

func TestApplyAmbientNeedsInheritable(t *testing.T) {
	roottest.Require(t)
	c := &specs.LinuxCapabilities{
		Bounding: DefaultSet(), Effective: []string{"CAP_KILL"}, Permitted: []string{"CAP_KILL"},
		Ambient: []string{"CAP_KILL"},
	}
	out := child(t, c, "", "")
	if !strings.HasPrefix(out, "error: raise ambient CAP_KILL") {
		t.Errorf("want ambient error, got %q", out)
	}
}

func TestApplyNilOnlySetsUser(t *testing.T) {
	called := false
	if err := Apply(nil, func() error { called = true; return nil }); err != nil || !called {
		t.Fatalf("Apply(nil) = %v, setUser called %v", err, called)
	}
}

func TestApplyPrivilegedWithHeld(t *testing.T) {
	roottest.Require(t)
	held, err := Held()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	own := parseStatus(t, string(out))["CapPrm"]
	if m := mustMask(t, held...); m != own {
		t.Fatalf("Held() = %#x, own permitted set %#x", m, own)
	}
	c := &specs.LinuxCapabilities{Bounding: held, Effective: held, Permitted: held, Inheritable: held, Ambient: held}
	wantSets(t, parseStatus(t, child(t, c, "", "")),
		map[string]uint64{"CapBnd": own, "CapEff": own, "CapPrm": own, "CapInh": own, "CapAmb": own})
}
