package container

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func planSpec() *specs.Spec {
	return &specs.Spec{
		Root:     &specs.Root{Path: "/run/ctr/rootfs"},
		Hostname: "web",
		Process:  &specs.Process{Args: []string{"sleep", "10"}, Env: []string{"PATH=/bin"}, Cwd: "/srv"},
		Mounts: []specs.Mount{
			{Destination: "/data", Type: "bind", Source: "/var/data", Options: []string{"rbind", "ro", "rprivate"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/pod/shm", Options: []string{"rbind"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/pod"},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace, Path: "/run/ipc/pod"}},
			MaskedPaths:   []string{"/proc/kcore", "/secret dir"},
			ReadonlyPaths: []string{"/proc/sys"},
			Sysctl:        map[string]string{"net.ipv4.ip_forward": "1"},
		},
	}
}

func TestBuildPlanOrder(t *testing.T) {
	plan, err := BuildPlan(planSpec(), PlanInput{
		EtcFiles: map[string]string{"/etc/hosts": "/state/hosts"},
		Cgroup:   &CgroupStep{Path: "/pod/ctr", Writes: []CgroupFileWrite{{Root: "/sys/fs/cgroup/pids", File: "pids.max", Value: "10"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range plan {
		got = append(got, s.Recipe)
	}
	// Recipe steps appear in the recipe's order (the spec's own mounts,
	// devices and runtime steps where they are performed).
	order := map[string]int{}
	for i, r := range []string{"runtime", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10", "R11", "R12", "spec", "R13", "R14", "R15", "R16", "R17", "R19"} {
		order[r] = i
	}
	prev := -1
	for _, s := range plan {
		o, ok := order[s.Recipe]
		if !ok {
			t.Fatalf("step %+v has no recipe step", s)
		}
		if s.Recipe == "runtime" && prev > order["R3"] || s.Recipe == "spec" && s.Kind == KindDevice {
			continue // sysctls, privileges: between R15 and R19
		}
		if o < prev && !(s.Recipe == "R7" && prev == order["R8"]) {
			t.Errorf("step %s after a later one: %v", s.Recipe, got)
		}
		if o > prev {
			prev = o
		}
	}
	if plan[0].Kind != KindCgroup || plan[len(plan)-1].Kind != KindExec {
		t.Errorf("plan starts with %s and ends with %s, want cgroup ... exec", plan[0].Kind, plan[len(plan)-1].Kind)
	}
	// Joined namespaces come first, the mount namespace is new.
	var ns []string
	for _, s := range plan {
		if s.Kind == KindNamespace {
			ns = append(ns, string(s.Namespace.Type)+"="+s.Namespace.Path)
		}
	}
	if want := "network=/run/netns/pod ipc=/run/ipc/pod mount= pid= uts="; strings.Join(ns, " ") != want {
		t.Errorf("namespaces %q, want %q", strings.Join(ns, " "), want)
	}
	find := func(kind StepKind, match func(Step) bool) *Step {
		for i := range plan {
			if plan[i].Kind == kind && match(plan[i]) {
				return &plan[i]
			}
		}
		return nil
	}
	// The pod's /dev/shm replaces R10's tmpfs in place.
	shm := find(KindMount, func(s Step) bool { return s.Mount.Destination == "/dev/shm" })
	if shm == nil || shm.Recipe != "R10" || shm.Mount.Type != "bind" || shm.Mount.Source != "/run/pod/shm" {
		t.Errorf("/dev/shm step %+v, want the pod's bind as R10", shm)
	}
	data := find(KindMount, func(s Step) bool { return s.Mount.Destination == "/data" })
	if data == nil || data.Recipe != "spec" || strings.Join(data.Mount.Options, ",") != "rbind,ro,rprivate" {
		t.Errorf("/data step %+v, want the spec's bind", data)
	}
	hosts := find(KindMount, func(s Step) bool { return s.Mount.Destination == "/etc/hosts" })
	if hosts == nil || hosts.Recipe != "R12" || hosts.Mount.Source != "/state/hosts" {
		t.Errorf("/etc/hosts step %+v", hosts)
	}
	if find(KindMount, func(s Step) bool { return s.Mount.Destination == "/etc/resolv.conf" }) != nil {
		t.Errorf("a bind of resolv.conf without its R2 file")
	}
	if s := find(KindMaskPath, func(s Step) bool { return s.Path == "/secret dir" }); s == nil || s.Recipe != "R17" {
		t.Errorf("masked path step %+v", s)
	}
	if s := find(KindMaskPath, func(s Step) bool { return s.Path == "/proc/timer_list" }); s != nil {
		t.Errorf("default masked path planned although the spec lists its own: %+v", s)
	}
	if s := find(KindDevice, func(s Step) bool { return s.Device.Path == "null" }); s == nil || s.Recipe != "R7" || s.Device.Major != 1 || s.Device.Minor != 3 || s.Device.Mode != 0o666 {
		t.Errorf("/dev/null step %+v", s)
	}
	if s := find(KindSymlink, func(s Step) bool { return s.Symlink.Path == "ptmx" }); s == nil || s.Recipe != "R8" || s.Symlink.Target != "pts/ptmx" {
		t.Errorf("/dev/ptmx step %+v", s)
	}
	if s := find(KindHostname, func(Step) bool { return true }); s == nil || s.Hostname != "web" || s.Recipe != "R15" {
		t.Errorf("hostname step %+v", s)
	}
	if s := find(KindExec, func(Step) bool { return true }); s.Recipe != "R19" || s.Exec.Cwd != "/srv" || !hasEnv(s.Exec.Env, "HOME") {
		t.Errorf("exec step %+v: want cwd /srv and HOME set", s.Exec)
	}
	// The plan is data: JSON round-trips it.
	data2, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	var back []Step
	if err := json.Unmarshal(data2, &back); err != nil || len(back) != len(plan) {
		t.Fatalf("plan JSON round trip: %d steps, %v", len(back), err)
	}
}

func TestBuildPlanErrors(t *testing.T) {
	s := planSpec()
	s.Root = nil
	if _, err := BuildPlan(s, PlanInput{}); err == nil {
		t.Error("plan without a root: no error")
	}
	s = planSpec()
	s.Process.Args = nil
	if _, err := BuildPlan(s, PlanInput{}); err == nil {
		t.Error("plan without a command: no error")
	}
	s = planSpec()
	s.Linux.Sysctl = map[string]string{"../../etc/passwd": "x"}
	if _, err := BuildPlan(s, PlanInput{}); err == nil {
		t.Error("sysctl with a path: no error")
	}
}

// Awkward values reach bash as the very words they were.
func TestShellQuote(t *testing.T) {
	values := []string{"plain", "with space", `dq"uote`, "it's", `back\slash`, "$HOME", "`id`", "new\nline", "", "*", "a'b'c"}
	var script strings.Builder
	script.WriteString("printf '%s\\0'")
	for _, v := range values {
		script.WriteString(" " + shellQuote(v))
	}
	out, err := exec.Command("bash", "-c", script.String()).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if strings.Join(got, "|") != strings.Join(values, "|") {
		t.Errorf("bash read %q, want %q", got, values)
	}
}

// An env entry with spaces and quotes arrives intact in the script's export.
func TestRenderShellEnv(t *testing.T) {
	s := planSpec()
	s.Process.Env = []string{"PATH=/bin", `MSG=it's "quoted" $x`, "1BAD=x"}
	plan, err := BuildPlan(s, PlanInput{})
	if err != nil {
		t.Fatal(err)
	}
	script := RenderShell("c1", plan)
	var exports []string
	for _, l := range strings.Split(script, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "export ") && !strings.HasPrefix(l, "export ROOTFS") {
			exports = append(exports, l)
		}
	}
	out, err := exec.Command("bash", "-c", strings.Join(exports, "\n")+"\nprintf '%s' \"$MSG\"").Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `it's "quoted" $x` {
		t.Errorf("MSG is %q in bash", out)
	}
	if !strings.Contains(script, "# env 1BAD=x: not a shell variable name") {
		t.Error("an env name bash cannot export is not called out")
	}
	if err := exec.Command("bash", "-n", "-c", script).Run(); err != nil {
		t.Errorf("bash -n: %v\n%s", err, script)
	}
}

// TestEmptyPathListsSurviveTheRecord: a spec with empty lists of masked
// and read-only paths (a privileged container's) reads back from its
// config.json with empty lists, not with none, which would get the
// recipe's defaults; a spec without lists reads back without.
func TestEmptyPathListsSurviveTheRecord(t *testing.T) {
	dir := t.TempDir()
	for _, empty := range []bool{true, false} {
		linux := &specs.Linux{}
		if empty {
			linux.MaskedPaths, linux.ReadonlyPaths = []string{}, []string{}
		}
		if err := writeJSON(dir, configFile, config{ID: "x", Spec: &specs.Spec{Linux: linux}}); err != nil {
			t.Fatal(err)
		}
		var back config
		if err := readJSON(dir, configFile, &back); err != nil {
			t.Fatal(err)
		}
		l := back.Spec.Linux
		if (l.MaskedPaths != nil) != empty || (l.ReadonlyPaths != nil) != empty || len(l.MaskedPaths)+len(l.ReadonlyPaths) != 0 {
			t.Errorf("lists given empty %v: read back masked %#v read-only %#v", empty, l.MaskedPaths, l.ReadonlyPaths)
		}
		plan, err := BuildPlan(&specs.Spec{Root: &specs.Root{Path: "/r"}, Process: &specs.Process{Args: []string{"x"}}, Linux: l}, PlanInput{})
		if err != nil {
			t.Fatal(err)
		}
		masks := 0
		for _, s := range plan {
			if s.Kind == KindMaskPath || s.Kind == KindReadonlyPath {
				masks++
			}
		}
		if (masks == 0) != empty {
			t.Errorf("lists given empty %v: the plan masks or protects %d paths", empty, masks)
		}
	}
}

// TestHostnameIsR15: the hostname step is the recipe's R15, in the plan
// and in the rendered script, whether the container sets the hostname in
// a uts namespace of its own or joins its pod's, where the pod set it (the
// script says so and sets none).
func TestHostnameIsR15(t *testing.T) {
	for _, tc := range []struct {
		name, uts string
		want      []string
	}{
		{"own", "", []string{"# R15: hostname\n  bb hostname web\n"}},
		{"pod", "/run/pods/p1/ns/uts", []string{"# R15: hostname\n  # set by the pod: the container joined the pod's uts namespace (/run/pods/p1/ns/uts) in R3,"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := planSpec()
			for i, ns := range s.Linux.Namespaces {
				if ns.Type == specs.UTSNamespace {
					s.Linux.Namespaces[i].Path = tc.uts
				}
			}
			plan, err := BuildPlan(s, PlanInput{})
			if err != nil {
				t.Fatal(err)
			}
			var steps []Step
			for _, st := range plan {
				if st.Kind == KindHostname {
					steps = append(steps, st)
				}
			}
			if len(steps) != 1 || steps[0].Recipe != "R15" || steps[0].Path != tc.uts || (tc.uts == "") != (steps[0].Hostname == "web") {
				t.Fatalf("hostname steps %+v, want one R15 step", steps)
			}
			script := RenderShell("c1", plan)
			for _, w := range tc.want {
				if !strings.Contains(script, w) {
					t.Errorf("script lacks %q:\n%s", w, script)
				}
			}
			if tc.uts != "" && strings.Contains(script, "hostname web") {
				t.Errorf("the script sets the hostname the pod set:\n%s", script)
			}
		})
	}
}
