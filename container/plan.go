package container

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/container/cgroups"
)

// The plan is a container's recipe (R3-R19) as data: what the runtime
// does to build one container, step by step, in order. The init executes
// it, all but the cgroup (the daemon's) and the namespaces (the
// supervisor's): the file-system and hardening steps, then the process
// steps (processSteps: rlimits to the exec, every default filled in there,
// none left to the executor). `cri-mini explain` renders the same list as
// stock-tool shell commands, so what is shown is what is done.

// StepKind says what a Step does; each kind fills one of Step's fields.
type StepKind string

const (
	KindCgroup         StepKind = "cgroup"           // Cgroup: make it, write limits, join it
	KindNamespace      StepKind = "namespace"        // Namespace: new or joined
	KindPropagation    StepKind = "propagation"      // Propagation of Path (R4)
	KindRootfsBind     StepKind = "rootfs-bind"      // Path bound onto itself, private (R5)
	KindMount          StepKind = "mount"            // Mount
	KindCgroupfs       StepKind = "cgroupfs"         // Mount + Hierarchies (R11)
	KindDevice         StepKind = "device"           // Device node in /dev (R7)
	KindSymlink        StepKind = "symlink"          // Symlink in /dev (R7, R8)
	KindMkdir          StepKind = "mkdir"            // Path: a directory in /dev later mounts use
	KindPivotRoot      StepKind = "pivot-root"       // Path becomes / (R13)
	KindUnmountOldRoot StepKind = "unmount-old-root" // R14; Propagation of the new root
	KindHostname       StepKind = "hostname"         // Hostname set (R15); with Path, the pod's uts namespace joined there has it
	KindSysctl         StepKind = "sysctl"           // Sysctl
	KindReadonlyPath   StepKind = "readonly-path"    // Path (R16)
	KindMaskPath       StepKind = "mask-path"        // Path (R17)
	KindReadonlyRoot   StepKind = "readonly-root"    // the root made read-only
	KindRlimit         StepKind = "rlimit"           // Rlimit
	KindNoNewPrivs     StepKind = "no-new-privs"
	KindSeccomp        StepKind = "seccomp"      // Seccomp: the filter loaded
	KindUser           StepKind = "user"         // User, with the umask
	KindCapabilities   StepKind = "capabilities" // Capabilities, set with the user's change
	KindExec           StepKind = "exec"         // Exec (R19)
)

// Step is one step of the plan. Recipe is the recipe step it belongs to
// ("R7"), or "runtime" for what a real runtime adds on top.
type Step struct {
	Recipe       string                   `json:"recipe"`
	Kind         StepKind                 `json:"kind"`
	Path         string                   `json:"path,omitempty"`
	Propagation  string                   `json:"propagation,omitempty"`
	Mount        *specs.Mount             `json:"mount,omitempty"`
	Hierarchies  []CgroupHierarchy        `json:"hierarchies,omitempty"`
	Device       *DeviceNode              `json:"device,omitempty"`
	Symlink      *Symlink                 `json:"symlink,omitempty"`
	Namespace    *NamespaceStep           `json:"namespace,omitempty"`
	Cgroup       *CgroupStep              `json:"cgroup,omitempty"`
	Hostname     string                   `json:"hostname,omitempty"`
	Sysctl       *Sysctl                  `json:"sysctl,omitempty"`
	Rlimit       *specs.POSIXRlimit       `json:"rlimit,omitempty"`
	User         *specs.User              `json:"user,omitempty"`
	Capabilities *specs.LinuxCapabilities `json:"capabilities,omitempty"`
	Seccomp      *specs.LinuxSeccomp      `json:"seccomp,omitempty"`
	Exec         *ExecStep                `json:"exec,omitempty"`
}

// CgroupHierarchy is one cgroup file system R11 mounts below
// /sys/fs/cgroup: Dir "" is a cgroup2 mounted there directly; on a v1 host
// each hierarchy gets a directory in a tmpfs.
type CgroupHierarchy struct {
	Dir    string   `json:"dir"`
	FSType string   `json:"fstype"`
	Params []string `json:"params,omitempty"`
}

