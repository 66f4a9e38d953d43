package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/nstest"
	"github.com/cri-mini/cri-mini/internal/roottest"
	"github.com/cri-mini/cri-mini/internal/treetest"
)

// usernsHost is the first host id of the tests' user namespaces: kubelet's
// shape, far above this machine's users.
const usernsHost = 0x10000 * 3100

// podNamespaces makes what a pod with a user namespace of its own has (as
// package sandbox makes it): a user namespace mapping 65536 ids from host,
// and network, uts and ipc namespaces owned by it, pinned in a directory
// of the test. It returns the pins by type.
func podNamespaces(t testing.TB, host uint32) map[specs.LinuxNamespaceType]string {
	t.Helper()
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(host), Size: 65536}}
	holder := exec.Command("/bin/busybox", "sleep", "600")
	holder.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWNET | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
		UidMappings: m, GidMappings: m, GidMappingsEnableSetgroups: true,
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	dir := t.TempDir()
	pins := map[specs.LinuxNamespaceType]string{}
	for t2, kind := range map[specs.LinuxNamespaceType]string{specs.UserNamespace: "user", specs.NetworkNamespace: "net",
		specs.UTSNamespace: "uts", specs.IPCNamespace: "ipc"} {
		pin := filepath.Join(dir, kind)
		if err := nspin.PinFile(fmt.Sprintf("/proc/%d/ns/%s", holder.Process.Pid, kind), pin); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nspin.UnpinFile(pin) })
		pins[t2] = pin
	}
	return pins
}

// usernsBundle is rt.bundle's container joining the pod namespaces pins.
func (rt *testRuntime) usernsBundle(t testing.TB, id, rootfs string, pins map[specs.LinuxNamespaceType]string, host uint32, args ...string) Bundle {
	t.Helper()
	b := rt.bundle(t, id, rootfs, args...)
	l := b.Spec.Linux
	l.Namespaces = []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.CgroupNamespace}}
	for typ, pin := range pins {
		l.Namespaces = append(l.Namespaces, specs.LinuxNamespace{Type: typ, Path: pin})
	}
	l.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: host, Size: 65536}}
	l.GIDMappings = l.UIDMappings
	b.Spec.Hostname = ""
	return b
}

// usernsRootfs is busyboxRootfs owned by the pod's root, as the image
// store's root file system of such a container is (its idmapped layers
// under a writable layer of the mapped root's).
func usernsRootfs(t testing.TB, host uint32) string {
	t.Helper()
	root := busyboxRootfs(t)
	err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(host), int(host))
	})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestUserNamespaceContainer: a container joining its pod's user namespace
