package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Hostile input through the CRI: images whose files the runtime reads are
// FIFOs, devices or huge, ids that alias root, requests that aim outside
// their directories. Each attack must fail cleanly, change nothing outside,
// and leave the daemon serving other pods.

// tarEntry is one entry of a test layer.
type tarEntry struct {
	hdr  tar.Header
	body []byte
}

func regular(name string, body []byte) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, body: body}
}

// imageWith is layered's image pushed to the suite's registry as repo and
// pulled through the CRI; the test removes it at the end.
func imageWith(t testing.TB, repo string, edit func(*v1.Config), entries ...tarEntry) string {
	t.Helper()
	return pushAndPull(t, repo, layered(t, edit, entries...))
}

// layered is the suite's busybox image with a layer of entries on top and
// config changed by edit (nil: kept).
func layered(t testing.TB, edit func(*v1.Config), entries ...tarEntry) v1.Image {
	t.Helper()
	img := baseImage(t)
	if len(entries) > 0 {
		img = appendLayer(t, img, entries...)
	}
	if edit != nil {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cfg := cf.Config
		edit(&cfg)
		if img, err = mutate.Config(img, cfg); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// appendLayer puts a layer of entries, written as they are (nothing
// sanitised), on top of img.
func appendLayer(t testing.TB, img v1.Image, entries ...tarEntry) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, l); err != nil {
		t.Fatal(err)
	}
	return img
}

// baseImage is the suite's busybox image, from its registry.
func baseImage(t testing.TB) v1.Image {
	t.Helper()
	ref, err := name.ParseReference(suite.image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// push writes img to the suite's registry as repo:1 and returns its name.
func push(t testing.TB, repo string, img v1.Image) string {
	t.Helper()
	ref := suite.registry + "/" + repo + ":1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func pushAndPull(t testing.TB, repo string, img v1.Image) string {
	t.Helper()
	ref := push(t, repo, img)
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	if _, err := ic.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	t.Cleanup(func() {
		_, _ = ic.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	})
	return ref
}

// createResult is what a CreateContainer in the background answered.
type createResult struct {
	id  string
	err error
}

// createAsync starts a CreateContainer and removes what it made at the end
// of the test.
func createAsync(c context.Context, podID string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) <-chan createResult {
	done := make(chan createResult, 1)
	go func() {
		resp, err := suite.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
		done <- createResult{id: resp.GetContainerId(), err: err}
	}()
	return done
}

// createCompletes runs a CreateContainer in pod while another create is
// stuck, and says whether it answered within a minute (a bound for a hang,
// not a timing); unblock frees what holds it up otherwise, so the test
// ends.
func createCompletes(t *testing.T, c context.Context, podID string, podCfg *runtimeapi.PodSandboxConfig, name string, unblock func()) bool {
	t.Helper()
	done := createAsync(c, podID, podCfg, containerConfig(name, "true"))
	select {
	case r := <-done:
		removeContainer(r.id)
		if r.err != nil {
			t.Errorf("create %s in another pod: %v", name, r.err)
		}
		return true
	case <-time.After(time.Minute):
		t.Errorf("create %s in another pod was held up by the stuck one", name)
		unblock()
		removeContainer((<-done).id)
		return false
	}
}

func removeContainer(id string) {
	if id != "" {
		_, _ = suite.rt.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id})
	}
}

// wantCode checks a CRI error's code and that its message says what.
func wantCode(t *testing.T, what string, err error, code codes.Code, says ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %v", what, err, code)
		return
	}
	for _, s := range says {
		if !strings.Contains(status.Convert(err).Message(), s) {
			t.Errorf("%s: %q does not say %q", what, status.Convert(err).Message(), s)
		}
	}
}

// rootfsFIFOs lists the FIFOs in the /etc of mounted container rootfs.
func rootfsFIFOs() []string {
	paths, _ := filepath.Glob(filepath.Join(suite.run, "rootfs", "*", "etc", "*"))
	var fifos []string
	for _, p := range paths {
		if st, err := os.Lstat(p); err == nil && st.Mode().Type() == os.ModeNamedPipe {
			fifos = append(fifos, p)
		}
	}
	return fifos
}

