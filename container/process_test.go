package container

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

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

// TestProcessThroughPlan: every process setting a started container's
// application has is the one its plan's process steps say (the plan
// `cri-mini explain` shows), defaults included: user, groups and umask,
// capabilities (as execve leaves them), no_new_privs, seccomp, rlimits,
// the command, the working directory and the environment with its HOME.
// The expectations are read from the plan alone, never from the spec: a
// setting or a default the init took from elsewhere shows as a difference.
func TestProcessThroughPlan(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	for _, tc := range []struct {
		name   string
		adjust func(*specs.Process, *specs.Linux)
	}{
		// The defaults: no HOME, no working directory, no umask.
		{"defaults", func(p *specs.Process, l *specs.Linux) {
			p.Cwd = ""
			p.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 123, Hard: 456}}
			l.Seccomp = seccomp.RuntimeDefault()
		}},
		// A user with groups, a umask, ambient capabilities; the filter
		// loaded before the change of user (no no_new_privs).
		{"user", func(p *specs.Process, l *specs.Linux) {
			umask := uint32(0o027)
			p.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{10, 20}, Umask: &umask}
			p.Cwd = "/tmp/work"
			p.Env = append(p.Env, "HOME=/home/u", "FOO=bar baz")
			p.NoNewPrivileges = false
			held := []string{"CAP_CHOWN", "CAP_KILL"}
			p.Capabilities = &specs.LinuxCapabilities{Bounding: caps.DefaultSet(), Effective: held, Permitted: held,
				Inheritable: []string{"CAP_KILL"}, Ambient: []string{"CAP_KILL"}}
			p.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 200, Hard: 300}, {Type: "RLIMIT_CORE", Soft: 0, Hard: 0}}
			l.Seccomp = seccomp.RuntimeDefault()
		}},
		// no_new_privs without a filter, the root user.
		{"nnp", func(p *specs.Process, l *specs.Linux) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "through-plan-" + tc.name
			b := rt.bundle(t, id, rootfs, "sleep", "999")
			tc.adjust(b.Spec.Process, b.Spec.Linux)
			st := rt.startRunning(t, id, b)
			plan, err := rt.Plan(id)
			if err != nil {
				t.Fatal(err)
			}
			comparePlanWithProcess(t, plan, st.Pid)
			if tc.name != "defaults" {
				return
			}
			// The defaults are the plan's.
			for _, s := range plan {
				switch {
				case s.Kind == KindUser && (s.User.Umask == nil || *s.User.Umask != 0o022):
					t.Errorf("the plan's user step %+v: want the default umask 0022", s.User)
				case s.Kind == KindExec && (s.Exec.Cwd != "/" || !slices.Contains(s.Exec.Env, "HOME=/")):
					t.Errorf("the plan's exec step %+v: want the default working directory / and HOME=/", s.Exec)
				}
			}
		})
	}
}

