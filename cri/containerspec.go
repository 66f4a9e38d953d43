package cri

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/container/seccomp"
	"github.com/cri-mini/cri-mini/image"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/sandbox"
)

// imageConfig is what a container takes from its image's configuration.
type imageConfig struct {
	Entrypoint, Cmd, Env []string
	WorkingDir, User     string
	StopSignal           string
}

// Annotations cri-mini keeps on a container's spec, so that the container
// state directory alone says what the CRI needs after a restart.
const (
	annoSandboxID  = "io.kubernetes.cri.sandbox-id"
	annoName       = "io.cri-mini.container.name"
	annoAttempt    = "io.cri-mini.container.attempt"
	annoImage      = "io.cri-mini.container.image"
	annoImageAnnos = "io.cri-mini.container.image-annotations"
	annoImageRef   = "io.cri-mini.container.image-ref"
	annoRepoDigest = "io.cri-mini.container.repo-digest"
	annoLabels     = "io.cri-mini.container.labels"
	annoAnnotation = "io.cri-mini.container.annotations"
	annoStopSignal = "io.cri-mini.container.stop-signal"
	annoMounts     = "io.cri-mini.container.mounts"
)

// specInput is everything a container's OCI spec is made from.
type specInput struct {
	ID       string
	Config   *runtimeapi.ContainerConfig
	Pod      *sandbox.Pod
	Image    imageConfig
	ImageRef string // the image's id
	// ImageName is the image the container's status names (statusImage);
	// RepoDigest a repository digest of the image, if it has one.
	ImageName, RepoDigest string
	Rootfs                string // the prepared root file system
	Driver                string // cgroup driver
	// ImageVolumes are where the images of image-volume mounts are mounted
	// (read-only) on the host, by index in Config.Mounts.
	ImageVolumes map[int]string
	// Target is the running container whose pid namespace the config's
	// NamespaceMode TARGET joins (kubectl debug --target).
	Target *container.State
	// DeviceOwnership gives the config's devices the owner of its
	// run_as_user and run_as_group (configuration key
	// device_ownership_from_security_context).
	DeviceOwnership bool
}

