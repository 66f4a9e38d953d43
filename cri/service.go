package cri

import (
	"context"
	"errors"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/cri/config"
	"github.com/cri-mini/cri-mini/cri/stats"
	"github.com/cri-mini/cri-mini/image"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/netns"
	"github.com/cri-mini/cri-mini/sandbox"
)

// Service serves the CRI RuntimeService and ImageService. RPCs that cri-mini
// does not implement yet fall through to the embedded Unimplemented servers,
// which the interceptor turns into a clear Unimplemented status.
type Service struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	config    config.Config
	version   string
	network   *netns.Manager
	sandboxes *sandbox.Manager
	metrics   *metrics
	stream    streaming.Server // set by StartStreaming
	cgroups   cgroups.Manager  // may be nil: no cgroup to update
	images    *image.Store
	events    *eventBroker  // container events for GetContainerEvents
	stats     *stats.Reader // container and pod figures

	containers *container.Runtime
	fs         *image.ContainerFS // the containers' root file systems and image volumes
	names      *nameIndex         // names of the containers that exist or are being created
	cdi        *cdi.Cache         // the CDI specs of config.CDISpecDirs
}

// Options are what a Service is built from.
type Options struct {
	Config    config.Config
	Version   string
	Network   *netns.Manager
	Sandboxes *sandbox.Manager
	Cgroups   cgroups.Manager
	Images    *image.Store
	// Containers and ContainerFS serve the container RPCs.
	Containers  *container.Runtime
	ContainerFS *image.ContainerFS
}

// NewService returns a Service over the given managers.
func NewService(o Options) *Service {
	s := &Service{config: o.Config, version: o.Version, network: o.Network, sandboxes: o.Sandboxes,
		metrics: newMetrics(o.Sandboxes, o.Containers), cgroups: o.Cgroups, images: o.Images, containers: o.Containers, fs: o.ContainerFS,
		stats: &stats.Reader{Cgroups: o.Cgroups, Images: o.Images}, events: newEventBroker(), names: newNameIndex(), cdi: newCDICache(o.Config.CDISpecDirs)}
	s.metrics.registry.MustRegister(s.events.streamsGauge())
	if s.images != nil {
		s.metrics.registry.MustRegister(s.images.Collectors()...)
	}
	if s.containers != nil {
		s.collectOrphanRootfs()
		states, err := s.containers.List()
		if err != nil {
			klog.ErrorS(err, "List containers: their names are not reserved")
		}
		s.names.load(states)
		if err := s.watchExits(); err != nil {
			klog.ErrorS(err, "Container exits will not be sent as CONTAINER_STOPPED events")
		}
	}
	return s
}

// maxMsgSize matches kubelet's client limit, so large lists are not cut off.
const maxMsgSize = 16 << 20

// NewServer returns a gRPC server with s registered as both CRI services,
// every call passing through the one interceptor that logs and maps errors.
func NewServer(s *Service) *grpc.Server {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
	)
	runtimeapi.RegisterRuntimeServiceServer(srv, s)
	runtimeapi.RegisterImageServiceServer(srv, s)
	return srv
}

func (s *Service) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Panic in CRI call", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
		}
		err = toStatus(ctx, info.FullMethod, err)
		s.logCall(info.FullMethod, start, err, callObjects(req, resp))
	}()
	return handler(ctx, req)
}

func (s *Service) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Panic in CRI stream", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
		}
		err = toStatus(ss.Context(), info.FullMethod, err)
		s.logCall(info.FullMethod, start, err, nil)
	}()
	return handler(srv, ss)
}

