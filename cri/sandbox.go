package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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
	spec.Sysctls = s.podSysctls(spec)
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

// podSysctls is the pod's sysctls with the defaults containerd gives
// every pod with a network namespace of its own, unless the pod sets them
// or the configuration turns them off: any user may bind ports below 1024
// (a non-root web server on :80) and open ICMP echo sockets (ping without
// CAP_NET_RAW). Both only reach the pod's own network namespace.
func (s *Service) podSysctls(spec sandbox.Spec) map[string]string {
	if spec.HostNetwork {
		return spec.Sysctls
	}
	out := maps.Clone(spec.Sysctls)
	if out == nil {
		out = map[string]string{}
	}
	set := func(key, value string) {
		if _, ok := out[key]; !ok {
			if _, ok := out[strings.ReplaceAll(key, ".", "/")]; !ok {
				out[key] = value
			}
		}
	}
	if s.config.EnableUnprivilegedPorts {
		set("net.ipv4.ip_unprivileged_port_start", "0")
	}
	if s.config.EnableUnprivilegedICMP {
		set("net.ipv4.ping_group_range", "0 2147483647")
	}
	return out
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
		Resources:    podCgroupResources(cfg.GetLinux().GetResources(), cfg.GetLinux().GetOverhead()),
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
	userNS, err := podUserNS(ns.GetUsernsOptions())
	if err != nil {
		return sandbox.Spec{}, err
	}
	spec.UserNS = userNS
	spec.HostNetwork = ns.GetNetwork() == runtimeapi.NamespaceMode_NODE
	spec.HostIPC = ns.GetIpc() == runtimeapi.NamespaceMode_NODE
	spec.HostPID = ns.GetPid() == runtimeapi.NamespaceMode_NODE
	spec.SharedPID = ns.GetPid() == runtimeapi.NamespaceMode_POD
	return spec, nil
}

// podUserNS is the pod's own user namespace asked for by userns_options
// (kubelet's hostUsers: false is mode POD with the pod's range), or nil
// for the host's (mode NODE, or no options: the mode's zero value is POD,
// but a client that sends none asks for nothing). Modes CONTAINER and
// TARGET have no meaning for a user namespace; the mappings are checked by
// the sandbox.
func podUserNS(u *runtimeapi.UserNamespace) (*sandbox.UserNamespace, error) {
	if u == nil {
		return nil, nil
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids())+len(u.GetGids()) > 0 {
			return nil, fmt.Errorf("user namespace mode NODE (the host's) with id mappings: mappings need mode POD: %w", errdefs.ErrInvalidArgument)
		}
		return nil, nil
	case runtimeapi.NamespaceMode_POD:
		return &sandbox.UserNamespace{UIDs: specIDMappings(u.GetUids()), GIDs: specIDMappings(u.GetGids())}, nil
	}
	return nil, fmt.Errorf("user namespace mode %s: a pod's user namespace is the node's (NODE) or its own (POD, hostUsers: false): %w", u.GetMode(), errdefs.ErrInvalidArgument)
}

func specIDMappings(m []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
	out := make([]specs.LinuxIDMapping, 0, len(m))
	for _, x := range m {
		out = append(out, specs.LinuxIDMapping{ContainerID: x.GetContainerId(), HostID: x.GetHostId(), Size: x.GetLength()})
	}
	return out
}

func criIDMappings(m []specs.LinuxIDMapping) []*runtimeapi.IDMapping {
	out := make([]*runtimeapi.IDMapping, 0, len(m))
	for _, x := range m {
		out = append(out, &runtimeapi.IDMapping{ContainerId: x.ContainerID, HostId: x.HostID, Length: x.Size})
	}
	return out
}

// criUserNS is the userns_options a pod's or container's status reports:
// mode POD with the mappings of its own user namespace, or NODE.
func criUserNS(uids, gids []specs.LinuxIDMapping) *runtimeapi.UserNamespace {
	if len(uids) == 0 {
		return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
	}
	return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: criIDMappings(uids), Gids: criIDMappings(gids)}
}