// unblockFIFOs opens every FIFO of a container rootfs's /etc for writing
// and closes it: a reader blocked in open (the bug this guards against)
// then sees end of file, so a failing test ends.
func unblockFIFOs() {
	for _, p := range rootfsFIFOs() {
		if fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	}
}

// TestHostilePasswdImages: an image whose /etc/passwd or /etc/group is a
// FIFO, or is huge, makes its CreateContainer fail at once with
// InvalidArgument naming the file, while a create in another pod, started
// alongside, completes; a device node or a symlink to one there never
// reaches the read.
func TestHostilePasswdImages(t *testing.T) {
	pullTestImage(t)
	fifo := func(name string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeFifo, Mode: 0o644}}
	}
	passwdFIFO := imageWith(t, "hostile/passwd-fifo", nil, fifo("etc/passwd"))
	groupFIFO := imageWith(t, "hostile/group-fifo", func(c *v1.Config) { c.User = "web" }, fifo("etc/group"))
	huge := imageWith(t, "hostile/passwd-huge", nil,
		regular("etc/passwd", bytes.Repeat([]byte("root:x:0:0:root:/root:/bin/sh\n"), 4<<20/30+1)))
	device := imageWith(t, "hostile/passwd-device", func(c *v1.Config) { c.User = "web" },
		tarEntry{hdr: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeChar, Mode: 0o644, Devmajor: 1, Devminor: 5}},
		tarEntry{hdr: tar.Header{Name: "etc/group", Typeflag: tar.TypeSymlink, Linkname: "/dev/zero", Mode: 0o777}})

	hostilePod, hostileCfg := podWithLogs(t, "hostile-passwd")
	otherPod, otherCfg := podWithLogs(t, "bystander")
	t.Cleanup(unblockFIFOs) // lets a create stuck on a FIFO (the bug) end

	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hostileCtr := containerConfig("victim", "true")
	hostileCtr.Image.Image = passwdFIFO
	hostile := createAsync(c, hostilePod, hostileCfg, hostileCtr)
	// The bystander starts once the hostile create has its rootfs, FIFO
	// and all (or has already failed), and must finish whatever the
	// hostile create does: with a node-wide lock it waited, forever,
	// behind the FIFO.
	var victim *createResult
	waitFor(t, "the hostile create to mount its rootfs", func() bool {
		select {
		case r := <-hostile:
			victim = &r
			return true
		default:
			return len(rootfsFIFOs()) > 0
		}
	})
	createCompletes(t, c, otherPod, otherCfg, "bystander", unblockFIFOs)
	if victim == nil {
		select {
		case r := <-hostile:
			victim = &r
		case <-time.After(time.Minute):
			t.Error("the create reading an image's FIFO /etc/passwd hangs")
			unblockFIFOs()
			removeContainer((<-hostile).id)
		}
	}
	if victim != nil {
		removeContainer(victim.id)
		wantCode(t, "/etc/passwd a FIFO", victim.err, codes.InvalidArgument, "/etc/passwd", "FIFO")
	}

	for _, tc := range []struct {
		image, what string
		says        []string
	}{
		{groupFIFO, "/etc/group a FIFO", []string{"/etc/group", "FIFO"}},
		{huge, "/etc/passwd of 4 MiB", []string{"/etc/passwd", "larger than 4194304 bytes"}},
	} {
		cfg := containerConfig("victim", "true")
		cfg.Image.Image = tc.image
		r := <-createAsync(c, hostilePod, hostileCfg, cfg)
		removeContainer(r.id)
		wantCode(t, tc.what, r.err, codes.InvalidArgument, tc.says...)
	}

	// The device node is not unpacked (the image's lower /etc/passwd
	// stays); /etc/group's symlink to /dev/zero resolves inside the rootfs,
	// where no /dev/zero exists: no groups, not an endless read.
	// (Not id(1) in it: inside the container /dev/zero exists, and its
	// /etc/group is then endless for the container's own processes.)
	cfg := containerConfig("device", "true")
	cfg.Image.Image = device
	st := waitExited(t, runContainer(t, hostilePod, hostileCfg, cfg))
	if u := st.GetUser().GetLinux(); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 0 || u.GetUid() != 33 || u.GetGid() != 33 {
		t.Errorf("device image as web: %v exit %d, user %+v; want exit 0 as uid and gid 33 from the image's regular /etc/passwd", st.State, st.ExitCode, u)
	}
}

