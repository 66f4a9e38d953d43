package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// serveTestImage starts an in-process registry on loopback holding one
// busybox image (Debian's static busybox with a few applet links) and
// returns the registry's host:port and the image's reference.
func serveTestImage() (string, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	go func() { _ = http.Serve(ln, cutOff{registry.New(registry.Logger(log.New(io.Discard, "", 0)))}) }()
	host := ln.Addr().String()

	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", "", err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "etc/", "tmp/"} {
		_ = tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	_ = tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	_, _ = tw.Write(bb)
	for _, a := range []string{"sh", "cat", "echo", "sleep", "id", "hostname", "ls", "touch", "grep", "kill", "trap", "head", "pidof", "tty", "mount", "yes", "true"} {
		_ = tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/tmp:/bin/sh\n"
	_ = tw.WriteHeader(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd))})
	_, _ = tw.Write([]byte(passwd))
	if err := tw.Close(); err != nil {
		return "", "", err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return "", "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", "", err
	}
	img, err = mutate.Config(img, v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}, StopSignal: "SIGUSR1"})
	if err != nil {
		return "", "", err
	}
	ref := host + "/e2e/busybox:1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", "", err
	}
	if err := remote.Write(r, img); err != nil {
		return "", "", fmt.Errorf("push test image: %w", err)
	}
	return host, ref, nil
}

// cutBlobs are the blobs (by digest) the suite's registry stops sending
// after so many bytes, as a stalled registry does; the request then hangs
// until the client goes.
var cutBlobs sync.Map

type cutOff struct{ next http.Handler }

func (c cutOff) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, digest, isBlob := strings.Cut(req.URL.Path, "/blobs/")
	cut, ok := cutBlobs.Load(digest)
	if !isBlob || !ok || req.Method != http.MethodGet {
		c.next.ServeHTTP(w, req)
		return
	}
	rec := httptest.NewRecorder()
	c.next.ServeHTTP(rec, req)
	w.Header().Set("Content-Length", rec.Header().Get("Content-Length"))
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes()[:cut.(int64)])
	w.(http.Flusher).Flush()
	<-req.Context().Done()
}

func pullTestImage(t *testing.T) {
	t.Helper()
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	if _, err := ic.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: suite.image}}); err != nil {
		t.Fatalf("pull %s: %v", suite.image, err)
	}
}

func containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: suite.image},
		Command:  cmd,
		LogPath:  name + ".log",
		Labels:   map[string]string{"ctr": name},
	}
}

// runContainer creates and starts a container in pod; the test removes it.
func runContainer(t *testing.T, podID string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	resp, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", cfg.Metadata.Name, err)
	}
	id := resp.ContainerId
	t.Cleanup(func() {
		_, _ = suite.rt.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: id})
	})
	if _, err := suite.rt.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer %s: %v", cfg.Metadata.Name, err)
	}
	return id
}

func containerStatus(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := suite.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	return resp.Status
}

