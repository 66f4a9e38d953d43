package cgroups

import (
	"maps"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// Merge returns old with the fields set in upd replacing its own (nil
// pointers, empty strings and empty lists in upd leave old's): what is in
// force after Update(path, upd) on a cgroup set up with old. Neither
// argument is changed.
func Merge(old, upd *specs.LinuxResources) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	if old != nil {
		*out = *old
	}
	if c := upd.CPU; c != nil {
		cpu := specs.LinuxCPU{}
		if out.CPU != nil {
			cpu = *out.CPU
		}
		cpu.Shares = firstSet(c.Shares, cpu.Shares)
		cpu.Quota = firstSet(c.Quota, cpu.Quota)
		cpu.Burst = firstSet(c.Burst, cpu.Burst)
		cpu.Period = firstSet(c.Period, cpu.Period)
		cpu.RealtimeRuntime = firstSet(c.RealtimeRuntime, cpu.RealtimeRuntime)
		cpu.RealtimePeriod = firstSet(c.RealtimePeriod, cpu.RealtimePeriod)
		cpu.Idle = firstSet(c.Idle, cpu.Idle)
		if c.Cpus != "" {
			cpu.Cpus = c.Cpus
		}
		if c.Mems != "" {
			cpu.Mems = c.Mems
		}
		out.CPU = &cpu
	}
	if m := upd.Memory; m != nil {
		mem := specs.LinuxMemory{}
		if out.Memory != nil {
			mem = *out.Memory
		}
		mem.Limit = firstSet(m.Limit, mem.Limit)
		mem.Reservation = firstSet(m.Reservation, mem.Reservation)
		mem.Swap = firstSet(m.Swap, mem.Swap)
		mem.Kernel = firstSet(m.Kernel, mem.Kernel)
		mem.KernelTCP = firstSet(m.KernelTCP, mem.KernelTCP)
		mem.Swappiness = firstSet(m.Swappiness, mem.Swappiness)
		mem.DisableOOMKiller = firstSet(m.DisableOOMKiller, mem.DisableOOMKiller)
		mem.UseHierarchy = firstSet(m.UseHierarchy, mem.UseHierarchy)
		mem.CheckBeforeUpdate = firstSet(m.CheckBeforeUpdate, mem.CheckBeforeUpdate)
		out.Memory = &mem
	}
	if len(upd.HugepageLimits) > 0 {
		out.HugepageLimits = upd.HugepageLimits
	}
	if len(upd.Unified) > 0 {
		unified := maps.Clone(out.Unified)
		if unified == nil {
			unified = map[string]string{}
		}
		maps.Copy(unified, upd.Unified)
		out.Unified = unified
	}
	return out
}

// firstSet is v when it is set, else def.
func firstSet[T any](v, def *T) *T {
	if v != nil {
		return v
	}
	return def
}
