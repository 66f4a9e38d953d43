package container

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/proc"
	"github.com/cri-mini/cri-mini/internal/randid"
)

// The test binary is re-executed for the supervisor, init and exec roles,
// exactly like the daemon binary.
func TestMain(m *testing.M) {
	if RunInternal() {
		return
	}
	os.Exit(m.Run())
}

// busyboxApplets are the commands the tests' scripts use.
var busyboxApplets = []string{"sh", "cat", "ls", "sleep", "id", "echo", "mount", "stat", "readlink",
	"wc", "hostname", "touch", "grep", "head", "tr", "pwd", "mkdir", "true", "false", "kill", "env", "test", "tty", "tail"}

// busyboxRootfs builds a minimal rootfs (Debian's static busybox and links
// to it) in a fresh temporary directory and returns its path.
func busyboxRootfs(t testing.TB) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is needed: %v", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(root, "bin/busybox"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// testRuntime is a Runtime with its own state directory and a cgroup
// parent of its own, both removed (and checked) when the test ends.
type testRuntime struct {
	*Runtime
	cgroupParent string
}

func newTestRuntime(t testing.TB) *testRuntime {
	t.Helper()
	cg, err := cgroups.New("cgroupfs")
	if err != nil {
		t.Fatal(err)
	}
	rt := &testRuntime{
		Runtime:      &Runtime{StateDir: filepath.Join(t.TempDir(), "state"), Cgroups: cg},
		cgroupParent: "/cri-mini-test-" + randid.New()[:12],
	}
	t.Cleanup(func() {
		if err := cg.Destroy(rt.cgroupParent); err != nil {
			t.Errorf("remove test cgroup %s: %v", rt.cgroupParent, err)
		}
	})
	return rt
}

// bundle describes a container running args in rootfs, in new namespaces,
// with the default capabilities and no_new_privs, as the CRI layer makes it.
func (rt *testRuntime) bundle(t testing.TB, id, rootfs string, args ...string) Bundle {
	t.Helper()
	defaults := caps.DefaultSet()
	spec := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: rootfs},
		Hostname: "ctr-" + id,
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/bin"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: defaults, Effective: defaults, Permitted: defaults,
			},
			NoNewPrivileges: true,
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace},
			{Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.CgroupNamespace},
		}},
	}
	return Bundle{
		Spec:       spec,
		LogPath:    filepath.Join(filepath.Dir(rootfs), id+".log"),
		CgroupPath: rt.cgroupParent + "/" + id,
	}
}

// create creates the container and registers its deletion (with the leak
// checks) for the end of the test.
func (rt *testRuntime) create(t testing.TB, id string, b Bundle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rt.Create(ctx, id, b); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	t.Cleanup(func() { rt.deleteAndCheck(t, id) })
}

// run creates, starts and waits for the container and returns its final
// state and what it wrote to stdout and stderr (from its CRI log).
func (rt *testRuntime) run(t testing.TB, id string, b Bundle) (*State, string, string) {
	t.Helper()
	rt.create(t, id, b)
	return rt.start(t, id, b)
}

// start starts a created container and waits for it, like run.
func (rt *testRuntime) start(t testing.TB, id string, b Bundle) (*State, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Start(ctx, id); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	st, err := rt.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait %s: %v", id, err)
	}
	stdout, stderr := readCRILog(t, b.LogPath)
	return st, stdout, stderr
}

// deleteAndCheck deletes the container and checks that nothing of it
// remains: no process, no mount, no cgroup, no state.
func (rt *testRuntime) deleteAndCheck(t testing.TB, id string) {
	t.Helper()
	dir := filepath.Join(rt.StateDir, id)
	var cfg config
	if err := readJSON(dir, configFile, &cfg); os.IsNotExist(err) {
		return // deleted by the test itself
	}
	init, _ := readProcess(dir, initFile)
	sup, _ := readProcess(dir, supFile)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rt.Delete(ctx, id); err != nil {
		t.Errorf("delete %s: %v", id, err)
		return
	}
	assertGone(t, dir, cfg, init, sup)
}