func waitExited(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := containerStatus(t, id)
		if st.State == runtimeapi.ContainerState_CONTAINER_EXITED || time.Now().After(deadline) {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func podWithLogs(t testing.TB, name string) (string, *runtimeapi.PodSandboxConfig) {
	cfg := podConfig(name)
	cfg.LogDirectory = t.TempDir()
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	return runPod(t, cfg), cfg
}

func TestContainerLifecycle(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "ctr-life")

	// Two containers sharing the pod: one writes to the pod's /dev/shm,
	// the other reads it; both log through the CRI log format.
	writer := runContainer(t, podID, podCfg, containerConfig("writer", "/bin/sh", "-c",
		"echo shared > /dev/shm/note; echo hello from $(hostname); sleep 600"))
	reader := runContainer(t, podID, podCfg, containerConfig("reader", "/bin/sh", "-c",
		"for i in 1 2 3 4 5 6 7 8 9 10; do [ -f /dev/shm/note ] && break; sleep 0.2; done; cat /dev/shm/note; exit 3"))

	st := waitExited(t, reader)
	if st.ExitCode != 3 || st.Reason != "Error" || st.FinishedAt == 0 {
		t.Errorf("reader: exit %d reason %q finished %d", st.ExitCode, st.Reason, st.FinishedAt)
	}
	logs, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, "reader.log"))
	if !strings.Contains(string(logs), " stdout F shared") {
		t.Errorf("reader log:\n%s", logs)
	}
	wlogs := crictl(t, "logs", writer)
	if !strings.Contains(wlogs, "hello from ctr-life") {
		t.Errorf("crictl logs writer: %q", wlogs)
	}

	// ExecSync in the running container, with its exit code and stderr.
	resp, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: writer, Cmd: []string{"/bin/sh", "-c", "cat /dev/shm/note; echo oops >&2; exit 7"}, Timeout: 10})
	if err != nil || resp.ExitCode != 7 || string(resp.Stdout) != "shared\n" || string(resp.Stderr) != "oops\n" {
		t.Errorf("ExecSync: %v %+v", err, resp)
	}

	// The pod shares one pid namespace: the pause process is PID 1.
	resp, err = suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: writer, Cmd: []string{"/bin/cat", "/proc/1/cmdline"}, Timeout: 10})
	if err != nil || !strings.Contains(string(resp.Stdout), "cri-mini-pause") {
		t.Errorf("PID 1 of the pod: %v %q", err, resp.GetStdout())
	}

	list, err := suite.rt.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		PodSandboxId: podID, State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
	if err != nil || len(list.Containers) != 1 || list.Containers[0].Id != writer {
		t.Errorf("running containers of the pod: %v %v", list, err)
	}

	// Stop with the image's stop signal (SIGUSR1), which sh does not trap:
	// it dies of it at once.
	start := time.Now()
	if _, err := suite.rt.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: writer, Timeout: 30}); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, writer); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 128+int32(syscall.SIGUSR1) {
		t.Errorf("after stop: %v exit %d (took %v)", st.State, st.ExitCode, time.Since(start))
	}

	// Removing the pod removes its containers.
	if _, err := suite.rt.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: writer}); status.Code(err) != codes.NotFound {
		t.Errorf("container status after pod removal: %v", err)
	}
}

func TestContainersSurviveDaemonKill(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "ctr-survive")
	long := runContainer(t, podID, podCfg, containerConfig("long", "/bin/sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"))
	short := runContainer(t, podID, podCfg, containerConfig("short", "/bin/sh", "-c", "sleep 1; exit 5"))

	if err := stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // "short" exits while no daemon runs
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, long); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("long-running container after the daemon's restart: %v", st.State)
	}
	if st := containerStatus(t, short); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 5 {
		t.Errorf("container that exited meanwhile: %v exit %d", st.State, st.ExitCode)
	}
	before, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, "long.log"))
	time.Sleep(600 * time.Millisecond)
	after, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, "long.log"))
	if len(after) <= len(before) {
		t.Errorf("the container stopped logging across the daemon's restart")
	}
}

func TestContainerBadRequests(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "ctr-bad")
	c := ctx(t)
	checks := []struct {
		name string
		req  *runtimeapi.CreateContainerRequest
		code codes.Code
	}{
		{"unknown pod", &runtimeapi.CreateContainerRequest{PodSandboxId: "feedface", Config: containerConfig("x", "/bin/true")}, codes.NotFound},
		{"no name", &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: &runtimeapi.ContainerConfig{Image: &runtimeapi.ImageSpec{Image: suite.image}}}, codes.InvalidArgument},
		{"unknown image", &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "noimg"}, Image: &runtimeapi.ImageSpec{Image: "127.0.0.1:1/none:1"}}}, codes.NotFound},
		{"missing host path", &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: func() *runtimeapi.ContainerConfig {
			cfg := containerConfig("mnt", "/bin/true")
			cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/nonexistent/cri-mini"}}
			return cfg
		}()}, codes.InvalidArgument},
	}
	for _, ch := range checks {
		ch.req.SandboxConfig = podCfg
		if _, err := suite.rt.CreateContainer(c, ch.req); status.Code(err) != ch.code {
			t.Errorf("%s: %v, want %v", ch.name, err, ch.code)
		}
	}
	runContainer(t, podID, podCfg, containerConfig("dup", "/bin/sleep", "600"))
	if _, err := suite.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("dup", "/bin/true"), SandboxConfig: podCfg}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate container name: %v", err)
	}
	if _, err := suite.rt.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: "feedface"}); status.Code(err) != codes.NotFound {
		t.Errorf("status of unknown container: %v", err)
	}
	if _, err := suite.rt.RemoveContainer(c, &runtimeapi.RemoveContainerRequest{ContainerId: "feedface"}); err != nil {
		t.Errorf("remove of unknown container: %v, want success", err)
	}
}

