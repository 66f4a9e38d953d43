package cri

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/container/seccomp"
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
	annoImageRef   = "io.cri-mini.container.image-ref"
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
	Rootfs   string // the prepared root file system
	Driver   string // cgroup driver
	// ImageVolumes are where the images of image-volume mounts are mounted
	// (read-only) on the host, by index in Config.Mounts.
	ImageVolumes map[int]string
}

// containerSpec translates a CRI container config, the image's config and
// the pod into the OCI spec container/ builds the container from, and the
// container's cgroup path.
func containerSpec(in specInput) (*specs.Spec, string, error) {
	cfg := in.Config
	sc := cfg.GetLinux().GetSecurityContext()
	privileged := sc.GetPrivileged()

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

	mounts, err := containerMounts(cfg, in.Pod, in.ImageVolumes)
	if err != nil {
		return nil, "", err
	}
	devices, deviceRules, err := containerDevices(cfg.GetDevices())
	if err != nil {
		return nil, "", err
	}
	resources := linuxResources(res)
	if privileged {
		resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		resources.Devices = append(cgroups.DefaultDevices(), deviceRules...)
	}

	linux := &specs.Linux{
		Resources:         resources,
		Namespaces:        containerNamespaces(in.Pod, sc.GetNamespaceOptions()),
		Devices:           devices,
		RootfsPropagation: rootfsPropagation(cfg.GetMounts()),
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

// processUser resolves the user the process runs as: run_as_user or
// run_as_username from the security context, else the image's User
// ("uid", "name", "uid:gid", "name:group"); names and the user's groups come
// from the container's own /etc/passwd and /etc/group, read inside the
// rootfs (R18).
func processUser(sc *runtimeapi.LinuxContainerSecurityContext, imageUser, rootfs string) (specs.User, error) {
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return specs.User{}, fmt.Errorf("run_as_group without run_as_user or run_as_username: %w", errdefs.ErrInvalidArgument)
	}
	userPart, groupPart, _ := strings.Cut(imageUser, ":")
	switch {
	case sc.GetRunAsUser() != nil:
		userPart, groupPart = strconv.FormatInt(sc.GetRunAsUser().GetValue(), 10), ""
	case sc.GetRunAsUsername() != "":
		userPart, groupPart = sc.GetRunAsUsername(), ""
	}
	var u specs.User
	uid, gid, name, err := lookupUser(rootfs, userPart)
	if err != nil {
		return u, err
	}
	u.UID, u.GID = uid, gid
	if groupPart != "" {
		if u.GID, err = lookupGroup(rootfs, groupPart); err != nil {
			return u, err
		}
	}
	if sc.GetRunAsGroup() != nil {
		u.GID = uint32(sc.GetRunAsGroup().GetValue())
	}
	// The primary group is listed too, as id -G and containerd show it;
	// the image's /etc/group adds the user's groups unless the policy is Strict.
	extra := []uint32{u.GID}
	if sc.GetSupplementalGroupsPolicy() != runtimeapi.SupplementalGroupsPolicy_Strict {
		extra = append(extra, memberGroups(rootfs, name, u.GID)...)
	}
	for _, g := range sc.GetSupplementalGroups() {
		extra = append(extra, uint32(g))
	}
	slices.Sort(extra)
	u.AdditionalGids = slices.Compact(extra)
	return u, nil
}

// passwdEntries reads name:x:id:gid... lines of file in the rootfs; a file
// the image lacks yields none.
func passwdEntries(rootfs, file string) [][]string {
	if rootfs == "" {
		return nil
	}
	data, err := fsutil.ReadFileInRoot(rootfs, file)
	if err != nil {
		return nil
	}
	var entries [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Split(line, ":"); len(f) >= 4 {
			entries = append(entries, f)
		}
	}
	return entries
}

// lookupUser turns a user name or number into uid and primary gid (a
// number not in /etc/passwd has gid 0, as in Docker).
func lookupUser(rootfs, user string) (uid, gid uint32, name string, err error) {
	if user == "" {
		user = "0"
	}
	n, numErr := strconv.ParseUint(user, 10, 32)
	for _, e := range passwdEntries(rootfs, "/etc/passwd") {
		id, err1 := strconv.ParseUint(e[2], 10, 32)
		g, err2 := strconv.ParseUint(e[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		if e[0] == user || (numErr == nil && id == n) {
			return uint32(id), uint32(g), e[0], nil
		}
	}
	if numErr == nil {
		return uint32(n), 0, "", nil
	}
	return 0, 0, "", fmt.Errorf("user %q is not in the image's /etc/passwd: %w", user, errdefs.ErrInvalidArgument)
}

func lookupGroup(rootfs, group string) (uint32, error) {
	if n, err := strconv.ParseUint(group, 10, 32); err == nil {
		return uint32(n), nil
	}
	for _, e := range passwdEntries(rootfs, "/etc/group") {
		if e[0] == group {
			if id, err := strconv.ParseUint(e[2], 10, 32); err == nil {
				return uint32(id), nil
			}
		}
	}
	return 0, fmt.Errorf("group %q is not in the image's /etc/group: %w", group, errdefs.ErrInvalidArgument)
}

// memberGroups lists the gids of the groups of /etc/group naming user as a
// member, besides the primary gid.
func memberGroups(rootfs, user string, primary uint32) []uint32 {
	if user == "" {
		return nil
	}
	var gids []uint32
	for _, e := range passwdEntries(rootfs, "/etc/group") {
		id, err := strconv.ParseUint(e[2], 10, 32)
		if err != nil || uint32(id) == primary {
			continue
		}
		if slices.Contains(strings.Split(e[3], ","), user) {
			gids = append(gids, uint32(id))
		}
	}
	return gids
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
		data, err := os.ReadFile(ref)
		if err != nil {
			return nil, fmt.Errorf("seccomp localhost profile: %v: %w", err, errdefs.ErrInvalidArgument)
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

// containerNamespaces: new mount and cgroup namespaces; the pod's network,
// uts and ipc namespaces (or the host's: no entry); the pod's shared pid
// namespace, the host's, or a new one.
func containerNamespaces(pod *sandbox.Pod, opts *runtimeapi.NamespaceOption) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace}}
	join := func(t specs.LinuxNamespaceType, path string) {
		if path != "" {
			ns = append(ns, specs.LinuxNamespace{Type: t, Path: path})
		}
	}
	join(specs.NetworkNamespace, pod.NetNS)
	join(specs.UTSNamespace, pod.UTSNS)
	join(specs.IPCNamespace, pod.IPCNS)
	switch {
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

// containerMounts: the pod's /dev/shm and R2 files, then the config's bind
// mounts (which win over the pod's for the same destination). A host path
// that does not exist is an error, not a silent mkdir. Image volumes are
// bound from where the image is mounted, or from a sub path of it.
func containerMounts(cfg *runtimeapi.ContainerConfig, pod *sandbox.Pod, imageVolumes map[int]string) ([]specs.Mount, error) {
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
		typ := ""
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			typ = "c"
		case unix.S_IFBLK:
			typ = "b"
		default:
			return nil, nil, fmt.Errorf("device %s is not a device node: %w", d.GetHostPath(), errdefs.ErrInvalidArgument)
		}
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		if strings.Trim(perms, "rwm") != "" {
			return nil, nil, fmt.Errorf("device %s permissions %q (want letters of rwm): %w", d.GetHostPath(), perms, errdefs.ErrInvalidArgument)
		}
		major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		mode := os.FileMode(st.Mode & 0o777)
		uid, gid := st.Uid, st.Gid
		path := firstNonEmpty(d.GetContainerPath(), d.GetHostPath())
		out = append(out, specs.LinuxDevice{Path: path, Type: typ, Major: major, Minor: minor, FileMode: &mode, UID: &uid, GID: &gid})
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Minor: &minor, Access: perms})
	}
	return out, rules, nil
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
// driver's syntax; pods without a parent get one under /cri-mini.
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
		annoImage:      cfg.GetImage().GetImage(),
		annoImageRef:   in.ImageRef,
		annoLabels:     string(labels),
		annoAnnotation: string(annos),
		annoMounts:     string(mounts),
	}
	if sig := cfg.GetStopSignal(); sig != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		out[annoStopSignal] = strings.TrimPrefix(sig.String(), "SIGNAL_")
	} else if in.Image.StopSignal != "" {
		out[annoStopSignal] = in.Image.StopSignal
	}
	return out, nil
}

var errNoSuchSignal = errors.New("unknown signal")

// parseSignal reads a stop signal as the image config or the CRI writes it:
// "SIGTERM", "TERM", "15".
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("stop signal %q: %w", s, errNoSuchSignal)
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
