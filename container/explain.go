package container

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// RenderShell renders a plan as a bash script that, run as root on the
// node, builds the same container with stock tools: util-linux, and after
// pivot_root, when only the container's files are reachable, the host's
// static busybox (as the shell function bb) and util-linux's setpriv held
// open on descriptors. ROOTFS and CGROUP in the environment override the rootfs and
// the cgroup, to build a copy beside the original.
func RenderShell(id string, plan []Step) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	var rootfs, cgroup string
	var joins, news []NamespaceStep
	var userNS *NamespaceStep
	for _, s := range plan {
		switch s.Kind {
		case KindRootfsBind:
			rootfs = s.Path
		case KindCgroup:
			cgroup = s.Cgroup.Path
		case KindNamespace:
			if s.Namespace.Path != "" {
				joins = append(joins, *s.Namespace)
			} else {
				news = append(news, *s.Namespace)
			}
			if s.Namespace.Type == specs.UserNamespace {
				userNS = s.Namespace
			}
		}
	}
	// In a user namespace the container's root reaches nothing of the
	// host's below the host root's directories: the bind mounts' sources
	// (and the rootfs) are staged first, by the host's root, where it can
	// (cri-mini's supervisor prepares them likewise, as detached mounts).
	staged := map[int]string{}
	if userNS != nil {
		for i, s := range plan {
			if s.Kind == KindMount && isBind(*s.Mount) {
				staged[i] = fmt.Sprintf(`"$STAGE"/%d`, i)
			}
		}
	}
	w("#!/bin/bash")
	w("# Container %s as cri-mini builds it, step by step (recipe steps R3-R19),", shellQuote(id))
	w("# with stock tools. Run as root on this node; ROOTFS=dir and CGROUP=path")
	w("# build a copy elsewhere. Unlike cri-mini, which resolves every path inside")
	w("# the rootfs with openat2(RESOLVE_IN_ROOT) and mounts on file descriptors")
	w("# (R18), this script trusts the rootfs: a symlink in it can redirect a path.")
	w("set -euo pipefail")
	w("export ROOTFS=${ROOTFS:-%s}", shellQuote(rootfs))
	if cgroup != "" {
		w("CGROUP=${CGROUP:-%s}", shellQuote(cgroup))
	}
	var inside strings.Builder
	iw := func(format string, a ...any) { fmt.Fprintf(&inside, "  "+format+"\n", a...) }
	last := ""
	for i, s := range plan {
		if t := stepTitle(s); t != last && s.Kind != KindNamespace && s.Kind != KindCgroup {
			iw("# %s", t)
			last = t
		}
		renderStep(iw, s, plan, staged[i])
	}
	for _, s := range plan {
		if s.Kind == KindCgroup {
			w("")
			w("# runtime: the container's cgroup, its limits, and this shell in it (its")
			w("# children, the container among them, inherit it)")
			renderCgroup(w, s.Cgroup)
		}
	}
	w("")
	w("# a bind's target: a directory or a file, like its source")
	w(`bind_target() { if [ -d "$1" ]; then mkdir -p "$2"; else mkdir -p "$(dirname "$2")"; [ -e "$2" ] || touch "$2"; fi; }`)
	w("")
	w("inside() {")
	w("  set -euo pipefail")
	b.WriteString(inside.String())
	w("}")
	w("")
	w("# R3: join the pod's namespaces, make the others new (the mount namespace")
	w("# always); --fork so that the container's first process is PID 1 of a new")
	w("# pid namespace. Propagation is left to R4.")
	if userNS != nil {
		w("# The pod's user namespace (%s) comes first: nsenter enters it first and is", shellQuote(userNS.Path))
		w("# its root; the new namespaces are owned by it. The pod made it as")
		w("#   unshare --user %s %s --net --uts --ipc", mapFlag("users", userNS.UIDMappings), mapFlag("groups", userNS.GIDMappings))
	}
	var args []string
	if len(joins) > 0 {
		args = append(args, "nsenter")
		for _, ns := range joins {
			args = append(args, "--"+nsenterFlag(ns.Type)+"="+shellQuote(ns.Path))
		}
		args = append(args, "--")
	}
	args = append(args, "unshare")
	for _, ns := range news {
		args = append(args, "--"+nsenterFlag(ns.Type))
	}
	args = append(args, "--fork", "--propagation", "unchanged", "--", "bash", "-c", `"$(declare -f bind_target inside); inside"`)
	if userNS == nil {
		w("exec %s", strings.Join(args, " "))
		return b.String()
	}
	w("")
	w("stage() {")
	w("  set -euo pipefail")
	w("  # In a mount namespace of the host's root's own: a tmpfs the container's")
	w("  # root may search, holding the rootfs and every bind mount's source (its")
	w("  # empty mount point stays in /tmp).")
	w("  STAGE=$(mktemp -d /tmp/cri-mini-explain.XXXXXX)")
	w("  mount -t tmpfs -o mode=711 stage \"$STAGE\"")
	w("  mkdir \"$STAGE\"/rootfs")
	w(`  mount --rbind "$ROOTFS" "$STAGE"/rootfs`)
	w(`  ROOTFS=$STAGE/rootfs`)
	for _, i := range slices.Sorted(maps.Keys(staged)) {
		m := plan[i].Mount
		o := parseMountOptions(m.Options)
		flag := "--bind"
		if o.rbind {
			flag = "--rbind"
		}
		w("  bind_target %s %s", shellQuote(m.Source), staged[i])
		if len(m.UIDMappings)+len(m.GIDMappings) > 0 {
			w("  # idmapped with the pod's user namespace: X-mount.idmap is util-linux 2.39's")
			w("  # (2.38 ignores it and binds without the idmap)")
			w("  mount %s -o %s %s %s", flag, shellQuote("X-mount.idmap="+userNS.Path), shellQuote(m.Source), staged[i])
		} else {
			w("  mount %s %s %s", flag, shellQuote(m.Source), staged[i])
		}
	}
	w("  export ROOTFS STAGE")
	w("  exec %s", strings.Join(args, " "))
	w("}")
	w("exec unshare --mount --propagation private -- bash -c \"$(declare -f bind_target inside stage); stage\"")
	return b.String()
}