// TestSupervisorRunsTheShim: each container's supervisor is the small
// cri-mini-shim next to the daemon, not a second copy of the daemon, run
// from the daemon's sealed copy of it.
func TestSupervisorRunsTheShim(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "shim")
	id := runContainer(t, podID, podCfg, containerConfig("sleeper", "sleep", "600"))
	data, err := os.ReadFile(filepath.Join(suite.run, "containers", id, "supervisor.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sup struct{ Pid int }
	if err := json.Unmarshal(data, &sup); err != nil || sup.Pid == 0 {
		t.Fatalf("supervisor record %s: %v", data, err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", sup.Pid))
	if err != nil || !strings.HasPrefix(exe, "/memfd:cri-mini-shim") || !runsSealedShim(sup.Pid) {
		t.Errorf("supervisor runs %q (%v), want the daemon's sealed copy of cri-mini-shim", exe, err)
	}
}

// TestAttachToStdin: crictl attach -i reaches the container's own stdin
// and stdout; with stdin_once, the end of the client's input ends the
// container's, so the shell exits 0.
func TestAttachToStdin(t *testing.T) {
	pullTestImage(t)
	t.Run("host users", func(t *testing.T) {
		podID, podCfg := podWithLogs(t, "attach")
		attachToStdin(t, podID, podCfg)
	})
	t.Run("user namespace", func(t *testing.T) {
		podID, podCfg := usernsPod(t, "attach-userns", usernsOptions(8))
		attachToStdin(t, podID, podCfg)
	})
}

// attachToStdin attaches to the stdin of a shell in the pod and checks
// what comes back and what is logged.
func attachToStdin(t *testing.T, podID string, podCfg *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := containerConfig("cat", "/bin/sh")
	cfg.Stdin, cfg.StdinOnce = true, true
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions}}
	id := runContainer(t, podID, podCfg, cfg)
	cmd := exec.Command(suite.crictl, "--runtime-endpoint", "unix://"+suite.socket, "attach", "-i", id)
	cmd.Stdin = strings.NewReader("echo attached-$((6*7))\nexit 0\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "attached-42") {
		t.Fatalf("crictl attach: %v\n%s", err, out)
	}
	st := waitExited(t, id)
	if st.ExitCode != 0 {
		t.Errorf("the shell exited %d, want 0", st.ExitCode)
	}
	// The attached session's output is in the log as well.
	if log, err := os.ReadFile(filepath.Join(podCfg.LogDirectory, "cat.log")); err != nil || !strings.Contains(string(log), "stdout F attached-42") {
		t.Errorf("log: %q %v", log, err)
	}
}

// TestCrictlImages: pull, list, inspect, image file system usage and
// removal through crictl's image commands.
func TestCrictlImages(t *testing.T) {
	ref := suite.registry + "/e2e/busybox:1"
	crictl(t, "pull", ref)
	if out := crictl(t, "images"); !strings.Contains(out, suite.registry+"/e2e/busybox") {
		t.Errorf("crictl images:\n%s", out)
	}
	if out := crictl(t, "inspecti", ref); !strings.Contains(out, `"repoTags"`) || !strings.Contains(out, "/bin/sh") {
		t.Errorf("crictl inspecti:\n%s", out)
	}
	if out := crictl(t, "imagefsinfo"); !strings.Contains(out, `"usedBytes"`) || !strings.Contains(out, `"containerFilesystems"`) {
		t.Errorf("crictl imagefsinfo:\n%s", out)
	}
	if _, err := crictlErr("pull", suite.registry+"/e2e/missing:1"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("pull of a missing image: %v", err)
	}
	crictl(t, "rmi", ref)
	if out := crictl(t, "images", "-q", ref); strings.TrimSpace(out) != "" {
		t.Errorf("image still listed after rmi: %q", out)
	}
}

// TestExecSessions: ExecSync returns big output intact and exact exit
// codes, ends a command at its timeout (and kills it); crictl exec streams
// stdin and runs under a pty with -t; exec into a stopped container fails.
func TestExecSessions(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "exec")
	id := runContainer(t, podID, podCfg, containerConfig("target", "sleep", "600"))

	const big = 12 << 20
	resp, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"head", "-c", strconv.Itoa(big), "/dev/zero"}, Timeout: 30})
	if err != nil || len(resp.Stdout) != big || resp.ExitCode != 0 {
		t.Fatalf("ExecSync of %d bytes: %v, got %d bytes, exit %d", big, err, len(resp.GetStdout()), resp.GetExitCode())
	}
	if _, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 10}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ExecSync without a command: %v, want InvalidArgument", err)
	}
	for _, code := range []int{0, 1, 42, 255} {
		resp, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "exit " + strconv.Itoa(code)}, Timeout: 10})
		if err != nil || int(resp.ExitCode) != code {
			t.Errorf("exit %d: got %v %v", code, resp.GetExitCode(), err)
		}
	}
	start := time.Now()
	_, err = suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sleep", "4321"}, Timeout: 1})
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 20*time.Second {
		t.Errorf("ExecSync past its timeout: %v after %s, want DeadlineExceeded", err, time.Since(start))
	}
	resp, err = suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "pidof sleep"}, Timeout: 10})
	if err != nil || strings.Count(strings.TrimSpace(string(resp.Stdout)), " ") != 0 {
		t.Errorf("the timed-out sleep still runs: pidof sleep = %q %v", resp.GetStdout(), err)
	}

	out, err := crictlStdin("stdin went through\n", "exec", "-i", id, "cat")
	if err != nil || out != "stdin went through\n" {
		t.Errorf("crictl exec -i: %q %v", out, err)
	}
	// crictl wants a terminal for -t: script(1) (util-linux) gives it one.
	line := fmt.Sprintf("%s --runtime-endpoint unix://%s exec -it %s sh -c '[ -t 1 ] && tty'", suite.crictl, suite.socket, id)
	tty, err := exec.Command("script", "-qec", line, "/dev/null").CombinedOutput()
	if err != nil || !strings.Contains(string(tty), "/dev/pts/") {
		t.Errorf("crictl exec -it under a pty: %q %v", tty, err)
	}
	if _, err := crictlStdin("", "exec", id, "sh", "-c", "exit 3"); err == nil || !strings.Contains(err.Error(), "exit code 3") {
		t.Errorf("crictl exec of exit 3: %v", err)
	}

	crictl(t, "stop", "-t", "1", id)
	if _, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}, Timeout: 5}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ExecSync in a stopped container: %v, want FailedPrecondition", err)
	}
}

