package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/netns"
	"github.com/cri-mini/cri-mini/sandbox"
)

func (s *Service) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	handler := req.GetRuntimeHandler()
	if handlers := s.config.Handlers(); !slices.Contains(handlers, handler) {
		return nil, fmt.Errorf("runtime handler %q is not configured (handlers: %q; add a [runtimes.%s] table): %w",
			handler, handlers, handler, errdefs.ErrNotFound)
	}
	spec, err := sandboxSpec(req.GetConfig(), handler)
	if err != nil {
		return nil, err
	}
	pod, err := s.sandboxes.Run(ctx, spec)
	if err != nil {
		return nil, err
	}
	// As containerd does, the sandbox has events of its own (id = pod id),
	// so kubelet's evented PLEG sees pods change without relisting.
	s.containerEvent(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, pod.ID, pod.ID)
	s.containerEvent(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, pod.ID, pod.ID)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: pod.ID}, nil
}

// sandboxSpec translates the CRI's pod config into a sandbox.Spec.
func sandboxSpec(cfg *runtimeapi.PodSandboxConfig, handler string) (sandbox.Spec, error) {
	if cfg == nil {
		return sandbox.Spec{}, fmt.Errorf("RunPodSandbox without a config: %w", errdefs.ErrInvalidArgument)
	}
	md := cfg.GetMetadata()
	spec := sandbox.Spec{
		RuntimeHandler: handler,
		Metadata: sandbox.Metadata{
			Name: md.GetName(), Namespace: md.GetNamespace(), UID: md.GetUid(), Attempt: md.GetAttempt(),
		},
		Hostname:     cfg.GetHostname(),
		LogDirectory: cfg.GetLogDirectory(),
		Labels:       cfg.GetLabels(),
		Annotations:  cfg.GetAnnotations(),
		CgroupParent: cfg.GetLinux().GetCgroupParent(),
		Sysctls:      cfg.GetLinux().GetSysctls(),
	}
	if dns := cfg.GetDnsConfig(); dns != nil {
		spec.DNS = &sandbox.DNSConfig{Servers: dns.GetServers(), Searches: dns.GetSearches(), Options: dns.GetOptions()}
	}
	for _, pm := range cfg.GetPortMappings() {
		spec.PortMappings = append(spec.PortMappings, netns.PortMapping{
			HostPort: pm.GetHostPort(), ContainerPort: pm.GetContainerPort(),
			Protocol: pm.GetProtocol().String(), HostIP: pm.GetHostIp(),
		})
	}
	sc := cfg.GetLinux().GetSecurityContext()
	if u := sc.GetRunAsUser(); u != nil {
		spec.RunAsUser = &u.Value
	}
	if g := sc.GetRunAsGroup(); g != nil {
		spec.RunAsGroup = &g.Value
	}
	ns := sc.GetNamespaceOptions()
	for name, mode := range map[string]runtimeapi.NamespaceMode{"network": ns.GetNetwork(), "ipc": ns.GetIpc(), "pid": ns.GetPid()} {
		if mode == runtimeapi.NamespaceMode_TARGET {
			return sandbox.Spec{}, fmt.Errorf("pod %s namespace mode TARGET is for containers, not pods: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	if u := ns.GetUsernsOptions(); u != nil && u.GetMode() != runtimeapi.NamespaceMode_NODE {
		// Running it without one would silently drop the isolation asked for.
		return sandbox.Spec{}, fmt.Errorf("user namespaces (hostUsers: false) are not supported by cri-mini: %w", errdefs.ErrUnimplemented)
	}
	spec.HostNetwork = ns.GetNetwork() == runtimeapi.NamespaceMode_NODE
	spec.HostIPC = ns.GetIpc() == runtimeapi.NamespaceMode_NODE
	spec.HostPID = ns.GetPid() == runtimeapi.NamespaceMode_NODE
	spec.SharedPID = ns.GetPid() == runtimeapi.NamespaceMode_POD
	return spec, nil
}

func (s *Service) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	pod, _ := s.sandboxes.Get(req.GetPodSandboxId()) // an unknown pod stops fine, without an event
	if err := s.sandboxes.Stop(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	if pod != nil {
		s.containerEvent(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, pod.ID, pod.ID)
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (s *Service) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	pod, _ := s.sandboxes.Get(req.GetPodSandboxId())
	if err := s.sandboxes.Remove(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	if pod != nil {
		s.containerEvent(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, pod.ID, pod.ID)
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

func (s *Service) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	pod, err := s.sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: podStatus(pod)}
	if req.GetVerbose() {
		info, err := json.Marshal(pod)
		if err != nil {
			return nil, fmt.Errorf("pod %s: verbose info: %w", pod.ID, err)
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

func podState(p *sandbox.Pod) runtimeapi.PodSandboxState {
	if p.State == sandbox.Ready {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

func podMetadata(p *sandbox.Pod) *runtimeapi.PodSandboxMetadata {
	md := p.Spec.Metadata
	return &runtimeapi.PodSandboxMetadata{Name: md.Name, Namespace: md.Namespace, Uid: md.UID, Attempt: md.Attempt}
}

func namespaceMode(host, pod bool) runtimeapi.NamespaceMode {
	switch {
	case host:
		return runtimeapi.NamespaceMode_NODE
	case pod:
		return runtimeapi.NamespaceMode_POD
	}
	return runtimeapi.NamespaceMode_CONTAINER
}

func podStatus(p *sandbox.Pod) *runtimeapi.PodSandboxStatus {
	st := &runtimeapi.PodSandboxStatus{
		Id:        p.ID,
		Metadata:  podMetadata(p),
		State:     podState(p),
		CreatedAt: p.CreatedAt,
		Network:   &runtimeapi.PodSandboxNetworkStatus{},
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network: namespaceMode(p.Spec.HostNetwork, true),
			Ipc:     namespaceMode(p.Spec.HostIPC, true),
			Pid:     namespaceMode(p.Spec.HostPID, p.Spec.SharedPID),
		}}},
		Labels:         p.Spec.Labels,
		Annotations:    p.Spec.Annotations,
		RuntimeHandler: p.Spec.RuntimeHandler,
	}
	// The IPs are reported while the pod is attached to its network.
	if p.State == sandbox.Ready && len(p.IPs) > 0 {
		st.Network.Ip = p.IPs[0]
		for _, ip := range p.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return st
}

func (s *Service) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	var items []*runtimeapi.PodSandbox
	for _, p := range s.sandboxes.List() {
		if id := f.GetId(); id != "" && !strings.HasPrefix(p.ID, id) {
			continue
		}
		if st := f.GetState(); st != nil && st.GetState() != podState(p) {
			continue
		}
		if !matchLabels(p.Spec.Labels, f.GetLabelSelector()) {
			continue
		}
		items = append(items, &runtimeapi.PodSandbox{
			Id:             p.ID,
			Metadata:       podMetadata(p),
			State:          podState(p),
			CreatedAt:      p.CreatedAt,
			Labels:         p.Spec.Labels,
			Annotations:    p.Spec.Annotations,
			RuntimeHandler: p.Spec.RuntimeHandler,
		})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: items}, nil
}

// matchLabels reports whether labels has every key of selector with its value.
func matchLabels(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
