package e2e

import (
	"context"
	"fmt"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkPodThroughCRI measures a whole pod life through the daemon's
// socket: RunPodSandbox (namespaces, CNI bridge network, files, shm),
// StopPodSandbox and RemovePodSandbox.
func BenchmarkPodThroughCRI(b *testing.B) {
	c := context.Background()
	for i := 0; b.Loop(); i++ {
		cfg := podConfig(fmt.Sprintf("bench-%d", i))
		resp, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := suite.rt.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
			b.Fatal(err)
		}
		if _, err := suite.rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatusCalls measures the calls kubelet repeats every second,
// with 20 pods on the node.
func BenchmarkStatusCalls(b *testing.B) {
	c := context.Background()
	var ids []string
	for i := range 20 {
		cfg := podConfig(fmt.Sprintf("bench-status-%d", i))
		cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
		resp, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, resp.PodSandboxId)
	}
	b.Cleanup(func() {
		for _, id := range ids {
			_, _ = suite.rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		}
	})
	b.Run("ListPodSandbox", func(b *testing.B) {
		for b.Loop() {
			if _, err := suite.rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PodSandboxStatus", func(b *testing.B) {
		for b.Loop() {
			if _, err := suite.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: ids[0]}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Status", func(b *testing.B) {
		for b.Loop() {
			if _, err := suite.rt.Status(c, &runtimeapi.StatusRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkExecSync measures ExecSync of `true` in a running container, the
// call kubelet's exec probes make.
func BenchmarkExecSync(b *testing.B) {
	c := context.Background()
	cfg := podConfig("bench-exec")
	pod, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	defer suite.rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	defer suite.rt.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	if _, err := runtimeapi.NewImageServiceClient(suite.conn).PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: suite.image}}); err != nil {
		b.Fatal(err)
	}
	ctr, err := suite.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: containerConfig("sleeper", "sleep", "600"), SandboxConfig: cfg})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := suite.rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		resp, err := suite.rt.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: ctr.ContainerId, Cmd: []string{"true"}, Timeout: 10})
		if err != nil || resp.ExitCode != 0 {
			b.Fatalf("ExecSync: %v %v", resp, err)
		}
	}
}

// BenchmarkListContainers measures ListContainers with 8 containers made
// from an image whose config is at the 4 MiB cap, nearly all of it an
// environment variable that every container's spec carries.
func BenchmarkListContainers(b *testing.B) {
	c := context.Background()
	ref := pushAndPull(b, "bench/fat-config", fatConfigImage(b, 4<<20, "x"))
	podID, podCfg := podWithLogs(b, "bench-list")
	for i := range 8 {
		cfg := containerConfig(fmt.Sprintf("fat-%d", i), "sleep", "600")
		cfg.Image.Image = ref
		resp, err := suite.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { removeContainer(resp.ContainerId) })
	}
	// The first call after a daemon start decodes each config once; the
	// benchmark is of the calls kubelet repeats after it.
	if _, err := suite.rt.ListContainers(c, &runtimeapi.ListContainersRequest{}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		resp, err := suite.rt.ListContainers(c, &runtimeapi.ListContainersRequest{})
		if err != nil || len(resp.Containers) < 8 {
			b.Fatalf("ListContainers: %d containers, %v", len(resp.GetContainers()), err)
		}
	}
}

// BenchmarkFullNode measures the calls kubelet repeats over every pod with
// a node full of them: 110 pods (kubelet's default maximum), each with its
// network and one sleeping container.
func BenchmarkFullNode(b *testing.B) {
	c := context.Background()
	if _, err := runtimeapi.NewImageServiceClient(suite.conn).PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: suite.image}}); err != nil {
		b.Fatal(err)
	}
	for i := range 110 {
		podID, podCfg := podWithLogs(b, fmt.Sprintf("full-%d", i))
		ctr, err := suite.rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("sleeper", "sleep", "600"), SandboxConfig: podCfg})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { removeContainer(ctr.ContainerId) })
		if _, err := suite.rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("ListContainers", func(b *testing.B) {
		for b.Loop() {
			if resp, err := suite.rt.ListContainers(c, &runtimeapi.ListContainersRequest{}); err != nil || len(resp.Containers) < 110 {
				b.Fatalf("ListContainers: %d containers, %v", len(resp.GetContainers()), err)
			}
		}
	})
	b.Run("ListPodSandboxStats", func(b *testing.B) {
		for b.Loop() {
			if resp, err := suite.rt.ListPodSandboxStats(c, &runtimeapi.ListPodSandboxStatsRequest{}); err != nil || len(resp.Stats) < 110 {
				b.Fatalf("ListPodSandboxStats: %d pods, %v", len(resp.GetStats()), err)
			}
		}
	})
	b.Run("ListContainerStats", func(b *testing.B) {
		for b.Loop() {
			if resp, err := suite.rt.ListContainerStats(c, &runtimeapi.ListContainerStatsRequest{}); err != nil || len(resp.Stats) < 110 {
				b.Fatalf("ListContainerStats: %d containers, %v", len(resp.GetStats()), err)
			}
		}
	})
}
