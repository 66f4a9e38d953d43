package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cri-mini/cri-mini/internal/errdefs"
)

func parse(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return f.Load()
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cri-mini.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsNeedNoFile(t *testing.T) {
	c, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("got %+v, want defaults %+v", c, Default())
	}
	if p, _ := c.SocketPath(); p != "/run/cri-mini/cri-mini.sock" {
		t.Fatalf("socket path %q", p)
	}
}

func TestPrecedenceDefaultsFileFlags(t *testing.T) {
	file := writeFile(t, `
root = "/srv/file-root"
runroot = "/run/file"
cgroup_driver = "systemd"
insecure_registries = ["file.local:5000"]
enable_unprivileged_ports = false
device_ownership_from_security_context = true
cdi_spec_dirs = ["/etc/cdi-file"]
[registry_mirrors]
"docker.io" = "http://file-mirror:5000"
"quay.io" = "https://quay-mirror"
`)
	c, err := parse(t, "--config", file, "--runroot", "/run/flag", "-v", "3",
		"--insecure-registry", "flag.local", "--registry-mirror", "docker.io=http://flag-mirror", "--enable-unprivileged-icmp=false",
		"--cdi-spec-dir", "/run/cdi-a", "--cdi-spec-dir", "/run/cdi-b")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Root = "/srv/file-root"                            // file over default
	want.RunRoot = "/run/flag"                              // flag over file
	want.CgroupDriver = "systemd"                           // file
	want.Verbosity = 3                                      // flag
	want.EnableUnprivilegedPorts = false                    // file
	want.DeviceOwnershipFromSecurityContext = true          // file
	want.CDISpecDirs = []string{"/run/cdi-a", "/run/cdi-b"} // flags replace the file's
	want.EnableUnprivilegedICMP = false                     // flag
	want.InsecureRegistries = []string{"file.local:5000", "flag.local"}
	want.RegistryMirrors = map[string]string{"docker.io": "http://flag-mirror", "quay.io": "https://quay-mirror"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

func TestUnknownKeyIsNamed(t *testing.T) {
	for _, tc := range []struct{ file, key string }{
		{"listen = \"unix:///x.sock\"\ncgroup_drivr = \"systemd\"\n", "cgroup_drivr"},
		{"[registry]\nmirror = \"x\"\n", "registry"},
		{"[runtimes.kata]\nruntime_path = \"/usr/bin/kata\"\n", "runtimes.kata.runtime_path"},
	} {
		_, err := parse(t, "--config", writeFile(t, tc.file))
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "unknown key") || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("file %q: got %v, want an unknown-key error naming %s", tc.file, err, tc.key)
		}
	}
}

func TestInvalidValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		key  string
	}{
		{[]string{"--cgroup-driver", "cgroupv3"}, "cgroup_driver"},
		{[]string{"--listen", "tcp://0.0.0.0:1"}, "listen"},
		{[]string{"--root", "relative/dir"}, "root"},
		{[]string{"--runroot", "/var/lib/cri-mini"}, "runroot"},
		{[]string{"--stream-address", "nocolon"}, "stream_address"},
		{[]string{"--registry-mirror", "docker.io"}, "registry-mirror"},
		{[]string{"--registry-mirror", "docker.io=ftp://x"}, "registry_mirrors"},
		{[]string{"-v", "-1"}, "verbosity"},
		{[]string{"--cdi-spec-dir", "cdi"}, "cdi_spec_dirs"},
		{[]string{"--registry-config-path", "certs.d"}, "image.registry_config_path"},
		{[]string{"--pinned-image", "sha256:abc"}, "image.pinned_images"},
		{[]string{"--image-volumes", "copy"}, "image.image_volumes"},
		{[]string{"--signature-policy", "policy.json"}, "image.signature_policy"},
		{[]string{"--short-name-search", "", "--pinned-image", "pause:3.10"}, "image.pinned_images"},
		{[]string{"--short-name-search", "library"}, "image.short_name_search"},
		{[]string{"--short-name-search", "docker.io/library"}, "image.short_name_search"},
		{[]string{"--short-name-alias", "busybox"}, "short-name-alias"},
		{[]string{"--short-name-alias", "busybox=busybox"}, "image.short_name_aliases"},
		{[]string{"--short-name-alias", "busybox=docker.io/library/busybox:1"}, "image.short_name_aliases"},
		{[]string{"--short-name-alias", "quay.io/x=quay.io/y"}, "image.short_name_aliases"},
		{[]string{"--runtime-handler", "Test_Handler"}, "runtimes"},
		{[]string{"--runtime-handler", ""}, "runtimes"},
	} {
		_, err := parse(t, tc.args...)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%v: got %v, want an invalid-argument error naming %s", tc.args, err, tc.key)
		}
	}
	if _, err := parse(t, "--config", "/nonexistent/cri-mini.toml"); err == nil {
		t.Error("a missing --config file was accepted")
	}
	if _, err := parse(t, "--config", writeFile(t, "root = [1, 2")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("broken TOML: got %v", err)
	}
}

