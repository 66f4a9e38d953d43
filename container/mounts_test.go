package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// mountsScript prints, section by section, what TestMounts checks.
const mountsScript = `
echo "== mountinfo"; cat /proc/self/mountinfo
echo "== devices"; stat -c '%n %F %t,%T %a %u:%g' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty
echo "== links"; for l in fd stdin stdout stderr core ptmx; do echo "$l -> $(readlink /dev/$l)"; done
echo "== interrupts"; wc -c < /proc/interrupts; echo "rc=$?"
echo "== keys"; cat /proc/keys; echo "rc=$?"
echo "== firmware"; ls -A /sys/firmware | wc -l
echo "== procsys"; (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo written || echo refused
echo "== sysfs"; touch /sys/kernel/x 2>/dev/null && echo written || echo refused
echo "== rw"; echo data > /mnt/rw/from-ctr && echo written || echo refused
echo "== ro"; (echo data > /mnt/ro/from-ctr) 2>/dev/null && echo written || echo refused
echo "== rofile"; cat /etc/bound
echo "== hostname"; hostname; cat /etc/hostname
echo "== hosts"; cat /etc/hosts
echo "== tmpfs"; stat -c '%a' /mnt/tmp; grep ' /mnt/tmp ' /proc/self/mountinfo | grep -o 'size=[0-9]*k'
echo "== sysctl"; cat /proc/sys/net/ipv4/ip_unprivileged_port_start
echo "== specdevices"; stat -c '%n %F %t,%T %a %u:%g' /dev/fuse /dev/net/tun
echo "== end"
`

