package container

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/proc"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

// TestExplainScriptBuildsSameContainer: the script explain prints for a
// running busybox container, run by bash for a copy of its rootfs, yields
// the same container: the same mounts (target, type, options) in the same
// order, the same /dev, the hostname, the pod's network namespace joined
// and the other namespaces new, the same credentials and capabilities.
func TestExplainScriptBuildsSameContainer(t *testing.T) {
	roottest.Require(t)
	t.Run("root", func(t *testing.T) { explainAndCompare(t, 0, nil) })
	// In a pod's user namespace: the script stages the bind mounts'
	// sources and the rootfs (the pod's root cannot reach them) and joins
	// the user namespace first; the recipe's devices are the host's bound.
	t.Run("user namespace", func(t *testing.T) { explainAndCompare(t, usernsHost+0x10000, nil) })
	// A user with a group, an extra device, an ipc sysctl, a read-only
	// root and another working directory.
	t.Run("user", func(t *testing.T) {
		explainAndCompare(t, 0, func(s *specs.Spec) {
			s.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10}}
			s.Process.Cwd = "/tmp"
			s.Root.Readonly = true
			mode := os.FileMode(0o620)
			gid := uint32(5)
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &mode, GID: &gid}}
			s.Linux.Sysctl = map[string]string{"kernel.shm_rmid_forced": "1"}
		})
	})
}