// DeviceNode is a node made in the container's /dev, or with Bind the
// host's node Bind bound there: in a user namespace no node can be made
// (mknod needs CAP_MKNOD in the host's user namespace), as runc binds them.
type DeviceNode struct {
	Path  string      `json:"path"` // below /dev
	Type  string      `json:"type"` // c, b or p
	Major int64       `json:"major,omitempty"`
	Minor int64       `json:"minor,omitempty"`
	Mode  os.FileMode `json:"mode"`
	UID   uint32      `json:"uid,omitempty"`
	GID   uint32      `json:"gid,omitempty"`
	Bind  string      `json:"bind,omitempty"`
}

// Symlink is a link made in the container's /dev. With Replace it takes
// the place of a node already there: /dev/ptmx must lead to the
// container's own devpts even when the host's ptmx was given as a
// device (a privileged container's), as runc does.
type Symlink struct {
	Path    string `json:"path"` // below /dev
	Target  string `json:"target"`
	Replace bool   `json:"replace,omitempty"`
}

// NamespaceStep is a namespace the container gets: new, or the one at
// Path joined (a pod's). A joined user namespace says what it maps.
type NamespaceStep struct {
	Type        specs.LinuxNamespaceType `json:"type"`
	Path        string                   `json:"path,omitempty"`
	UIDMappings []specs.LinuxIDMapping   `json:"uidMappings,omitempty"`
	GIDMappings []specs.LinuxIDMapping   `json:"gidMappings,omitempty"`
}

// CgroupStep is the container's cgroup with the files its limits are
// written to, in the order the cgroup driver writes them.
type CgroupStep struct {
	Path   string            `json:"path"`
	Writes []CgroupFileWrite `json:"writes,omitempty"`
}

// CgroupFileWrite is Value written to File in the cgroup's directory of
// the hierarchy mounted at Root ("/sys/fs/cgroup/memory"), or with
// Ancestors to File of every cgroup above it, from the root down (v2's
// cgroup.subtree_control).
type CgroupFileWrite struct {
	Root      string `json:"root"`
	File      string `json:"file"`
	Value     string `json:"value"`
	Ancestors bool   `json:"ancestors,omitempty"`
}

// Sysctl is a namespaced kernel parameter set through /proc/sys.
type Sysctl struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ExecStep is the application's start (R19).
type ExecStep struct {
	Args []string `json:"args"`
	Env  []string `json:"env,omitempty"`
	Cwd  string   `json:"cwd"`
}

// PlanInput is what a plan needs beyond the spec.
type PlanInput struct {
	// EtcFiles maps /etc/hosts, /etc/hostname and /etc/resolv.conf to the
	// R2 files written for the container.
	EtcFiles map[string]string `json:"etcFiles,omitempty"`
	// Cgroup is the container's cgroup, nil when it has none of its own.
	Cgroup *CgroupStep `json:"cgroup,omitempty"`
	// HostCgroups are the cgroup file systems the host mounts (R11).
	HostCgroups []CgroupHierarchy `json:"hostCgroups,omitempty"`
}

