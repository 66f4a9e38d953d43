package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

func TestErrorKindsBecomeCodes(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		code codes.Code
	}{
		{bg, nil, codes.OK},
		{bg, fmt.Errorf("pod x: %w", errdefs.ErrNotFound), codes.NotFound},
		{bg, fmt.Errorf("a: %w", fmt.Errorf("b: %w", errdefs.ErrAlreadyExists)), codes.AlreadyExists},
		{bg, fmt.Errorf("bad: %w", errdefs.ErrInvalidArgument), codes.InvalidArgument},
		{bg, fmt.Errorf("state: %w", errdefs.ErrFailedPrecondition), codes.FailedPrecondition},
		{bg, fmt.Errorf("disk: %w", errdefs.ErrResourceExhausted), codes.ResourceExhausted},
		{bg, fmt.Errorf("slow: %w", errdefs.ErrDeadlineExceeded), codes.DeadlineExceeded},
		{bg, fmt.Errorf("registry: %w", errdefs.ErrUnavailable), codes.Unavailable},
		{bg, fmt.Errorf("feature: %w", errdefs.ErrUnimplemented), codes.Unimplemented},
		{bg, fmt.Errorf("cni add: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{bg, fmt.Errorf("pull: %w", context.Canceled), codes.Canceled},
		{canceled, errors.New("plugin killed"), codes.Canceled},
		{bg, errors.New("something odd"), codes.Unknown},
		{bg, errors.Join(errors.New("x"), errdefs.ErrNotFound), codes.NotFound},
		{bg, status.Error(codes.ResourceExhausted, "kept"), codes.ResourceExhausted},
	} {
		got := toStatus(tc.ctx, "/m", tc.err)
		if status.Code(got) != tc.code {
			t.Errorf("%v: code %v, want %v", tc.err, status.Code(got), tc.code)
		}
		if want := status.Convert(tc.err).Message(); tc.err != nil && !strings.Contains(status.Convert(got).Message(), want) {
			t.Errorf("%v: message %q lost the error text", tc.err, status.Convert(got).Message())
		}
	}
}

func TestInterceptorNamesUnimplementedAndSurvivesPanics(t *testing.T) {
	svc := NewService(Options{})
	info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/CheckpointContainer"}
	_, err := svc.unaryInterceptor(context.Background(), nil, info, func(ctx context.Context, req any) (any, error) {
		return svc.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{})
	})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "cri-mini does not implement /runtime.v1.RuntimeService/CheckpointContainer") {
		t.Errorf("unimplemented RPC: %v", err)
	}
	resp, err := svc.unaryInterceptor(context.Background(), nil, info, func(context.Context, any) (any, error) {
		var m map[string]int
		m["boom"]++ // a nil map write: a bug must not kill the daemon
		return "unreachable", nil
	})
	if resp != nil || status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("panic: %v, %v", resp, err)
	}
}

// TestInterceptorLogsIDs: at the default verbosity every failed call logs
// the pod or container it names (the one made, for a call that makes one;
// the name, when it failed before), and a mutating call logs its IDs when
// it succeeds; a read that succeeds logs nothing.
func TestInterceptorLogsIDs(t *testing.T) {
	var buf bytes.Buffer
	klog.LogToStderr(false)
	klog.SetOutput(&buf)
	t.Cleanup(func() {
		klog.SetOutput(os.Stderr)
		klog.LogToStderr(true)
	})
	svc := NewService(Options{})
	call := func(method string, req, resp any, err error) string {
		buf.Reset()
		info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/" + method}
		_, _ = svc.unaryInterceptor(context.Background(), req, info, func(context.Context, any) (any, error) { return resp, err })
		klog.Flush()
		return buf.String()
	}
	notFound := fmt.Errorf("gone: %w", errdefs.ErrNotFound)
	for _, tc := range []struct {
		method    string
		req, resp any
		err       error
		want      []string // nil: nothing logged
	}{
		{"StopPodSandbox", &runtimeapi.StopPodSandboxRequest{PodSandboxId: "pod123"}, (*runtimeapi.StopPodSandboxResponse)(nil), notFound,
			[]string{"CRI call failed", `method="/runtime.v1.RuntimeService/StopPodSandbox"`, `code="NotFound"`, `pod="pod123"`, "gone"}},
		{"ContainerStatus", &runtimeapi.ContainerStatusRequest{ContainerId: "ctr456"}, (*runtimeapi.ContainerStatusResponse)(nil), notFound,
			[]string{"CRI call failed", `container="ctr456"`}},
		{"ExecSync", &runtimeapi.ExecSyncRequest{ContainerId: "ctr456"}, (*runtimeapi.ExecSyncResponse)(nil), errors.New("odd"),
			[]string{"CRI call failed", `container="ctr456"`, `code="Unknown"`}},
		{"RunPodSandbox", &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns"}}},
			(*runtimeapi.RunPodSandboxResponse)(nil), fmt.Errorf("bad: %w", errdefs.ErrInvalidArgument),
			[]string{"CRI call failed", `podName="ns/web"`, `code="InvalidArgument"`}},
		{"RunPodSandbox", &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "ns"}}},
			&runtimeapi.RunPodSandboxResponse{PodSandboxId: "pod789"}, nil, []string{`"CRI call"`, `pod="pod789"`, `code="OK"`}},
		{"CreateContainer", &runtimeapi.CreateContainerRequest{PodSandboxId: "pod789", Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}},
			&runtimeapi.CreateContainerResponse{ContainerId: "ctr999"}, nil, []string{`pod="pod789"`, `container="ctr999"`}},
		{"CreateContainer", &runtimeapi.CreateContainerRequest{PodSandboxId: "pod789", Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}},
			(*runtimeapi.CreateContainerResponse)(nil), fmt.Errorf("no: %w", errdefs.ErrAlreadyExists), []string{`pod="pod789"`, `containerName="app"`, `code="AlreadyExists"`}},
		{"RemoveContainer", &runtimeapi.RemoveContainerRequest{ContainerId: "ctr999"}, &runtimeapi.RemoveContainerResponse{}, nil, []string{`container="ctr999"`}},
		{"ContainerStatus", &runtimeapi.ContainerStatusRequest{ContainerId: "ctr456"}, &runtimeapi.ContainerStatusResponse{}, nil, nil},
	} {
		got := call(tc.method, tc.req, tc.resp, tc.err)
		if tc.want == nil && got != "" {
			t.Errorf("%s that succeeded logged %q", tc.method, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s (%v): log %q lacks %s", tc.method, tc.err, got, w)
			}
		}
	}
}