func assertGone(t testing.TB, dir string, cfg config, procs ...proc.ID) {
	t.Helper()
	for _, p := range procs {
		if p.Alive() {
			t.Errorf("process %d still alive after delete", p.Pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s left after delete (%v)", dir, err)
	}
	if cfg.CgroupPath != "" {
		for _, h := range []string{"", "memory", "pids", "cpu", "freezer", "devices"} {
			p := filepath.Join("/sys/fs/cgroup", h, cfg.CgroupPath)
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("cgroup %s left after delete (%v)", p, err)
			}
		}
	}
	for _, m := range hostMountPoints(t) {
		if strings.HasPrefix(m, cfg.Spec.Root.Path) || strings.HasPrefix(m, dir) {
			t.Errorf("mount %s left on the host", m)
		}
	}
}

// hostMountPoints lists the mount points of the test's own mount namespace.
func hostMountPoints(t testing.TB) []string {
	t.Helper()
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range mounts {
		out = append(out, m.Mountpoint)
	}
	return out
}

type mountEntry struct {
	point, opts, fstype, superOpts string
}

func parseMountinfo(t testing.TB, text string) []mountEntry {
	t.Helper()
	var out []mountEntry
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if !ok || len(pf) < 6 || len(qf) < 3 {
			t.Fatalf("bad mountinfo line %q", line)
		}
		out = append(out, mountEntry{point: pf[4], opts: pf[5], fstype: qf[0], superOpts: qf[2]})
	}
	return out
}

// readCRILog checks every record of a CRI log and returns the content of
// each stream, partial records joined.
func readCRILog(t testing.TB, path string) (stdout, stderr string) {
	t.Helper()
	recs := criRecords(t, path)
	var out, errs strings.Builder
	for _, r := range recs {
		b := &out
		if r.stream == "stderr" {
			b = &errs
		}
		b.WriteString(r.content)
		if !r.partial {
			b.WriteByte('\n')
		}
	}
	return out.String(), errs.String()
}

type criRecord struct {
	stream  string
	partial bool
	content string
}

func criRecords(t testing.TB, path string) []criRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []criRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), " ", 4)
		if len(parts) < 3 {
			t.Fatalf("log %s: bad record %q", path, sc.Text())
		}
		if _, err := time.Parse(time.RFC3339Nano, parts[0]); err != nil {
			t.Fatalf("log %s: bad time in %q: %v", path, sc.Text(), err)
		}
		if parts[1] != "stdout" && parts[1] != "stderr" {
			t.Fatalf("log %s: bad stream in %q", path, sc.Text())
		}
		if parts[2] != "P" && parts[2] != "F" {
			t.Fatalf("log %s: bad tag in %q", path, sc.Text())
		}
		r := criRecord{stream: parts[1], partial: parts[2] == "P"}
		if len(parts) == 4 {
			r.content = parts[3]
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// execOut runs args in the container and returns its exit code and output.
func (rt *testRuntime) execOut(t testing.TB, id string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	code, err := rt.Exec(ctx, id, ExecOptions{Args: args, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %v in %s: %v", args, id, err)
	}
	return code, out.String()
}

// unifiedHost: the host mounts the cgroup2 tree at /sys/fs/cgroup (v2),
// and so does every container.
func unifiedHost(t testing.TB) bool {
	t.Helper()
	hier, err := hostCgroups()
	if err != nil {
		t.Fatal(err)
	}
	return len(hier) == 1 && hier[0].Dir == "" && hier[0].FSType == "cgroup2"
}

// ctrCgroupFile is where a container sees a file of its cgroup: right in
// /sys/fs/cgroup on v2, in the controller's hierarchy on v1.
func ctrCgroupFile(t testing.TB, controller, file string) string {
	t.Helper()
	if unifiedHost(t) {
		return "/sys/fs/cgroup/" + file
	}
	return "/sys/fs/cgroup/" + controller + "/" + file
}

// startRunning creates and starts a container that runs until deleted.
func (rt *testRuntime) startRunning(t testing.TB, id string, b Bundle) *State {
	t.Helper()
	rt.create(t, id, b)
	if err := rt.Start(context.Background(), id); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	st, err := rt.State(id)
	if err != nil || st.Status != StatusRunning {
		t.Fatalf("state after start: %+v, %v", st, err)
	}
	return st
}

// section returns what a script printed between "== name" and the next
// "== " marker.
func section(out, name string) string {
	_, rest, ok := strings.Cut(out, "== "+name+"\n")
	if !ok {
		return ""
	}
	if i := strings.Index(rest, "== "); i >= 0 {
		rest = rest[:i]
	}
	return strings.TrimSpace(rest)
}

// nsOf returns the namespace a host process is in (e.g. "pid:[4026532]").
func nsOf(t testing.TB, pid int, kind string) string {
	t.Helper()
	l, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + kind)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pidsInNamespace lists host processes in the given pid namespace whose
// command line is cmdline (arguments joined by spaces).
func pidsInNamespace(pidns, cmdline string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid")
		if err != nil || l != pidns {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " ")) == cmdline {
			out = append(out, pid)
		}
	}
	return out
}
