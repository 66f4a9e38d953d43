package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
)

// cgroupFile reads a file of a cgroup (cgroupfs path) in the v1 hierarchy
// of controller.
func readV1CgroupFile(t *testing.T, controller, cgroup, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, cgroup, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// containerCgroup is the cgroup of a container, from its verbose status.
func containerCgroup(t *testing.T, id string) string {
	t.Helper()
	resp, err := suite.rt.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		CgroupPath string `json:"cgroupPath"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.CgroupPath == "" {
		t.Fatalf("cgroup path in the verbose status: %v\n%s", err, resp.Info["info"])
	}
	return info.CgroupPath
}

// TestInPlaceResize: the CRI calls of kubelet's in-place resize of a pod
// and its container (a static pod cannot be resized: kubelet would make
// a new pod). The pod's cgroup gets its resources plus its overhead at
// start and at UpdatePodSandboxResources; after UpdateContainerResources,
// ContainerStatus (which kubelet copies into the pod's status), the
// container's cgroup and `cri-mini explain` all show the new limits, and
// still do after the daemon is killed and started again. A resize the
// kernel refuses changes nothing.
func TestInPlaceResize(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skipf("reads cgroup v1 files: %v", err)
	}
	pullTestImage(t)
	res := func(shares, quota, mem int64) *runtimeapi.LinuxContainerResources {
		return &runtimeapi.LinuxContainerResources{CpuShares: shares, CpuQuota: quota, CpuPeriod: 100000, MemoryLimitInBytes: mem}
	}
	cfg := podConfig("resize")
	cfg.LogDirectory = t.TempDir()
	parent := fmt.Sprintf("/cri-mini-e2e-%d/pod-resize", os.Getpid())
	cfg.Linux.CgroupParent = parent
	overhead := res(102, 10000, 16<<20)
	cfg.Linux.Resources, cfg.Linux.Overhead = res(512, 50000, 64<<20), overhead
	podID := runPod(t, cfg)
	podCgroup := func() string {
		return fmt.Sprintf("shares %s quota %s memory %s", readV1CgroupFile(t, "cpu", parent, "cpu.shares"),
			readV1CgroupFile(t, "cpu", parent, "cpu.cfs_quota_us"), readV1CgroupFile(t, "memory", parent, "memory.limit_in_bytes"))
	}
	if got, want := podCgroup(), fmt.Sprintf("shares 614 quota 60000 memory %d", 80<<20); got != want {
		t.Errorf("pod cgroup at start: %s, want resources plus overhead: %s", got, want)
	}

	ctrCfg := containerConfig("resized", "sleep", "600")
	ctrCfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: res(512, 50000, 64<<20)}
	id := runContainer(t, podID, cfg, ctrCfg)
	cgroup := containerCgroup(t, id)

	// Growing, kubelet resizes the pod first, then the container.
	if _, err := suite.rt.UpdatePodSandboxResources(ctx(t), &runtimeapi.UpdatePodSandboxResourcesRequest{
		PodSandboxId: podID, Resources: res(1024, 100000, 128<<20), Overhead: overhead}); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.rt.UpdateContainerResources(ctx(t), &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id, Linux: res(1024, 100000, 128<<20)}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if got, want := podCgroup(), fmt.Sprintf("shares 1126 quota 110000 memory %d", 144<<20); got != want {
			t.Errorf("%s: pod cgroup %s, want %s", when, got, want)
		}
		r := containerStatus(t, id).GetResources().GetLinux()
		if r.CpuShares != 1024 || r.CpuQuota != 100000 || r.CpuPeriod != 100000 || r.MemoryLimitInBytes != 128<<20 {
			t.Errorf("%s: ContainerStatus resources %+v, want shares 1024, quota 100000/100000, 128 MiB", when, r)
		}
		if got := readV1CgroupFile(t, "memory", cgroup, "memory.limit_in_bytes"); got != strconv.Itoa(128<<20) {
			t.Errorf("%s: container memory.limit_in_bytes %s", when, got)
		}
		out, err := exec.Command(suite.bin, "explain", "--runroot", suite.run, "--json", id).Output()
		if err != nil {
			t.Fatalf("cri-mini explain: %v", err)
		}
		var plan []container.Step
		if err := json.Unmarshal(out, &plan); err != nil {
			t.Fatal(err)
		}
		writes := map[string]string{}
		for _, s := range plan {
			if s.Kind == container.KindCgroup {
				for _, w := range s.Cgroup.Writes {
					writes[w.File] = w.Value
				}
			}
		}
		if writes["memory.limit_in_bytes"] != strconv.Itoa(128<<20) || writes["cpu.cfs_quota_us"] != "100000" || writes["cpu.shares"] != "1024" {
			t.Errorf("%s: cri-mini explain writes %v, want the new limits", when, writes)
		}
	}
	check("after the resize")
	if err := stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}
	check("after the daemon's kill -9 and restart")
	if _, info := podInfo(t, podID); info.Spec.Resources == nil || *info.Spec.Resources.Memory.Limit != 144<<20 {
		t.Errorf("pod resources recorded after the restart: %+v", info.Spec.Resources)
	}

	// cpu.shares is written before the cpuset the kernel refuses.
	_, err := suite.rt.UpdateContainerResources(ctx(t), &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuShares: 2048, CpusetCpus: "4095"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("resize to a cpuset the machine lacks: %v, want InvalidArgument", err)
	}
	check("after a refused resize")
	if _, err := suite.rt.UpdateContainerResources(ctx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: "feedface", Linux: res(1024, 0, 0)}); status.Code(err) != codes.NotFound {
		t.Errorf("UpdateContainerResources of an unknown container: %v, want NotFound", err)
	}
	if _, err := suite.rt.UpdateContainerResources(ctx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("UpdateContainerResources without resources: %v, want InvalidArgument", err)
	}
	if _, err := suite.rt.UpdatePodSandboxResources(ctx(t), &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: "feedface", Resources: res(2, 0, 0)}); status.Code(err) != codes.NotFound {
		t.Errorf("UpdatePodSandboxResources of an unknown pod: %v, want NotFound", err)
	}
	if _, err := suite.rt.UpdatePodSandboxResources(ctx(t), &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: podID}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("UpdatePodSandboxResources without resources: %v, want InvalidArgument", err)
	}
}