// crictlStdin runs crictl with stdin and returns its stdout.
func crictlStdin(stdin string, args ...string) (string, error) {
	full := append([]string{"--runtime-endpoint", "unix://" + suite.socket, "--image-endpoint", "unix://" + suite.socket, "--timeout", "30s"}, args...)
	cmd := exec.Command(suite.crictl, full...)
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return string(out), nil
}

// TestResourcesOOMAndLogReopen: UpdateContainerResources reaches the live
// cgroup; a container over its memory limit ends OOMKilled; after the log
// is renamed, ReopenContainerLog makes new lines land in a new file.
func TestResourcesOOMAndLogReopen(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "res")
	cfg := containerConfig("ticker", "/bin/sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}}
	id := runContainer(t, podID, podCfg, cfg)

	data, err := os.ReadFile(filepath.Join(suite.run, "containers", id, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		CgroupPath string `json:"cgroupPath"`
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.CgroupPath == "" {
		t.Fatalf("cgroup path in %s: %v", data, err)
	}
	limit := func() string {
		b, err := os.ReadFile(cgroupFile("memory", rec.CgroupPath, "memory.limit_in_bytes", "memory.max"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := limit(); got != strconv.Itoa(64<<20) {
		t.Errorf("memory limit at create: %s", got)
	}
	if _, err := suite.rt.UpdateContainerResources(ctx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 96 << 20}}); err != nil {
		t.Fatal(err)
	}
	if got := limit(); got != strconv.Itoa(96<<20) {
		t.Errorf("memory limit after UpdateContainerResources: %s", got)
	}

	logPath := filepath.Join(podCfg.LogDirectory, "ticker.log")
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.rt.ReopenContainerLog(ctx(t), &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(logPath); err != nil {
		t.Fatalf("no new log file when ReopenContainerLog returned: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	if fresh, _ := os.ReadFile(logPath); !strings.Contains(string(fresh), "stdout F tick") {
		t.Errorf("new log file: %q", fresh)
	}

	// dd's 64 MiB buffer is over the limit at once, on any CPU.
	hog := containerConfig("hog", "/bin/busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
	hog.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}}
	st := waitExited(t, runContainer(t, podID, podCfg, hog))
	if st.Reason != "OOMKilled" {
		t.Errorf("memory hog: reason %q exit %d, want OOMKilled", st.Reason, st.ExitCode)
	}
}

// TestHalfCreatedContainerCollected: a container whose create a crash cut
// short (its state holds only the recorded config) is removed, with its
// root filesystem, when the daemon starts again.
func TestHalfCreatedContainerCollected(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "half")
	id := runContainer(t, podID, podCfg, containerConfig("whole", "sleep", "600"))
	if err := stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	half := strings.Repeat("f", 64)
	dir := filepath.Join(suite.run, "containers", half)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(suite.run, "containers", id, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = bytes.ReplaceAll(cfg, []byte(id), []byte(half))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(suite.run, "rootfs", half), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state of the half-created container is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(suite.run, "rootfs", half)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rootfs dir of the half-created container is still there: %v", err)
	}
	if st := containerStatus(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the whole container after the restart: %v", st.State)
	}
}

// TestStopPodDuringCreate: kubelet may stop a pod while one of its
// containers is still being created. StopPodSandbox used to fail on that
// container ("no init to signal", FailedPrecondition) and kept failing;
// now it ends the create, which answers with an error and leaves nothing,
// and the pod stops and goes. The new container's supervisor is stopped as
// soon as the daemon records it, so the create is held half way.
func TestStopPodDuringCreate(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "stop-mid-create")
	dirs := filepath.Join(suite.run, "containers")
	before, _ := filepath.Glob(filepath.Join(dirs, "*"))
	done := createAsync(ctx(t), podID, podCfg, containerConfig("late", "sleep", "600"))
	var sup struct{ Pid int }
	var dir string
	for deadline := time.Now().Add(30 * time.Second); sup.Pid == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no supervisor recorded for the new container in 30s")
		}
		now, _ := filepath.Glob(filepath.Join(dirs, "*"))
		for _, d := range now {
			if slices.Contains(before, d) {
				continue
			}
			if data, err := os.ReadFile(filepath.Join(d, "supervisor.json")); err == nil && json.Unmarshal(data, &sup) == nil && sup.Pid > 0 {
				dir = d
				break
			}
		}
	}
	if err := syscall.Kill(sup.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "init.json")); err == nil {
		t.Fatal("the init was recorded before the supervisor could be stopped")
	}
	if _, err := suite.rt.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Errorf("StopPodSandbox during a create: %v", err)
	}
	if r := <-done; r.err == nil {
		removeContainer(r.id)
		t.Error("CreateContainer succeeded in a pod stopped during it")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state of the ended create is still there: %v", err)
	}
	if err := syscall.Kill(sup.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("supervisor %d of the ended create: %v, want gone", sup.Pid, err)
	}
	list, err := suite.rt.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if err != nil || len(list.Containers) != 0 {
		t.Errorf("containers of the stopped pod: %v, %v", list.GetContainers(), err)
	}
}