// containerSpec translates a CRI container config, the image's config and
// the pod into the OCI spec container/ builds the container from, and the
// container's cgroup path.
func containerSpec(in specInput) (*specs.Spec, string, error) {
	cfg := in.Config
	sc := cfg.GetLinux().GetSecurityContext()
	privileged := sc.GetPrivileged()
	if err := checkUserNS(cfg, in.Pod); err != nil {
		return nil, "", err
	}

	args, err := processArgs(cfg, in.Image)
	if err != nil {
		return nil, "", err
	}
	user, err := processUser(sc, in.Image.User, in.Rootfs)
	if err != nil {
		return nil, "", err
	}
	capSet, err := capabilities(sc)
	if err != nil {
		return nil, "", err
	}
	proc := &specs.Process{
		Terminal:        cfg.GetTty(),
		Args:            args,
		Env:             processEnv(in.Image.Env, cfg.GetEnvs(), in.Pod.Hostname),
		Cwd:             firstNonEmpty(cfg.GetWorkingDir(), in.Image.WorkingDir, "/"),
		User:            user,
		NoNewPrivileges: sc.GetNoNewPrivs(),
		Capabilities:    capSet,
	}
	if !filepath.IsAbs(proc.Cwd) {
		return nil, "", fmt.Errorf("working dir %q is not absolute: %w", proc.Cwd, errdefs.ErrInvalidArgument)
	}
	res := cfg.GetLinux().GetResources()
	if res != nil && res.GetOomScoreAdj() != 0 {
		adj := int(res.GetOomScoreAdj())
		proc.OOMScoreAdj = &adj
	}

	mounts, err := specMounts(cfg, in.Pod, in.ImageVolumes)
	if err != nil {
		return nil, "", err
	}
	devices, deviceRules, err := containerDevices(cfg.GetDevices())
	if err != nil {
		return nil, "", err
	}
	if in.DeviceOwnership {
		// As containerd: the ids the security context names, 0 for one
		// it leaves unset (not a user name resolved in the image).
		uid, gid := uint32(sc.GetRunAsUser().GetValue()), uint32(sc.GetRunAsGroup().GetValue())
		for i := range devices {
			devices[i].UID, devices[i].GID = &uid, &gid
		}
	}
	resources := linuxResources(res)
	if privileged {
		// Every device of the host, as runc gives a privileged container.
		host, err := hostDevices()
		if err != nil {
			return nil, "", err
		}
		devices = append(host, devices...)
		resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		resources.Devices = append(cgroups.DefaultDevices(), deviceRules...)
	}

	linux := &specs.Linux{
		Resources:         resources,
		Namespaces:        containerNamespaces(in.Pod, sc.GetNamespaceOptions(), in.Target),
		Devices:           devices,
		RootfsPropagation: rootfsPropagation(cfg.GetMounts()),
	}
	if u := in.Pod.Spec.UserNS; u != nil {
		linux.UIDMappings, linux.GIDMappings = u.UIDs, u.GIDs
	}
	if privileged {
		// Nothing masked or read-only: an empty list, not nil (nil means
		// the recipe's defaults).
		linux.MaskedPaths, linux.ReadonlyPaths = []string{}, []string{}
	} else {
		linux.MaskedPaths, linux.ReadonlyPaths = sc.GetMaskedPaths(), sc.GetReadonlyPaths()
	}
	if linux.Seccomp, err = seccompProfile(sc, capSet.Bounding); err != nil {
		return nil, "", err
	}

	annotations, err := containerAnnotations(in)
	if err != nil {
		return nil, "", err
	}
	spec := &specs.Spec{
		Version:     specs.Version,
		Process:     proc,
		Root:        &specs.Root{Path: in.Rootfs, Readonly: sc.GetReadonlyRootfs()},
		Mounts:      mounts,
		Annotations: annotations,
		Linux:       linux,
	}
	return spec, cgroupPath(in.Driver, in.Pod.Spec.CgroupParent, in.ID), nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// processArgs merges the CRI command and args with the image's entrypoint
// and cmd the way kubelet expects: a command replaces the entrypoint (and
// drops the image's cmd), args replace the cmd.
func processArgs(cfg *runtimeapi.ContainerConfig, img imageConfig) ([]string, error) {
	var args []string
	switch {
	case len(cfg.GetCommand()) > 0:
		args = append(slices.Clone(cfg.GetCommand()), cfg.GetArgs()...)
	case len(cfg.GetArgs()) > 0:
		args = append(slices.Clone(img.Entrypoint), cfg.GetArgs()...)
	default:
		args = append(slices.Clone(img.Entrypoint), img.Cmd...)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("container has no command: neither the config nor the image gives one: %w", errdefs.ErrInvalidArgument)
	}
	return args, nil
}

// processEnv is the image's environment with the config's entries added or
// replacing those of the same name; HOSTNAME is the pod's unless set.
func processEnv(imageEnv []string, envs []*runtimeapi.KeyValue, hostname string) []string {
	var order []string
	values := map[string]string{}
	set := func(k, v string) {
		if _, ok := values[k]; !ok {
			order = append(order, k)
		}
		values[k] = v
	}
	for _, kv := range imageEnv {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	for _, kv := range envs {
		set(kv.GetKey(), string(kv.GetValue()))
	}
	if _, ok := values["HOSTNAME"]; !ok && hostname != "" {
		set("HOSTNAME", hostname)
	}
	if _, ok := values["PATH"]; !ok {
		set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+values[k])
	}
	return env
}

// capabilities is the default set with the config's adds and drops ("ALL"
// in either means every capability); a privileged container gets every
// capability this runtime holds.
func capabilities(sc *runtimeapi.LinuxContainerSecurityContext) (*specs.LinuxCapabilities, error) {
	var set []string
	if sc.GetPrivileged() {
		held, err := caps.Held()
		if err != nil {
			return nil, err
		}
		set = held
	} else {
		drop, dropAll, err := capNames(sc.GetCapabilities().GetDropCapabilities())
		if err != nil {
			return nil, err
		}
		add, addAll, err := capNames(sc.GetCapabilities().GetAddCapabilities())
		if err != nil {
			return nil, err
		}
		set = caps.DefaultSet()
		if dropAll {
			set = nil
		}
		set = slices.DeleteFunc(set, func(c string) bool { return slices.Contains(drop, c) })
		if addAll {
			// Every capability the runtime itself holds: the kernel may know
			// more than this process may hand out.
			held, err := caps.Held()
			if err != nil {
				return nil, err
			}
			set = held
		}
		for _, c := range add {
			if !slices.Contains(set, c) {
				set = append(set, c)
			}
		}
	}
	ambient, _, err := capNames(sc.GetCapabilities().GetAddAmbientCapabilities())
	if err != nil {
		return nil, err
	}
	c := &specs.LinuxCapabilities{
		Bounding:  slices.Clone(set),
		Effective: slices.Clone(set),
		Permitted: slices.Clone(set),
	}
	if len(ambient) > 0 {
		c.Ambient, c.Inheritable = ambient, slices.Clone(ambient)
	}
	return c, nil
}

// capNames normalises CRI capability names ("NET_ADMIN", "cap_net_admin")
// to "CAP_NET_ADMIN"; all reports an "ALL" among them.
func capNames(names []string) (out []string, all bool, err error) {
	for _, n := range names {
		if strings.EqualFold(n, "ALL") {
			all = true
			continue
		}
		n = strings.ToUpper(n)
		if !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		if _, err := caps.FromName(n); err != nil {
			return nil, false, fmt.Errorf("capability %q: %w", n, errdefs.ErrInvalidArgument)
		}
		out = append(out, n)
	}
	return out, all, nil
}

// maxSeccompProfile bounds a localhost seccomp profile: the largest real
// ones (a rule per system call, with arguments) are tens of KiB.
const maxSeccompProfile = 1 << 20

// seccompProfile picks the container's seccomp filter: RuntimeDefault (for
// its bounding set), Unconfined, or a Localhost JSON profile. Privileged
// containers run unconfined, as in other runtimes.
func seccompProfile(sc *runtimeapi.LinuxContainerSecurityContext, bounding []string) (*specs.LinuxSeccomp, error) {
	if sc.GetPrivileged() {
		return nil, nil
	}
	p := sc.GetSeccomp()
	switch p.GetProfileType() {
	case runtimeapi.SecurityProfile_RuntimeDefault:
		if p == nil {
			return nil, nil // no profile asked for: kubelet's default is Unconfined
		}
		return seccomp.RuntimeDefaultFor(bounding)
	case runtimeapi.SecurityProfile_Unconfined:
		return nil, nil
	case runtimeapi.SecurityProfile_Localhost:
		ref := p.GetLocalhostRef()
		if !filepath.IsAbs(ref) {
			return nil, fmt.Errorf("seccomp localhost profile %q is not an absolute path: %w", ref, errdefs.ErrInvalidArgument)
		}
		// The path is the client's: a FIFO there must not hang the call,
		// nor a huge file fill the daemon's memory. Errors name only ref.
		data, err := fsutil.ReadRegularFile(ref, maxSeccompProfile)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				err = fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
			}
			return nil, fmt.Errorf("seccomp localhost profile: %w", err)
		}
		var s specs.LinuxSeccomp
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("seccomp localhost profile %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
		}
		if _, err := seccomp.Compile(&s); err != nil {
			return nil, fmt.Errorf("seccomp localhost profile %s: %w", ref, err)
		}
		return &s, nil
	}
	return nil, fmt.Errorf("seccomp profile type %v: %w", p.GetProfileType(), errdefs.ErrInvalidArgument)
}

