package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/treetest"
)

// usernsOptions is a pod's own user namespace as kubelet asks for one
// (hostUsers: false): 65536 ids from a multiple of 65536, each test's
// pods their own range n.
func usernsOptions(n uint32) *runtimeapi.UserNamespace {
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 0x10000 * (4000 + n), Length: 0x10000}}
	return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}
}

// usernsPod runs a pod with logs, a shared pid namespace (so a pause) and
// the user namespace u.
func usernsPod(t *testing.T, name string, u *runtimeapi.UserNamespace) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := podConfig(name)
	cfg.LogDirectory = t.TempDir()
	cfg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: u}
	return runPod(t, cfg), cfg
}

// TestUserNamespacePodThroughCRI: a pod with hostUsers: false, as kubelet
// sends it, through the CRI. Inside, root is uid 0 with the pod's
// uid_map; on the host the container's process is the mapped user, and
// what it writes to its writable layer and to a host-path volume belongs
// to the mapped root; an idmapped volume shows the host's root as 0 and
// stores its writes as the host's root; the image's layers are unchanged;
// an idmapped image volume shows the image's root files as root's; the
// statuses report the user namespace; exec, logs, stats and
// port-forward work, and so does all of it after a kill -9 of the daemon.
func TestUserNamespacePodThroughCRI(t *testing.T) {
	pullTestImage(t)
	u := usernsOptions(1)
	host := u.Uids[0].HostId
	root := fmt.Sprintf("%d:%d", host, host)
	podID, podCfg := usernsPod(t, "userns", u)
	st, err := suite.rt.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetStatus().GetLinux().GetNamespaces().GetOptions().GetUsernsOptions(); got.GetMode() != runtimeapi.NamespaceMode_POD ||
		len(got.GetUids()) != 1 || got.GetUids()[0].GetHostId() != host || got.GetGids()[0].GetLength() != 0x10000 {
		t.Errorf("PodSandboxStatus userns_options %v, want %v", got, u)
	}

	layers := filepath.Join(suite.root, "images", "layers")
	before := sha256.Sum256([]byte(treetest.Describe(t, layers)))
	plain, mapped := t.TempDir(), t.TempDir()
	if err := os.Chmod(plain, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mapped, "hostfile"), []byte("host's"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := containerConfig("app", "sh", "-c", `id -u; id -g; cat /proc/self/uid_map
echo written > /written; echo more >> /etc/passwd; touch /plain/f /mapped/f; stat -c %u:%g /mapped/hostfile /img/bin/busybox
echo ready; while :; do echo tick; sleep 0.2; done`)
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/plain", HostPath: plain},
		{ContainerPath: "/mapped", HostPath: mapped, UidMappings: u.Uids, GidMappings: u.Gids},
		{ContainerPath: "/img", Readonly: true, Image: &runtimeapi.ImageSpec{Image: suite.image}, UidMappings: u.Uids, GidMappings: u.Gids}}
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions}}
	id := runContainer(t, podID, podCfg, cfg)
	logPath := filepath.Join(podCfg.LogDirectory, cfg.LogPath)
	waitFor(t, "the container's output", func() bool { return strings.Contains(criLogText(readFile(t, logPath)), "ready") })
	out := criLogText(readFile(t, logPath))
	if !regexp.MustCompile(fmt.Sprintf(`^0\n0\n\s+0\s+%d\s+65536\n0:0\n0:0\nready\n`, host)).MatchString(out) {
		t.Errorf("the container printed:\n%s\nwant uid and gid 0, the pod's uid_map, the host's root file and the image volume's as 0:0", out)
	}

	resp, err := suite.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid              int
		NamespaceOptions *runtimeapi.NamespaceOption `json:"namespaceOptions"`
	}
	if err := json.Unmarshal([]byte(resp.GetInfo()["info"]), &info); err != nil || info.Pid == 0 {
		t.Fatalf("verbose ContainerStatus: %v\n%s", err, resp.GetInfo()["info"])
	}
	if got := info.NamespaceOptions.GetUsernsOptions(); got.GetMode() != runtimeapi.NamespaceMode_POD || got.GetUids()[0].GetHostId() != host {
		t.Errorf("ContainerStatus namespace options %v, want the pod's user namespace", info.NamespaceOptions)
	}
	// /proc/PID belongs to the process's effective ids.
	if got := treetest.Owner(t, fmt.Sprintf("/proc/%d", info.Pid)); got != root {
		t.Errorf("the container's process runs as %s on the host, want %s", got, root)
	}
	upper := filepath.Join(suite.root, "images", "containers", id, "upper")
	for path, want := range map[string]string{
		filepath.Join(upper, "written"):    root,
		filepath.Join(upper, "etc/passwd"): root, // copied up from the image
		filepath.Join(plain, "f"):          root,
		filepath.Join(mapped, "f"):         "0:0",
	} {
		if got := treetest.Owner(t, path); got != want {
			t.Errorf("%s owned by %s on the host, want %s", path, got, want)
		}
	}
	if after := sha256.Sum256([]byte(treetest.Describe(t, layers))); after != before {
		t.Errorf("the image's layers changed (tree hash %x, was %x)", after, before)
	}

	check := func(when string, port int) {
		if got := execSync(t, id, "sh", "-c", "id -u; cat /proc/self/uid_map"); !regexp.MustCompile(fmt.Sprintf(`^0\n\s+0\s+%d\s+65536\n$`, host)).MatchString(got) {
			t.Errorf("%s: exec printed %q, want root in the pod's user namespace", when, got)
		}
		stats, err := suite.rt.ContainerStats(ctx(t), &runtimeapi.ContainerStatsRequest{ContainerId: id})
		if err != nil || stats.GetStats().GetMemory().GetWorkingSetBytes().GetValue() == 0 {
			t.Errorf("%s: ContainerStats %v %v", when, stats, err)
		}
		if got := portForwarded(t, podID, port); got != "through port-forward" {
			t.Errorf("%s: port-forward into the pod: %q", when, got)
		}
	}
	check("running", 8082)
	if err := stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("after a kill -9 of the daemon the container is %v", st.State)
	}
	check("after a restart of the daemon", 8083)
	n := len(readFile(t, logPath))
	waitFor(t, "a log line after the restart", func() bool { return len(readFile(t, logPath)) > n })
}

