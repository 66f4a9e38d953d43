package e2e

// More of the hostile-input suite (hostile_test.go): image layers whose
// entries aim outside the layer, and CRI requests whose path-like fields
// aim outside the container. Each attack checks that the host directory it
// aims at is unchanged (hashed before and after) and, where an attack could
// hold something up, that another pod is served meanwhile.
// docs/threat-model.md lists each defence and the test that attacks it.

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/treetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// link is a symbolic or hard link entry.
func link(typ byte, name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: typ, Linkname: target, Mode: 0o777}}
}

// craftedImage pushes the suite's busybox image with the given layers on
// top, written entry by entry as they are, and returns its reference.
func craftedImage(t *testing.T, repo string, layers ...[]tarEntry) string {
	t.Helper()
	img := baseImage(t)
	for _, l := range layers {
		img = appendLayer(t, img, l...)
	}
	return push(t, "hostile/"+repo, img)
}

// pullImage pulls ref through the CRI; the test removes what it pulled.
func pullImage(t *testing.T, ref string) error {
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	_, err := ic.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err == nil {
		t.Cleanup(func() {
			_, _ = ic.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		})
	}
	return err
}

// target is a host directory an attack aims at: a secret file and a
// subdirectory; hash says what is there now.
func target(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// unchanged fails the test if dir is not as treetest.Describe found it
// before, or if a mount appeared in it.
func unchanged(t *testing.T, dir, before string) {
	t.Helper()
	if after := treetest.Describe(t, dir); after != before {
		t.Errorf("the attack changed the host directory %s", dir)
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), " "+dir) {
		t.Errorf("a mount appeared on the host in %s", dir)
	}
}

// stillServes runs a whole pod (sandbox, container, exec, removal) while
// an attack goes on, to show that the attack stalls nobody else. The
// deadline is a hang detector, not a speed check.
func stillServes(t *testing.T, name string) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := podConfig(name)
	pod, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Errorf("another pod while under attack: RunPodSandbox: %v", err)
		return
	}
	defer func() {
		if _, err := suite.rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
			t.Errorf("another pod while under attack: remove: %v", err)
		}
	}()
	ctr, err := suite.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId,
		Config: containerConfig(name, "/bin/sleep", "600"), SandboxConfig: cfg})
	if err != nil {
		t.Errorf("another pod while under attack: CreateContainer: %v", err)
		return
	}
	if _, err := suite.rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		t.Errorf("another pod while under attack: StartContainer: %v", err)
		return
	}
	out, err := suite.rt.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr.ContainerId, Cmd: []string{"echo", "ok"}, Timeout: 30})
	if err != nil || string(out.GetStdout()) != "ok\n" {
		t.Errorf("another pod while under attack: ExecSync: %q, %v", out.GetStdout(), err)
	}
}

// runIn runs cmd in a new container of image ref in its own pod (with the
// user namespace u, unless nil) and returns its output and exit code.
func runIn(t *testing.T, podName, ref string, u *runtimeapi.UserNamespace, cmd ...string) (string, int32) {
	t.Helper()
	var podID string
	var podCfg *runtimeapi.PodSandboxConfig
	if u != nil {
		podID, podCfg = usernsPod(t, podName, u)
	} else {
		podID, podCfg = podWithLogs(t, podName)
	}
	cfg := containerConfig(podName, cmd...)
	cfg.Image = &runtimeapi.ImageSpec{Image: ref}
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions}}
	id := runContainer(t, podID, podCfg, cfg)
	st := waitExited(t, id)
	logs, err := os.ReadFile(filepath.Join(podCfg.LogDirectory, cfg.LogPath))
	if err != nil {
		t.Fatal(err)
	}
	return string(logs), st.ExitCode
}

