package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/internal/roottest"
)

// TestV1HybridUnified: on a hybrid host a cgroup is made and joined in
// the unified hierarchy too (as runc's fs manager does), which gives it
// pressure stall information, and goes with Destroy. A busy loop under a
// small CPU quota shows CPU pressure.
func TestV1HybridUnified(t *testing.T) {
	roottest.Require(t)
	m := v1Manager(t, "")
	if m.unified == "" {
		t.Skip("not a hybrid host: no cgroup2 mount beside the v1 hierarchies")
	}
	path := testPath(t)
	create(t, m, path, nil)
	p := mustPath(t, m, path)
	if _, err := os.Stat(filepath.Join(m.unified, p)); err != nil {
		t.Fatalf("not made in the unified hierarchy: %v", err)
	}
	if err := m.Update(path, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](5000), Period: ptr[uint64](100000)}}); err != nil {
		t.Fatal(err)
	}
	h := startHeld(t, m, path, "while :; do :; done")
	membership, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", h.cmd.Process.Pid))
	if err != nil || !strings.Contains(string(membership), "\n0::"+p+"\n") && !strings.HasPrefix(string(membership), "0::"+p+"\n") {
		t.Errorf("the process is not in the unified cgroup %s: %q %v", p, membership, err)
	}
	h.release(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := m.Stats(path)
		if err != nil {
			t.Fatal(err)
		}
		if p := st.Pressure.CPU; p != nil && p.SomeMicros > 0 && st.Pressure.Memory != nil && st.Pressure.IO != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CPU pressure for a busy loop at 5%% of a CPU after 10 s: %+v", st.Pressure)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
