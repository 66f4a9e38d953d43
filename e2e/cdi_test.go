package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cdiSpec describes a fake device: /dev/null under another name, with the
// other edits a CDI spec makes (environment, a mount, a group); and one
// that needs an OCI hook, which cri-mini does not run.
const cdiSpec = `{"cdiVersion": "0.7.0", "kind": "cri-mini.test/fake",
 "containerEdits": {"env": ["FAKE_VENDOR=cri-mini"]},
 "devices": [
  {"name": "one", "containerEdits": {
    "env": ["FAKE_DEVICE=one"],
    "deviceNodes": [{"path": "/dev/fake-one", "hostPath": "/dev/null"}],
    "mounts": [{"hostPath": "/etc/hostname", "containerPath": "/etc/fake-one", "options": ["ro", "bind"]}],
    "additionalGids": [4242]}},
  {"name": "hooked", "containerEdits": {"hooks": [{"hookName": "createContainer", "path": "/bin/true"}]}}]}
`

// TestCDIDevices: a CDI device asked for by name (CDI_devices, as DRA
// drivers do) or by annotation (device plugins) gets its node, its
// environment, its mount and its group in the container, from a spec the
// daemon reads when the container is made; an unknown device and one
// that needs a hook are refused.
func TestCDIDevices(t *testing.T) {
	pullTestImage(t)
	dir := filepath.Join(suite.dir, "cdi")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fake.json"), []byte(cdiSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(dir, "fake.json")) })
	hostname, err := os.ReadFile("/etc/hostname")
	if err != nil {
		t.Fatal(err)
	}
	podID, podCfg := podWithLogs(t, "cdi")
	script := "ls -l /dev/fake-one | cut -c1; echo written > /dev/fake-one && echo writable; echo $FAKE_DEVICE $FAKE_VENDOR; cat /etc/fake-one; id -G"
	byName := containerConfig("by-name", "sh", "-c", script)
	byName.CDIDevices = []*runtimeapi.CDIDevice{{Name: "cri-mini.test/fake=one"}}
	byAnnotation := containerConfig("by-annotation", "sh", "-c", script)
	byAnnotation.Annotations = map[string]string{"cdi.k8s.io/fake-plugin_one": "cri-mini.test/fake=one"}
	for _, cfg := range []*runtimeapi.ContainerConfig{byName, byAnnotation} {
		id := runContainer(t, podID, podCfg, cfg)
		if st := waitExited(t, id); st.ExitCode != 0 {
			t.Errorf("%s: exit %d", cfg.Metadata.Name, st.ExitCode)
		}
		out, _ := crictlErr("logs", id)
		want := "c\nwritable\none cri-mini\n" + string(hostname) + "0 4242"
		if out != strings.TrimSpace(want) {
			t.Errorf("%s: inside the container:\n%s\nwant\n%s", cfg.Metadata.Name, out, want)
		}
	}

	for _, tc := range []struct {
		name, device string
		code         codes.Code
	}{
		{"unknown device", "cri-mini.test/fake=two", codes.InvalidArgument},
		{"device with a hook", "cri-mini.test/fake=hooked", codes.Unimplemented},
	} {
		cfg := containerConfig("refused", "true")
		cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: tc.device}}
		_, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
}