// checkUserNS checks a container against its pod's user namespace.
// kubelet sends the pod's userns_options with every container: one cannot
// leave the pod's (NODE), ask for one the pod lacks, or map other ids. A
// privileged container is refused in a pod with a user namespace, as
// Kubernetes refuses privileged with hostUsers: false: its capabilities
// would hold over the user namespace only, which is not what privileged
// promises. So is the host's pid namespace, which the pod cannot have.
func checkUserNS(cfg *runtimeapi.ContainerConfig, pod *sandbox.Pod) error {
	sc := cfg.GetLinux().GetSecurityContext()
	u, podNS := sc.GetNamespaceOptions().GetUsernsOptions(), pod.Spec.UserNS
	switch {
	case podNS == nil && u != nil && u.GetMode() == runtimeapi.NamespaceMode_POD:
		return fmt.Errorf("container asks for its pod's user namespace, but pod %s has none (it uses the node's): %w", pod.ID, errdefs.ErrInvalidArgument)
	case podNS == nil:
		return nil
	case u != nil && u.GetMode() != runtimeapi.NamespaceMode_POD:
		return fmt.Errorf("container asks for user namespace mode %s in pod %s, which has a user namespace of its own (POD): %w", u.GetMode(), pod.ID, errdefs.ErrInvalidArgument)
	case u != nil && (!slices.Equal(specIDMappings(u.GetUids()), podNS.UIDs) || !slices.Equal(specIDMappings(u.GetGids()), podNS.GIDs)):
		return fmt.Errorf("container's user namespace mappings differ from its pod's: %w", errdefs.ErrInvalidArgument)
	case sc.GetPrivileged():
		return fmt.Errorf("a privileged container cannot run in pod %s, which has a user namespace of its own (hostUsers: false): %w", pod.ID, errdefs.ErrInvalidArgument)
	case sc.GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_NODE:
		return fmt.Errorf("a container of pod %s, which has a user namespace of its own, cannot use the host's pid namespace: %w", pod.ID, errdefs.ErrInvalidArgument)
	}
	return nil
}

