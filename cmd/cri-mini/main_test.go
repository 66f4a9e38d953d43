package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommands(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"version"}, 0, "cri-mini dev\n", ""},
		{[]string{"help"}, 0, "usage: cri-mini", ""},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"config", "--cgroup-driver", "systemd"}, 0, `cgroup_driver = "systemd"`, ""},
		{[]string{"config", "extra"}, 2, "", `unexpected arguments ["extra"]`},
		{[]string{"config", "--no-such-flag"}, 2, "", "flag provided but not defined: -no-such-flag"},
		{[]string{"--cgroup-driver", "cgroupv3"}, 2, "", "cgroup_driver"},
		// Global flags before the command, as containerd and CRI-O take them.
		{[]string{"--cgroup-driver", "systemd", "config"}, 0, `cgroup_driver = "systemd"`, ""},
		{[]string{"--config", configFile(t, `cgroup_driver = "systemd"`), "config", "--v", "3"}, 0, "verbosity = 3", ""},
		{[]string{"--config", configFile(t, `cgroup_driver = "systemd"`), "config"}, 0, `cgroup_driver = "systemd"`, ""},
		{[]string{"--runroot", t.TempDir(), "explain", "abc"}, 1, "", `container "abc"`},
		{[]string{"--root", t.TempDir(), "image", "ls"}, 0, "IMAGE", ""},
		{[]string{"-v", "2", "version"}, 0, "cri-mini dev\n", ""},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("cri-mini %v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out.String(), errOut.String(), tc.code, tc.out, tc.errOut)
		}
	}
}

// configFile writes a configuration file for the test and returns its path.
func configFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cri-mini.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
