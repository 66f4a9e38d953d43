package cri

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/cri/config"
	"github.com/cri-mini/cri-mini/internal/errdefs"
)

// fakeCDISpec is a CDI spec for devices that are /dev/null under other
// names: "one" with an environment variable, a mount and a group, and
// "hooked" that needs an OCI hook.
const fakeCDISpec = `cdiVersion: "0.7.0"
kind: cri-mini.test/fake
devices:
- name: one
  containerEdits:
    env: ["FAKE_DEVICE=one"]
    deviceNodes:
    - path: /dev/fake-one
      hostPath: /dev/null
    mounts:
    - hostPath: /etc/hostname
      containerPath: /etc/fake-one
      options: [ro, bind]
    additionalGids: [4242]
- name: hooked
  containerEdits:
    hooks:
    - hookName: createContainer
      path: /bin/true
containerEdits:
  env: ["FAKE_VENDOR=cri-mini"]
`

func TestInjectCDI(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fake.yaml"), []byte(fakeCDISpec), 0o644); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.CDISpecDirs = []string{dir}
	s := &Service{config: c, cdi: newCDICache(c.CDISpecDirs)}
	newSpec := func() *specs.Spec {
		return &specs.Spec{Process: &specs.Process{Env: []string{"PATH=/bin"}}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	}
	ctr := func(devices []string, annotations map[string]string) *runtimeapi.ContainerConfig {
		cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "gpu"}, Annotations: annotations}
		for _, d := range devices {
			cfg.CDIDevices = append(cfg.CDIDevices, &runtimeapi.CDIDevice{Name: d})
		}
		return cfg
	}

	for name, cfg := range map[string]*runtimeapi.ContainerConfig{
		"CDI_devices": ctr([]string{"cri-mini.test/fake=one"}, nil),
		"annotation":  ctr(nil, map[string]string{"cdi.k8s.io/fake-plugin_dev1": "cri-mini.test/fake=one"}),
	} {
		spec := newSpec()
		if err := s.injectCDI(spec, cfg); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d := spec.Linux.Devices
		if len(d) != 1 || d[0].Path != "/dev/fake-one" || d[0].Type != "c" || d[0].Major != 1 || d[0].Minor != 3 {
			t.Errorf("%s: devices %+v, want /dev/fake-one as /dev/null", name, d)
		}
		if r := spec.Linux.Resources.Devices; len(r) != 1 || !r[0].Allow || *r[0].Major != 1 || *r[0].Minor != 3 || r[0].Access != "rwm" {
			t.Errorf("%s: cgroup rules %+v", name, r)
		}
		if !slices.Contains(spec.Process.Env, "FAKE_DEVICE=one") || !slices.Contains(spec.Process.Env, "FAKE_VENDOR=cri-mini") {
			t.Errorf("%s: env %v", name, spec.Process.Env)
		}
		if len(spec.Mounts) != 1 || spec.Mounts[0].Destination != "/etc/fake-one" || !slices.Contains(spec.Process.User.AdditionalGids, 4242) {
			t.Errorf("%s: mounts %+v, groups %v", name, spec.Mounts, spec.Process.User.AdditionalGids)
		}
	}

	for _, tc := range []struct {
		name string
		cfg  *runtimeapi.ContainerConfig
		kind error
	}{
		{"unknown device", ctr([]string{"cri-mini.test/fake=two"}, nil), errdefs.ErrInvalidArgument},
		{"bad annotation", ctr(nil, map[string]string{"cdi.k8s.io/x": "not a device"}), errdefs.ErrInvalidArgument},
		{"a hook", ctr([]string{"cri-mini.test/fake=hooked"}, nil), errdefs.ErrUnimplemented},
	} {
		if err := s.injectCDI(newSpec(), tc.cfg); !errors.Is(err, tc.kind) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.kind)
		}
	}

	// Turned off, requests are ignored, as containerd does.
	s.config.EnableCDI = false
	spec := newSpec()
	if err := s.injectCDI(spec, ctr([]string{"cri-mini.test/fake=one"}, nil)); err != nil || len(spec.Linux.Devices) != 0 {
		t.Errorf("CDI off: %v, devices %v", err, spec.Linux.Devices)
	}
}