// podCgroupResources is what the pod's cgroup parent is set to: its
// containers' resources (res) plus the pod's overhead, summed as kubelet
// sizes a pod cgroup: CPU shares always add up, a CPU quota or memory
// limit only when res has one (one container without a limit leaves the
// pod without one). nil when the request has neither.
func podCgroupResources(res, overhead *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	if res == nil && overhead == nil {
		return nil
	}
	sum := &runtimeapi.LinuxContainerResources{
		CpuShares: res.GetCpuShares() + overhead.GetCpuShares(),
		CpuPeriod: res.GetCpuPeriod(),
	}
	if q := res.GetCpuQuota(); q > 0 {
		sum.CpuQuota = q
		if oq := overhead.GetCpuQuota(); oq > 0 {
			// The overhead's quota counts in its own period.
			if p, op := res.GetCpuPeriod(), overhead.GetCpuPeriod(); p > 0 && op > 0 && p != op {
				oq = oq * p / op
			}
			sum.CpuQuota += oq
		}
	}
	if m := res.GetMemoryLimitInBytes(); m > 0 {
		sum.MemoryLimitInBytes = m + max(overhead.GetMemoryLimitInBytes(), 0)
	}
	return linuxResources(sum)
}

func (s *Service) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	res := podCgroupResources(req.GetResources(), req.GetOverhead())
	if res == nil {
		return nil, fmt.Errorf("pod sandbox %s: neither resources nor overhead given: %w", req.GetPodSandboxId(), errdefs.ErrInvalidArgument)
	}
	if err := s.sandboxes.UpdateResources(req.GetPodSandboxId(), res); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}

func (s *Service) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	pod, _ := s.sandboxes.Get(req.GetPodSandboxId()) // an unknown pod stops fine, without an event
	// Its containers first, then the pod, as containerd's sandbox stop.
	if pod != nil {
		if err := s.stopPodContainers(ctx, pod.ID); err != nil {
			return nil, fmt.Errorf("stop pod sandbox %s: %w", pod.ID, err)
		}
	}
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
	// As containerd: the pod stopped (its containers, then itself), its
	// containers removed, then the pod.
	if pod != nil {
		if err := s.stopPodContainers(ctx, pod.ID); err != nil {
			return nil, fmt.Errorf("remove pod sandbox %s: %w", pod.ID, err)
		}
		if err := s.sandboxes.Stop(ctx, pod.ID); err != nil {
			return nil, err
		}
		if err := s.removePodContainers(ctx, pod.ID); err != nil {
			return nil, fmt.Errorf("remove pod sandbox %s: %w", pod.ID, err)
		}
	}
	if err := s.sandboxes.Remove(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	if pod != nil {
		s.containerEvent(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, pod.ID, pod.ID)
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

func (s *Service) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	// The time comes before anything is read: kubelet's evented PLEG keeps
	// a status only if its time is newer than the one it has, so the time
	// must never be newer than what it stamps.
	now := time.Now().UnixNano()
	pod, err := s.sandboxes.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: podStatus(pod), ContainersStatuses: s.podContainerStatuses(pod.ID), Timestamp: now}
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

func podUsernsOptions(p *sandbox.Pod) *runtimeapi.UserNamespace {
	if u := p.Spec.UserNS; u != nil {
		return criUserNS(u.UIDs, u.GIDs)
	}
	return criUserNS(nil, nil)
}

func podStatus(p *sandbox.Pod) *runtimeapi.PodSandboxStatus {
	st := &runtimeapi.PodSandboxStatus{
		Id:        p.ID,
		Metadata:  podMetadata(p),
		State:     podState(p),
		CreatedAt: p.CreatedAt,
		Network:   &runtimeapi.PodSandboxNetworkStatus{},
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network:       namespaceMode(p.Spec.HostNetwork, true),
			Ipc:           namespaceMode(p.Spec.HostIPC, true),
			Pid:           namespaceMode(p.Spec.HostPID, p.Spec.SharedPID),
			UsernsOptions: podUsernsOptions(p),
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
