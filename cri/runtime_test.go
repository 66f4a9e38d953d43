package cri

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/cri/config"
	"github.com/cri-mini/cri-mini/netns"
)

// TestRuntimeHandlers: Status lists the default handler and every
// configured one with their features; a pod asking for another handler is
// refused with NotFound, naming the ones there are.
func TestRuntimeHandlers(t *testing.T) {
	cfg := config.Default()
	cfg.Runtimes = map[string]config.RuntimeHandler{"test-handler": {}}
	dir := t.TempDir()
	network, err := netns.New(netns.Config{RunRoot: dir, ConfDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	svc := NewService(Options{Config: cfg, Network: network})
	ctx := context.Background()

	st, err := svc.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range st.GetRuntimeHandlers() {
		names = append(names, h.GetName())
		if f := h.GetFeatures(); !f.GetRecursiveReadOnlyMounts() || !f.GetUserNamespaces() {
			t.Errorf("handler %q features %v, want recursive read-only mounts and user namespaces", h.GetName(), f)
		}
	}
	if strings.Join(names, ",") != ",test-handler" {
		t.Errorf("handlers %q, want the default one and test-handler", names)
	}

	_, err = svc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}, RuntimeHandler: "kata"})
	err = toStatus(ctx, "/RunPodSandbox", err)
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `"kata"`) || !strings.Contains(err.Error(), `"test-handler"`) {
		t.Errorf("unknown handler: %v, want NotFound naming it and the configured ones", err)
	}
}
