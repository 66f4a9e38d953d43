package cgroups

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// testPrefix starts every cgroup the tests make, so the leak check can
// find them in any hierarchy.
const testPrefix = "criminitest"

func TestMain(m *testing.M) {
	code := m.Run()
	// Leak check: no test cgroup may remain in any hierarchy.
	leaks, _ := filepath.Glob(filepath.Join(DefaultRoot, "*", testPrefix+"*"))
	unified, _ := filepath.Glob(filepath.Join(DefaultRoot, testPrefix+"*"))
	// Only this process's: another test binary running meanwhile (go test
	// runs packages in parallel) has its own, still in use.
	ours := regexp.MustCompile(fmt.Sprintf(`-%d([-.]|$)`, os.Getpid()))
	for _, l := range append(leaks, unified...) {
		if !ours.MatchString(filepath.Base(l)) {
			continue
		}
		fmt.Fprintln(os.Stderr, "leaked cgroup:", l)
		_ = removeTree(l)
		code = 1
	}
	units, err := leakedUnits()
	if err != nil || len(units) > 0 {
		fmt.Fprintln(os.Stderr, "leaked systemd units:", units, err)
		code = 1
	}
	os.Exit(code)
}

func testPath(t *testing.T) string {
	return fmt.Sprintf("/%s-%d-%s/ctr", testPrefix, os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
}

func TestCgroupfsPath(t *testing.T) {
	for in, want := range map[string]string{
		"/kubepods/burstable/pod1/ctr": "/kubepods/burstable/pod1/ctr",
		"kubepods/pod1":                "/kubepods/pod1",
		"/a//b/./c/":                   "/a/b/c",
	} {
		if got, err := cgroupfsPath(in); err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "/", "/a/../../etc", "..", "a/..", "/x\x00"} {
		if _, err := cgroupfsPath(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: got %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestSystemdPath(t *testing.T) {
	for in, want := range map[string]string{
		"kubepods-burstable-pod123.slice:cri-mini:ctr": "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice/cri-mini-ctr.scope",
		"kubepods.slice:cri-mini:abc":                  "/kubepods.slice/cri-mini-abc.scope",
		"kubepods-besteffort-pod9.slice":               "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice",
		"-.slice:cri-mini:x":                           "/cri-mini-x.scope",
		"system.slice:crio:y":                          "/system.slice/crio-y.scope",
		"kubepods.slice::kubepods-pod1.slice":          "/kubepods.slice/kubepods-pod1.slice",
		"/kubepods.slice/kubepods-pod2.slice:p:n":      "/kubepods.slice/kubepods-pod2.slice/p-n.scope",
	} {
		if got, err := systemdPath(in); err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "kubepods", "a--b.slice:p:n", "-a.slice:p:n", "a.slice:p",
		"a.slice:p:n/../../x", "a.slice:p:", "-.slice", "a.slice:p:n:x"} {
		if _, err := systemdPath(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: got %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestSharesWeight(t *testing.T) {
	for shares, weight := range map[uint64]uint64{0: 0, 2: 1, 1024: 39, 262144: 10000, 1: 1, 1 << 30: 10000} {
		if got := SharesToWeight(shares); got != weight {
			t.Errorf("SharesToWeight(%d) = %d, want %d", shares, got, weight)
		}
	}
	for _, w := range []uint64{1, 39, 100, 10000} {
		if got := SharesToWeight(WeightToShares(w)); got != w {
			t.Errorf("weight %d round-trips to %d", w, got)
		}
	}
}

func TestOpenOptions(t *testing.T) {
	if _, err := Open(Options{Driver: "upstart"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad driver: %v", err)
	}
	if _, err := Open(Options{Version: 3}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad version: %v", err)
	}
	if _, err := Open(Options{Version: 1, Root: t.TempDir()}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("v1 on an empty dir: %v", err)
	}
	m, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat(filepath.Join(DefaultRoot, "cgroup.controllers"))
	if want := map[bool]int{true: 2, false: 1}[statErr == nil]; m.Version() != want {
		t.Errorf("detected v%d, want v%d", m.Version(), want)
	}
}

// held is a busybox shell in a cgroup that waits for a line on stdin
// before running its script, so the script runs entirely inside.
type held struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout strings.Builder
	stderr strings.Builder
}

func startHeld(t *testing.T, m Manager, path, script string) *held {
	t.Helper()
	h := &held{cmd: exec.Command("/bin/busybox", "sh", "-c", "read x; "+script)}
	h.cmd.Stdout, h.cmd.Stderr = &h.stdout, &h.stderr
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.cmd.Process.Kill(); _ = h.cmd.Wait() })
	if err := m.Apply(path, h.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *held) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(h.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// signaled reports the signal that ended the process, if any.
func signaled(err error) syscall.Signal {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal()
		}
	}
	return 0
}

func ptr[T any](v T) *T { return &v }

func mustRead(t *testing.T, dir, file string) string {
	t.Helper()
	s, err := readFile(dir, file)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzPaths: whatever a request carries, a converted path is absolute,
// clean, not the root, and has no way up.
func FuzzPaths(f *testing.F) {
	for _, s := range []string{"/kubepods/pod1/ctr", "kubepods-burstable-pod1.slice:cri-mini:abc", "a.slice::b.slice", "../x", "-.slice:p:n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for _, conv := range []func(string) (string, error){cgroupfsPath, systemdPath} {
			p, err := conv(in)
			if err != nil {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("%q: error of the wrong kind: %v", in, err)
				}
				continue
			}
			if p == "/" || !strings.HasPrefix(p, "/") || filepath.Clean(p) != p || slices.Contains(strings.Split(p, "/"), "..") {
				t.Fatalf("%q converted to %q", in, p)
			}
		}
	})
}

func BenchmarkCreateDestroy(b *testing.B) {
	m, err := New("")
	if err != nil {
		b.Fatal(err)
	}
	r := &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Shares: ptr[uint64](512), Quota: ptr[int64](50000)},
		Memory: &specs.LinuxMemory{Limit: ptr[int64](64 << 20)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](100)},
	}
	path := fmt.Sprintf("/%s-bench-%d/ctr", testPrefix, os.Getpid())
	for b.Loop() {
		if err := m.Create(path, r); err != nil {
			b.Fatal(err)
		}
		if err := m.Destroy(path); err != nil {
			b.Fatal(err)
		}
	}
	if err := m.Destroy(path[:strings.LastIndex(path, "/")]); err != nil {
		b.Fatal(err)
	}
}

// TestGoneCgroups: a cgroup read while it is removed answers ENODEV, which
// a walk of its parent (a pod's, while its containers go) takes as gone,
// like ENOENT; other errors stay errors.
func TestGoneCgroups(t *testing.T) {
	for err, want := range map[error]bool{
		&os.PathError{Op: "read", Path: "cgroup.procs", Err: syscall.ENODEV}: true,
		&os.PathError{Op: "open", Path: "cgroup.procs", Err: syscall.ENOENT}: true,
		&os.PathError{Op: "open", Path: "cgroup.procs", Err: syscall.EACCES}: false,
	} {
		if got := gone(err); got != want {
			t.Errorf("gone(%v) = %v, want %v", err, got, want)
		}
	}
}