// TestContainerStatsMove: a busy container's CPU moves (cumulative and in
// nano-cores between two calls), its memory and its writable layer show
// what it wrote, and crictl stats lists it.
func TestContainerStatsMove(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "cstats")
	id := runContainer(t, podID, podCfg, containerConfig("busy", "/bin/sh", "-c",
		"head -c 3000000 /dev/zero > /tmp/written; while :; do :; done"))
	time.Sleep(time.Second)
	first, err := suite.rt.ContainerStats(ctx(t), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	second, err := suite.rt.ContainerStats(ctx(t), &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	a, b := first.Stats, second.Stats
	if b.Cpu.UsageCoreNanoSeconds.GetValue() <= a.Cpu.UsageCoreNanoSeconds.GetValue() {
		t.Errorf("cumulative CPU did not grow: %d then %d", a.Cpu.UsageCoreNanoSeconds.GetValue(), b.Cpu.UsageCoreNanoSeconds.GetValue())
	}
	// A busy loop on a shared 2-core machine: well above a tenth of a core.
	if cores := b.Cpu.UsageNanoCores.GetValue(); cores < 100_000_000 {
		t.Errorf("usage %d nano-cores, want a busy loop's", cores)
	}
	if b.Memory.WorkingSetBytes.GetValue() == 0 {
		t.Error("no working set")
	}
	if wl := b.WritableLayer; wl.GetUsedBytes().GetValue() < 3000000 || wl.GetInodesUsed().GetValue() == 0 || wl.GetFsId().GetMountpoint() == "" {
		t.Errorf("writable layer %+v, want the 3 MB written", wl)
	}
	if out := crictl(t, "stats", "--id", id); !strings.Contains(out, id[:13]) {
		t.Errorf("crictl stats:\n%s", out)
	}
}

// TestImageVolume: an image mounted read-only into a container (whole and
// by sub path), reported with its image ref, and gone with the container.
func TestImageVolume(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "imgvol")
	cfg := containerConfig("vol", "sleep", "600")
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: suite.image}},
		{ContainerPath: "/etc-of-img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: suite.image}, ImageSubPath: "etc"},
	}
	id := runContainer(t, podID, podCfg, cfg)
	resp, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 10,
		Cmd: []string{"sh", "-c", "ls /img/bin/busybox && cat /etc-of-img/passwd | head -1 && touch /img/new || echo read-only"}})
	if err != nil || !strings.Contains(string(resp.Stdout), "/img/bin/busybox") || !strings.Contains(string(resp.Stdout), "root:x:0:0") ||
		!strings.Contains(string(resp.Stdout), "read-only") {
		t.Errorf("inside: %q %q %v", resp.GetStdout(), resp.GetStderr(), err)
	}
	st := containerStatus(t, id)
	refs := 0
	for _, m := range st.Mounts {
		if m.Image != nil && strings.HasPrefix(m.Image.ImageRef, "sha256:") {
			refs++
		}
	}
	if refs != 2 {
		t.Errorf("status mounts %v: want both image volumes with their image ref", st.Mounts)
	}
	if _, err := suite.rt.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(suite.run, "rootfs", id+"*")); len(left) != 0 {
		t.Errorf("mount points left after removal: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(suite.root, "images", "containers", id+"*")); len(left) != 0 {
		t.Errorf("store records left after removal: %v", left)
	}
}