// mapFlag is util-linux unshare's --map-users or --map-groups for the
// mappings (outer,inner,count).
func mapFlag(kind string, m []specs.LinuxIDMapping) string {
	parts := make([]string, len(m))
	for i, x := range m {
		parts[i] = fmt.Sprintf("--map-%s=%d,%d,%d", kind, x.HostID, x.ContainerID, x.Size)
	}
	return strings.Join(parts, " ")
}

// stepTitle heads a block of the script.
func stepTitle(s Step) string {
	titles := map[string]string{
		"R4": "stop propagation back to the host", "R5": "the rootfs a mount point of its own, private",
		"R6": "/proc", "R7": "/dev: tmpfs, device nodes, symlinks", "R8": "/dev/pts", "R9": "/dev/mqueue",
		"R10": "/dev/shm", "R11": "/sys and /sys/fs/cgroup, read-only",
		"R12": "hosts, hostname and resolv.conf", "R13": "pivot_root into the rootfs",
		"R14": "unmount the old root", "R15": "hostname", "R16": "read-only paths", "R17": "masked paths",
		"R19": "exec the application", "spec": "the spec's own " + string(s.Kind) + "s",
		"runtime": string(s.Kind),
	}
	return s.Recipe + ": " + titles[s.Recipe]
}

func nsenterFlag(t specs.LinuxNamespaceType) string {
	if t == specs.NetworkNamespace {
		return "net"
	}
	return string(t)
}

func renderCgroup(w func(string, ...any), c *CgroupStep) {
	roots := map[string]bool{}
	var order []string
	for _, fw := range c.Writes {
		if !roots[fw.Root] {
			roots[fw.Root] = true
			order = append(order, fw.Root)
			w("mkdir -p %s\"$CGROUP\"", shellQuote(fw.Root))
		}
		if fw.Ancestors {
			w("d=%s; for p in ${CGROUP//\\// }; do echo %s > \"$d\"/%s; d=$d/$p; done", shellQuote(fw.Root), shellQuote(fw.Value), shellQuote(fw.File))
			continue
		}
		w("echo %s > %s\"$CGROUP\"/%s", shellQuote(fw.Value), shellQuote(fw.Root), shellQuote(fw.File))
	}
	for _, r := range order {
		w("echo $$ > %s\"$CGROUP\"/cgroup.procs", shellQuote(r))
	}
	w("# (cri-mini also places the container in its cgroup of every other hierarchy;")
	w("# this script joins those whose files it writes)")
}

// inRoot is a path inside the rootfs, before pivot_root.
func inRoot(p string) string { return `"$ROOTFS"` + shellQuote(p) }