// mountIDMap is how an image volume of pod's container is mounted from the
// image store: idmapped with the pod's user namespace when the mount
// carries id mappings (kubelet gives every mount of such a pod the pod's
// own), which must be the pod's; nil otherwise.
func mountIDMap(pod *sandbox.Pod, m *runtimeapi.Mount) (*image.IDMap, error) {
	if len(m.GetUidMappings())+len(m.GetGidMappings()) == 0 {
		return nil, nil
	}
	u := pod.Spec.UserNS
	if u == nil {
		return nil, fmt.Errorf("mount %s has id mappings but pod %s has no user namespace of its own: %w", m.GetContainerPath(), pod.ID, errdefs.ErrInvalidArgument)
	}
	if !slices.Equal(specIDMappings(m.GetUidMappings()), u.UIDs) || !slices.Equal(specIDMappings(m.GetGidMappings()), u.GIDs) {
		return nil, fmt.Errorf("mount %s: its id mappings differ from its pod's user namespace, which cri-mini idmaps it with: %w", m.GetContainerPath(), errdefs.ErrInvalidArgument)
	}
	return rootfsIDMap(pod), nil
}

// rootfsIDMap is how a container's root file system is mounted: idmapped
// into its pod's user namespace, if the pod has one.
func rootfsIDMap(pod *sandbox.Pod) *image.IDMap {
	u := pod.Spec.UserNS
	if u == nil {
		return nil
	}
	uid, gid := u.HostIDs()
	return &image.IDMap{UserNS: pod.UserNS, UID: uid, GID: gid}
}

// devicesAsBinds turns the spec's device nodes into bind mounts of the
// host's nodes, for a container in a user namespace, where no node can be
// made (mknod needs CAP_MKNOD on the host), as runc binds them: a CRI
// device from its host path, any other (CDI's) from the same path on the
// host, which must be the same device. The cgroup rules stay.
func devicesAsBinds(spec *specs.Spec, crIDevices []*runtimeapi.Device) error {
	host := map[string]string{}
	for _, d := range crIDevices {
		host[firstNonEmpty(d.GetContainerPath(), d.GetHostPath())] = d.GetHostPath()
	}
	for _, d := range spec.Linux.Devices {
		src := firstNonEmpty(host[d.Path], d.Path)
		var st unix.Stat_t
		if err := unix.Stat(src, &st); err != nil {
			return fmt.Errorf("device %s in a user namespace is bound from the host's %s: %v: %w", d.Path, src, err, errdefs.ErrInvalidArgument)
		}
		if n, ok := specDevice(d.Path, &st); !ok || n.Type != d.Type || n.Major != d.Major || n.Minor != d.Minor {
			return fmt.Errorf("device %s in a user namespace is bound from the host's %s, which is not %s %d:%d: %w", d.Path, src, d.Type, d.Major, d.Minor, errdefs.ErrInvalidArgument)
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: d.Path, Type: "bind", Source: src, Options: []string{"bind", "rprivate"}})
	}
	spec.Linux.Devices = nil
	return nil
}

