package container

import (
	"context"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// Update changes the resources of a created or running container (an
// in-place resize): the fields set in res are written to its cgroup and
// recorded in its config, so that State, Plan and a restarted daemon
// report the resources in force. Fields left nil (or empty) in res keep
// their value; devices and the pids limit are not updated. A write the
// kernel refuses half way restores what was in force before.
func (r *Runtime) Update(ctx context.Context, id string, res *specs.LinuxResources) error {
	if res == nil {
		return fmt.Errorf("container %s: no resources to update: %w", id, errdefs.ErrInvalidArgument)
	}
	if len(res.Devices) > 0 || res.Pids != nil {
		return fmt.Errorf("container %s: devices and the pids limit cannot be changed in place: %w", id, errdefs.ErrInvalidArgument)
	}
	// One update at a time: each one reads the record the one before it
	// wrote, and the cgroup must end as the last record says.
	r.updateMu.Lock()
	defer r.updateMu.Unlock()
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if st.Status != StatusCreated && st.Status != StatusRunning {
		return fmt.Errorf("container %s is %s: only a created or running container can be resized: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	dir, cfg, err := r.existing(id)
	if err != nil {
		return err
	}
	var old *specs.LinuxResources
	if cfg.Spec.Linux != nil {
		old = cfg.Spec.Linux.Resources
	}
	merged := cgroups.Merge(old, res)
	if cfg.CgroupPath != "" && r.Cgroups != nil {
		write := *res
		// Memory settings depend on each other (v2's swap.max is swap
		// over the limit): write them whole.
		write.Memory = merged.Memory
		if err := r.Cgroups.Update(cfg.CgroupPath, &write); err != nil {
			r.restoreResources(id, cfg.CgroupPath, old)
			return fmt.Errorf("container %s: update resources: %w", id, err)
		}
	}
	updated := *cfg
	spec := *cfg.Spec
	linux := specs.Linux{}
	if spec.Linux != nil {
		linux = *spec.Linux
	}
	linux.Resources = merged
	spec.Linux = &linux
	updated.Spec = &spec
	if err := writeJSON(dir, configFile, updated); err != nil {
		if cfg.CgroupPath != "" && r.Cgroups != nil {
			r.restoreResources(id, cfg.CgroupPath, old)
		}
		return fmt.Errorf("container %s: record resources: %w", id, err)
	}
	// A new value, not a change to the cached one: readers share it.
	r.configs.Store(id, &updated)
	klog.V(2).InfoS("Container resources updated", "container", id)
	return nil
}

// restoreResources writes back the resources recorded before an update
// that failed; what cannot be restored is logged, as the caller already
// has an error to report.
func (r *Runtime) restoreResources(id, cgroup string, old *specs.LinuxResources) {
	if old == nil {
		return
	}
	restore := *old
	restore.Devices, restore.Pids = nil, nil
	if err := r.Cgroups.Update(cgroup, &restore); err != nil {
		klog.ErrorS(err, "Restore container resources after a failed update", "container", id, "cgroup", cgroup)
	}
}