// renderStep renders one step; source, when set, is where a bind mount's
// source was staged (an expression of the script).
func renderStep(w func(string, ...any), s Step, plan []Step, source string) {
	switch s.Kind {
	case KindPropagation:
		w("mount --make-%s /", s.Propagation)
	case KindRootfsBind:
		w(`mount --rbind "$ROOTFS" "$ROOTFS"`)
		w(`mount --make-rprivate "$ROOTFS"`)
	case KindMount:
		renderMount(w, *s.Mount, source)
	case KindCgroupfs:
		renderCgroupfs(w, s)
	case KindDevice:
		d := s.Device
		p := inRoot("/dev/" + d.Path)
		if d.Bind != "" {
			w("touch %s", p)
			w("mount --bind %s %s", shellQuote(d.Bind), p)
			return
		}
		if strings.Contains(d.Path, "/") {
			w("mkdir -p %s", inRoot("/dev/"+d.Path[:strings.LastIndex(d.Path, "/")]))
		}
		w("rm -f %s", p)
		if d.Type == "p" {
			w("mknod -m %o %s p", d.Mode.Perm(), p)
		} else {
			w("mknod -m %o %s %s %d %d", d.Mode.Perm(), p, shellQuote(d.Type), d.Major, d.Minor)
		}
		w("chown %d:%d %s", d.UID, d.GID, p)
	case KindSymlink:
		flags := "-s"
		if s.Symlink.Replace {
			flags = "-sf"
		}
		w("ln %s %s %s", flags, shellQuote(s.Symlink.Target), inRoot("/dev/"+s.Symlink.Path))
	case KindMkdir:
		w("mkdir -p %s", inRoot(s.Path))
	case KindPivotRoot:
		w("# After the switch only the container's files are reachable, so the host")
		w("# programs still needed are held open now: the static busybox on fd 9 (for")
		w("# mount, umount, hostname), and for R19 setpriv and bash with the dynamic")
		w("# loader and their libraries, run as loader --preload LIBS PROGRAM. fd 8")
		w("# keeps the old root for R14.")
		w("exec 9</bin/busybox 8</")
		w(`bb() { (exec -a busybox /proc/self/fd/9 "$@"); }`)
		w(`exec {host_ld}<"$(ldd /usr/bin/setpriv | awk '$1 ~ /^\// {print $1}')" {host_setpriv}</usr/bin/setpriv {host_bash}<"$BASH"`)
		w(`host_libs=""`)
		w(`for lib in $(ldd /usr/bin/setpriv "$BASH" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do`)
		w(`  exec {fd}<"$lib"; host_libs+="${host_libs:+ }/proc/self/fd/$fd"`)
		w(`done`)
		w(`cd "$ROOTFS"`)
		w("pivot_root . .")
	case KindUnmountOldRoot:
		w("cd /proc/self/fd/8")
		w("bb mount --make-rslave .")
		w("bb umount -l .")
		w("cd / && exec 8<&-")
		w("bb mount --make-%s /", s.Propagation)
	case KindHostname:
		if s.Path != "" {
			w("# set by the pod: the container joined the pod's uts namespace (%s) in R3,", shellQuote(s.Path))
			w("# and with it the hostname the pod gave it")
			return
		}
		w("bb hostname %s", shellQuote(s.Hostname))
	case KindSysctl:
		w("echo %s > %s", shellQuote(s.Sysctl.Value), shellQuote("/proc/sys/"+strings.ReplaceAll(s.Sysctl.Key, ".", "/")))
	case KindReadonlyPath:
		p := shellQuote(s.Path)
		w("if [ -e %s ]; then bb mount --rbind %s %s && bb mount -o remount,bind,ro,nosuid,nodev,noexec %s; fi", p, p, p, p)
	case KindMaskPath:
		p := shellQuote(s.Path)
		w("if [ -d %s ]; then bb mount -t tmpfs -o nosuid,nodev,noexec,size=0 tmpfs %s && bb mount -o remount,bind,ro,nosuid,nodev,noexec %s", p, p, p)
		w("elif [ -e %s ]; then bb mount --bind /dev/null %s; fi", p, p)
	case KindReadonlyRoot:
		w("bb mount -o remount,bind,ro /")
	case KindRlimit:
		if f, ok := ulimitFlags[s.Rlimit.Type]; ok {
			w("ulimit -H -%s %s; ulimit -S -%s %s", f, ulimitValue(s.Rlimit.Hard), f, ulimitValue(s.Rlimit.Soft))
		} else {
			w("# %s %d/%d: no ulimit flag", shellQuote(s.Rlimit.Type), s.Rlimit.Soft, s.Rlimit.Hard)
		}
	case KindNoNewPrivs:
		w("# no_new_privs: setpriv --nnp in R19")
	case KindSeccomp:
		w("# seccomp: a filter of %d syscall rules, default action %s; no stock tool", len(s.Seccomp.Syscalls), shellQuote(string(s.Seccomp.DefaultAction)))
		w("# installs one, so this script runs without it.")
	case KindUser:
		u := s.User
		w("# user %d:%d, groups %v: setpriv --reuid --regid in R19", u.UID, u.GID, u.AdditionalGids)
		if u.Umask != nil {
			w("umask %04o", *u.Umask)
		}
	case KindCapabilities:
		c := s.Capabilities
		w("# capabilities: bounding %s; effective %s, permitted %s", capList(c.Bounding, "none"), capList(c.Effective, "none"), capList(c.Permitted, "none"))
		w("# (setpriv --bounding-set in R19: root's exec gets the bounding set)")
	case KindExec:
		renderExec(w, s.Exec, plan)
	}
}

