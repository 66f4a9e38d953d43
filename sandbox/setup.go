package sandbox

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/internal/mountfd"
	"github.com/cri-mini/cri-mini/internal/nspin"
)

// shmSize is the size of a pod's /dev/shm, as Docker and containerd give it.
const shmSize = "64m"

// hostnameRE is an RFC 1123 hostname: dot-separated labels of letters,
// digits and inner hyphens (sethostname takes at most 64 bytes).
var hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$`)

// validate checks spec before anything is recorded and fills defaults.
func (m *Manager) validate(spec *Spec) error {
	md := spec.Metadata
	var missing []string
	for name, v := range map[string]string{"name": md.Name, "namespace": md.Namespace, "uid": md.UID} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("pod sandbox metadata lacks %s: %w", strings.Join(missing, ", "), errdefs.ErrInvalidArgument)
	}
	if spec.Hostname != "" && !spec.HostNetwork && (len(spec.Hostname) > 64 || !hostnameRE.MatchString(spec.Hostname)) {
		return fmt.Errorf("pod hostname %q is not a valid hostname (RFC 1123, at most 64 bytes): %w", spec.Hostname, errdefs.ErrInvalidArgument)
	}
	if spec.RunAsGroup != nil && spec.RunAsUser == nil {
		return fmt.Errorf("pod run_as_group is set without run_as_user: %w", errdefs.ErrInvalidArgument)
	}
	for name, id := range map[string]*int64{"run_as_user": spec.RunAsUser, "run_as_group": spec.RunAsGroup} {
		// 2^32-1 is no id: to setresuid it means "unchanged".
		if id != nil && (*id < 0 || *id >= math.MaxUint32) {
			return fmt.Errorf("pod %s %d is not an id (0 to %d): %w", name, *id, uint32(math.MaxUint32-1), errdefs.ErrInvalidArgument)
		}
	}
	if spec.HostPID && spec.SharedPID {
		return fmt.Errorf("pod asks for both the host's and a shared pid namespace: %w", errdefs.ErrInvalidArgument)
	}
	if err := m.validUserNS(spec); err != nil {
		return err
	}
	if spec.HostNetwork && len(spec.PortMappings) > 0 {
		for _, pm := range spec.PortMappings {
			if pm.HostPort != 0 && pm.HostPort != pm.ContainerPort {
				return fmt.Errorf("host-network pod maps host port %d to %d: with the host's network they must be equal: %w",
					pm.HostPort, pm.ContainerPort, errdefs.ErrInvalidArgument)
			}
		}
	}
	if dns := spec.DNS; dns != nil {
		for _, s := range dns.Servers {
			if _, err := netip.ParseAddr(s); err != nil {
				return fmt.Errorf("DNS server %q is not an IP address: %w", s, errdefs.ErrInvalidArgument)
			}
		}
		for _, v := range append(append([]string{}, dns.Searches...), dns.Options...) {
			if v == "" || strings.ContainsAny(v, " \t\n") {
				return fmt.Errorf("DNS search or option %q has blanks: %w", v, errdefs.ErrInvalidArgument)
			}
		}
	}
	for key := range spec.Sysctls {
		if _, err := sysctlNamespace(key, spec); err != nil {
			return err
		}
	}
	return validCgroupParent(m.cgroupDriver, spec.CgroupParent)
}

// validCgroupParent checks that parent is named the way the driver names
// cgroups: an absolute path for cgroupfs, a slice unit for systemd.
func validCgroupParent(driver, parent string) error {
	if parent == "" {
		return nil
	}
	switch driver {
	case "systemd":
		// Also as its cgroupfs path, as kubelet sends it: the last
		// component names the slice.
		if !strings.HasSuffix(parent, ".slice") {
			return fmt.Errorf("cgroup parent %q: the systemd cgroup driver wants a slice name like kubepods-besteffort.slice: %w", parent, errdefs.ErrInvalidArgument)
		}
	default:
		if !filepath.IsAbs(parent) || filepath.Clean(parent) != parent {
			return fmt.Errorf("cgroup parent %q: the cgroupfs driver wants a clean absolute path like /kubepods/besteffort/pod123: %w", parent, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// sysctlNamespace says which pod namespace the sysctl key lives in, or
// why the pod may not set it: only namespaced sysctls can be per pod.
func sysctlNamespace(key string, spec *Spec) (nspin.Kind, error) {
	path, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	name := strings.ReplaceAll(path, "/", ".")
	var kind nspin.Kind
	switch {
	case strings.HasPrefix(name, "net."):
		kind = nspin.Net
	case strings.HasPrefix(name, "fs.mqueue."),
		name == "kernel.sem", name == "kernel.shm_rmid_forced",
		name == "kernel.shmmax", name == "kernel.shmall", name == "kernel.shmmni",
		name == "kernel.msgmax", name == "kernel.msgmnb", name == "kernel.msgmni":
		kind = nspin.IPC
	default:
		return "", fmt.Errorf("sysctl %q is not namespaced and cannot be set per pod: %w", key, errdefs.ErrInvalidArgument)
	}
	if kind == nspin.Net && spec.HostNetwork {
		return "", fmt.Errorf("sysctl %q would change the host's network: the pod uses the host network: %w", key, errdefs.ErrInvalidArgument)
	}
	if kind == nspin.IPC && spec.HostIPC {
		return "", fmt.Errorf("sysctl %q would change the host's IPC settings: the pod uses the host IPC namespace: %w", key, errdefs.ErrInvalidArgument)
	}
	return kind, nil
}

// sysctlPath turns a sysctl name (net.ipv4.ip_forward or net/ipv4/ip_forward)
// into its path under /proc/sys.
func sysctlPath(key string) (string, error) {
	path := key
	if !strings.Contains(key, "/") {
		path = strings.ReplaceAll(key, ".", "/")
	}
	for _, part := range strings.Split(path, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("sysctl name %q is malformed: %w", key, errdefs.ErrInvalidArgument)
		}
	}
	return path, nil
}

// applySysctls writes the pod's sysctls from a thread inside the namespace
// each belongs to (/proc/sys answers for the namespaces of the caller).
func applySysctls(p *Pod) error {
	for key, value := range p.Spec.Sysctls {
		kind, err := sysctlNamespace(key, &p.Spec)
		if err != nil {
			return err
		}
		path, _ := sysctlPath(key)
		nsPath := p.NetNS
		if kind == nspin.IPC {
			nsPath = p.IPCNS
		}
		err = nspin.Run(nsPath, kind, func() error {
			return os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0)
		})
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sysctl %q does not exist on this kernel: %w", key, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("sysctl %s=%q: %w", key, value, err)
		}
	}
	return nil
}

func setHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("set hostname %q: %w", name, err)
	}
	return nil
}

// mountShm mounts a fresh tmpfs for the pod's /dev/shm at target, made with
// the new mount API so nothing resolves a path but the final move. With a
// user namespace of its own (u) the pod's root owns it.
func mountShm(target string, u *UserNamespace) error {
	if err := os.Mkdir(target, 0o1777); err != nil {
		return fmt.Errorf("pod shm: %w", err)
	}
	params := []string{"size=" + shmSize, "mode=1777"}
	if u != nil {
		uid, gid := u.HostIDs()
		params = append(params, "uid="+strconv.Itoa(uid), "gid="+strconv.Itoa(gid))
	}
	mfd, err := mountfd.New("tmpfs", "", params, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return fmt.Errorf("pod shm: %w", err)
	}
	defer unix.Close(mfd)
	if err := mountfd.MoveTo(mfd, target); err != nil {
		return fmt.Errorf("pod shm: %w", err)
	}
	return nil
}

// unmount detaches every mount stacked at target and removes it (a
// directory or a pin file); a missing one is fine.
func unmount(target string) error {
	for {
		err := unix.Unmount(target, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", target, err)
	}
	return nil
}

// writeFiles writes the pod's hostname, hosts and resolv.conf (recipe R2),
// which containers bind over their /etc files.
func writeFiles(p *Pod) error {
	var hosts strings.Builder
	if p.Spec.HostNetwork {
		data, err := os.ReadFile("/etc/hosts")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read host /etc/hosts: %w", err)
		}
		hosts.Write(data)
	} else {
		fmt.Fprintf(&hosts, "127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n", p.Hostname)
		for _, ip := range p.IPs {
			fmt.Fprintf(&hosts, "%s\t%s\n", ip, p.Hostname)
		}
	}

	var resolv []byte
	if dns := p.Spec.DNS; dns != nil && (len(dns.Servers) > 0 || len(dns.Searches) > 0 || len(dns.Options) > 0) {
		var b strings.Builder
		if len(dns.Searches) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
		}
		for _, s := range dns.Servers {
			fmt.Fprintf(&b, "nameserver %s\n", s)
		}
		if len(dns.Options) > 0 {
			fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
		}
		resolv = []byte(b.String())
	} else {
		data, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read host /etc/resolv.conf: %w", err)
		}
		resolv = data
	}

	for path, data := range map[string][]byte{
		p.HostnamePath: []byte(p.Hostname + "\n"),
		p.HostsPath:    []byte(hosts.String()),
		p.ResolvPath:   resolv,
	} {
		if err := fsutil.WriteFileAtomic(path, data, 0o644); err != nil {
			return fmt.Errorf("pod files: %w", err)
		}
		// The pod's own files are its root's, as they are for a pod
		// without a user namespace (where root is the host's).
		if u := p.Spec.UserNS; u != nil {
			uid, gid := u.HostIDs()
			if err := os.Chown(path, uid, gid); err != nil {
				return fmt.Errorf("pod files: %w", err)
			}
		}
	}
	return nil
}
