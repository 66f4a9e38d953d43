package container

import (
	"reflect"
	"testing"

	"github.com/cri-mini/cri-mini/internal/mountinfo"
)

// TestCgroupHierarchies: a hybrid host's cgroup2 (/sys/fs/cgroup/unified)
// is not given to containers, as runc does not; a unified host's is.
func TestCgroupHierarchies(t *testing.T) {
	hybrid := []mountinfo.Mount{
		{Mountpoint: "/sys/fs/cgroup", FSType: "tmpfs", SuperOptions: "rw,mode=755"},
		{Mountpoint: "/sys/fs/cgroup/memory", FSType: "cgroup", SuperOptions: "rw,memory"},
		{Mountpoint: "/sys/fs/cgroup/cpu,cpuacct", FSType: "cgroup", SuperOptions: "rw,cpu,cpuacct"},
		{Mountpoint: "/sys/fs/cgroup/systemd", FSType: "cgroup", SuperOptions: "rw,xattr,name=systemd"},
		{Mountpoint: "/sys/fs/cgroup/unified", FSType: "cgroup2", SuperOptions: "rw,nsdelegate"},
		{Mountpoint: "/mnt/cg", FSType: "cgroup", SuperOptions: "rw,pids"},
	}
	want := []CgroupHierarchy{
		{Dir: "memory", FSType: "cgroup", Params: []string{"memory"}},
		{Dir: "cpu,cpuacct", FSType: "cgroup", Params: []string{"cpu", "cpuacct"}},
		{Dir: "systemd", FSType: "cgroup", Params: []string{"xattr", "name=systemd"}},
	}
	if got := cgroupHierarchies(hybrid); !reflect.DeepEqual(got, want) {
		t.Errorf("hybrid host: %+v, want %+v", got, want)
	}
	unified := []mountinfo.Mount{{Mountpoint: "/sys/fs/cgroup", FSType: "cgroup2", SuperOptions: "rw,nsdelegate,memory_recursiveprot"}}
	if got, want := cgroupHierarchies(unified), []CgroupHierarchy{{FSType: "cgroup2"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("unified host: %+v, want %+v", got, want)
	}
}