// BuildPlan lays out the steps that build the container spec describes.
func BuildPlan(spec *specs.Spec, in PlanInput) ([]Step, error) {
	if spec == nil || spec.Root == nil || spec.Root.Path == "" {
		return nil, fmt.Errorf("spec has no root path")
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, errNoCommand
	}
	var plan []Step
	add := func(s Step) { plan = append(plan, s) }
	if in.Cgroup != nil {
		add(Step{Recipe: "runtime", Kind: KindCgroup, Cgroup: in.Cgroup})
	}
	// R3: pod namespaces are joined, the others made new; the mount
	// namespace is always new.
	for _, ns := range planNamespaces(spec) {
		add(Step{Recipe: "R3", Kind: KindNamespace, Namespace: &ns})
	}
	prop := rootPropagationName(spec)
	add(Step{Recipe: "R4", Kind: KindPropagation, Path: "/", Propagation: prop})
	add(Step{Recipe: "R5", Kind: KindRootfsBind, Path: spec.Root.Path})
	for _, m := range mountsInOrder(spec, in.EtcFiles) {
		m := m
		switch {
		case m.Type == "cgroup" && m.Destination == "/sys/fs/cgroup":
			add(Step{Recipe: "R11", Kind: KindCgroupfs, Mount: &m, Hierarchies: in.HostCgroups})
		default:
			add(Step{Recipe: mountRecipe(m), Kind: KindMount, Mount: &m})
		}
		if m.Destination == "/dev" && m.Type == "tmpfs" {
			plan = append(plan, devSteps(spec)...)
		}
	}
	add(Step{Recipe: "R13", Kind: KindPivotRoot, Path: spec.Root.Path})
	// R14, then the new root gets the spec's propagation.
	add(Step{Recipe: "R14", Kind: KindUnmountOldRoot, Propagation: prop})
	// R15: the hostname, in a new uts namespace; a pod's container joins
	// the pod's (R3), whose hostname the pod set: the step says so.
	if uts := podNamespace(spec, specs.UTSNamespace); uts != "" {
		add(Step{Recipe: "R15", Kind: KindHostname, Path: uts})
	} else if nsWanted(spec, specs.UTSNamespace) && spec.Hostname != "" {
		add(Step{Recipe: "R15", Kind: KindHostname, Hostname: spec.Hostname})
	}
	masked, readonly := defaultMaskedPaths, defaultReadonlyPaths
	if l := spec.Linux; l != nil {
		keys := make([]string, 0, len(l.Sysctl))
		for k := range l.Sysctl {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if strings.Contains(k, "/") || strings.Contains(k, "..") {
				return nil, fmt.Errorf("sysctl %q: invalid name", k)
			}
			add(Step{Recipe: "runtime", Kind: KindSysctl, Sysctl: &Sysctl{Key: k, Value: l.Sysctl[k]}})
		}
		if l.MaskedPaths != nil {
			masked = l.MaskedPaths
		}
		if l.ReadonlyPaths != nil {
			readonly = l.ReadonlyPaths
		}
	}
	for _, p := range readonly {
		add(Step{Recipe: "R16", Kind: KindReadonlyPath, Path: p})
	}
	for _, p := range masked {
		add(Step{Recipe: "R17", Kind: KindMaskPath, Path: p})
	}
	if spec.Root.Readonly {
		add(Step{Recipe: "runtime", Kind: KindReadonlyRoot, Path: "/"})
	}
	steps, err := processSteps(spec.Process, seccompOf(spec))
	if err != nil {
		return nil, err
	}
	return append(plan, steps...), nil
}

// hasUserNS reports whether the container is in a user namespace of its
// pod's (not the host's).
func hasUserNS(spec *specs.Spec) bool {
	return spec.Linux != nil && slices.ContainsFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace })
}

// podNamespace is the path of the namespace of type t the container joins
// (its pod's), "" when it gets a new one or stays in the host's.
func podNamespace(spec *specs.Spec, t specs.LinuxNamespaceType) string {
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == t {
				return ns.Path
			}
		}
	}
	return ""
}

