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
[registry_mirrors]
"docker.io" = "http://file-mirror:5000"
"quay.io" = "https://quay-mirror"
`)
	c, err := parse(t, "--config", file, "--runroot", "/run/flag", "-v", "3",
		"--insecure-registry", "flag.local", "--registry-mirror", "docker.io=http://flag-mirror")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Root = "/srv/file-root"  // file over default
	want.RunRoot = "/run/flag"    // flag over file
	want.CgroupDriver = "systemd" // file
	want.Verbosity = 3            // flag
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
