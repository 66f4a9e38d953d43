package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/registrytest"
)

// writeHostsToml writes the daemon's hosts.toml for registry (in the
// running daemon's config path: it reads it at the next pull).
func writeHostsToml(t *testing.T, registry, content string) string {
	t.Helper()
	dir := filepath.Join(suite.certsDir, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".hosts.toml")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "hosts.toml")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// daemonLogSince returns what the daemon logged after offset.
func daemonLogSince(t *testing.T, offset int64) string {
	t.Helper()
	f, err := os.Open(suite.logFile.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func daemonLogSize(t *testing.T) int64 {
	t.Helper()
	st, err := os.Stat(suite.logFile.Name())
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestRegistryHostsThroughCRI: kubelet's PullImage against registries the
// node reaches only as a hosts.toml written while the daemon runs says: a
// registry demanding a client certificate of a CA made here (mTLS), then
// a registry behind mirrors only, first all dead (Unavailable, the registry
// never asked), then with a live mirror (served there, named as the
// registry). The log names the endpoint that served, the metrics count it.
func TestRegistryHostsThroughCRI(t *testing.T) {
	pki := registrytest.NewPKI(t)
	secure := registrytest.New(t, registrytest.Options{TLS: pki, ClientCerts: true})
	// A layer of its own, so that the pull downloads something.
	secure.Push(t, "e2e/mtls:1", appendLayer(t, baseImage(t), regular("mtls", []byte(secure.Host))))
	ref := secure.Host + "/e2e/mtls:1"
	if err := pullImage(t, ref); err == nil {
		t.Fatal("pull from an mTLS registry without its hosts.toml succeeded")
	}
	dir := writeHostsToml(t, secure.Host, fmt.Sprintf("ca = \"ca.pem\"\nclient = [[%q, %q]]\n", pki.ClientCert, pki.ClientKey))
	if data, err := os.ReadFile(pki.CAFile); err != nil || os.WriteFile(filepath.Join(dir, "ca.pem"), data, 0o644) != nil {
		t.Fatal(err)
	}
	offset := daemonLogSize(t)
	if err := pullImage(t, ref); err != nil {
		t.Fatalf("pull with hosts.toml naming the CA and a client certificate: %v", err)
	}
	if log := daemonLogSince(t, offset); !strings.Contains(log, `endpoint="https://`+secure.Host+`/v2"`) {
		t.Errorf("the daemon log does not name the endpoint that served %s:\n%s", ref, log)
	}
	runContainerFrom(t, "mtls", ref, nil)

	upstream, mirror := registrytest.New(t, registrytest.Options{}), registrytest.New(t, registrytest.Options{})
	img := baseImage(t)
	upstream.Push(t, "e2e/app:1", img)
	mirror.Push(t, "e2e/app:1", img)
	pushes := len(upstream.Log())
	dead := registrytest.DeadAddr(t)
	writeHostsToml(t, upstream.Host, fmt.Sprintf("mirrors_only = true\n[host.\"http://%s\"]\n", dead))
	ref = upstream.Host + "/e2e/app:1"
	wantCode(t, "pull with every mirror dead", pullImage(t, ref), codes.Unavailable, dead)

	writeHostsToml(t, upstream.Host, fmt.Sprintf("mirrors_only = true\n[host.\"http://%s\"]\n[host.\"http://%s\"]\n", dead, mirror.Host))
	offset = daemonLogSize(t)
	if err := pullImage(t, ref); err != nil {
		t.Fatalf("pull through the live second mirror: %v", err)
	}
	if log := daemonLogSince(t, offset); !strings.Contains(log, `endpoint="http://`+mirror.Host+`/v2" mirror=true`) {
		t.Errorf("the daemon log does not name the mirror that served:\n%s", log)
	}
	st, err := runtimeapi.NewImageServiceClient(suite.conn).ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil || st.GetImage() == nil || !strings.Contains(strings.Join(st.GetImage().GetRepoTags(), " "), ref) {
		t.Errorf("ImageStatus %s: %v %v, want the registry's name", ref, st, err)
	}
	if n := len(upstream.Log()) - pushes; n > 0 {
		t.Errorf("the registry got %d requests through mirrors_only", n)
	}
	for sample, want := range map[string]float64{
		`cri_mini_image_pull_endpoint_attempts_total{endpoint="http://` + mirror.Host + `/v2",result="ok"}`:   1,
		`cri_mini_image_pull_endpoint_attempts_total{endpoint="http://` + dead + `/v2",result="unavailable"}`: 2,
	} {
		if got := metric(t, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	if metric(t, "cri_mini_image_pull_bytes_total") <= 0 || metric(t, "cri_mini_image_pull_duration_seconds_count") <= 0 ||
		metric(t, "cri_mini_image_pulls_in_progress") != 0 {
		t.Error("the pull bytes, duration or in-progress metrics do not show the pulls")
	}
}

// runContainerFrom runs a container of image with mounts and command
// (default /bin/true) and waits for it to exit 0.
func runContainerFrom(t *testing.T, name, image string, mounts []*runtimeapi.Mount, command ...string) {
	t.Helper()
	if len(command) == 0 {
		command = []string{"/bin/true"}
	}
	podCfg := podConfig(name)
	pod := runPod(t, podCfg)
	resp, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: podCfg,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name}, Image: &runtimeapi.ImageSpec{Image: image},
			Command: command, Mounts: mounts}})
	if err != nil {
		t.Fatalf("create a container of %s: %v", image, err)
	}
	if _, err := suite.rt.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitFor(t, "the container to exit 0", func() bool {
		st, err := suite.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: resp.ContainerId})
		return err == nil && st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && st.GetStatus().GetExitCode() == 0
	})
}

// TestShortNamesThroughCRI: a daemon with no short-name search registry
// refuses "busybox" with InvalidArgument (PullImage and ImageStatus,
// which kubelet calls first), and an alias makes a short name a full one.
func TestShortNamesThroughCRI(t *testing.T) {
	restartWith(t, "--short-name-search", "", "--short-name-alias", "e2e-short="+suite.registry+"/e2e-short")
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	wantCode(t, "PullImage busybox", pullImage(t, "busybox"), codes.InvalidArgument, `"busybox" names no registry`, "short_name_search")
	_, err := ic.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:1.36"}})
	wantCode(t, "ImageStatus busybox:1.36", err, codes.InvalidArgument, "names no registry")

	push(t, "e2e-short", baseImage(t))
	if err := pullImage(t, "e2e-short:1"); err != nil {
		t.Fatalf("pull through an alias: %v", err)
	}
	st, err := ic.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "e2e-short:1"}})
	if err != nil || !slices.Contains(st.GetImage().GetRepoTags(), suite.registry+"/e2e-short:1") {
		t.Errorf("ImageStatus of the alias: %v %v", st, err)
	}
}

// restartWith restarts the suite's daemon with extra flags, and restarts
// it without them when the test ends.
func restartWith(t *testing.T, args ...string) {
	t.Helper()
	if err := stopDaemon(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	suite.extraArgs = args
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stopDaemon(syscall.SIGTERM); err != nil {
			t.Error(err)
		}
		suite.extraArgs = nil
		if err := startDaemon(); err != nil {
			t.Fatal(err)
		}
	})
}