// explainAndCompare runs a container joining a pod's network namespace
// (and, when host is not 0, the pod's user namespace mapping 65536 ids from
// host) and a copy built by its explain script, and compares them.
func explainAndCompare(t *testing.T, host uint32, adjust func(*specs.Spec)) {
	rt := newTestRuntime(t)
	var rootfs, copyRootfs, netPin, userPin string
	if host == 0 {
		rootfs, copyRootfs = busyboxRootfs(t), busyboxRootfs(t)
		podDir := filepath.Join(t.TempDir(), "pod")
		pins, err := nspin.Pin(podDir, []nspin.Kind{nspin.Net}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := nspin.Unpin(podDir, nspin.Net); err != nil {
				t.Errorf("unpin: %v", err)
			}
		})
		netPin = pins[nspin.Net]
	} else {
		// The script's staging directory, left empty in /tmp.
		before, _ := filepath.Glob("/tmp/cri-mini-explain.*")
		t.Cleanup(func() {
			after, _ := filepath.Glob("/tmp/cri-mini-explain.*")
			for _, d := range after {
				if !slices.Contains(before, d) {
					if err := os.Remove(d); err != nil {
						t.Errorf("the script's staging directory: %v", err)
					}
				}
			}
		})
		rootfs, copyRootfs = usernsRootfs(t, host), usernsRootfs(t, host)
		pins := podNamespaces(t, host)
		netPin, userPin = pins[specs.NetworkNamespace], pins[specs.UserNamespace]
	}
	data := t.TempDir()
	b := rt.bundle(t, "explained", rootfs, "sleep", "999")
	for i, ns := range b.Spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			b.Spec.Linux.Namespaces[i].Path = netPin
		}
	}
	if host != 0 {
		// The user namespace the network namespace belongs to.
		l := b.Spec.Linux
		l.Namespaces = append(l.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: userPin})
		l.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: host, Size: 65536}}
		l.GIDMappings = l.UIDMappings
	}
	b.Spec.Mounts = []specs.Mount{{Destination: "/data dir", Type: "bind", Source: data, Options: []string{"rbind", "ro", "nosuid", "rprivate"}}}
	b.Spec.Process.Env = append(b.Spec.Process.Env, `GREETING=it's "here"`)
	limit, pids := int64(64<<20), int64(50)
	b.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}, Pids: &specs.LinuxPids{Limit: &pids}}
	if adjust != nil {
		adjust(b.Spec)
	}
	st := rt.startRunning(t, "explained", b)

	plan, err := rt.Plan("explained")
	if err != nil {
		t.Fatal(err)
	}
	// Where the memory limit goes, and how the cgroup namespace root reads.
	limitFile, limitDir, nsRoot := "memory.limit_in_bytes", "/sys/fs/cgroup/memory", ":memory:/\n"
	if unifiedHost(t) {
		limitFile, limitDir, nsRoot = "memory.max", "/sys/fs/cgroup", "0::/\n"
	}
	if c := plan[0].Cgroup; plan[0].Kind != KindCgroup || !slices.ContainsFunc(c.Writes, func(w CgroupFileWrite) bool {
		return w.File == limitFile && w.Value == strconv.FormatInt(limit, 10)
	}) {
		t.Errorf("plan's cgroup step %+v: want the memory limit written", plan[0])
	}
	script := filepath.Join(t.TempDir(), "explained.sh")
	if err := os.WriteFile(script, []byte(RenderShell("explained", plan)), 0o700); err != nil {
		t.Fatal(err)
	}
	copyCgroup := rt.cgroupParent + "/explained-copy"
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "ROOTFS="+copyRootfs, "CGROUP="+copyCgroup)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		if pid := findDescendant(cmd.Process.Pid, "/bin/sleep 999"); pid > 0 {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Error("the script's container outlives the test")
		}
	})
	var pid int
	// Generous: under make test-v2's software CPU a script of stock tools starts slowly.
	for deadline := time.Now().Add(60 * time.Second); pid == 0; {
		pid = findDescendant(cmd.Process.Pid, "/bin/sleep 999")
		select {
		case err := <-exited:
			t.Fatalf("the script ended (%v) before its container ran:\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no container from the script:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	want, got := mountsOf(t, st.Pid), mountsOf(t, pid)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("mounts differ\ncri-mini:\n%s\nscript:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
	if len(want) < 20 || !slices.ContainsFunc(want, func(m string) bool { return strings.HasPrefix(m, `/data\040dir `) }) {
		t.Errorf("cri-mini's mounts lack the recipe's or the spec's:\n%s", strings.Join(want, "\n"))
	}
	if b.Spec.Root.Readonly && !strings.HasPrefix(want[0], "/ ro,") {
		t.Errorf("read-only root mounted %q", want[0])
	}
	if w, g := devNodes(t, st.Pid), devNodes(t, pid); w != g || !strings.Contains(w, "null c 1:3 666 0:0") ||
		len(b.Spec.Linux.Devices) > 0 && !strings.Contains(w, "fuse c 10:229 620 0:5") {
		t.Errorf("/dev differs\ncri-mini:\n%s\nscript:\n%s", w, g)
	}
	if w, g := hostnameOf(t, st.Pid), hostnameOf(t, pid); w != "ctr-explained" || g != w {
		t.Errorf("hostname: cri-mini %q, script %q", w, g)
	}
	self := os.Getpid()
	for _, k := range []string{"net", "mnt", "pid", "uts", "ipc", "cgroup"} {
		w, g := nsOf(t, st.Pid, k), nsOf(t, pid, k)
		if k == "net" {
			if w != g {
				t.Errorf("net namespace: cri-mini %s, script %s; want both the pod's", w, g)
			}
			continue
		}
		if w == g || g == nsOf(t, self, k) {
			t.Errorf("%s namespace: cri-mini %s, script %s, test %s; want a new one each", k, w, g, nsOf(t, self, k))
		}
	}
	for k, v := range b.Spec.Linux.Sysctl {
		for _, p := range []int{st.Pid, pid} {
			got, err := exec.Command("nsenter", fmt.Sprintf("--ipc=/proc/%d/ns/ipc", p), "cat", "/proc/sys/"+strings.ReplaceAll(k, ".", "/")).Output()
			if err != nil || strings.TrimSpace(string(got)) != v {
				t.Errorf("sysctl %s in process %d: %q (%v), want %s", k, p, got, err, v)
			}
		}
	}
	// The same privileges: user, groups, capability sets, no_new_privs.
	uid := fmt.Sprintf("Uid:\t%d\t", host+b.Spec.Process.User.UID)
	if w, g := privileges(t, st.Pid), privileges(t, pid); w != g || !strings.Contains(w, "NoNewPrivs:\t1") || !strings.Contains(w, uid) {
		t.Errorf("privileges differ\ncri-mini:\n%s\nscript:\n%s", w, g)
	}
	// No descriptor of the host's programs reaches the application.
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err != nil || len(fds) != 3 {
		t.Errorf("script's container has %d open descriptors (%v), want stdio only", len(fds), err)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil || !strings.Contains(string(env), "\x00GREETING=it's \"here\"\x00") {
		t.Errorf("script's container environment %q (%v)", env, err)
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || cwd != b.Spec.Process.Cwd {
		t.Errorf("script's container cwd %q (%v)", cwd, err)
	}
	if v, err := os.ReadFile(filepath.Join(limitDir, copyCgroup, limitFile)); err != nil || strings.TrimSpace(string(v)) != strconv.FormatInt(limit, 10) {
		t.Errorf("the script's cgroup %s: %q, %v", filepath.Join(limitDir, copyCgroup, limitFile), v, err)
	}
	// Both cgroup namespaces are rooted at the container's cgroup.
	for _, p := range []int{st.Pid, pid} {
		ns := fmt.Sprintf("--cgroup=/proc/%d/ns/cgroup", p)
		cg, err := exec.Command("nsenter", ns, "cat", fmt.Sprintf("/proc/%d/cgroup", p)).Output()
		if err != nil || !strings.Contains(string(cg), nsRoot) {
			t.Errorf("process %d in its cgroup namespace: %q (%v), want its memory cgroup as the root (%q)", p, cg, err, nsRoot)
		}
	}
}

// mountsOf lists the mounts a process sees, as "target type
// mount-options super-options", without what differs between two copies of
// one container: mount ids, devices, sources and the rootfs's own options.
func mountsOf(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		pre, post, _ := strings.Cut(line, " - ")
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 6 || len(qf) < 3 {
			t.Fatalf("mountinfo line %q", line)
		}
		if pf[4] == "/" {
			out = append(out, "/ "+pf[5])
			continue
		}
		out = append(out, strings.Join([]string{pf[4], qf[0], pf[5], qf[2]}, " "))
	}
	// mountinfo lists mounts in the order they were made (Linux 6.8 keeps
	// them by unique id), and cri-mini makes the bind mounts' sources
	// before the init's own mounts: by mount point, stacked ones in order.
	slices.SortStableFunc(out, func(a, b string) int {
		return strings.Compare(strings.Fields(a)[0], strings.Fields(b)[0])
	})
	return out
}

// devNodes describes a process's /dev: every entry's name, type, device
// numbers, mode and owner, or link target.
func devNodes(t *testing.T, pid int) string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/root/dev", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		var s unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, e.Name()), &s); err != nil {
			t.Fatal(err)
		}
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			fmt.Fprintf(&b, "%s c %d:%d %o %d:%d\n", e.Name(), unix.Major(s.Rdev), unix.Minor(s.Rdev), s.Mode&0o7777, s.Uid, s.Gid)
		case unix.S_IFLNK:
			target, _ := os.Readlink(filepath.Join(dir, e.Name()))
			fmt.Fprintf(&b, "%s -> %s\n", e.Name(), target)
		default:
			fmt.Fprintf(&b, "%s %o\n", e.Name(), s.Mode)
		}
	}
	return b.String()
}

// privileges are the credential and capability lines of a process's status.
func privileges(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		k, _, _ := strings.Cut(l, ":")
		switch k {
		case "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp":
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// hostnameOf is the hostname in the process's uts namespace.
func hostnameOf(t *testing.T, pid int) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--uts=/proc/"+strconv.Itoa(pid)+"/ns/uts", "hostname").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// findDescendant returns a process below ancestor whose command line is
// cmdline, or 0.
func findDescendant(ancestor int, cmdline string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " ")) != cmdline {
			continue
		}
		for p := pid; p > 1; p = parentOf(p) {
			if p == ancestor {
				return pid
			}
		}
	}
	return 0
}

func parentOf(pid int) int {
	st, _ := proc.ReadStat(pid)
	return st.PPid
}
