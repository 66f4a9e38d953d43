package main

import (
	"bytes"
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
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("cri-mini %v: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out.String(), errOut.String(), tc.code, tc.out, tc.errOut)
		}
	}
}
