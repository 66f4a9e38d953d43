package cri

import (
	"errors"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/sandbox"
)

var podRange = []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 0x10000 * 7, Length: 0x10000}}

func usernsPod() *sandbox.Pod {
	p := testPod(false)
	p.UserNS = "/run/x/pods/pod1/ns/user"
	m := specIDMappings(podRange)
	p.Spec.UserNS = &sandbox.UserNamespace{UIDs: m, GIDs: m}
	return p
}

// TestPodUserNS: mode POD is the pod's own user namespace with the
// mappings sent; NODE and no options the host's; CONTAINER and TARGET,
// and mappings with NODE, are InvalidArgument. The status says it back.
func TestPodUserNS(t *testing.T) {
	u, err := podUserNS(&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: podRange, Gids: podRange})
	if err != nil || u == nil || !slices.Equal(u.UIDs, specIDMappings(podRange)) || !slices.Equal(u.GIDs, u.UIDs) {
		t.Fatalf("POD: %+v %v", u, err)
	}
	for _, opts := range []*runtimeapi.UserNamespace{nil, {Mode: runtimeapi.NamespaceMode_NODE}} {
		if u, err := podUserNS(opts); u != nil || err != nil {
			t.Errorf("%v: %+v %v, want the host's", opts, u, err)
		}
	}
	for _, opts := range []*runtimeapi.UserNamespace{{Mode: runtimeapi.NamespaceMode_CONTAINER}, {Mode: runtimeapi.NamespaceMode_TARGET},
		{Mode: runtimeapi.NamespaceMode_NODE, Uids: podRange}} {
		if _, err := podUserNS(opts); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%v: %v, want InvalidArgument", opts, err)
		}
	}
	got := podStatus(usernsPod()).GetLinux().GetNamespaces().GetOptions().GetUsernsOptions()
	if got.GetMode() != runtimeapi.NamespaceMode_POD || len(got.GetUids()) != 1 || got.GetUids()[0].GetHostId() != podRange[0].HostId {
		t.Errorf("pod status userns_options %v", got)
	}
	if got := podStatus(testPod(false)).GetLinux().GetNamespaces().GetOptions().GetUsernsOptions(); got.GetMode() != runtimeapi.NamespaceMode_NODE {
		t.Errorf("status of a pod without a user namespace: %v", got)
	}
}

// TestUserNamespaceContainerSpec: a container of a pod with a user
// namespace joins it, carries its mappings, gets its mounts' mappings as
// idmapped mounts and its devices as binds of the host's nodes; it may not
// be privileged, leave the pod's user namespace, map otherwise or take the
// host's pid namespace.
func TestUserNamespaceContainerSpec(t *testing.T) {
	root, vol := fakeRootfs(t), t.TempDir()
	opts := &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: podRange, Gids: podRange}}
	config := func() *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: "busybox"},
			Command:  []string{"sh"},
			Mounts: []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: vol, UidMappings: podRange, GidMappings: podRange},
				{ContainerPath: "/plain", HostPath: vol}},
			Devices: []*runtimeapi.Device{{ContainerPath: "/dev/mynull", HostPath: "/dev/null", Permissions: "rw"}},
			Linux:   &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: opts}},
		}
	}
	pod := usernsPod()
	in := specInput{ID: "c1", Config: config(), Pod: pod, Rootfs: root, Driver: "cgroupfs"}
	spec, _, err := containerSpec(in)
	if err == nil {
		err = devicesAsBinds(spec, in.Config.GetDevices())
	}
	if err != nil {
		t.Fatal(err)
	}
	l := spec.Linux
	if !slices.Contains(l.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: pod.UserNS}) {
		t.Errorf("namespaces %v lack the pod's user namespace", l.Namespaces)
	}
	if !slices.Equal(l.UIDMappings, pod.Spec.UserNS.UIDs) || !slices.Equal(l.GIDMappings, pod.Spec.UserNS.GIDs) {
		t.Errorf("mappings %v %v", l.UIDMappings, l.GIDMappings)
	}
	byDest := map[string]specs.Mount{}
	for _, m := range spec.Mounts {
		byDest[m.Destination] = m
	}
	if m := byDest["/data"]; !slices.Equal(m.UIDMappings, l.UIDMappings) || !slices.Equal(m.GIDMappings, l.GIDMappings) {
		t.Errorf("/data is not idmapped with the pod's mappings: %+v", m)
	}
	if m := byDest["/plain"]; len(m.UIDMappings)+len(m.GIDMappings) != 0 {
		t.Errorf("/plain got mappings it was not sent: %+v", m)
	}
	if m := byDest["/dev/mynull"]; m.Source != "/dev/null" || m.Type != "bind" || len(l.Devices) != 0 {
		t.Errorf("device: mount %+v, devices %v; want a bind of /dev/null", m, l.Devices)
	}
	if i := slices.IndexFunc(l.Resources.Devices, func(d specs.LinuxDeviceCgroup) bool { return d.Major != nil && *d.Major == 1 && *d.Minor == 3 }); i < 0 {
		t.Errorf("the device's cgroup rule is gone: %v", l.Resources.Devices)
	}

	other := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 0x10000 * 8, Length: 0x10000}}
	for name, tc := range map[string]struct {
		modify func(*runtimeapi.ContainerConfig, *sandbox.Pod)
		want   string
	}{
		"privileged": {func(c *runtimeapi.ContainerConfig, _ *sandbox.Pod) { c.Linux.SecurityContext.Privileged = true }, "privileged"},
		"mode NODE": {func(c *runtimeapi.ContainerConfig, _ *sandbox.Pod) {
			c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}}
		}, "mode NODE"},
		"other mappings": {func(c *runtimeapi.ContainerConfig, _ *sandbox.Pod) {
			c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: other, Gids: other}}
		}, "differ from its pod's"},
		"host pid": {func(c *runtimeapi.ContainerConfig, _ *sandbox.Pod) {
			c.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_NODE
		}, "host's pid namespace"},
		"POD without one": {func(_ *runtimeapi.ContainerConfig, p *sandbox.Pod) { p.UserNS, p.Spec.UserNS = "", nil }, "has none"},
	} {
		t.Run(name, func(t *testing.T) {
			c, p := config(), usernsPod()
			c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{UsernsOptions: opts.UsernsOptions}
			tc.modify(c, p)
			_, _, err := containerSpec(specInput{ID: "c1", Config: c, Pod: p, Rootfs: root, Driver: "cgroupfs"})
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want InvalidArgument saying %q", err, tc.want)
			}
		})
	}
	for name, m := range map[string]*runtimeapi.Mount{
		"other mappings":    {ContainerPath: "/v", UidMappings: other, GidMappings: other},
		"no user namespace": {ContainerPath: "/v", UidMappings: podRange, GidMappings: podRange},
	} {
		p := usernsPod()
		if name == "no user namespace" {
			p = testPod(false)
		}
		if _, err := mountIDMap(p, m); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("image volume with %s: %v, want InvalidArgument", name, err)
		}
	}
}