// freezeCgroup freezes (or thaws) the cgroup at path in the freezer
// hierarchy (cgroup v1) or the unified one (v2).
func freezeCgroup(t *testing.T, path string, frozen bool) {
	t.Helper()
	v1State, v2State := "THAWED", "0"
	if frozen {
		v1State, v2State = "FROZEN", "1"
	}
	if err := os.WriteFile(filepath.Join("/sys/fs/cgroup/freezer", path, "freezer.state"), []byte(v1State), 0); err == nil {
		return
	}
	if err := os.WriteFile(filepath.Join("/sys/fs/cgroup", path, "cgroup.freeze"), []byte(v2State), 0); err != nil {
		t.Fatalf("freeze %s: no freezer: %v", path, err)
	}
}

// TestStuckCreateDoesNotHoldUpOtherPods: a CreateContainer that cannot
// finish (its pod's cgroup is frozen, so the container's init stops as
// soon as it joins it) does not stop creates in other pods, and finishes
// once the pod thaws.
func TestStuckCreateDoesNotHoldUpOtherPods(t *testing.T) {
	pullTestImage(t)
	frozenCfg := podConfig("frozen")
	frozenCfg.Linux.CgroupParent = fmt.Sprintf("/cri-mini-e2e-%d/pod-frozen", os.Getpid())
	frozenPod := runPod(t, frozenCfg)
	otherPod, otherCfg := podWithLogs(t, "unfrozen")
	freezeCgroup(t, frozenCfg.Linux.CgroupParent, true)
	thawed := false
	thaw := func() {
		if !thawed {
			freezeCgroup(t, frozenCfg.Linux.CgroupParent, false)
			thawed = true
		}
	}
	t.Cleanup(thaw)

	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stuck := createAsync(c, frozenPod, frozenCfg, containerConfig("stuck", "true"))
	// The stuck create is past its name check once its container has a
	// state directory; it then waits for the frozen init.
	deadline := time.Now().Add(time.Minute)
	for {
		entries, _ := os.ReadDir(filepath.Join(suite.run, "containers"))
		found := false
		for _, e := range entries {
			data, _ := os.ReadFile(filepath.Join(suite.run, "containers", e.Name(), "config.json"))
			found = found || bytes.Contains(data, []byte(frozenPod))
		}
		if found || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case r := <-stuck:
		removeContainer(r.id)
		t.Fatalf("the create in the frozen pod returned while frozen: %v", r.err)
	default:
	}
	if createCompletes(t, c, otherPod, otherCfg, "free", thaw) {
		select {
		case r := <-stuck:
			t.Errorf("the stuck create returned before its pod thawed: %v", r.err)
			removeContainer(r.id)
			return
		default:
		}
	}
	thaw()
	r := <-stuck
	removeContainer(r.id)
	if r.err != nil {
		t.Errorf("the create in the thawed pod: %v", r.err)
	}
}

