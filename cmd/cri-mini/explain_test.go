package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/container"
)

// TestExplainFromStateDir: explain reads a container's recorded config
// under --runroot, with no daemon running, and prints the script or the
// plan; IDs may be given by a unique prefix.
func TestExplainFromStateDir(t *testing.T) {
	runroot := t.TempDir()
	spec := &specs.Spec{
		Root:     &specs.Root{Path: "/run/cri-mini/rootfs/abc123"},
		Hostname: "web",
		Process:  &specs.Process{Args: []string{"nginx", "-g", "daemon off;"}, Env: []string{"PATH=/usr/bin"}, Cwd: "/"},
		Linux:    &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/pod1"}}},
	}
	for _, id := range []string{"abc123", "abd456", "abd789"} {
		dir := filepath.Join(runroot, "containers", id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(map[string]any{"id": id, "spec": spec})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	explain := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"explain", "--runroot", runroot}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, script, stderr := explain("abc")
	if code != 0 {
		t.Fatalf("explain abc: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"# R13: pivot_root", "pivot_root . .", "# R15: hostname", "bb hostname web",
		"nsenter --net=/run/netns/pod1 -- unshare --mount --uts --fork", `"$app" -g 'daemon off;'`} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	code, out, stderr := explain("--json", "abc123")
	if code != 0 {
		t.Fatalf("explain --json: exit %d: %s", code, stderr)
	}
	var plan []container.Step
	if err := json.Unmarshal([]byte(out), &plan); err != nil || len(plan) == 0 {
		t.Fatalf("explain --json: %v\n%s", err, out)
	}
	if last := plan[len(plan)-1]; last.Kind != container.KindExec || last.Recipe != "R19" || last.Exec.Args[2] != "daemon off;" {
		t.Errorf("last step %+v, want R19's exec", last)
	}
	if code, _, stderr := explain("abd"); code != 1 || !strings.Contains(stderr, "matches 2 containers") {
		t.Errorf("ambiguous prefix: exit %d, %q", code, stderr)
	}
	if code, _, stderr := explain("zzz"); code != 1 || !strings.Contains(stderr, "not found") {
		t.Errorf("unknown container: exit %d, %q", code, stderr)
	}
	if code, _, _ := explain(); code != 2 {
		t.Errorf("explain without an ID: exit %d, want 2", code)
	}
}

// TestExplainFindsRunrootInConfig: explain reads the daemon's runroot from
// the --config file the daemon uses, wherever --config is given: before
// the command, after it, or after the container ID.
func TestExplainFindsRunrootInConfig(t *testing.T) {
	runroot := t.TempDir()
	dir := filepath.Join(runroot, "containers", "cfg123")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	spec := &specs.Spec{Root: &specs.Root{Path: "/rootfs"}, Process: &specs.Process{Args: []string{"sleep", "1"}, Cwd: "/"}, Linux: &specs.Linux{}}
	data, err := json.Marshal(map[string]any{"id": "cfg123", "spec": spec})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfgFile, []byte("runroot = \""+runroot+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--config", cfgFile, "explain", "cfg"},
		{"explain", "--config", cfgFile, "cfg"},
		{"explain", "cfg", "--config", cfgFile},
		{"explain", "cfg", "--config=" + cfgFile, "--json"},
		{"--config", cfgFile, "explain", "--json", "cfg"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 || !strings.Contains(out.String(), "sleep") {
			t.Errorf("%q: exit %d, %s%s", args, code, errOut.String(), out.String())
		}
	}
}
