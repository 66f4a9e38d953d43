package cri

import (
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// CDI (Container Device Interface) devices are named vendor.com/class=name
// and described by spec files in the configured directories; device
// plugins and DRA drivers ask for them in ContainerConfig.CDI_devices and
// in cdi.k8s.io/ annotations. Their edits apply to the container's OCI
// spec: device nodes (with their cgroup rules), mounts, environment and
// additional groups. cri-mini runs no OCI hooks and has no Intel RDT or
// network-device support: a device that needs any of them is refused
// rather than given half made.

// newCDICache returns the cache of the CDI specs in dirs, read again at
// every container that asks for CDI devices (so a spec a driver has just
// written is seen without a watch on the directories).
func newCDICache(dirs []string) *cdi.Cache {
	// NewCache never fails (its error is kept for its API's sake).
	cache, _ := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	return cache
}

// cdiDevices lists the CDI devices cfg asks for, each once, in order:
// its CDI_devices field, then its cdi.k8s.io/ annotations.
func cdiDevices(cfg *runtimeapi.ContainerConfig) ([]string, error) {
	var names []string
	for _, d := range cfg.GetCDIDevices() {
		if !slices.Contains(names, d.GetName()) {
			names = append(names, d.GetName())
		}
	}
	_, annotated, err := cdi.ParseAnnotations(cfg.GetAnnotations())
	if err != nil {
		return nil, fmt.Errorf("CDI annotations: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	slices.Sort(annotated) // map order is random
	for _, name := range annotated {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names, nil
}

// injectCDI applies the edits of the CDI devices cfg asks for to spec.
func (s *Service) injectCDI(spec *specs.Spec, cfg *runtimeapi.ContainerConfig) error {
	names, err := cdiDevices(cfg)
	if err != nil || len(names) == 0 {
		return err
	}
	if !s.config.EnableCDI {
		klog.InfoS("CDI is turned off (enable_cdi): devices not injected", "container", cfg.GetMetadata().GetName(), "devices", names)
		return nil
	}
	if err := s.cdi.Refresh(); err != nil {
		// A broken spec file leaves its devices out; others still resolve.
		klog.ErrorS(err, "Some CDI specs could not be read", "dirs", s.config.CDISpecDirs)
	}
	if unresolved, err := s.cdi.InjectDevices(spec, names...); err != nil {
		if len(unresolved) > 0 {
			return fmt.Errorf("CDI devices %s are not defined by any spec in %s: %w",
				strings.Join(unresolved, ", "), strings.Join(s.config.CDISpecDirs, ", "), errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("CDI devices %s: %v: %w", strings.Join(names, ", "), err, errdefs.ErrInvalidArgument)
	}
	var unsupported []string
	if h := spec.Hooks; h != nil && len(h.Prestart)+len(h.CreateRuntime)+len(h.CreateContainer)+len(h.StartContainer)+len(h.Poststart)+len(h.Poststop) > 0 {
		unsupported = append(unsupported, "OCI hooks")
	}
	if spec.Linux != nil && spec.Linux.IntelRdt != nil {
		unsupported = append(unsupported, "Intel RDT")
	}
	if spec.Linux != nil && len(spec.Linux.NetDevices) > 0 {
		unsupported = append(unsupported, "network devices")
	}
	if len(unsupported) > 0 {
		return fmt.Errorf("CDI devices %s need %s, which cri-mini does not support: %w",
			strings.Join(names, ", "), strings.Join(unsupported, " and "), errdefs.ErrUnimplemented)
	}
	return nil
}