// TestNumericUserThroughCRI: with an image whose /etc/passwd has a user
// named "1000" with uid 0, run_as_user 1000 and USER 1000 run as uid 1000,
// which ImageStatus reports; an image with USER -1 is not reported as a
// uid, and it and run_as_user -1 are refused.
func TestNumericUserThroughCRI(t *testing.T) {
	pullTestImage(t)
	passwd := regular("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n1000:x:0:0:fake root:/root:/bin/sh\n-1:x:0:0::/:/bin/sh\n"))
	alias := imageWith(t, "hostile/uid-alias", func(c *v1.Config) { c.User = "1000" }, passwd)
	minus := imageWith(t, "hostile/uid-minus-one", func(c *v1.Config) { c.User = "-1" }, passwd)
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	imageStatus := func(ref string) *runtimeapi.Image {
		resp, err := ic.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Image
	}
	if img := imageStatus(alias); img.GetUid() == nil || img.GetUid().GetValue() != 1000 {
		t.Errorf("ImageStatus of USER 1000: uid %v, username %q", img.GetUid(), img.GetUsername())
	}
	if img := imageStatus(minus); img.GetUid() != nil || img.GetUsername() != "-1" {
		t.Errorf("ImageStatus of USER -1: uid %v, username %q; want no uid (kubelet cannot verify runAsNonRoot)", img.GetUid(), img.GetUsername())
	}

	podID, podCfg := podWithLogs(t, "uids")
	byImage := containerConfig("by-image", "id", "-u")
	byImage.Image.Image = alias
	byRunAs := containerConfig("by-run-as-user", "id", "-u")
	byRunAs.Image.Image = alias
	byRunAs.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1000}}}
	for _, cfg := range []*runtimeapi.ContainerConfig{byImage, byRunAs} {
		st := waitExited(t, runContainer(t, podID, podCfg, cfg))
		out, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, cfg.LogPath))
		if st.GetUser().GetLinux().GetUid() != 1000 || !strings.Contains(string(out), " 1000\n") {
			t.Errorf("%s: status uid %d, output %q; want uid 1000, never the passwd entry named 1000 (uid 0)",
				cfg.Metadata.Name, st.GetUser().GetLinux().GetUid(), out)
		}
	}

	byMinus := containerConfig("minus-image", "true")
	byMinus.Image.Image = minus
	runAsMinus := containerConfig("minus-run-as", "true")
	runAsMinus.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: -1}}}
	for _, cfg := range []*runtimeapi.ContainerConfig{byMinus, runAsMinus} {
		resp, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
		removeContainer(resp.GetContainerId())
		wantCode(t, cfg.Metadata.Name, err, codes.InvalidArgument, "-1", "out of range")
	}
}

// vmKiB reads a field (VmRSS, VmHWM) of /proc/pid/status in KiB.
func vmKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kib int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kib); err != nil {
				t.Fatal(err)
			}
			return kib
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestExecSyncOutputCapped: an ExecSync that writes 256 MiB (16 times the
// cap; 1 GiB takes a minute on make test-v2's software CPU) gets the first
// bytes up to the cap, and the daemon's peak memory stays within tens of
// MiB of what it was before (it held the whole output: 3.7 GB for 1 GiB).
func TestExecSyncOutputCapped(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "flood")
	id := runContainer(t, podID, podCfg, containerConfig("sleeper", "sleep", "600"))
	pid := suite.daemon.Process.Pid
	before := vmKiB(t, pid, "VmRSS")
	// Peak RSS from now on: "5" resets VmHWM to the current RSS.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	resp, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 55,
		Cmd: []string{"head", "-c", "268435456", "/dev/zero"}})
	if err != nil {
		t.Fatal(err)
	}
	peak := vmKiB(t, pid, "VmHWM")
	const capBytes = 16<<20 - 4<<10 // the daemon's cap: it fits one 16 MiB message
	if len(resp.Stdout) != capBytes || resp.ExitCode != 0 {
		t.Errorf("ExecSync of 256 MiB: %d bytes of stdout, exit %d; want the first %d bytes", len(resp.Stdout), resp.ExitCode, capBytes)
	}
	if bytes.ContainsFunc(resp.Stdout, func(r rune) bool { return r != 0 }) {
		t.Error("stdout is not the command's zeros")
	}
	t.Logf("daemon RSS before %d MiB, peak during the 256 MiB ExecSync %d MiB", before>>10, peak>>10)
	// What it keeps (16 MiB) and its encoding for the answer (16 MiB) are
	// expected, with some slack.
	if grew := (peak - before) >> 10; grew > 64 {
		t.Errorf("the daemon's peak RSS grew by %d MiB during the ExecSync, want within tens of MiB", grew)
	}
}

