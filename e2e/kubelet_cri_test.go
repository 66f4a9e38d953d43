package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// What kubelet relies on beyond what critest checks, each found by the
// node e2e suite (e2e/node).

// TestStatusNamesTheImageThePodAskedFor: kubelet creates a container from
// the image's ID and names the pod's image in user_specified_image; the
// container's status (kubelet's pod status) must show the latter, and the
// image's repository digest as its image_ref.
func TestStatusNamesTheImageThePodAskedFor(t *testing.T) {
	pullTestImage(t)
	img, err := runtimeapi.NewImageServiceClient(suite.conn).ImageStatus(ctx(t),
		&runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: suite.image}})
	if err != nil || img.GetImage() == nil || len(img.GetImage().GetRepoDigests()) == 0 {
		t.Fatalf("ImageStatus %s: %v %v, want an image with a repository digest", suite.image, img, err)
	}
	podID, podCfg := podWithLogs(t, "image-name")
	cfg := containerConfig("by-id", "sleep", "60")
	cfg.Image = &runtimeapi.ImageSpec{Image: img.GetImage().GetId(), UserSpecifiedImage: suite.image}
	id := runContainer(t, podID, podCfg, cfg)
	st := containerStatus(t, id)
	if st.GetImage().GetImage() != suite.image || st.GetImageRef() != img.GetImage().GetRepoDigests()[0] || st.GetImageId() != img.GetImage().GetId() {
		t.Errorf("status image %q, image_ref %q, image_id %q; want %q, %q, %q", st.GetImage().GetImage(), st.GetImageRef(), st.GetImageId(),
			suite.image, img.GetImage().GetRepoDigests()[0], img.GetImage().GetId())
	}
	list, err := suite.rt.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil || len(list.GetContainers()) != 1 || list.GetContainers()[0].GetImage().GetImage() != suite.image {
		t.Errorf("ListContainers: %v %v, want the container with image %q", list, err, suite.image)
	}
}

// TestLastLogLineWithoutNewline: output that does not end with a newline
// ends with a partial (P) record, so that kubelet reads it back as it was
// (a termination message from the log, "DONE", not "DONE\n").
func TestLastLogLineWithoutNewline(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "partial-log")
	id := runContainer(t, podID, podCfg, containerConfig("printer", "sh", "-c", "echo first; printf DONE"))
	if st := waitExited(t, id); st.GetExitCode() != 0 {
		t.Fatalf("printer: %v", st)
	}
	data, err := os.ReadFile(filepath.Join(podCfg.LogDirectory, "printer.log"))
	if err != nil {
		t.Fatal(err)
	}
	var records []string
	for line := range strings.Lines(string(data)) {
		if _, rest, ok := strings.Cut(line, " stdout "); ok {
			records = append(records, strings.TrimSuffix(rest, "\n"))
		}
	}
	if strings.Join(records, "|") != "F first|P DONE" {
		t.Errorf("log records %q, want a full one for \"first\" and a partial one for \"DONE\":\n%s", records, data)
	}
}

// TestPodStatsForKubelet: with PodAndContainerStatsFromCRI kubelet takes a
// pod's container stats and process count from PodSandboxStats and
// ListPodSandboxStats alone.
func TestPodStatsForKubelet(t *testing.T) {
	pullTestImage(t)
	cfg := podConfig("stats-kubelet")
	cfg.LogDirectory = t.TempDir()
	cfg.Linux.CgroupParent = fmt.Sprintf("/cri-mini-e2e-%d/pod-stats-kubelet", os.Getpid())
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := runPod(t, cfg)
	running := runContainer(t, podID, cfg, containerConfig("sleeper", "sleep", "60"))
	exited := runContainer(t, podID, cfg, containerConfig("done", "true"))
	waitExited(t, exited)
	check := func(name string, st *runtimeapi.PodSandboxStats) {
		t.Helper()
		var ids []string
		for _, c := range st.GetLinux().GetContainers() {
			ids = append(ids, c.GetAttributes().GetId())
			if c.GetCpu() == nil || c.GetMemory().GetWorkingSetBytes() == nil || c.GetAttributes().GetMetadata().GetName() != "sleeper" {
				t.Errorf("%s: container stats %v lack usage or name", name, c)
			}
		}
		if strings.Join(ids, ",") != running {
			t.Errorf("%s: container stats of %q, want only the running %s", name, ids, running)
		}
		// The pause process and sleep.
		if n := st.GetLinux().GetProcess().GetProcessCount().GetValue(); n < 2 {
			t.Errorf("%s: process count %d, want at least 2", name, n)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		one, err := suite.rt.PodSandboxStats(ctx(t), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
		if err != nil {
			t.Fatal(err)
		}
		if len(one.GetStats().GetLinux().GetContainers()) == 1 || time.Now().After(deadline) {
			check("PodSandboxStats", one.GetStats())
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	list, err := suite.rt.ListPodSandboxStats(ctx(t), &runtimeapi.ListPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: podID}})
	if err != nil || len(list.GetStats()) != 1 {
		t.Fatalf("ListPodSandboxStats: %v %v", list, err)
	}
	check("ListPodSandboxStats", list.GetStats()[0])
}
