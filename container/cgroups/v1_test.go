package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

func v1Manager(t *testing.T, driver string) *v1 {
	t.Helper()
	m, err := Open(Options{Driver: driver, Version: 1})
	if err != nil {
		t.Skipf("no cgroup v1 on this host: %v", err)
	}
	return m.(*v1)
}

// create makes the cgroup and removes it, and the test's cgroups above it,
// when the test ends, checking that it is gone from every hierarchy.
func create(t *testing.T, m Manager, path string, r *specs.LinuxResources) {
	t.Helper()
	if err := m.Create(path, r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(path); err != nil {
			t.Errorf("destroy: %v", err)
		}
		p, _ := m.Path(path)
		top := strings.Split(p, "/")[1]
		if s, ok := m.(*systemd); ok {
			// The test's slices are units: systemd stops them.
			if err := s.Destroy(top); err != nil {
				t.Errorf("destroy %s: %v", top, err)
			}
		} else if err := cgroupfsManager(m).Destroy("/" + top); err != nil {
			t.Errorf("destroy %s: %v", top, err)
		}
		if v, ok := m.(*v1); ok {
			for _, h := range v.hierarchies {
				if _, err := os.Stat(filepath.Join(h, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still exists after Destroy", filepath.Join(h, p))
				}
			}
		}
	})
}

func TestV1CPUAndCpuset(t *testing.T) {
	roottest.Require(t)
	m := v1Manager(t, "")
	path := testPath(t)
	r := &specs.LinuxResources{CPU: &specs.LinuxCPU{
		Shares: ptr[uint64](512), Quota: ptr[int64](50000), Period: ptr[uint64](200000), Cpus: "0", Mems: "0",
	}}
	create(t, m, path, r)
	p := mustPath(t, m, path)
	cpu, _ := m.dir("cpu", p)
	cpuset, _ := m.dir("cpuset", p)
	for _, c := range []struct{ dir, file, want string }{
		{cpu, "cpu.shares", "512"}, {cpu, "cpu.cfs_quota_us", "50000"}, {cpu, "cpu.cfs_period_us", "200000"},
		{cpuset, "cpuset.cpus", "0"}, {cpuset, "cpuset.mems", "0"},
	} {
		if got := mustRead(t, c.dir, c.file); got != c.want {
			t.Errorf("%s = %q, want %q", c.file, got, c.want)
		}
	}
	// Update: unlimited quota, other cpus; untouched fields stay.
	if err := m.Update(path, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](-1), Cpus: "0-1"}}); err != nil {
		t.Fatal(err)
	}
	if q, c, s := mustRead(t, cpu, "cpu.cfs_quota_us"), mustRead(t, cpuset, "cpuset.cpus"), mustRead(t, cpu, "cpu.shares"); q != "-1" || c != "0-1" || s != "512" {
		t.Errorf("after update: quota %s cpus %s shares %s", q, c, s)
	}
	h := startHeld(t, m, path, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
	h.release(t)
	if err := h.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	st, err := m.Stats(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU.UsageNanos < 1000000 {
		t.Errorf("cpu usage %d ns for a busy loop", st.CPU.UsageNanos)
	}
}

func TestV1CreateRollsBack(t *testing.T) {
	roottest.Require(t)
	m := v1Manager(t, "")
	path := testPath(t)
	err := m.Create(path, &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "64-65"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("impossible cpuset: %v", err)
	}
	err = m.Create(path, &specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unified on v1: %v", err)
	}
	top := "/" + strings.Split(path, "/")[1]
	for _, h := range m.hierarchies {
		if _, err := os.Stat(filepath.Join(h, top)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failed Create left %s", filepath.Join(h, top))
		}
	}
}

func TestV1Devices(t *testing.T) {
	roottest.Require(t)
	m := v1Manager(t, "")
	path := testPath(t)
	create(t, m, path, &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: ptr[int64](1), Minor: ptr[int64](3), Access: "rwm"},
		{Allow: true, Type: "c", Major: ptr[int64](136), Access: "rw"},
	}})
	d, _ := m.dir("devices", mustPath(t, m, path))
	if got := mustRead(t, d, "devices.list"); got != "c 1:3 rwm\nc 136:* rw" {
		t.Errorf("devices.list = %q", got)
	}
}

// cgroupfsManager is m with the cgroupfs driver, to clean up by path.
func cgroupfsManager(m Manager) Manager {
	switch m := m.(type) {
	case *v1:
		return &v1{conv: cgroupfsPath, hierarchies: m.hierarchies, mounts: m.mounts}
	case *v2:
		return &v2{root: m.root, conv: cgroupfsPath}
	}
	return m
}

func mustPath(t *testing.T, m Manager, path string) string {
	t.Helper()
	p, err := m.Path(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestV1IOFiles(t *testing.T) {
	d := t.TempDir()
	for file, content := range map[string]string{
		"blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n259:1 Read 512\nTotal 12800\n",
		"blkio.throttle.io_serviced_recursive":      "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
	} {
		if err := os.WriteFile(filepath.Join(d, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := v1IO(d)
	want := []IODevice{{Major: 8, ReadBytes: 4096, WriteBytes: 8192, Reads: 1, Writes: 2}, {Major: 259, Minor: 1, ReadBytes: 512}}
	if !slices.Equal(got, want) {
		t.Errorf("v1IO = %+v, want %+v", got, want)
	}
	if got := v1IO(t.TempDir()); len(got) != 0 {
		t.Errorf("no blkio files: %+v", got)
	}
}

// hasMemsw: swap accounting is on (the kernel shows memsw files).
func hasMemsw(memoryDir string) bool {
	_, err := os.Stat(filepath.Join(memoryDir, "memory.memsw.limit_in_bytes"))
	return err == nil
}