// TestLogPathOutsideRefused: log paths that climb out of the pod's log
// directory are refused, and a symlink planted at a log path or in place
// of its directory is not followed, on create or on ReopenContainerLog.
func TestLogPathOutsideRefused(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "logpaths")
	outside := t.TempDir()
	target := filepath.Join(outside, "host-file")
	if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(target, filepath.Join(podCfg.LogDirectory, "planted.log")))
	must(os.Symlink(outside, filepath.Join(podCfg.LogDirectory, "linkdir")))
	parentOfLogs := filepath.Dir(podCfg.LogDirectory)
	before, _ := os.ReadDir(parentOfLogs)

	for _, tc := range []struct {
		logPath string
		code    codes.Code
		says    string
	}{
		{"../escape.log", codes.InvalidArgument, "log_path"},
		{"a/../../escape.log", codes.InvalidArgument, "log_path"},
		{filepath.Join(outside, "abs.log"), codes.InvalidArgument, "log_path"},
		{"planted.log", codes.InvalidArgument, "symlink"},
		{"linkdir/0.log", codes.InvalidArgument, "symlink"},
	} {
		cfg := containerConfig("writer", "echo", "pwned")
		cfg.LogPath = tc.logPath
		resp, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
		removeContainer(resp.GetContainerId())
		wantCode(t, "log path "+tc.logPath, err, tc.code, tc.says)
	}
	if after, _ := os.ReadDir(parentOfLogs); len(after) != len(before) {
		t.Errorf("a log was made beside the pod's log directory: %v", after)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("files made through a symlink: %v", entries)
	}

	cfg := containerConfig("rotated", "/bin/sh", "-c", "echo one; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo two; sleep 600")
	id := runContainer(t, podID, podCfg, cfg)
	logPath := filepath.Join(podCfg.LogDirectory, cfg.LogPath)
	waitFor(t, "the first line", func() bool { data, _ := os.ReadFile(logPath); return bytes.Contains(data, []byte("one")) })
	must(os.Rename(logPath, logPath+".1"))
	must(os.Symlink(target, logPath))
	_, err := suite.rt.ReopenContainerLog(ctx(t), &runtimeapi.ReopenContainerLogRequest{ContainerId: id})
	wantCode(t, "reopen onto a symlink", err, codes.FailedPrecondition, "symlink")
	if _, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"touch", "/tmp/go"}, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second line", func() bool { data, _ := os.ReadFile(logPath + ".1"); return bytes.Contains(data, []byte("two")) })
	if data, _ := os.ReadFile(target); string(data) != "precious\n" {
		t.Errorf("the symlink's target was written: %q", data)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never came", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSeccompProfileNotAFile: a localhost seccomp profile that is a FIFO
// or a directory fails the create at once, naming only the given path.
func TestSeccompProfileNotAFile(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "seccomp-paths")
	dir := t.TempDir()
	fifo := filepath.Join(dir, "profile.json")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for ref, says := range map[string]string{fifo: "FIFO", dir: "directory"} {
		cfg := containerConfig("confined", "true")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}}}
		resp, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
		removeContainer(resp.GetContainerId())
		wantCode(t, "profile "+ref, err, codes.InvalidArgument, ref, says)
	}
}

// rawConfigImage is an image whose config is the given bytes, as a hostile
// registry serves them (ggcr would re-encode a ConfigFile).
type rawConfigImage struct {
	v1.Image
	raw []byte
}

func (r rawConfigImage) RawConfigFile() ([]byte, error) { return r.raw, nil }

func (r rawConfigImage) ConfigName() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(r.raw))
	return h, err
}

func (r rawConfigImage) ConfigFile() (*v1.ConfigFile, error) {
	return v1.ParseConfigFile(bytes.NewReader(r.raw))
}

func (r rawConfigImage) Manifest() (*v1.Manifest, error) {
	m, err := r.Image.Manifest()
	if err != nil {
		return nil, err
	}
	m = m.DeepCopy()
	if m.Config.Digest, err = r.ConfigName(); err != nil {
		return nil, err
	}
	m.Config.Size = int64(len(r.raw))
	return m, nil
}