// containerNamespaces: new mount and cgroup namespaces; the pod's user
// namespace if it has one; the pod's network, uts and ipc namespaces (or
// the host's: no entry); the pod's shared pid namespace, the host's, the
// target container's, or a new one.
func containerNamespaces(pod *sandbox.Pod, opts *runtimeapi.NamespaceOption, target *container.State) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace}}
	join := func(t specs.LinuxNamespaceType, path string) {
		if path != "" {
			ns = append(ns, specs.LinuxNamespace{Type: t, Path: path})
		}
	}
	join(specs.UserNamespace, pod.UserNS)
	join(specs.NetworkNamespace, pod.NetNS)
	join(specs.UTSNamespace, pod.UTSNS)
	join(specs.IPCNamespace, pod.IPCNS)
	switch {
	case opts.GetPid() == runtimeapi.NamespaceMode_TARGET && target != nil:
		// The target's own: a pod's it joined, none (the host's), or the
		// one its init made, by the init's pid.
		i := slices.IndexFunc(target.Spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.PIDNamespace })
		switch {
		case i < 0:
		case target.Spec.Linux.Namespaces[i].Path != "":
			join(specs.PIDNamespace, target.Spec.Linux.Namespaces[i].Path)
		default:
			join(specs.PIDNamespace, fmt.Sprintf("/proc/%d/ns/pid", target.Pid))
		}
	case pod.Spec.HostPID || opts.GetPid() == runtimeapi.NamespaceMode_NODE:
	case pod.PIDNS != "" && opts.GetPid() != runtimeapi.NamespaceMode_CONTAINER:
		join(specs.PIDNamespace, pod.PIDNS)
	default:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	return ns
}

var propagation = map[runtimeapi.MountPropagation]string{
	runtimeapi.MountPropagation_PROPAGATION_PRIVATE:           "rprivate",
	runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER: "rslave",
	runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:     "rshared",
}

// rootfsPropagation is what the container's root mount must be for its
// mounts' propagation to work: a bidirectional mount needs a shared root (a
// slave root would turn it into a slave), host-to-container a slave one.
func rootfsPropagation(mounts []*runtimeapi.Mount) string {
	prop := ""
	for _, m := range mounts {
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			return "rshared"
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			prop = "rslave"
		}
	}
	return prop
}

// specMounts are the mounts of the container's OCI spec: for a privileged
// container /sys and /sys/fs/cgroup read-write, the pod's /dev/shm and R2
// files, then the config's bind mounts (which win over those for the same
// destination). A host path that does not exist is an error, not a silent
// mkdir. Image volumes are bound from where the image is mounted, or from
// a sub path of it.
func specMounts(cfg *runtimeapi.ContainerConfig, pod *sandbox.Pod, imageVolumes map[int]string) ([]specs.Mount, error) {
	byDest := map[string]int{}
	var mounts []specs.Mount
	add := func(m specs.Mount) {
		if i, ok := byDest[m.Destination]; ok {
			mounts[i] = m
			return
		}
		byDest[m.Destination] = len(mounts)
		mounts = append(mounts, m)
	}
	bind := func(src, dst string, ro bool, prop string) specs.Mount {
		opts := []string{"rbind", prop}
		if ro {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
	}
	if cfg.GetLinux().GetSecurityContext().GetPrivileged() {
		// The recipe's /sys and /sys/fs/cgroup, read-write.
		add(specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "rw"}})
		add(specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "rw"}})
	}
	add(bind(pod.ShmPath, "/dev/shm", false, "rprivate"))
	add(bind(pod.HostsPath, "/etc/hosts", false, "rprivate"))
	add(bind(pod.HostnamePath, "/etc/hostname", false, "rprivate"))
	add(bind(pod.ResolvPath, "/etc/resolv.conf", false, "rprivate"))
	for i, m := range cfg.GetMounts() {
		dst, src := m.GetContainerPath(), m.GetHostPath()
		if m.GetImage() != nil {
			if !m.GetReadonly() {
				return nil, fmt.Errorf("image volume at %s must be read-only: %w", dst, errdefs.ErrInvalidArgument)
			}
			var err error
			if src, err = imageVolumeSource(imageVolumes[i], m.GetImageSubPath()); err != nil {
				return nil, fmt.Errorf("image volume at %s: %w", dst, err)
			}
		}
		if !filepath.IsAbs(dst) || !filepath.IsAbs(src) {
			return nil, fmt.Errorf("mount %q -> %q: both paths must be absolute: %w", src, dst, errdefs.ErrInvalidArgument)
		}
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("mount source %s for %s: %v: %w", src, dst, err, errdefs.ErrInvalidArgument)
		}
		prop, ok := propagation[m.GetPropagation()]
		if !ok {
			return nil, fmt.Errorf("mount %s: propagation %v: %w", dst, m.GetPropagation(), errdefs.ErrInvalidArgument)
		}
		mount := bind(src, filepath.Clean(dst), m.GetReadonly(), prop)
		if m.GetImage() == nil {
			// An image volume is idmapped in its layers (mountIDMap).
			mount.UIDMappings, mount.GIDMappings = specIDMappings(m.GetUidMappings()), specIDMappings(m.GetGidMappings())
		}
		if m.GetRecursiveReadOnly() {
			// "rro": every submount read-only too (mount_setattr AT_RECURSIVE);
			// it cannot hold for mounts that later propagate in.
			if !m.GetReadonly() || m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
				return nil, fmt.Errorf("mount %s: recursive read-only needs readonly and private propagation: %w", dst, errdefs.ErrInvalidArgument)
			}
			mount.Options = append(mount.Options, "rro")
		}
		add(mount)
	}
	return mounts, nil
}