// comparePlanWithProcess compares the plan's process steps with what
// process pid, the container's application, has.
func comparePlanWithProcess(t *testing.T, plan []Step, pid int) {
	t.Helper()
	// Start returns when the init was told to go: wait for its exec.
	args := plan[len(plan)-1].Exec.Args
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(procStrings(t, pid, "cmdline"), args); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d never ran %q", pid, args)
		}
	}
	status, limits := procStatus(t, pid), procLimits(t, pid)
	want := map[string]string{"NoNewPrivs": "0", "Seccomp": "0"}
	var user *specs.User
	var exec *ExecStep
	filters := 0
	for _, s := range plan {
		switch s.Kind {
		case KindRlimit:
			rl := s.Rlimit
			if got, want := limits[rl.Type], rlimitValue(rl.Soft)+" "+rlimitValue(rl.Hard); got != want {
				t.Errorf("%s %q, the plan says %q", rl.Type, got, want)
			}
		case KindNoNewPrivs:
			want["NoNewPrivs"] = "1"
		case KindSeccomp:
			want["Seccomp"] = "2"
			filters++
		case KindUser:
			user = s.User
			u, g := strconv.Itoa(int(user.UID)), strconv.Itoa(int(user.GID))
			want["Uid"] = strings.Join([]string{u, u, u, u}, "\t")
			want["Gid"] = strings.Join([]string{g, g, g, g}, "\t")
			groups := make([]string, len(user.AdditionalGids))
			for i, gid := range user.AdditionalGids {
				groups[i] = strconv.Itoa(int(gid))
			}
			want["Groups"] = strings.Join(groups, " ")
			if user.Umask == nil {
				t.Errorf("the plan's user step has no umask")
			} else {
				want["Umask"] = fmt.Sprintf("%04o", *user.Umask)
			}
		case KindCapabilities:
			for k, v := range capsAfterExec(t, s.Capabilities, user) {
				want[k] = fmt.Sprintf("%016x", v)
			}
		case KindExec:
			exec = s.Exec
		}
	}
	if user == nil || exec == nil || want["CapBnd"] == "" {
		t.Fatalf("the plan lacks a user, capabilities or exec step: %+v", plan)
	}
	for k, v := range want {
		if status[k] != v {
			t.Errorf("%s: %q, the plan says %q", k, status[k], v)
		}
	}
	if n, ok := status["Seccomp_filters"]; ok && n != strconv.Itoa(filters) {
		t.Errorf("%s seccomp filters, the plan loads %d", n, filters)
	}
	if got := procStrings(t, pid, "environ"); !slices.Equal(got, exec.Env) {
		t.Errorf("environment %q, the plan says %q", got, exec.Env)
	}
	if !hasEnv(exec.Env, "HOME") {
		t.Errorf("the plan's environment has no HOME: %q", exec.Env)
	}
	if got := procStrings(t, pid, "cmdline"); !slices.Equal(got, exec.Args) {
		t.Errorf("command %q, the plan says %q", got, exec.Args)
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || cwd != exec.Cwd {
		t.Errorf("working directory %q (%v), the plan says %q", cwd, err, exec.Cwd)
	}
}

// capsAfterExec is what execve of a plain file (no set-id bit, no file
// capabilities) leaves of the capabilities the plan sets: root gets its
// bounding and inheritable sets permitted and effective, any other user
// its ambient set.
func capsAfterExec(t *testing.T, c *specs.LinuxCapabilities, user *specs.User) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for k, set := range map[string][]string{"CapBnd": c.Bounding, "CapInh": c.Inheritable, "CapAmb": c.Ambient} {
		v, err := caps.Mask(set)
		if err != nil {
			t.Fatal(err)
		}
		m[k] = v
	}
	if user != nil && user.UID == 0 {
		m["CapPrm"] = m["CapBnd"] | m["CapInh"]
	} else {
		m["CapPrm"] = m["CapAmb"]
	}
	m["CapEff"] = m["CapPrm"]
	return m
}

// procFile is file name of /proc/PID.
func procFile(t *testing.T, pid int, name string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// procStatus is /proc/PID/status as key: value.
func procStatus(t *testing.T, pid int) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(procFile(t, pid, "status"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// procLimits are the soft and hard limits of /proc/PID/limits by rlimit.
func procLimits(t *testing.T, pid int) map[string]string {
	names := map[string]string{"Max cpu time": "RLIMIT_CPU", "Max file size": "RLIMIT_FSIZE", "Max data size": "RLIMIT_DATA",
		"Max stack size": "RLIMIT_STACK", "Max core file size": "RLIMIT_CORE", "Max resident set": "RLIMIT_RSS",
		"Max processes": "RLIMIT_NPROC", "Max open files": "RLIMIT_NOFILE", "Max locked memory": "RLIMIT_MEMLOCK",
		"Max address space": "RLIMIT_AS", "Max file locks": "RLIMIT_LOCKS", "Max pending signals": "RLIMIT_SIGPENDING",
		"Max msgqueue size": "RLIMIT_MSGQUEUE", "Max nice priority": "RLIMIT_NICE", "Max realtime priority": "RLIMIT_RTPRIO",
		"Max realtime timeout": "RLIMIT_RTTIME"}
	m := map[string]string{}
	for _, line := range strings.Split(procFile(t, pid, "limits"), "\n") {
		if len(line) > 26 {
			if name, ok := names[strings.TrimSpace(line[:26])]; ok {
				if f := strings.Fields(line[26:]); len(f) >= 2 {
					m[name] = f[0] + " " + f[1]
				}
			}
		}
	}
	return m
}

func rlimitValue(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

// procStrings is a NUL-separated /proc/PID file (environ, cmdline).
func procStrings(t *testing.T, pid int, name string) []string {
	s := strings.TrimSuffix(procFile(t, pid, name), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}
