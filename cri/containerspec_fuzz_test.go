package cri

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/container/caps"
)

// FuzzContainerSpec translates arbitrary container configs (pod specs are
// untrusted) and image configs (so are images) into OCI specs: nothing
// panics, and what is accepted keeps the promises container/ relies on
// and a non-privileged container is kept to.
func FuzzContainerSpec(f *testing.F) {
	seeds := []*runtimeapi.ContainerConfig{
		{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Command: []string{"/bin/true"}},
		{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app", Attempt: 2}, Args: []string{"serve"}, WorkingDir: "/srv",
			Envs:    []*runtimeapi.KeyValue{{Key: "A", Value: []byte("1")}},
			Mounts:  []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/tmp", Readonly: true}},
			Devices: []*runtimeapi.Device{{ContainerPath: "/dev/mynull", HostPath: "/dev/null", Permissions: "rw"}},
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 64 << 20},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					RunAsUsername: "app", NoNewPrivs: true, ReadonlyRootfs: true,
					Capabilities:     &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"CHOWN"}},
					Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
					NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
				},
			},
		},
		{Metadata: &runtimeapi.ContainerMetadata{Name: "p"}, Command: []string{"sh"},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Privileged: true, RunAsUser: &runtimeapi.Int64Value{Value: 1000}, RunAsGroup: &runtimeapi.Int64Value{Value: 1000}}}},
	}
	for _, s := range seeds {
		data, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "/bin/app", "", "", "")
		f.Add(data, "", "1000:1000", "/work", "PATH=/bin")
	}
	root := fakeRootfs(f)
	f.Fuzz(func(t *testing.T, data []byte, entrypoint, user, workdir, env string) {
		cfg := &runtimeapi.ContainerConfig{}
		if proto.Unmarshal(data, cfg) != nil {
			return
		}
		img := imageConfig{Entrypoint: []string{entrypoint}, User: user, WorkingDir: workdir, Env: []string{env}}
		if entrypoint == "" {
			img.Entrypoint = nil
		}
		pod := testPod(cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_POD)
		spec, cgroup, err := containerSpec(specInput{ID: "c1", Config: cfg, Pod: pod, Image: img, ImageRef: "sha256:abc",
			Rootfs: root, Driver: "cgroupfs"})
		if err != nil {
			return
		}
		p := spec.Process
		switch {
		case len(p.Args) == 0:
			t.Fatal("accepted with no command")
		case !filepath.IsAbs(p.Cwd):
			t.Fatalf("working directory %q is not absolute", p.Cwd)
		case p.User.UID > maxID || p.User.GID > maxID:
			t.Fatalf("user %d:%d is out of range", p.User.UID, p.User.GID)
		case !strings.HasPrefix(cgroup, pod.Spec.CgroupParent+"/"):
			t.Fatalf("cgroup %q is outside the pod's %q", cgroup, pod.Spec.CgroupParent)
		case spec.Annotations[annoSandboxID] != pod.ID:
			t.Fatalf("sandbox annotation %q", spec.Annotations[annoSandboxID])
		}
		for _, m := range spec.Mounts {
			if !filepath.IsAbs(m.Destination) {
				t.Fatalf("mount destination %q is not absolute", m.Destination)
			}
		}
		if c := p.Capabilities; c != nil {
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
				if _, err := caps.Parse(set); err != nil {
					t.Fatalf("capabilities the runtime would refuse: %v", err)
				}
			}
		}
		ns := map[specs.LinuxNamespaceType]string{}
		for _, n := range spec.Linux.Namespaces {
			ns[n.Type] = n.Path
		}
		if path, ok := ns[specs.MountNamespace]; !ok || path != "" {
			t.Fatalf("mount namespace %q, want a new one", path)
		}
		if !cfg.GetLinux().GetSecurityContext().GetPrivileged() {
			if d := spec.Linux.Resources.Devices; len(d) == 0 || d[0].Allow || d[0].Type != "" && d[0].Type != "a" {
				t.Fatalf("a non-privileged container's device rules do not start by denying all: %+v", d)
			}
			if c := p.Capabilities; c != nil && len(c.Bounding) > len(caps.DefaultSet())+len(cfg.GetLinux().GetSecurityContext().GetCapabilities().GetAddCapabilities()) {
				t.Fatalf("bounding set %v is more than the defaults and the adds", c.Bounding)
			}
		}
		if _, err := json.Marshal(spec); err != nil {
			t.Fatalf("spec does not encode: %v", err)
		}
		_, _ = container.BuildPlan(spec, container.PlanInput{})
	})
}