// TestUserNamespacePodsRefused: what kubelet's validation refuses of a pod
// with hostUsers: false, and what it never sends, is refused through the
// CRI too, before anything is made.
func TestUserNamespacePodsRefused(t *testing.T) {
	pullTestImage(t)
	u := usernsOptions(2)
	podID, podCfg := usernsPod(t, "userns-refused", u)
	privileged := containerConfig("privileged", "true")
	privileged.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Privileged: true, NamespaceOptions: podCfg.Linux.SecurityContext.NamespaceOptions}}
	_, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: privileged, SandboxConfig: podCfg})
	wantCode(t, "privileged container in a user namespace", err, codes.InvalidArgument, "privileged")

	hostNet := podConfig("userns-hostnet")
	hostNet.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, UsernsOptions: usernsOptions(3)}
	_, err = suite.rt.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: hostNet})
	wantCode(t, "host network with a user namespace", err, codes.InvalidArgument, "host's network")

	hostRoot := podConfig("userns-hostroot")
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 0, Length: 0x10000}}
	hostRoot.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}
	_, err = suite.rt.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: hostRoot})
	wantCode(t, "a mapping of the host's root", err, codes.InvalidArgument, "host's uid 0")

	overlap := podConfig("userns-overlap")
	overlap.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{UsernsOptions: u}
	_, err = suite.rt.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: overlap})
	wantCode(t, "the range of another running pod", err, codes.InvalidArgument, podID)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
