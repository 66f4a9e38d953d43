package e2e

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// recvAll reads a Stream* RPC to its end: the items of every response,
// and how many responses there were.
func recvAll[R any, T any](t *testing.T, stream grpc.ServerStreamingClient[R], err error, items func(*R) []T) ([]T, int) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var all []T
	n := 0
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return all, n
		}
		if err != nil {
			t.Fatal(err)
		}
		all, n = append(all, items(resp)...), n+1
	}
}

// TestStreamingLists: kubelet's CRIListStreaming RPCs list what the List
// RPCs list; pods that together exceed a message (five of 4 MiB of
// annotations each) cannot be listed in one, but stream in several.
func TestStreamingLists(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "streamed")
	ctrID := runContainer(t, podID, podCfg, containerConfig("streamed", "sleep", "600"))
	var big []string
	for i := range 5 {
		cfg := podConfig(fmt.Sprintf("streamed-big-%d", i))
		cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
		cfg.Labels["big"] = "yes"
		cfg.Annotations = map[string]string{"filler": strings.Repeat("x", 4<<20)}
		big = append(big, runPod(t, cfg))
	}
	c := ctx(t)

	if _, err := suite.rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("ListPodSandbox of 20 MiB: %v, want ResourceExhausted (more than a message)", err)
	}
	stream, err := suite.rt.StreamPodSandboxes(c, &runtimeapi.StreamPodSandboxesRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"big": "yes"}}})
	pods, responses := recvAll(t, stream, err, (*runtimeapi.StreamPodSandboxesResponse).GetPodSandboxes)
	if len(pods) != len(big) || responses < len(big) {
		t.Errorf("StreamPodSandboxes: %d pods in %d responses, want %d, one a response", len(pods), responses, len(big))
	}

	ctrs, err := suite.rt.StreamContainers(c, &runtimeapi.StreamContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if got, _ := recvAll(t, ctrs, err, (*runtimeapi.StreamContainersResponse).GetContainers); len(got) != 1 || got[0].Id != ctrID {
		t.Errorf("StreamContainers of the pod: %v", got)
	}
	stats, err := suite.rt.StreamContainerStats(c, &runtimeapi.StreamContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{Id: ctrID}})
	if got, _ := recvAll(t, stats, err, (*runtimeapi.StreamContainerStatsResponse).GetContainerStats); len(got) != 1 || got[0].Attributes.Id != ctrID {
		t.Errorf("StreamContainerStats: %v", got)
	}
	podStats, err := suite.rt.StreamPodSandboxStats(c, &runtimeapi.StreamPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: podID}})
	if got, _ := recvAll(t, podStats, err, (*runtimeapi.StreamPodSandboxStatsResponse).GetPodSandboxStats); len(got) != 1 || got[0].Attributes.Id != podID {
		t.Errorf("StreamPodSandboxStats: %v", got)
	}
	metrics, err := suite.rt.StreamPodSandboxMetrics(c, &runtimeapi.StreamPodSandboxMetricsRequest{})
	gotMetrics, _ := recvAll(t, metrics, err, (*runtimeapi.StreamPodSandboxMetricsResponse).GetPodSandboxMetrics)
	listed, err := suite.rt.ListPodSandboxMetrics(c, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil || len(gotMetrics) != len(listed.PodMetrics) || len(gotMetrics) == 0 {
		t.Errorf("StreamPodSandboxMetrics: %d pods, ListPodSandboxMetrics %d (%v)", len(gotMetrics), len(listed.GetPodMetrics()), err)
	}
	ic := runtimeapi.NewImageServiceClient(suite.conn)
	images, err := ic.StreamImages(c, &runtimeapi.StreamImagesRequest{})
	gotImages, _ := recvAll(t, images, err, (*runtimeapi.StreamImagesResponse).GetImages)
	listedImages, err := ic.ListImages(c, &runtimeapi.ListImagesRequest{})
	if err != nil || len(gotImages) == 0 || len(gotImages) != len(listedImages.Images) {
		t.Errorf("StreamImages: %d images, ListImages %d (%v)", len(gotImages), len(listedImages.GetImages()), err)
	}
}