func renderMount(w func(string, ...any), m specs.Mount, source string) {
	o := parseMountOptions(m.Options)
	t := inRoot(m.Destination)
	if source == "" {
		source = shellQuote(m.Source)
	}
	if m.Type == "bind" || o.bind {
		w(`bind_target %s %s`, source, t)
		flag := "--bind"
		if o.rbind {
			flag = "--rbind"
		}
		w("mount %s %s %s", flag, source, t)
		if attrs := attrOptions(o.attrSet | o.recAttrSet); len(attrs) > 0 {
			w("mount -o remount,bind,%s %s", strings.Join(attrs, ","), t)
		}
	} else {
		w("mkdir -p %s", t)
		opts := append(attrOptions(o.attrSet&^unix.MOUNT_ATTR_RDONLY), o.fsParams...)
		src := m.Source
		if src == "" {
			src = m.Type
		}
		if len(opts) > 0 {
			w("mount -t %s -o %s %s %s", shellQuote(m.Type), shellQuote(strings.Join(opts, ",")), shellQuote(src), t)
		} else {
			w("mount -t %s %s %s", shellQuote(m.Type), shellQuote(src), t)
		}
		if o.attrSet&unix.MOUNT_ATTR_RDONLY != 0 {
			w("mount -o remount,bind,%s %s", strings.Join(attrOptions(o.attrSet), ","), t)
		}
	}
	if o.propagation != 0 {
		w("mount --make-%s %s", propagationName(o.propagation, o.recursiveProp), t)
	}
}

// renderCgroupfs is R11's /sys/fs/cgroup as mountCgroups makes it.
func renderCgroupfs(w func(string, ...any), s Step) {
	o := parseMountOptions(s.Mount.Options)
	attrs := o.attrSet | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC
	t := inRoot(s.Mount.Destination)
	w("mkdir -p %s", t)
	if len(s.Hierarchies) == 1 && s.Hierarchies[0].Dir == "" {
		w("mount -t %s -o %s cgroup %s", shellQuote(s.Hierarchies[0].FSType), strings.Join(attrOptions(attrs&^unix.MOUNT_ATTR_RDONLY), ","), t)
		w("mount -o remount,bind,%s %s", strings.Join(attrOptions(attrs), ","), t)
		return
	}
	w("mount -t tmpfs -o %s cgroup %s", strings.Join(append(attrOptions(attrs&^unix.MOUNT_ATTR_RDONLY), "mode=755"), ","), t)
	for _, h := range s.Hierarchies {
		if h.Dir == "" || strings.Contains(h.Dir, "/") {
			continue
		}
		d := inRoot(s.Mount.Destination + "/" + h.Dir)
		w("mkdir -m 555 %s", d)
		w("mount -t %s -o %s cgroup %s", shellQuote(h.FSType), shellQuote(strings.Join(append(attrOptions(attrs&^unix.MOUNT_ATTR_RDONLY), h.Params...), ",")), d)
		w("mount -o remount,bind,%s %s", strings.Join(attrOptions(attrs), ","), d)
	}
	w("mount -o remount,bind,%s %s", strings.Join(attrOptions(attrs), ","), t)
}