// logCall counts a call and logs it: every call at -v 2; at the default
// verbosity a failed one (an error for Internal and Unknown, which are
// cri-mini's own faults) and a mutating one that succeeded, with the pod,
// container or image it names (objects).
func (s *Service) logCall(method string, start time.Time, err error, objects []any) {
	code, took := status.Code(err), time.Since(start)
	s.metrics.observe(method, code, took)
	kv := append([]any{"method", method, "duration", took, "code", code}, objects...)
	switch {
	case code == codes.Internal || code == codes.Unknown:
		klog.ErrorS(err, "CRI call failed", kv...)
	case code != codes.OK:
		klog.InfoS("CRI call failed", append(kv, "err", err)...)
	case mutating(method):
		klog.InfoS("CRI call", kv...)
	default:
		klog.V(2).InfoS("CRI call", kv...)
	}
}

// mutating tells the CRI calls that change pods, containers, images or
// the runtime's configuration.
func mutating(method string) bool {
	name := method[strings.LastIndexByte(method, '/')+1:]
	for _, verb := range []string{"Run", "Create", "Start", "Stop", "Remove", "Update", "Pull", "Reopen"} {
		if strings.HasPrefix(name, verb) {
			return true
		}
	}
	return false
}

// callObjects are the pod, container and image a call names, in its
// request or (an ID it made) its response, as log key/value pairs; a pod or
// container not made yet by its name.
func callObjects(req, resp any) []any {
	var kv []any
	if pod := field(func(m interface{ GetPodSandboxId() string }) string { return m.GetPodSandboxId() }, req, resp); pod != "" {
		kv = append(kv, "pod", pod)
	} else if md := field(func(m interface {
		GetConfig() *runtimeapi.PodSandboxConfig
	}) string {
		return m.GetConfig().GetMetadata().GetNamespace() + "/" + m.GetConfig().GetMetadata().GetName()
	}, req); md != "" && md != "/" {
		kv = append(kv, "podName", md)
	}
	if ctr := field(func(m interface{ GetContainerId() string }) string { return m.GetContainerId() }, req, resp); ctr != "" {
		kv = append(kv, "container", ctr)
	} else if name := field(func(m interface {
		GetConfig() *runtimeapi.ContainerConfig
	}) string {
		return m.GetConfig().GetMetadata().GetName()
	}, req); name != "" {
		kv = append(kv, "containerName", name)
	}
	if img := field(func(m interface{ GetImage() *runtimeapi.ImageSpec }) string { return m.GetImage().GetImage() }, req); img != "" {
		kv = append(kv, "image", img)
	}
	return kv
}

// field is get of the first message that has it, non-empty.
func field[T any](get func(T) string, msgs ...any) string {
	for _, m := range msgs {
		if g, ok := m.(T); ok {
			if v := get(g); v != "" {
				return v
			}
		}
	}
	return ""
}

// kindCodes maps each errdefs kind to its gRPC code; the first match wins,
// so an error wrapping two kinds gets the more specific one listed first.
var kindCodes = []struct {
	kind error
	code codes.Code
}{
	{errdefs.ErrNotFound, codes.NotFound},
	{errdefs.ErrAlreadyExists, codes.AlreadyExists},
	{errdefs.ErrInvalidArgument, codes.InvalidArgument},
	{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
	{errdefs.ErrResourceExhausted, codes.ResourceExhausted},
	{errdefs.ErrDeadlineExceeded, codes.DeadlineExceeded},
	{errdefs.ErrUnavailable, codes.Unavailable},
	{errdefs.ErrUnauthenticated, codes.Unauthenticated},
	{errdefs.ErrUnimplemented, codes.Unimplemented},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// toStatus turns err into a gRPC status error: the one place where internal
// error kinds become codes. Errors of no known kind are Unknown, unless the
// caller's context ended first.
func toStatus(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.Unimplemented && strings.HasSuffix(st.Message(), "not implemented") {
			return status.Errorf(codes.Unimplemented, "cri-mini does not implement %s yet", method)
		}
		return err
	}
	for _, kc := range kindCodes {
		if errors.Is(err, kc.kind) {
			return status.Error(kc.code, err.Error())
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return status.Error(status.FromContextError(ctxErr).Code(), err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}
