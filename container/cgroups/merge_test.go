package cgroups

import (
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestMerge(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	old := &specs.LinuxResources{
		CPU:     &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Period: u64(100000), Cpus: "0"},
		Memory:  &specs.LinuxMemory{Limit: i64(64 << 20)},
		Pids:    &specs.LinuxPids{Limit: i64(100)},
		Unified: map[string]string{"memory.high": "1000", "io.weight": "50"},
	}
	upd := &specs.LinuxResources{
		CPU:     &specs.LinuxCPU{Quota: i64(150000)},
		Memory:  &specs.LinuxMemory{Limit: i64(96 << 20), Swap: i64(128 << 20)},
		Unified: map[string]string{"memory.high": "2000"},
	}
	got := Merge(old, upd)
	if *got.CPU.Shares != 512 || *got.CPU.Quota != 150000 || *got.CPU.Period != 100000 || got.CPU.Cpus != "0" {
		t.Errorf("cpu: %+v", got.CPU)
	}
	if *got.Memory.Limit != 96<<20 || *got.Memory.Swap != 128<<20 || *got.Pids.Limit != 100 {
		t.Errorf("memory %+v pids %+v", got.Memory, got.Pids)
	}
	if got.Unified["memory.high"] != "2000" || got.Unified["io.weight"] != "50" {
		t.Errorf("unified: %v", got.Unified)
	}
	// The old resources are left as they were.
	if *old.CPU.Quota != 50000 || *old.Memory.Limit != 64<<20 || old.Memory.Swap != nil || old.Unified["memory.high"] != "1000" {
		t.Errorf("old changed: cpu %+v memory %+v unified %v", old.CPU, old.Memory, old.Unified)
	}
	if got := Merge(nil, upd); *got.CPU.Quota != 150000 || got.CPU.Shares != nil || *got.Memory.Limit != 96<<20 {
		t.Errorf("merge into nothing: cpu %+v memory %+v", got.CPU, got.Memory)
	}
}