// is root inside and the mapped user outside; its own namespaces are owned
// by the user namespace; what it writes to a plain bind belongs to the
// mapped root on the host, to an idmapped bind as the mapping says; the
// recipe's /dev, /proc, /sys, cgroups, mqueue and shm work; exec joins the
// user namespace first.
func TestUserNamespaceContainer(t *testing.T) {
	roottest.Require(t)
	rt := newTestRuntime(t)
	pins := podNamespaces(t, usernsHost)
	rootfs := usernsRootfs(t, usernsHost)
	plain, mapped := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(mapped, "hostfile"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{plain, mapped} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	// The container's own cgroup, through its cgroup namespace.
	memLimit := ctrCgroupFile(t, "memory", "memory.limit_in_bytes")
	if unifiedHost(t) {
		memLimit = ctrCgroupFile(t, "memory", "memory.max")
	}
	b := rt.usernsBundle(t, "userns", rootfs, pins, usernsHost, "sh", "-c", `
echo "== id"; id -u; id -g
echo "== uid_map"; cat /proc/self/uid_map
echo "== gid_map"; cat /proc/self/gid_map
echo "== hostfile"; stat -c %u:%g /mapped/hostfile
touch /plain/p /mapped/i /tmp/w
echo "== devices"; echo x > /dev/null && head -c 4 /dev/urandom | wc -c
echo "== sys"; cat /sys/class/net/lo/mtu
echo "== cgroup"; ls `+memLimit+`
echo "== mqueue"; touch /dev/mqueue/q && echo ok
echo "== shm"; touch /dev/shm/s && echo ok
echo "== ro sys"; touch /sys/x 2>&1 | grep -c Read-only
exec sleep 600`)
	l := b.Spec.Linux
	b.Spec.Mounts = append(b.Spec.Mounts,
		specs.Mount{Destination: "/plain", Type: "bind", Source: plain, Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/mapped", Type: "bind", Source: mapped, Options: []string{"rbind", "rw"},
			UIDMappings: l.UIDMappings, GIDMappings: l.GIDMappings})
	st := rt.startRunning(t, "userns", b)

	waitFor(t, func() bool {
		out, _ := readCRILog(t, b.LogPath)
		return strings.Contains(out, "== ro sys") && strings.HasSuffix(out, "\n1\n")
	})
	out, stderr := readCRILog(t, b.LogPath)
	want := map[string]string{
		"id": "0\n0", "uid_map": fmt.Sprintf("0 %d 65536", usernsHost), "gid_map": fmt.Sprintf("0 %d 65536", usernsHost),
		"hostfile": "0:0", "devices": "4", "sys": "65536", "cgroup": memLimit,
		"mqueue": "ok", "shm": "ok", "ro sys": "1",
	}
	for name, w := range want {
		if got := strings.Join(strings.Fields(section(out, name)), " "); got != strings.Join(strings.Fields(w), " ") {
			t.Errorf("%s: %q, want %q\nstdout:\n%s\nstderr:\n%s", name, got, w, out, stderr)
		}
	}
	root := fmt.Sprintf("%d:%d", usernsHost, usernsHost)
	for path, want := range map[string]string{
		filepath.Join(plain, "p"):      root,  // the container's root is the mapped user
		filepath.Join(mapped, "i"):     "0:0", // through the idmapped mount: the mapping undone
		filepath.Join(rootfs, "tmp/w"): root,
	} {
		if got := treetest.Owner(t, path); got != want {
			t.Errorf("%s owned by %s on the host, want %s", path, got, want)
		}
	}
	// On the host the init is the mapped user (/proc/PID belongs to a
	// process's effective ids), with capabilities only in the pod's user
	// namespace, which owns its other namespaces.
	proc := fmt.Sprintf("/proc/%d/", st.Pid)
	if got := treetest.Owner(t, proc); got != root {
		t.Errorf("init runs as %s on the host, want %s", got, root)
	}
	userns := nstest.Inode(t, pins[specs.UserNamespace])
	if !nstest.Same(t, proc+"ns/user", pins[specs.UserNamespace]) || userns == nstest.Inode(t, "/proc/self/ns/user") {
		t.Errorf("init in user namespace %s, want the pod's", nsOf(t, st.Pid, "user"))
	}
	for _, kind := range []string{"mnt", "pid", "cgroup", "net"} {
		if got := nstest.Owner(t, proc+"ns/"+kind); got != userns {
			t.Errorf("the container's %s namespace is owned by user namespace %d, want %d", kind, got, userns)
		}
	}

	// exec: in the user namespace (its uid_map is the pod's), root there.
	code, execOut := rt.execOut(t, "userns", "sh", "-c", "id -u; cat /proc/self/uid_map; touch /plain/e")
	if code != 0 || strings.Join(strings.Fields(execOut), " ") != fmt.Sprintf("0 0 %d 65536", usernsHost) {
		t.Errorf("exec: %d %q", code, execOut)
	}
	if got := treetest.Owner(t, filepath.Join(plain, "e")); got != root {
		t.Errorf("file of an exec owned by %s, want %s", got, root)
	}
	// A terminal from the container's devpts, made in the user namespace.
	var tty strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if code, err := rt.Exec(ctx, "userns", ExecOptions{Args: []string{"sh", "-c", "tty; stat -c %u:%g $(tty)"}, Tty: true, Stdout: &tty}); err != nil || code != 0 ||
		strings.Join(strings.Fields(tty.String()), " ") != "/dev/pts/0 0:5" {
		t.Errorf("exec with a tty: %d %v %q, want /dev/pts/0 of root and group tty", code, err, tty.String())
	}
}

// TestUserNamespaceContainerRefused: id mappings on a mount of a container
// without a user namespace, or other than its namespace's, and device nodes
// in a user namespace are InvalidArgument; an idmapped mount of a file
// system that cannot be idmapped is FailedPrecondition. Nothing is left.
func TestUserNamespaceContainerRefused(t *testing.T) {
	roottest.Require(t)
	rt := newTestRuntime(t)
	pins := podNamespaces(t, usernsHost)
	rootfs := usernsRootfs(t, usernsHost)
	other := []specs.LinuxIDMapping{{ContainerID: 0, HostID: usernsHost + 65536, Size: 65536}}
	for name, tc := range map[string]struct {
		modify func(*Bundle)
		kind   error
		want   string
	}{
		"mappings without a user namespace": {func(b *Bundle) {
			*b = rt.bundle(t, "refused", rootfs, "true")
			b.Spec.Mounts = []specs.Mount{{Destination: "/m", Type: "bind", Source: t.TempDir(), UIDMappings: other, GIDMappings: other}}
		}, errdefs.ErrInvalidArgument, "no user namespace"},
		"other mappings": {func(b *Bundle) {
			b.Spec.Mounts = []specs.Mount{{Destination: "/m", Type: "bind", Source: t.TempDir(), UIDMappings: other, GIDMappings: other}}
		}, errdefs.ErrInvalidArgument, "differ from the container's"},
		"a device node": {func(b *Bundle) {
			b.Spec.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229}}
		}, errdefs.ErrInvalidArgument, "cannot have device nodes made"},
		"no mappings": {func(b *Bundle) { b.Spec.Linux.UIDMappings = nil }, errdefs.ErrInvalidArgument, "needs its uid and gid mappings"},
		"proc cannot be idmapped": {func(b *Bundle) {
			l := b.Spec.Linux
			b.Spec.Mounts = []specs.Mount{{Destination: "/m", Type: "bind", Source: "/proc/sys", UIDMappings: l.UIDMappings, GIDMappings: l.GIDMappings}}
		}, errdefs.ErrFailedPrecondition, "cannot be idmapped"},
	} {
		t.Run(name, func(t *testing.T) {
			b := rt.usernsBundle(t, "refused", rootfs, pins, usernsHost, "true")
			tc.modify(&b)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := rt.Create(ctx, "refused", b)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create: %v, want %v saying %q", err, tc.kind, tc.want)
			}
			if _, err := os.Stat(filepath.Join(rt.StateDir, "refused")); !os.IsNotExist(err) {
				t.Errorf("state left after a refused create: %v", err)
			}
		})
	}
}

