package container

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/roottest"
	"github.com/cri-mini/cri-mini/internal/treetest"
)

// TestRootfsSymlinkEscapes is R18: an image whose mount targets are
// symlinks out of the rootfs (absolute and "../.." ones) gets its mounts
// inside the rootfs; nothing outside is created, written or mounted over.
func TestRootfsSymlinkEscapes(t *testing.T) {
	roottest.Require(t)
	rt := newTestRuntime(t)
	base := t.TempDir()
	rootfs := filepath.Join(base, "a", "rootfs")
	if err := os.MkdirAll(filepath.Dir(rootfs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(busyboxRootfs(t), rootfs); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(base, "outside") // what "../../../outside" from rootfs/mnt names
	sentinel := t.TempDir()
	for p, data := range map[string]string{"hosts": "host's own hosts\n", "keep/file": "keep\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(sentinel, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sentinel, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"proc":            filepath.Join(sentinel, "proc"),                            // absolute, missing
		"dev":             "../../../../../../../.." + filepath.Join(sentinel, "dev"), // relative, missing
		"sys":             sentinel + "/keep",                                         // absolute, existing
		"etc/hosts":       filepath.Join(sentinel, "hosts"),                           // a file
		"etc/hostname":    "../../../../../../../.." + filepath.Join(sentinel, "hostname"),
		"mnt":             "../../../outside", // a bind target's parent
		"etc/resolv.conf": "/../../../" + sentinel + "/resolv.conf",
	}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(rootfs, l)); err != nil {
			t.Fatal(err)
		}
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "in-bind"), []byte("bound\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := treetest.Describe(t, sentinel)
	beforeOutside := treetest.Describe(t, outside)
	b := rt.bundle(t, "escape", rootfs, "sh", "-c",
		"cat /proc/1/cmdline; echo; cat /etc/hosts; cat /mnt/b/in-bind; echo x > /mnt/b/written; ls /dev/null; grep -c cgroup /proc/self/mountinfo >/dev/null && echo cgroups")
	b.Spec.Mounts = []specs.Mount{{Destination: "/mnt/b", Type: "bind", Source: src, Options: []string{"rbind", "rw"}}}
	st, out, errOut := rt.run(t, "escape", b)
	// Contained: every mount worked, inside the rootfs.
	want := "sh\x00-c\x00" + b.Spec.Process.Args[2] + "\x00\n127.0.0.1\tlocalhost ctr-escape\n::1\tlocalhost ip6-localhost ip6-loopback\nbound\n/dev/null\ncgroups\n"
	if st.ExitCode != 0 || out != want {
		t.Errorf("exit %d, stdout %q (stderr %q), want %q", st.ExitCode, out, errOut, want)
	}
	for _, p := range []string{filepath.Join(sentinel, "proc"), filepath.Join(sentinel, "dev"), filepath.Join(sentinel, "hostname"), filepath.Join(sentinel, "resolv.conf"), "outside/b"} {
		if _, err := os.Lstat(filepath.Join(rootfs, p)); err != nil {
			t.Errorf("%s was not created inside the rootfs: %v", p, err)
		}
	}
	rt.deleteAndCheck(t, "escape")
	if after := treetest.Describe(t, sentinel); after != before {
		t.Errorf("host directory changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := treetest.Describe(t, outside); after != beforeOutside {
		t.Errorf("%s changed:\nbefore:\n%s\nafter:\n%s", outside, beforeOutside, after)
	}
	for _, m := range hostMountPoints(t) {
		if strings.HasPrefix(m, base) || strings.HasPrefix(m, sentinel) {
			t.Errorf("host mount %s", m)
		}
	}
}

// TestRootfsSymlinkLoop: a mount target that cannot be resolved fails
// create cleanly, leaving nothing behind.
func TestRootfsSymlinkLoop(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	if err := os.Symlink("../proc", filepath.Join(rootfs, "proc")); err != nil {
		t.Fatal(err)
	}
	b := rt.bundle(t, "loop", rootfs, "true")
	err := rt.Create(context.Background(), "loop", b)
	if err == nil || !strings.Contains(err.Error(), "/proc") {
		t.Fatalf("create with /proc a symlink loop: %v, want an error naming /proc", err)
	}
	assertGone(t, filepath.Join(rt.StateDir, "loop"), config{Spec: b.Spec, CgroupPath: b.CgroupPath})
}

// TestInheritedDescriptorsStayOut attacks with a descriptor the runtime's
// caller holds without close-on-exec, on a host directory with a secret
// (the CVE-2024-21626 class): neither the waiting init, nor the application,
// nor an exec'd process has it or can read the secret through it.
func TestInheritedDescriptorsStayOut(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	secretDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(secretDir, "secret"), []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err := unix.Open(secretDir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Numbered above what any child lays out for itself, so that it would
	// be passed on as is. F_DUPFD, unlike F_DUPFD_CLOEXEC, leaves it
	// inheritable.
	fd, err := unix.FcntlInt(uintptr(dir), unix.F_DUPFD, 50)
	unix.Close(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	probe := fmt.Sprintf("ls /proc/self/fd; cat /proc/self/fd/%d/secret 2>/dev/null || echo unreadable", fd)
	// What ls lists: stdio and the directory it reads.
	const want = "0\n1\n2\n3\nunreadable\n"

	b := rt.bundle(t, "fds", rootfs, "sh", "-c", probe)
	rt.create(t, "fds", b)
	st, err := rt.State("fds")
	if err != nil {
		t.Fatal(err)
	}
	// The supervisor, outside every container, got it from us (os/exec)
	// but passes it on no further.
	if leaked := descriptorsOn(t, st.Pid, secretDir); len(leaked) > 0 {
		t.Errorf("the waiting init holds descriptors %v on the host directory", leaked)
	}
	if _, out, errOut := rt.start(t, "fds", b); out != want {
		t.Errorf("the application sees:\n%s%s\nwant:\n%s", out, errOut, want)
	}

	rt.startRunning(t, "fds-exec", rt.bundle(t, "fds-exec", busyboxRootfs(t), "sleep", "600"))
	if code, out := rt.execOut(t, "fds-exec", "sh", "-c", probe); code != 0 || out != want {
		t.Errorf("an exec'd process sees (exit %d):\n%s\nwant:\n%s", code, out, want)
	}
}

// descriptorsOn lists the descriptors of process pid open on path.
func descriptorsOn(t *testing.T, pid int, path string) []string {
	t.Helper()
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fds {
		if target, err := os.Readlink(f); err == nil && target == path {
			out = append(out, filepath.Base(f))
		}
	}
	return out
}

// TestHelpersRunFromSealedCopy attacks the runtime's binary from a container
// (CVE-2019-5736): with CAP_SYS_PTRACE, a container sees the init of a
// created sibling in its pid namespace, root with every capability and
// running the runtime's code. Its /proc/PID/exe is a sealed memfd shared
// with the supervisors, not the host file: the container can neither reach
// the host binary through it nor write it.
func TestHelpersRunFromSealedCopy(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	before := fileSum(t, self)
	wb := rt.bundle(t, "watcher", rootfs, "sleep", "999")
	c := wb.Spec.Process.Capabilities
	c.Bounding = append(c.Bounding, "CAP_SYS_PTRACE")
	c.Effective, c.Permitted = c.Bounding, c.Bounding
	watcher := rt.startRunning(t, "watcher", wb)
	sb := rt.bundle(t, "sibling", rootfs, "true")
	for i, ns := range sb.Spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			sb.Spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/pid", watcher.Pid)
		}
	}
	rt.create(t, "sibling", sb)
	// As an attacker would: every process in view that does not run the
	// image's busybox, its executable and whether it can be written.
	code, out := rt.execOut(t, "watcher", "sh", "-c", `for p in /proc/[0-9]*; do
		e=$(readlink $p/exe) || continue
		[ "$e" = /bin/busybox ] && continue
		echo "$e" $(stat -L -c %d:%i $p/exe) $( (echo evil >> $p/exe) 2>/dev/null && echo written || echo refused)
	done`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 1 {
		t.Fatalf("probe from the container: exit %d, output %q, want the sibling's init alone", code, out)
	}
	f := strings.Fields(lines[0])
	if len(f) < 3 || !strings.HasPrefix(f[0], "/memfd:") {
		t.Fatalf("the sibling's init: %q, want a memfd", lines[0])
	}
	id, written := f[len(f)-2], f[len(f)-1]
	if host := fileID(t, self); id == host {
		t.Errorf("the sibling's init runs the host binary itself (%s)", id)
	}
	if written != "refused" {
		t.Errorf("writing the sibling's /proc/PID/exe: %s", written)
	}
	// One copy serves every helper: the supervisors run the same memfd.
	for _, ctr := range []string{"watcher", "sibling"} {
		if sup := fileID(t, fmt.Sprintf("/proc/%d/exe", supervisorPid(t, rt, ctr))); sup != id {
			t.Errorf("supervisor of %s runs %s, the sibling's init %s: want one shared copy", ctr, sup, id)
		}
	}
	if after := fileSum(t, self); after != before {
		t.Errorf("the runtime's binary changed")
	}
}

// supervisorPid is the pid of container id's supervisor.
func supervisorPid(t *testing.T, rt *testRuntime, id string) int {
	t.Helper()
	sup, err := readProcess(filepath.Join(rt.StateDir, id), supFile)
	if err != nil {
		t.Fatal(err)
	}
	return sup.Pid
}

// fileID is the device and inode of the file at path, as busybox's
// stat -c %d:%i prints them.
func fileID(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func fileSum(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}