func (r rawConfigImage) RawManifest() ([]byte, error) {
	m, err := r.Manifest()
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

func (r rawConfigImage) Digest() (v1.Hash, error) {
	raw, err := r.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	return h, err
}

func (r rawConfigImage) Size() (int64, error) {
	raw, err := r.RawManifest()
	return int64(len(raw)), err
}

// fatConfigImage is the suite's busybox with a config of exactly size
// bytes, padded by an environment variable of repeated fill, written raw
// (so "<" stays one byte and U+2028 three).
func fatConfigImage(t testing.TB, size int, fill string) v1.Image {
	t.Helper()
	base := baseImage(t)
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Env = append(cf.Config.Env, "FAT=@@")
	raw, err := json.Marshal(cf)
	if err != nil {
		t.Fatal(err)
	}
	pad := size - len(raw) + 2
	padding := strings.Repeat(fill, pad/len(fill)) + strings.Repeat("x", pad%len(fill))
	raw = bytes.Replace(raw, []byte("@@"), []byte(padding), 1)
	if len(raw) != size {
		t.Fatalf("config of %d bytes, want %d", len(raw), size)
	}
	return rawConfigImage{Image: base, raw: raw}
}

// TestLargestConfig: a config over the 4 MiB cap is refused at pull; from
// the largest accepted one, filled with what JSON encoding inflates most,
// containers are listed and their verbose status stays well under the
// 16 MiB a CRI message may hold.
func TestLargestConfig(t *testing.T) {
	pullTestImage(t)
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	over := push(t, "hostile/config-over-cap", fatConfigImage(t, 4<<20+1, "x"))
	_, err := ic.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: over}})
	wantCode(t, "config over the cap", err, codes.InvalidArgument, "config", "4194304")

	podID, podCfg := podWithLogs(t, "fat-config")
	for fill, repo := range map[string]string{"\u2028": "hostile/config-line-separators", "<": "hostile/config-angles"} {
		ref := pushAndPull(t, repo, fatConfigImage(t, 4<<20, fill))
		cfg := containerConfig("fat-"+strings.TrimPrefix(repo, "hostile/config-"), "true")
		cfg.Image.Image = ref
		id := runContainer(t, podID, podCfg, cfg)
		resp, err := suite.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
		if err != nil {
			t.Errorf("verbose status of a container from a 4 MiB config of %q: %v", fill, err)
			continue
		}
		info := resp.Info["info"]
		t.Logf("verbose info from a 4 MiB config of %q: %d bytes", fill, len(info))
		if len(info) > 10<<20 {
			t.Errorf("verbose info of %d bytes from a 4 MiB config of %q, want at most about 8 MiB", len(info), fill)
		}
		if !strings.Contains(info, `"runtimeSpec"`) {
			t.Errorf("verbose info lacks the runtime spec")
		}
		if _, err := ic.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: true}); err != nil {
			t.Errorf("verbose image status of a 4 MiB config of %q: %v", fill, err)
		}
	}
	if _, err := suite.rt.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{}); err != nil {
		t.Errorf("ListContainers: %v", err)
	}
}

// TestKilledPullCollectedAtRestart: the daemon, killed (kill -9) while it
// unpacks a large layer, leaves tens of MiB of it; its next start removes
// them and keeps the complete images.
func TestKilledPullCollectedAtRestart(t *testing.T) {
	pullTestImage(t)
	big := layered(t, nil, regular("zeros", make([]byte, 96<<20)))
	ref := push(t, "hostile/killed-pull", big)
	layers, err := big.Layers()
	if err != nil {
		t.Fatal(err)
	}
	top := layers[len(layers)-1]
	d, _ := top.Digest()
	size, _ := top.Size()
	cutBlobs.Store(d.String(), size/2) // the registry stops half way
	defer cutBlobs.Delete(d.String())

	ic := runtimeapi.NewImageServiceClient(suite.conn)
	pulled := make(chan error, 1)
	go func() {
		_, err := ic.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		pulled <- err
	}()
	tmp := filepath.Join(suite.root, "images", "tmp")
	waitFor(t, "32 MiB of the layer unpacked", func() bool { return dirBytes(tmp) >= 32<<20 })
	if err := stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-pulled
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
		t.Errorf("%d bytes of the killed pull survived the restart in %d entries", dirBytes(tmp), len(entries))
	}
	resp, err := ic.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: suite.image}})
	if err != nil || resp.Image == nil {
		t.Fatalf("the complete image after the restart: %v %v", resp, err)
	}
	podID, podCfg := podWithLogs(t, "after-killed-pull")
	if st := waitExited(t, runContainer(t, podID, podCfg, containerConfig("still-whole", "cat", "/etc/passwd"))); st.ExitCode != 0 {
		t.Errorf("a container of the complete image after the restart: exit %d", st.ExitCode)
	}
}

// dirBytes is what the files below dir occupy.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Sys().(*syscall.Stat_t).Blocks * 512
			}
		}
		return nil
	})
	return n
}