func TestHostileImages(t *testing.T) {
	pullTestImage(t)
	t.Run("names that leave the layer", func(t *testing.T) {
		dir := target(t)
		before := treetest.Describe(t, dir)
		for i, n := range []string{"../../../../../../../../.." + dir + "/pwned", dir + "/pwned", "a/../../" + dir + "/pwned"} {
			ref := craftedImage(t, fmt.Sprintf("traversal%d", i), []tarEntry{regular(n, []byte("pwned\n"))})
			if err := pullImage(t, ref); status.Code(err) != codes.InvalidArgument {
				t.Errorf("pull of a layer with entry %q: %v, want InvalidArgument", n, err)
			}
		}
		unchanged(t, dir, before)
	})
	t.Run("symlinks out, then writes through them", func(t *testing.T) {
		dir := target(t)
		before := treetest.Describe(t, dir)
		ref := craftedImage(t, "symlinks",
			[]tarEntry{link(tar.TypeSymlink, "abs", dir), link(tar.TypeSymlink, "rel", "../../../../../../../../../.."+dir),
				link(tar.TypeSymlink, "sub", "abs/sub")},
			[]tarEntry{regular("abs/pwned", []byte("x")), regular("rel/pwned", []byte("x")), regular("sub/pwned", []byte("x")),
				regular("abs/secret", []byte("overwritten"))})
		if err := pullImage(t, ref); err != nil {
			t.Fatalf("pull: %v (the links resolve inside the image, which is valid)", err)
		}
		// In a user namespace too: the rootfs is mounted another way
		// (idmapped layers), the init resolves in it all the same.
		for _, u := range []*runtimeapi.UserNamespace{nil, usernsOptions(6)} {
			out, code := runIn(t, fmt.Sprintf("hostile-symlinks-%v", u != nil), ref, u, "sh", "-c",
				"cat /abs/secret /rel/secret; echo w > /abs/new; echo w > /rel/sub/new; ls /abs /rel/sub")
			if strings.Contains(out, "host secret") {
				t.Errorf("the container (user namespace %v) read the host's secret through an image symlink:\n%s", u != nil, out)
			}
			if code != 0 {
				t.Logf("container exit %d:\n%s", code, out)
			}
		}
		unchanged(t, dir, before)
	})
	t.Run("hard links out of the layer and across layers", func(t *testing.T) {
		dir := target(t)
		before := treetest.Describe(t, dir)
		for i, layers := range [][][]tarEntry{
			{{link(tar.TypeLink, "steal", dir+"/secret")}},
			{{link(tar.TypeLink, "steal", "../../../../../../../../.."+dir+"/secret")}},
			{{link(tar.TypeSymlink, "d", dir)}, {link(tar.TypeLink, "steal", "d/secret")}},
			{{regular("a", []byte("layer one"))}, {link(tar.TypeLink, "b", "a")}},
		} {
			ref := craftedImage(t, fmt.Sprintf("hardlink%d", i), layers...)
			err := pullImage(t, ref)
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("pull of hard-link attack %d: %v, want InvalidArgument", i, err)
			}
		}
		unchanged(t, dir, before)
	})
	t.Run("device nodes", func(t *testing.T) {
		ref := craftedImage(t, "devices", []tarEntry{
			{hdr: tar.Header{Name: "mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o666}},
			{hdr: tar.Header{Name: "disk", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o666}},
		})
		if err := pullImage(t, ref); err != nil {
			t.Fatalf("pull: %v", err)
		}
		for _, u := range []*runtimeapi.UserNamespace{nil, usernsOptions(7)} {
			out, _ := runIn(t, fmt.Sprintf("hostile-devices-%v", u != nil), ref, u, "sh", "-c",
				"head -c 1 /mem >/dev/null && echo READ mem; head -c 1 /disk >/dev/null && echo READ disk; echo done")
			if strings.Contains(out, "READ") || !strings.Contains(out, "done") {
				t.Errorf("the container (user namespace %v) read a device node from its image:\n%s", u != nil, out)
			}
		}
	})
}

// TestHostileRequests sends CRI requests whose path-like fields climb out
// of where they belong, and malformed or huge values: each is refused with
// InvalidArgument or kept inside the container, and nothing on the host
// changes.
func TestHostileRequests(t *testing.T) {
	pullTestImage(t)
	dir := target(t)
	before := treetest.Describe(t, dir)
	podID, podCfg := podWithLogs(t, "hostile-req")
	rel := "../../../../../../../../.." + dir
	refused := map[string]func(*runtimeapi.ContainerConfig){
		"relative container path": func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "data", HostPath: t.TempDir()}}
		},
		"image sub path climbing out": func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: suite.image}, ImageSubPath: rel}}
		},
		"relative seccomp profile": func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: rel + "/secret"}}}
		},
		"run_as_user beyond 32 bits": func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1 << 32}}}
		},
		"relative working dir": func(c *runtimeapi.ContainerConfig) { c.WorkingDir = rel },
	}
	var wg sync.WaitGroup
	for what, mutate := range refused {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := containerConfig(strings.ReplaceAll(what, " ", "-"), "true")
			mutate(cfg)
			resp, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
			removeContainer(resp.GetContainerId())
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s: %v, want InvalidArgument", what, err)
			}
		}()
	}
	stillServes(t, "hostile-req-bystander")
	wg.Wait()

	// Paths inside the container resolve inside its rootfs (R18): an
	// absolute path that climbs is the same path from the container's /.
	cfg := containerConfig("inside", "sh", "-c", "pwd; ls -d "+dir)
	cfg.WorkingDir = "/" + rel + "/wd"
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/" + rel, HostPath: t.TempDir()}}
	id := runContainer(t, podID, podCfg, cfg)
	if st := waitExited(t, id); st.ExitCode != 0 {
		t.Errorf("container with climbing paths: exit %d, %s", st.ExitCode, st.Message)
	}
	if logs, err := os.ReadFile(filepath.Join(podCfg.LogDirectory, cfg.LogPath)); err != nil || !strings.Contains(string(logs), " "+dir+"/wd\n") {
		t.Errorf("working dir inside the container: %q, %v", logs, err)
	}

	// Pods: a sysctl key that is a path, a hostname the kernel refuses.
	for what, mutate := range map[string]func(*runtimeapi.PodSandboxConfig){
		"sysctl key climbing out": func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.Sysctls = map[string]string{"../../../proc/sysrq-trigger": "b"}
		},
		"hostname of 300 chars":   func(p *runtimeapi.PodSandboxConfig) { p.Hostname = strings.Repeat("h", 300) },
		"hostname with a newline": func(p *runtimeapi.PodSandboxConfig) { p.Hostname = "a\nb" },
	} {
		p := podConfig("hostile-pod")
		mutate(p)
		resp, err := suite.rt.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: p})
		if resp.GetPodSandboxId() != "" {
			_, _ = suite.rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", what, err)
		}
	}
	unchanged(t, dir, before)
}

// TestDecompressionBomb: a layer that unpacks to more than max_layer_size
// (a few hundred KiB of gzip holding 160 MiB of zeros here; the same at
// 64 GiB, the default, fills a node's disk) fails its pull with
// ResourceExhausted naming the limit, leaves nothing in the store, and
// stalls no other pod.
func TestDecompressionBomb(t *testing.T) {
	pullTestImage(t)
	ref := push(t, "hostile/bomb", layered(t, nil, regular("zeros", make([]byte, maxLayerSize+32<<20))))
	tmp := filepath.Join(suite.root, "images", "tmp")
	before := dirBytes(filepath.Join(suite.root, "images"))
	done := make(chan error, 1)
	go func() { done <- pullImage(t, ref) }()
	stillServes(t, "bomb-bystander")
	wantCode(t, "pull of a decompression bomb", <-done, codes.ResourceExhausted, strconv.Itoa(maxLayerSize))
	if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
		t.Errorf("the refused layer left %d entries in %s", len(entries), tmp)
	}
	if after := dirBytes(filepath.Join(suite.root, "images")); after > before+1<<20 {
		t.Errorf("the store grew by %d bytes for a refused layer", after-before)
	}
}
