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
