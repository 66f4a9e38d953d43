package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/cri/config"
)

// RuntimeName is what Version reports as the runtime's name.
const RuntimeName = "cri-mini"

// criVersion is the version of the kubelet-runtime API (the CRI's own
// convention, which containerd and CRI-O report too).
const criVersion = "0.1.0"

func (s *Service) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           criVersion,
		RuntimeName:       RuntimeName,
		RuntimeVersion:    s.version,
		RuntimeApiVersion: "v1",
	}, nil
}

func (s *Service) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	netReady := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if err := s.network.Status(ctx); err != nil {
		netReady.Status = false
		netReady.Reason = "NetworkPluginNotReady"
		netReady.Message = err.Error()
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			netReady,
		}},
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	for _, name := range s.config.Handlers() {
		// Recursive read-only mounts: mount_setattr(AT_RECURSIVE) in
		// container/. User namespaces as Kubernetes has them: a pod's own
		// (sandbox/) with idmapped mounts (image/, container/).
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{
			Name: name, Features: &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: true, UserNamespaces: true}})
	}
	if req.GetVerbose() {
		data, err := json.Marshal(s.config)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"config": string(data)}
	}
	return resp, nil
}

func (s *Service) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	driver := runtimeapi.CgroupDriver_CGROUPFS
	if s.config.CgroupDriver == config.SystemdDriver {
		driver = runtimeapi.CgroupDriver_SYSTEMD
	}
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: driver}}, nil
}

// UpdateRuntimeConfig takes the node's pod CIDR from kubelet for the
// built-in network. Of a dual-stack list the first CIDR is used.
func (s *Service) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	cidrs := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	if cidrs == "" {
		return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
	}
	first, _, _ := strings.Cut(cidrs, ",")
	if err := s.network.SetPodCIDR(strings.TrimSpace(first)); err != nil {
		return nil, fmt.Errorf("update pod CIDR to %q: %w", cidrs, err)
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