// containerDevices turns host devices into spec devices and the cgroup
// rules that let the container use them.
func containerDevices(devs []*runtimeapi.Device) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	var out []specs.LinuxDevice
	var rules []specs.LinuxDeviceCgroup
	for _, d := range devs {
		var st unix.Stat_t
		if err := unix.Stat(d.GetHostPath(), &st); err != nil {
			return nil, nil, fmt.Errorf("device %s: %v: %w", d.GetHostPath(), err, errdefs.ErrInvalidArgument)
		}
		dev, ok := specDevice(firstNonEmpty(d.GetContainerPath(), d.GetHostPath()), &st)
		if !ok {
			return nil, nil, fmt.Errorf("device %s is not a device node: %w", d.GetHostPath(), errdefs.ErrInvalidArgument)
		}
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		if strings.Trim(perms, "rwm") != "" {
			return nil, nil, fmt.Errorf("device %s permissions %q (want letters of rwm): %w", d.GetHostPath(), perms, errdefs.ErrInvalidArgument)
		}
		out = append(out, dev)
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: dev.Type, Major: &dev.Major, Minor: &dev.Minor, Access: perms})
	}
	return out, rules, nil
}

// specDevice describes the device node st (as stat gives it) to be made
// at path in the container, with the host node's mode and owner; false
// when st is not a character or block device.
func specDevice(path string, st *unix.Stat_t) (specs.LinuxDevice, bool) {
	typ := ""
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, false
	}
	mode := os.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	return specs.LinuxDevice{Path: path, Type: typ, Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
		FileMode: &mode, UID: &uid, GID: &gid}, true
}

// hostDevices lists the host's device nodes below /dev, as runc's
// HostDevices does for a privileged container: not the per-instance
// devpts, shm and mqueue, nor the console (the container's is its own);
// symlinks are not followed.
func hostDevices() ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	err := filepath.WalkDir("/dev", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
				return nil // gone meanwhile, or a directory root cannot read
			}
			return err
		}
		switch {
		case d.IsDir() && slices.Contains([]string{"/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/fd", "/dev/.lxc", "/dev/.lxd-mounts", "/dev/.udev"}, p):
			return filepath.SkipDir
		case d.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 || p == "/dev/console":
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil // gone meanwhile
		}
		if dev, ok := specDevice(p, &st); ok {
			out = append(out, dev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the host's devices: %w", err)
	}
	return out, nil
}

