package container

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"
)

// The commands an explain script runs, by the word that names them. A
// value that escapes its quoting shows up as a command not in this list.
var scriptCommands = map[string]bool{
	"set": true, "mkdir": true, "echo": true, "inside": true, "bind_target": true,
	"touch": true, "dirname": true, "mount": true, "rm": true, "mknod": true, "chown": true, "ln": true,
	"exec": true, "bb": true, "ldd": true, "awk": true, "sort": true, "cd": true, "pivot_root": true,
	"[": true, "ulimit": true, "unset": true, "compgen": true, "type": true, "printf": true,
	"declare": true, "eval": true, "nsenter": true, "unshare": true, "bash": true, "exit": true,
	"stage": true, "mktemp": true, "umask": true,
	"/proc/self/fd/9": true, `"$0"`: true,
}

// FuzzRenderShell renders plans whose spec values are hostile (pod specs
// and images are untrusted; the script is run as root) and checks that
// bash parses the script, that it runs no command but the script's own,
// and that the values reach their commands as the very words they were.
func FuzzRenderShell(f *testing.F) {
	f.Add("c1", "MSG=hello", "sleep", "10", "web", "/var/data", "/data", "1", "fuse", "/srv", "RLIMIT_NOFILE", "SCMP_ACT_ERRNO", "CAP_CHOWN")
	f.Add("c1\nreboot", "X=a\nreboot #", "$(reboot)", "`reboot`", "h'; reboot; '", "/a\nreboot", "/d$(reboot)",
		"1\nreboot", "d\x00\nreboot", "/s'\n reboot", "R\nreboot", "A\nreboot", "CAP_X\nreboot")
	f.Add("c1", "BAD-NAME=v\nreboot", "$(reboot)", "10", "web", "/var/data", "/data", "1", "fuse", "/srv", "RLIMIT_NOFILE", "SCMP_ACT_ERRNO", "CAP_CHOWN")
	f.Add("x", "BAD-NAME=v\nreboot", `"; reboot; "`, `\`, "\xff\xfe", "$'\\n'", "'", "\\\n", "a b", "\r\n", "#", "\t", "!")
	f.Fuzz(func(t *testing.T, id, env, arg0, arg1, hostname, src, dst, sysctl, dev, cwd, rlimit, action, capName string) {
		s := planSpec()
		s.Hostname = hostname
		s.Process.Args = []string{arg0, arg1}
		s.Process.Env = []string{"PATH=/bin", env}
		s.Process.Cwd = cwd
		s.Process.Rlimits = []specs.POSIXRlimit{{Type: rlimit, Hard: 1, Soft: 1}}
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{capName}, Effective: []string{capName}}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind"}},
			specs.Mount{Destination: dst, Type: src, Source: src, Options: []string{src}})
		s.Linux.Sysctl = map[string]string{"kernel.shm_rmid_forced": sysctl}
		s.Linux.Devices = []specs.LinuxDevice{{Path: dev, Type: dev, Major: 1, Minor: 3}}
		s.Linux.MaskedPaths = append(s.Linux.MaskedPaths, dst)
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.LinuxSeccompAction(action)}
		// The same in a pod's user namespace, where the bind mounts'
		// sources are staged, one of them idmapped.
		u := *s
		ul := *s.Linux
		u.Linux = &ul
		m := []specs.LinuxIDMapping{{HostID: 0x10000, Size: 0x10000}}
		ul.Namespaces = append(slices.Clone(ul.Namespaces), specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/run/pods/" + id + "/ns/user"})
		ul.UIDMappings, ul.GIDMappings, ul.Devices = m, m, nil
		u.Mounts = slices.Clone(s.Mounts)
		u.Mounts[len(u.Mounts)-2].UIDMappings, u.Mounts[len(u.Mounts)-2].GIDMappings = m, m
		for _, s := range []*specs.Spec{s, &u} {
			plan, err := BuildPlan(s, PlanInput{EtcFiles: map[string]string{"/etc/hosts": src},
				Cgroup: &CgroupStep{Path: "/kubepods/" + id, Writes: []CgroupFileWrite{{Root: "/sys/fs/cgroup/memory", File: "memory.limit_in_bytes", Value: sysctl},
					{Root: "/sys/fs/cgroup", File: "cgroup.subtree_control", Value: sysctl, Ancestors: true}}},
				HostCgroups: []CgroupHierarchy{{Dir: "memory", FSType: "cgroup", Params: []string{"memory"}}}})
			if err != nil {
				continue // refused specs render nothing
			}
			script := RenderShell(id, plan)
			check := exec.Command("bash", "-n")
			check.Stdin = strings.NewReader(script)
			if out, err := check.CombinedOutput(); err != nil {
				t.Fatalf("bash -n: %v: %s\n%s", err, out, script)
			}
			file, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(script), "explain")
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, script)
			}
			var exports, appArgs []string
			syntax.Walk(file, func(n syntax.Node) bool {
				if decl, ok := n.(*syntax.DeclClause); ok && decl.Variant.Value == "export" {
					for _, a := range decl.Args {
						switch {
						case a.Naked && a.Value != nil: // export 'K=V'
							exports = append(exports, literal(t, a.Value))
						case a.Name != nil && a.Value != nil: // export K=V
							exports = append(exports, a.Name.Value+"="+literal(t, a.Value))
						}
					}
				}
				call, ok := n.(*syntax.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				name := printWord(t, call.Args[0])
				if !scriptCommands[name] {
					t.Fatalf("the script runs %q, not one of its own commands:\n%s", name, script)
				}
				for i, a := range call.Args {
					if printWord(t, a) == `"$app"` {
						for _, w := range call.Args[i+1:] {
							appArgs = append(appArgs, literal(t, w))
						}
					}
				}
				return true
			})
			if strings.ContainsRune(arg1, 0) || strings.ContainsRune(env, 0) {
				continue // bash words cannot hold a NUL; exec refuses such a spec
			}
			if len(appArgs) != 1 || appArgs[0] != arg1 {
				t.Errorf("the application gets args %q, want [%q]", appArgs, arg1)
			}
			if k, _, ok := strings.Cut(env, "="); ok && validEnvName.MatchString(k) {
				if !slices.Contains(exports, env) {
					t.Errorf("exports %q lack %q", exports, env)
				}
			}

		}
	})
}

// printWord is a word as it stands in the script.
func printWord(t *testing.T, w *syntax.Word) string {
	var b strings.Builder
	if err := syntax.NewPrinter().Print(&b, w); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// literal is the value bash gives a quoted word.
func literal(t *testing.T, w *syntax.Word) string {
	s, err := expand.Literal(nil, w)
	if err != nil {
		t.Fatalf("word %s: %v", printWord(t, w), err)
	}
	return s
}

// FuzzShellQuote: any value comes back from bash as the very bytes it was.
func FuzzShellQuote(f *testing.F) {
	for _, s := range []string{"plain", "it's", "new\nline", "\xff", "$'x'", `\`, "\x1b[31m", "é", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := shellQuote(s)
		if strings.ContainsAny(q, "\n\r") {
			t.Fatalf("shellQuote(%q) = %q spans lines", s, q)
		}
		if strings.ContainsRune(s, 0) {
			return
		}
		out, err := exec.Command("bash", "-c", "printf '%s' "+q).Output()
		if err != nil {
			t.Fatalf("bash on %q: %v", q, err)
		}
		if string(out) != s {
			t.Errorf("shellQuote(%q) = %s reads back as %q", s, q, out)
		}
	})
}