func TestMounts(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	host := t.TempDir()
	rw, ro := filepath.Join(host, "rw"), filepath.Join(host, "ro")
	for _, d := range []string{rw, ro} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(host, "file")
	if err := os.WriteFile(file, []byte("bound file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := rt.bundle(t, "mounts", rootfs, "sh", "-c", mountsScript)
	b.Spec.Mounts = []specs.Mount{
		{Destination: "/mnt/rw", Type: "bind", Source: rw, Options: []string{"rbind", "rw"}},
		{Destination: "/mnt/ro", Type: "bind", Source: ro, Options: []string{"rbind", "ro"}},
		{Destination: "/etc/bound", Type: "bind", Source: file, Options: []string{"bind", "ro"}},
		{Destination: "/mnt/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1024k", "mode=700"}},
	}
	fuseMode, uid, gid := os.FileMode(0o600), uint32(1000), uint32(5)
	b.Spec.Linux.Devices = []specs.LinuxDevice{
		{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &fuseMode, UID: &uid, GID: &gid},
		{Path: "/dev/net/tun", Type: "c", Major: 10, Minor: 200},
	}
	b.Spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_unprivileged_port_start": "80"}
	st, out, errOut := rt.run(t, "mounts", b)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d, stderr %q", st.ExitCode, errOut)
	}

	// v1: a tmpfs holding a mount of each hierarchy; v2: the cgroup2 tree.
	cgroupFS := "tmpfs"
	if unifiedHost(t) {
		cgroupFS = "cgroup2"
	}
	mounts := map[string]mountEntry{}
	for _, m := range parseMountinfo(t, section(out, "mountinfo")) {
		mounts[m.point] = m
	}
	for point, want := range map[string]struct{ fstype, opts, superOpts string }{
		"/":                {"", "rw", ""},
		"/proc":            {"proc", "rw,nosuid,nodev,noexec", ""},
		"/dev":             {"tmpfs", "rw,nosuid", "mode=755"},
		"/dev/pts":         {"devpts", "rw,nosuid,noexec", "ptmxmode=666"},
		"/dev/mqueue":      {"mqueue", "rw,nosuid,nodev,noexec", ""},
		"/dev/shm":         {"tmpfs", "rw,nosuid,nodev,noexec", "size=65536k"},
		"/sys":             {"sysfs", "ro,nosuid,nodev,noexec", ""},
		"/sys/fs/cgroup":   {cgroupFS, "ro,nosuid,nodev,noexec", ""},
		"/proc/sys":        {"proc", "ro,nosuid,nodev,noexec", ""},
		"/proc/interrupts": {"tmpfs", "rw,nosuid", ""}, // /dev/null bound over it
		"/sys/firmware":    {"tmpfs", "ro,nosuid,nodev,noexec", ""},
		"/mnt/rw":          {"", "rw", ""},
		"/mnt/ro":          {"", "ro", ""},
		"/etc/hosts":       {"", "rw", ""},
		"/etc/hostname":    {"", "rw", ""},
	} {
		m, ok := mounts[point]
		if !ok {
			t.Errorf("no mount at %s", point)
			continue
		}
		if want.fstype != "" && m.fstype != want.fstype {
			t.Errorf("%s: type %s, want %s", point, m.fstype, want.fstype)
		}
		if !strings.HasPrefix(m.opts, want.opts) {
			t.Errorf("%s: options %s, want %s", point, m.opts, want.opts)
		}
		if !strings.Contains(m.superOpts, want.superOpts) {
			t.Errorf("%s: super options %s, want %s", point, m.superOpts, want.superOpts)
		}
	}
	for _, h := range []string{"memory", "pids", "cpu,cpuacct"} {
		if m, ok := mounts["/sys/fs/cgroup/"+h]; ok && (m.fstype != "cgroup" || !strings.HasPrefix(m.opts, "ro,")) {
			t.Errorf("/sys/fs/cgroup/%s: %+v, want a read-only cgroup", h, m)
		}
	}
	// A hybrid host's cgroup2 stays out, as with runc: no cgroup2 below
	// a v1 container's /sys/fs/cgroup.
	for p, m := range mounts {
		if !unifiedHost(t) && m.fstype == "cgroup2" {
			t.Errorf("%s: a cgroup2 in a container of a v1 host", p)
		}
	}
	// R14: nothing of the host is visible.
	for p := range mounts {
		if strings.HasPrefix(p, host) || strings.HasPrefix(p, rootfs) || strings.HasPrefix(p, "/tmp") {
			t.Errorf("host path %s visible in the container", p)
		}
	}

	wantDevices := `/dev/null character special file 1,3 666 0:0
/dev/zero character special file 1,5 666 0:0
/dev/full character special file 1,7 666 0:0
/dev/random character special file 1,8 666 0:0
/dev/urandom character special file 1,9 666 0:0
/dev/tty character special file 5,0 666 0:0`
	if got := section(out, "devices"); got != wantDevices {
		t.Errorf("devices:\n%s\nwant:\n%s", got, wantDevices)
	}
	wantLinks := "fd -> /proc/self/fd\nstdin -> /proc/self/fd/0\nstdout -> /proc/self/fd/1\nstderr -> /proc/self/fd/2\ncore -> /proc/kcore\nptmx -> pts/ptmx"
	if got := section(out, "links"); got != wantLinks {
		t.Errorf("links:\n%s\nwant:\n%s", got, wantLinks)
	}
	for name, want := range map[string]string{
		"interrupts": "0\nrc=0",
		"keys":       "rc=0",
		"firmware":   "0",
		"procsys":    "refused",
		"sysfs":      "refused",
		"rw":         "written",
		"ro":         "refused",
		"rofile":     "bound file",
		"hostname":   "ctr-mounts\nctr-mounts",
		"hosts":      "127.0.0.1\tlocalhost ctr-mounts\n::1\tlocalhost ip6-localhost ip6-loopback",
	} {
		if got := section(out, name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if data, err := os.ReadFile(filepath.Join(rw, "from-ctr")); err != nil || string(data) != "data\n" {
		t.Errorf("rw bind: host file %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "from-ctr")); !os.IsNotExist(err) {
		t.Errorf("ro bind was written through: %v", err)
	}
}

// TestBindReadOnlyRecursion: "ro" on an rbind makes only the top mount
// read-only, as runc does; "rro" makes every submount read-only too.
func TestBindReadOnlyRecursion(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	src := t.TempDir()
	sub := filepath.Join(src, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(sub, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", sub, err)
		}
	})
	const script = `for f in /mnt/top/x /mnt/top/sub/x; do (echo 1 > $f) 2>/dev/null && echo "$f written" || echo "$f refused"; done`
	for _, tc := range []struct {
		opts []string
		want string
	}{
		{[]string{"rbind", "ro"}, "/mnt/top/x refused\n/mnt/top/sub/x written\n"},
		{[]string{"rbind", "ro", "rro"}, "/mnt/top/x refused\n/mnt/top/sub/x refused\n"},
		{[]string{"rbind", "rro"}, "/mnt/top/x refused\n/mnt/top/sub/x refused\n"},
		{[]string{"rbind", "rw"}, "/mnt/top/x written\n/mnt/top/sub/x written\n"},
	} {
		id := strings.Join(tc.opts, "-")
		b := rt.bundle(t, id, rootfs, "sh", "-c", script)
		b.Spec.Mounts = []specs.Mount{{Destination: "/mnt/top", Type: "bind", Source: src, Options: tc.opts}}
		st, out, errOut := rt.run(t, id, b)
		if st.ExitCode != 0 || out != tc.want {
			t.Errorf("%v: exit %d, stdout %q (stderr %q), want %q", tc.opts, st.ExitCode, out, errOut, tc.want)
		}
		rt.deleteAndCheck(t, id)
		for _, f := range []string{filepath.Join(src, "x"), filepath.Join(sub, "x")} {
			os.Remove(f)
		}
	}
	// The host's own mounts are untouched by the container's attributes.
	if err := os.WriteFile(filepath.Join(sub, "host"), nil, 0o644); err != nil {
		t.Errorf("host submount became read-only: %v", err)
	}
}

// TestBindPropagation: a "rslave" bind receives mounts the host makes
// below its source after the container started; a "rprivate" one does not,
// and nothing the container mounts comes back to the host.
func TestBindPropagation(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	src := t.TempDir()
	// The source must be a shared mount for anything to propagate.
	if err := unix.Mount(src, src, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", src, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(src, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", src, err)
		}
	})
	for _, d := range []string{"late", "from-ctr"} {
		if err := os.Mkdir(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b := rt.bundle(t, "prop", rootfs, "sleep", "999")
	all := append(caps.DefaultSet(), "CAP_SYS_ADMIN")
	b.Spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
	b.Spec.Mounts = []specs.Mount{
		{Destination: "/slave", Type: "bind", Source: src, Options: []string{"rbind", "rslave"}},
		{Destination: "/private", Type: "bind", Source: src, Options: []string{"rbind", "rprivate"}},
	}
	rt.startRunning(t, "prop", b)
	late := filepath.Join(src, "late")
	if err := unix.Mount("tmpfs", late, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(late, unix.MNT_DETACH)
	code, out := rt.execOut(t, "prop", "sh", "-c", "grep -o ' /[a-z]*/late ' /proc/self/mountinfo; mount -t tmpfs t /slave/from-ctr && echo mounted")
	if code != 0 || out != " /slave/late \nmounted\n" {
		t.Errorf("container mounts: exit %d, %q; want /slave/late only", code, out)
	}
	if ok, err := mountinfo.MountedAt(filepath.Join(src, "from-ctr")); err != nil || ok {
		t.Errorf("a container mount propagated to the host: %v %v", ok, err)
	}
}