// linuxResources maps the CRI's resources to the OCI ones (zero = unset).
func linuxResources(r *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	if r == nil {
		return out
	}
	cpu := &specs.LinuxCPU{Cpus: r.GetCpusetCpus(), Mems: r.GetCpusetMems()}
	if v := r.GetCpuShares(); v > 0 {
		shares := uint64(v)
		cpu.Shares = &shares
	}
	if v := r.GetCpuQuota(); v != 0 {
		cpu.Quota = &v
	}
	if v := r.GetCpuPeriod(); v > 0 {
		period := uint64(v)
		cpu.Period = &period
	}
	out.CPU = cpu
	if v := r.GetMemoryLimitInBytes(); v > 0 {
		out.Memory = &specs.LinuxMemory{Limit: &v}
		if s := r.GetMemorySwapLimitInBytes(); s > 0 {
			out.Memory.Swap = &s
		}
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	if len(r.GetUnified()) > 0 {
		out.Unified = r.GetUnified()
	}
	return out
}

// cgroupPath is the container's cgroup below the pod's parent, in the
// driver's syntax; pods without a parent get one under /cri-mini. Its
// base name gives the container ID back as kubelet's CRI stats provider
// reads it off cAdvisor's cgroups (extractIDFromCgroupPath): the ID itself
// under cgroupfs, as with containerd, and the ID after the last dash of a
// systemd scope (cri-mini-ID.scope).
func cgroupPath(driver, parent, id string) string {
	if driver == "systemd" {
		return cgroups.ChildPath(driver, firstNonEmpty(parent, "system.slice"), id)
	}
	return cgroups.ChildPath(driver, firstNonEmpty(parent, "/cri-mini"), id)
}

func containerAnnotations(in specInput) (map[string]string, error) {
	cfg := in.Config
	labels, err := json.Marshal(cfg.GetLabels())
	if err != nil {
		return nil, err
	}
	annos, err := json.Marshal(cfg.GetAnnotations())
	if err != nil {
		return nil, err
	}
	mounts, err := json.Marshal(cfg.GetMounts())
	if err != nil {
		return nil, err
	}
	out := map[string]string{
		annoSandboxID:  in.Pod.ID,
		annoName:       cfg.GetMetadata().GetName(),
		annoAttempt:    strconv.FormatUint(uint64(cfg.GetMetadata().GetAttempt()), 10),
		annoImage:      in.ImageName,
		annoImageRef:   in.ImageRef,
		annoLabels:     string(labels),
		annoAnnotation: string(annos),
		annoMounts:     string(mounts),
	}
	if a := cfg.GetImage().GetAnnotations(); len(a) > 0 {
		// The image spec's annotations (runtime hints such as a snapshotter
		// or a pull platform) go back in the container's image spec.
		b, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		out[annoImageAnnos] = string(b)
	}
	if in.RepoDigest != "" {
		out[annoRepoDigest] = in.RepoDigest
	}
	if sig := cfg.GetStopSignal(); sig != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		out[annoStopSignal] = strings.TrimPrefix(sig.String(), "SIGNAL_")
	} else if in.Image.StopSignal != "" {
		out[annoStopSignal] = in.Image.StopSignal
	}
	return out, nil
}

// criResources is linuxResources read back, for ContainerStatus.
func criResources(r *specs.LinuxResources) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if c := r.CPU; c != nil {
		out.CpusetCpus, out.CpusetMems = c.Cpus, c.Mems
		if c.Shares != nil {
			out.CpuShares = int64(*c.Shares)
		}
		if c.Quota != nil {
			out.CpuQuota = *c.Quota
		}
		if c.Period != nil {
			out.CpuPeriod = int64(*c.Period)
		}
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			out.MemoryLimitInBytes = *m.Limit
		}
		if m.Swap != nil {
			out.MemorySwapLimitInBytes = *m.Swap
		}
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.Pagesize, Limit: h.Limit})
	}
	out.Unified = r.Unified
	return out
}

// imageVolumeSource resolves an image volume's sub path inside the mounted
// image without following its symlinks out of it (the image is untrusted).
func imageVolumeSource(mounted, subPath string) (string, error) {
	if mounted == "" {
		return "", fmt.Errorf("the image was not mounted: %w", errdefs.ErrInvalidArgument)
	}
	if subPath == "" {
		return mounted, nil
	}
	p, err := securejoin.SecureJoin(mounted, subPath)
	if err != nil {
		return "", fmt.Errorf("sub path %q: %w", subPath, err)
	}
	if _, err := os.Lstat(p); err != nil {
		return "", fmt.Errorf("sub path %q of the image: %v: %w", subPath, err, errdefs.ErrInvalidArgument)
	}
	return p, nil
}