// planNamespaces lists the container's namespaces as namespaceFlags treats
// them: the mount namespace always new, joined ones first.
func planNamespaces(spec *specs.Spec) []NamespaceStep {
	out := []NamespaceStep{{Type: specs.MountNamespace}}
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			switch ns.Type {
			case specs.MountNamespace:
			case specs.UserNamespace:
				out = append(out, NamespaceStep{Type: ns.Type, Path: ns.Path, UIDMappings: spec.Linux.UIDMappings, GIDMappings: spec.Linux.GIDMappings})
			default:
				out = append(out, NamespaceStep{Type: ns.Type, Path: ns.Path})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b NamespaceStep) int {
		return boolInt(a.Path == "") - boolInt(b.Path == "")
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// mountRecipe names the recipe step a mount belongs to.
func mountRecipe(m specs.Mount) string {
	switch m.Destination {
	case "/proc":
		return "R6"
	case "/dev":
		return "R7"
	case "/dev/pts":
		return "R8"
	case "/dev/mqueue":
		return "R9"
	case "/dev/shm":
		return "R10"
	case "/sys", "/sys/fs/cgroup":
		return "R11"
	case "/etc/hosts", "/etc/hostname", "/etc/resolv.conf":
		return "R12"
	}
	return "spec"
}

// devSteps fill the fresh /dev (R7, R8's /dev/ptmx): device nodes (the
// host's bound in a user namespace), the spec's extra devices, symlinks and
// the directories later mounts use.
func devSteps(spec *specs.Spec) []Step {
	var out []Step
	userNS := hasUserNS(spec)
	for _, d := range defaultDevices {
		n := DeviceNode{Path: d.name, Type: "c", Major: d.major, Minor: d.minor, Mode: 0o666}
		if userNS {
			n.Bind = "/dev/" + d.name
		}
		out = append(out, Step{Recipe: "R7", Kind: KindDevice, Device: &n})
	}
	if spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			n := DeviceNode{Path: strings.TrimPrefix(filepath.Clean("/"+d.Path), "/dev/"), Type: d.Type, Major: d.Major, Minor: d.Minor, Mode: 0o666}
			if n.Type != "b" && n.Type != "p" {
				n.Type = "c"
			}
			if d.FileMode != nil {
				n.Mode = *d.FileMode
			}
			if d.UID != nil {
				n.UID = *d.UID
			}
			if d.GID != nil {
				n.GID = *d.GID
			}
			out = append(out, Step{Recipe: "spec", Kind: KindDevice, Device: &n})
		}
	}
	for _, l := range devSymlinks {
		r := "R7"
		if l[0] == "ptmx" {
			r = "R8"
		}
		out = append(out, Step{Recipe: r, Kind: KindSymlink, Symlink: &Symlink{Path: l[0], Target: l[1], Replace: r == "R8"}})
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		out = append(out, Step{Recipe: "R7", Kind: KindMkdir, Path: "/dev/" + d})
	}
	return out
}

// rootPropagationName is the spec's root propagation (R4, R13); rslave by
// default, as in runc.
func rootPropagationName(spec *specs.Spec) string {
	if spec.Linux != nil {
		switch spec.Linux.RootfsPropagation {
		case "private", "rprivate":
			return "rprivate"
		case "shared", "rshared":
			return "rshared"
		case "unbindable", "runbindable":
			return "runbindable"
		}
	}
	return "rslave"
}

// Plan returns the plan of container id as its init executes it, with the
// cgroup the runtime made for it and the limits written there (when the
// cgroup manager can list its writes).
func (r *Runtime) Plan(id string) ([]Step, error) {
	dir, cfg, err := r.existing(id)
	if err != nil {
		return nil, err
	}
	hier, err := hostCgroups()
	if err != nil {
		return nil, fmt.Errorf("container %s: read host cgroups: %w", id, err)
	}
	in := PlanInput{EtcFiles: etcFiles(dir), HostCgroups: hier}
	if cfg.CgroupPath != "" {
		in.Cgroup = &CgroupStep{Path: cfg.CgroupPath}
		if w, ok := r.Cgroups.(cgroupWriter); ok && cfg.Spec.Linux != nil {
			// The path as a directory below each hierarchy (a systemd
			// driver path names a unit).
			if in.Cgroup.Path, err = w.Path(cfg.CgroupPath); err != nil {
				return nil, fmt.Errorf("container %s: cgroup path: %w", id, err)
			}
			writes, err := w.Writes(cfg.CgroupPath, cfg.Spec.Linux.Resources)
			if err != nil {
				return nil, fmt.Errorf("container %s: cgroup writes: %w", id, err)
			}
			for _, fw := range writes {
				in.Cgroup.Writes = append(in.Cgroup.Writes, CgroupFileWrite{Root: fw.Root, File: fw.File, Value: fw.Value, Ancestors: fw.Ancestors})
			}
		}
	}
	plan, err := BuildPlan(cfg.Spec, in)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	return plan, nil
}

// cgroupWriter is the cgroup manager's account of the files its Create
// writes and of where (container/cgroups.Manager has it).
type cgroupWriter interface {
	Writes(path string, r *specs.LinuxResources) ([]cgroups.FileWrite, error)
	Path(path string) (string, error)
}
