package nsexec_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/nsexec"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/nstest"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// TestStartJoinsAndReturns: the child is born in the joined network and uts
// namespaces, and no thread of ours stays in them afterwards (a thread left
// there would keep the namespace alive after it is unpinned).
func TestStartJoinsAndReturns(t *testing.T) {
	roottest.Require(t)
	dir := filepath.Join(t.TempDir(), "ns")
	pins, err := nspin.Pin(dir, []nspin.Kind{nspin.Net, nspin.UTS}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nspin.Unpin(dir, nspin.Net, nspin.UTS); err != nil {
			t.Error(err)
		}
	})
	cmd := exec.Command("/bin/busybox", "sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC}
	err = nsexec.Start(cmd, map[specs.LinuxNamespaceType]string{
		specs.NetworkNamespace: pins[nspin.Net], specs.UTSNamespace: pins[nspin.UTS],
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	child := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/"
	for proc, pin := range map[string]string{"net": pins[nspin.Net], "uts": pins[nspin.UTS]} {
		if !nstest.Same(t, child+proc, pin) {
			t.Errorf("child's %s namespace is not the joined one", proc)
		}
	}
	if nstest.Same(t, child+"ipc", "/proc/self/ns/ipc") {
		t.Errorf("child did not get the new ipc namespace of its clone flags")
	}
	tasks, err := filepath.Glob("/proc/self/task/*/ns")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		for _, proc := range []string{"net", "uts"} {
			if !nstest.Same(t, task+"/"+proc, "/proc/self/ns/"+proc) {
				t.Errorf("thread %s stayed in a joined %s namespace", task, proc)
			}
		}
	}
}

func TestStartRefusesWhatAThreadCannotJoin(t *testing.T) {
	cmd := exec.Command("/bin/true")
	err := nsexec.Start(cmd, map[specs.LinuxNamespaceType]string{specs.MountNamespace: "/proc/1/ns/mnt"})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || cmd.Process != nil {
		t.Errorf("joining a mount namespace from a thread: %v (started: %v), want InvalidArgument and nothing started", err, cmd.Process != nil)
	}
	err = nsexec.Start(cmd, map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "/nonexistent/net"})
	if !errors.Is(err, errdefs.ErrNotFound) || cmd.Process != nil {
		t.Errorf("joining a missing namespace: %v, want NotFound and nothing started", err)
	}
}

// TestTable: every name's type has the clone flag the kernel itself gives
// the namespace (NS_GET_NSTYPE); mount and user namespaces are not there.
func TestTable(t *testing.T) {
	for _, name := range []string{"pid", "net", "uts", "ipc", "cgroup"} {
		typ, terr := nsexec.TypeOf(name)
		flag, ferr := nsexec.CloneFlag(typ)
		if err := errors.Join(terr, ferr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		f, err := os.Open("/proc/self/ns/" + name)
		if err != nil {
			t.Fatal(err)
		}
		kernel, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if flag != kernel {
			t.Errorf("%s (%s): flag %#x, the kernel says %#x", name, typ, flag, kernel)
		}
	}
	for _, name := range []string{"mnt", "user", "time", "network"} {
		if typ, err := nsexec.TypeOf(name); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("TypeOf(%q) = %q, %v: want InvalidArgument", name, typ, err)
		}
	}
	for _, typ := range []specs.LinuxNamespaceType{specs.MountNamespace, specs.UserNamespace, specs.TimeNamespace} {
		if _, err := nsexec.CloneFlag(typ); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("CloneFlag(%s): %v, want InvalidArgument", typ, err)
		}
	}
}