func TestRenderRoundTrips(t *testing.T) {
	c := Default()
	c.MetricsAddress = "127.0.0.1:9090"
	c.InsecureRegistries = []string{"reg.local:5000", `we"ird`}
	c.RegistryMirrors = map[string]string{"docker.io": "http://m:5000", "a.b": "https://c"}
	c.Image.RegistryConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"
	c.Image.ShortNameSearch = []string{}
	c.Image.ShortNameAliases = map[string]string{"busybox": "registry.example.com/lib/busybox", "a/b": "localhost:5000/b"}
	c.Image.PinnedImages = []string{"registry.k8s.io/pause:3.10", "sha256:" + strings.Repeat("ab", 32)}
	c.Image.ImageVolumes = ImageVolumesIgnore
	c.Image.SignaturePolicy = "/etc/containers/policy.json"
	c.Runtimes = map[string]RuntimeHandler{"test-handler": {}, "b": {}}
	for _, cfg := range []Config{Default(), c} {
		out, err := cfg.Render()
		if err != nil {
			t.Fatal(err)
		}
		for _, kd := range keyDocs {
			if !strings.Contains(string(out), "# "+strings.SplitN(kd.doc, "\n", 2)[0]) {
				t.Errorf("key %s has no comment in\n%s", kd.key, out)
			}
		}
		back := Default()
		back.RegistryMirrors = nil
		if err := back.load("rendered", out); err != nil {
			t.Fatalf("rendered config does not parse back: %v\n%s", err, out)
		}
		if len(cfg.InsecureRegistries) == 0 && len(back.InsecureRegistries) == 0 {
			back.InsecureRegistries = cfg.InsecureRegistries
		}
		if !reflect.DeepEqual(back, cfg) {
			t.Fatalf("round trip:\n got  %+v\n want %+v\n%s", back, cfg, out)
		}
	}
}

func TestImageTable(t *testing.T) {
	file := writeFile(t, `
[image]
registry_config_path = "/etc/containerd/certs.d"
short_name_search = ["quay.io", "docker.io"]
[image.short_name_aliases]
"busybox" = "registry.example.com/library/busybox"
`)
	c, err := parse(t, "--config", file, "--short-name-alias", "pause=registry.k8s.io/pause")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Image.RegistryConfigPath = "/etc/containerd/certs.d"
	want.Image.ShortNameSearch = []string{"quay.io", "docker.io"}
	want.Image.ShortNameAliases = map[string]string{"busybox": "registry.example.com/library/busybox", "pause": "registry.k8s.io/pause"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c.Image, want.Image)
	}
	// The flag replaces the file's search list; "" alone refuses short names.
	if c, err = parse(t, "--config", file, "--short-name-search", ""); err != nil || len(c.Image.ShortNameSearch) != 0 {
		t.Errorf("--short-name-search \"\": %v %q, want no search registry", err, c.Image.ShortNameSearch)
	}
	if c, err = parse(t, "--short-name-search", "ghcr.io", "--short-name-search", "docker.io"); err != nil ||
		!reflect.DeepEqual(c.Image.ShortNameSearch, []string{"ghcr.io", "docker.io"}) {
		t.Errorf("--short-name-search twice: %v %q", err, c.Image.ShortNameSearch)
	}
	if _, err := parse(t, "--config", writeFile(t, "[image]\nshort_names = []\n")); err == nil || !strings.Contains(err.Error(), "image.short_names") {
		t.Errorf("unknown key in [image]: %v", err)
	}
}

// TestRuntimeHandlers: [runtimes.NAME] tables and --runtime-handler flags
// add handlers to the default one, "", which always comes first.
func TestRuntimeHandlers(t *testing.T) {
	file := writeFile(t, "[runtimes.test-handler]\n[runtimes.kata]\n")
	c, err := parse(t, "--config", file, "--runtime-handler", "gvisor", "--runtime-handler", "kata")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Handlers(), []string{"", "gvisor", "kata", "test-handler"}; !reflect.DeepEqual(got, want) {
		t.Errorf("handlers %q, want %q", got, want)
	}
	if got := Default().Handlers(); !reflect.DeepEqual(got, []string{""}) {
		t.Errorf("default handlers %q, want only the default one", got)
	}
}