func renderExec(w func(string, ...any), e *ExecStep, plan []Step) {
	setpriv := []string{"/proc/self/fd/$host_ld", `--preload "$host_libs"`, "/proc/self/fd/$host_setpriv"}
	for _, s := range plan {
		switch s.Kind {
		case KindUser:
			u := s.User
			setpriv = append(setpriv, fmt.Sprintf("--reuid=%d", u.UID), fmt.Sprintf("--regid=%d", u.GID), groupsFlag(u.AdditionalGids))
		case KindCapabilities:
			c := s.Capabilities
			setpriv = append(setpriv, shellQuote("--bounding-set="+setprivCaps(c.Bounding)),
				shellQuote("--inh-caps="+setprivCaps(c.Inheritable)), shellQuote("--ambient-caps="+setprivCaps(c.Ambient)))
		case KindNoNewPrivs:
			setpriv = append(setpriv, "--nnp")
		}
	}
	w("bb mkdir -p %s", shellQuote(e.Cwd))
	w("cd %s", shellQuote(e.Cwd))
	w("# the application's environment and nothing else")
	w(`for v in $(compgen -e); do unset "$v"; done`)
	for _, kv := range e.Env {
		if k, _, ok := strings.Cut(kv, "="); ok && validEnvName.MatchString(k) {
			w("export %s", shellQuote(kv))
		} else {
			w("# env %s: not a shell variable name, left out", shellQuote(kv))
		}
	}
	// The command is found in the container's PATH, as execvp would.
	arg0 := shellQuote(e.Args[0])
	w("app=$(type -P -- %s) || { printf 'executable %%s not found\\n' %s >&2; exit 127; }", arg0, arg0)
	args := make([]string, len(e.Args)-1)
	for i, a := range e.Args[1:] {
		args[i] = shellQuote(a)
	}
	w("# setpriv drops the privileges, then the host's bash closes every held")
	w("# descriptor (none may reach the application) and execs it.")
	w("exec %s -- \\", strings.Join(setpriv, " "))
	w(`  /proc/self/fd/$host_ld --preload "$host_libs" /proc/self/fd/$host_bash --norc --noprofile -c \`)
	w(`  'for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n<&-"; done; unset PWD OLDPWD SHLVL; exec "$0" "$@"' \`)
	w(`  "$app" %s`, strings.Join(args, " "))
}

// setprivCaps is a capability set in setpriv's syntax: -all,+chown,+kill.
func setprivCaps(caps []string) string {
	s := []string{"-all"}
	for _, c := range caps {
		s = append(s, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return strings.Join(s, ",")
}

var validEnvName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// attrOptions names mount attributes as mount(8) options.
func attrOptions(attrs uint64) []string {
	var out []string
	for _, a := range []struct {
		attr uint64
		name string
	}{{unix.MOUNT_ATTR_RDONLY, "ro"}, {unix.MOUNT_ATTR_NOSUID, "nosuid"}, {unix.MOUNT_ATTR_NODEV, "nodev"},
		{unix.MOUNT_ATTR_NOEXEC, "noexec"}, {unix.MOUNT_ATTR_NOATIME, "noatime"}, {unix.MOUNT_ATTR_STRICTATIME, "strictatime"},
		{unix.MOUNT_ATTR_NODIRATIME, "nodiratime"}} {
		if attrs&a.attr == a.attr && a.attr != 0 {
			out = append(out, a.name)
		}
	}
	return out
}

func propagationName(p uint64, recursive bool) string {
	name := map[uint64]string{unix.MS_PRIVATE: "private", unix.MS_SLAVE: "slave", unix.MS_SHARED: "shared", unix.MS_UNBINDABLE: "unbindable"}[p]
	if recursive {
		return "r" + name
	}
	return name
}

var ulimitFlags = map[string]string{
	"RLIMIT_CORE": "c", "RLIMIT_DATA": "d", "RLIMIT_NICE": "e", "RLIMIT_FSIZE": "f", "RLIMIT_SIGPENDING": "i",
	"RLIMIT_MEMLOCK": "l", "RLIMIT_RSS": "m", "RLIMIT_NOFILE": "n", "RLIMIT_MSGQUEUE": "q", "RLIMIT_RTPRIO": "r",
	"RLIMIT_STACK": "s", "RLIMIT_CPU": "t", "RLIMIT_NPROC": "u", "RLIMIT_AS": "v", "RLIMIT_LOCKS": "x", "RLIMIT_RTTIME": "R",
}

func ulimitValue(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return fmt.Sprint(v)
}

func groupsFlag(gids []uint32) string {
	if len(gids) == 0 {
		return "--clear-groups"
	}
	s := make([]string, len(gids))
	for i, g := range gids {
		s[i] = fmt.Sprint(g)
	}
	return "--groups=" + strings.Join(s, ",")
}

// capList names capabilities for a comment, quoted: the names come from
// the spec.
func capList(caps []string, empty string) string {
	if len(caps) == 0 {
		return empty
	}
	return shellQuote(strings.ToLower(strings.ReplaceAll(strings.Join(caps, ","), "CAP_", "")))
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellQuote quotes s as one bash word on one line. The values come from
// pod specs and images, which are untrusted, and the script is run as root:
// a value must never end a quote, a line or a comment. Printable text goes
// in single quotes; anything with a control character or invalid UTF-8 in
// bash's $'...' with every such byte escaped.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' || c == '\'':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, "\\x%02x", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
