package container

import (
	"fmt"
	"os"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/container/seccomp"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

func TestProcessUserEnvCwdUmask(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "user", rootfs, "sh", "-c", `id; env | grep -v '^PWD=\|^SHLVL='; pwd; umask; touch f; stat -c '%a %u:%g' f; grep CapEff /proc/self/status`)
	umask := uint32(0o027)
	p := b.Spec.Process
	p.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{10, 20}, Umask: &umask}
	p.Env = append(p.Env, "FOO=bar baz")
	p.Cwd = "/work/dir"
	if err := mkdirAllOwned(rootfs+"/work/dir", 1000); err != nil {
		t.Fatal(err)
	}
	st, out, errOut := rt.run(t, "user", b)
	want := "uid=1000 gid=1001 groups=10,20\nHOME=/\nPATH=/bin\nFOO=bar baz\n/work/dir\n0027\n640 1000:1001\nCapEff:\t0000000000000000\n"
	if st.ExitCode != 0 || out != want {
		t.Errorf("exit %d, stdout %q (stderr %q), want %q", st.ExitCode, out, errOut, want)
	}
}

func TestProcessSecurity(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	script := `grep -E '^(NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status; hostname x 2>/dev/null && echo renamed || echo "hostname refused"`
	mask, err := caps.Mask(caps.DefaultSet())
	if err != nil {
		t.Fatal(err)
	}
	wantCaps := fmt.Sprintf("CapInh:\t%016x\nCapPrm:\t%016x\nCapEff:\t%016x\nCapBnd:\t%016x\nCapAmb:\t%016x", 0, mask, mask, mask, 0)
	for _, tc := range []struct {
		name    string
		nnp     bool
		seccomp bool
		want    string
	}{
		{"nnp-seccomp", true, true, wantCaps + "\nNoNewPrivs:\t1\nSeccomp:\t2\nhostname refused\n"},
		{"seccomp", false, true, wantCaps + "\nNoNewPrivs:\t0\nSeccomp:\t2\nhostname refused\n"},
		{"plain", false, false, wantCaps + "\nNoNewPrivs:\t0\nSeccomp:\t0\nhostname refused\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := rt.bundle(t, tc.name, rootfs, "sh", "-c", script)
			b.Spec.Process.NoNewPrivileges = tc.nnp
			if tc.seccomp {
				b.Spec.Linux.Seccomp = seccomp.RuntimeDefault()
			}
			st, out, errOut := rt.run(t, tc.name, b)
			if st.ExitCode != 0 || out != tc.want {
				t.Errorf("exit %d, stdout %q (stderr %q), want %q", st.ExitCode, out, errOut, tc.want)
			}
		})
	}
}

func TestProcessRlimits(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	b := rt.bundle(t, "rlimits", rootfs, "sh", "-c", "ulimit -n; ulimit -Hn")
	b.Spec.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 123, Hard: 456}}
	st, out, errOut := rt.run(t, "rlimits", b)
	if st.ExitCode != 0 || strings.TrimSpace(out) != "123\n456" {
		t.Errorf("exit %d, stdout %q (stderr %q)", st.ExitCode, out, errOut)
	}
}

func mkdirAllOwned(p string, uid int) error {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	return os.Chown(p, uid, uid)
}