// escapeScript tries, from the host's mount, pid, network and uts
// namespaces, what an escaped container process would: change a host
// file, its owner, read a root-only file, mount, signal a host process,
// make a device node, set the hostname, a sysctl (to the value it has) and
// add a network link. Each prints its name and "ok" or "denied".
const escapeScript = `
try() { name=$1; shift; if "$@" 2>/dev/null; then echo "$name ok"; else echo "$name denied"; fi; }
try write sh -c 'echo x >> "$DIR/hostfile"'
try chown chown 0:1 "$DIR/hostfile"
try read cat "$DIR/secret"
try mount mount -t tmpfs tmpfs "$DIR/mnt"
try signal kill -0 "$VICTIM"
try mknod mknod "$DIR/null" c 1 3
try hostname hostname "$(hostname)"
try sysctl sh -c 'cat /proc/sys/vm/overcommit_memory > /proc/sys/vm/overcommit_memory'
try link /usr/sbin/ip link add "$LINK" type bridge
`

// TestUserNamespaceEscapeHoldsNothing: a process with exactly the
// credentials of a user-namespaced container's root (its user namespace,
// root there with every capability), put by the test into the host's other
// namespaces as if it had escaped, can do nothing to the host's resources.
// The same script as the host's root does all of it: the harness sees an
// escape that works.
func TestUserNamespaceEscapeHoldsNothing(t *testing.T) {
	roottest.Require(t)
	rt := newTestRuntime(t)
	pins := podNamespaces(t, usernsHost)
	b := rt.usernsBundle(t, "escape", usernsRootfs(t, usernsHost), pins, usernsHost, "sleep", "600")
	st := rt.startRunning(t, "escape", b)

	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"hostfile": 0o644, "secret": 0o600} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("host\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "mnt"), 0o755); err != nil {
		t.Fatal(err)
	}
	victim := exec.Command("/bin/busybox", "sleep", "600")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })
	link := fmt.Sprintf("cmesc%d", os.Getpid()%100000)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", link).Run()
		_ = unix.Unmount(filepath.Join(dir, "mnt"), unix.MNT_DETACH)
	})
	run := func(argv ...string) map[string]string {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin", "DIR=" + dir, "VICTIM=" + fmt.Sprint(victim.Process.Pid), "LINK=" + link}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
		results := map[string]string{}
		for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) == 2 {
				results[f[0]] = f[1]
			}
		}
		return results
	}

	// The container's root in the host's namespaces: util-linux nsenter
	// joins the container's user namespace only and becomes root there.
	escaped := run("nsenter", fmt.Sprintf("--user=/proc/%d/ns/user", st.Pid), "--", "/bin/busybox", "sh", "-c",
		"grep CapEff /proc/self/status; "+escapeScript)
	if escaped["CapEff:"] != "000001ffffffffff" {
		t.Errorf("the escaped process has CapEff %q, want every capability (in its user namespace)", escaped["CapEff:"])
	}
	host := run("/bin/busybox", "sh", "-c", escapeScript)
	for _, op := range []string{"write", "chown", "read", "mount", "signal", "mknod", "hostname", "sysctl", "link"} {
		if escaped[op] != "denied" {
			t.Errorf("escaped container root: %s %q, want denied", op, escaped[op])
		}
		if host[op] != "ok" {
			t.Errorf("the host's root: %s %q, want ok (the harness must see a working escape)", op, host[op])
		}
	}
}
