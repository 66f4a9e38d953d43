package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/randid"
)

// Defaults for Config fields left empty.
const (
	DefaultConfDir   = "/etc/cni/net.d"
	DefaultPluginDir = "/opt/cni/bin:/usr/lib/cni"
)

// podIfName is the interface name of the pod's network inside its netns.
const podIfName = "eth0"

// Config tells a Manager where things are.
type Config struct {
	ConfDir    string   // CNI network configs; default DefaultConfDir
	PluginDirs []string // CNI plugin binaries, searched in order; default DefaultPluginDir
	// RunRoot holds the pinned namespaces (RunRoot/netns/<pod>/net), the
	// attachment records and libcni's result cache (RunRoot/cni/).
	RunRoot string
	// Default is the network used while ConfDir has no configuration.
	Default DefaultNetwork
}

// Manager creates pod network namespaces and attaches them to the CNI
// network. It is safe for concurrent use.
type Manager struct {
	confDir    string
	pluginDirs []string
	netnsDir   string
	recordDir  string
	cni        *libcni.CNIConfig

	mu         sync.Mutex
	defaultNet DefaultNetwork
}

// New returns a Manager for cfg. It does not need a usable network yet:
// Status says whether pods can be attached.
func New(cfg Config) (*Manager, error) {
	if cfg.RunRoot == "" {
		return nil, fmt.Errorf("netns: run root not set: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if len(cfg.PluginDirs) == 0 {
		cfg.PluginDirs = PluginDirs(DefaultPluginDir)
	}
	def := cfg.Default.withDefaults()
	if _, err := def.configList(); err != nil {
		return nil, err
	}
	m := &Manager{
		confDir:    cfg.ConfDir,
		pluginDirs: cfg.PluginDirs,
		netnsDir:   filepath.Join(cfg.RunRoot, "netns"),
		recordDir:  filepath.Join(cfg.RunRoot, "cni", "attachments"),
		// An explicit exec: libcni would otherwise create one lazily on
		// first use, racing when pods are set up concurrently.
		cni: libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, filepath.Join(cfg.RunRoot, "cni", "cache"), &invoke.DefaultExec{
			RawExec:       &invoke.RawExec{Stderr: os.Stderr},
			PluginDecoder: version.PluginDecoder{},
		}),
		defaultNet: def,
	}
	for _, d := range []string{m.netnsDir, m.recordDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("netns: %w", err)
		}
	}
	return m, nil
}

// SetPodCIDR moves the built-in default network to cidr (from the CRI's
// UpdateRuntimeConfig). Pods attached before keep their addresses. A network
// configured in the config directory is not touched.
func (m *Manager) SetPodCIDR(cidr string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := m.defaultNet
	next.Subnet = cidr
	if _, err := next.configList(); err != nil {
		return err
	}
	m.defaultNet = next
	klog.InfoS("Default pod network subnet set", "subnet", cidr)
	return nil
}

// network returns the configuration new pods are attached to: the first
// file of the config dir, or the built-in default when there is none.
func (m *Manager) network() (*libcni.NetworkConfigList, error) {
	list, _, err := loadConfigDir(m.confDir)
	if err != nil || list != nil {
		return list, err
	}
	m.mu.Lock()
	def := m.defaultNet
	m.mu.Unlock()
	return def.configList()
}

// Status returns nil when pods can be attached, or an error whose message
// says why not (unreadable config, missing or broken plugin binaries).
func (m *Manager) Status(ctx context.Context) error {
	list, err := m.network()
	if err != nil {
		return fmt.Errorf("network not ready: %w", err)
	}
	if _, err := m.cni.ValidateNetworkList(ctx, withoutLoopback(list)); err != nil {
		return fmt.Errorf("network %q not ready: plugins in %s: %v: %w",
			list.Name, strings.Join(m.pluginDirs, ":"), err, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// PortMapping is a hostPort of a pod.
type PortMapping struct {
	HostPort      int32
	ContainerPort int32
	Protocol      string // tcp (default), udp or sctp, any case
	HostIP        string // empty: all host addresses
}

// Bandwidth limits a pod's traffic in bits per second (0 = no limit); it
// reaches plugins that declare the "bandwidth" capability.
type Bandwidth struct {
	IngressRate, IngressBurst uint64
	EgressRate, EgressBurst   uint64
}

// PodNetwork is what CNI is told about the pod.
type PodNetwork struct {
	Name, Namespace, UID string
	PortMappings         []PortMapping
	Bandwidth            *Bandwidth
	CgroupParent         string
}

// attachment is recorded before the first plugin runs, so that Teardown
// can undo a Setup even across a daemon crash or a change of the config
// directory: DEL runs with the very configuration and arguments of ADD.
type attachment struct {
	Config         json.RawMessage `json:"config"`
	NetNS          string          `json:"netns"`
	Args           [][2]string     `json:"args"`
	CapabilityArgs map[string]any  `json:"capabilityArgs,omitempty"`
}

// checkPodID admits what CNI accepts as a container ID; pod IDs also name
// files.
func checkPodID(podID string) error {
	if !randid.Valid(podID) {
		return fmt.Errorf("pod id %q (want letters, digits, '_', '.', '-'): %w", podID, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (m *Manager) recordPath(podID string) string {
	return filepath.Join(m.recordDir, podID+".json")
}

// Setup brings up loopback in the network namespace at nsPath and attaches
// it to the CNI network as eth0. It returns the pod's addresses, IPv4 first.
// On failure everything it did is undone.
func (m *Manager) Setup(ctx context.Context, podID, nsPath string, pod PodNetwork) ([]netip.Addr, error) {
	if err := checkPodID(podID); err != nil {
		return nil, err
	}
	if ok, err := nspin.IsPinned(nsPath); err != nil || !ok {
		return nil, fmt.Errorf("pod %s: %q is not a network namespace (%v): %w", podID, nsPath, err, errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(m.recordPath(podID)); err == nil {
		return nil, fmt.Errorf("pod %s is already attached to a network (tear it down first): %w", podID, errdefs.ErrAlreadyExists)
	}
	capArgs, err := capabilityArgs(pod)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", podID, err)
	}
	list, err := m.network()
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w: %w", podID, err, errdefs.ErrFailedPrecondition)
	}
	if err := nspin.Run(nsPath, nspin.Net, loopbackUp); err != nil {
		return nil, fmt.Errorf("pod %s: %w", podID, err)
	}

	rec := attachment{
		Config: list.Bytes,
		NetNS:  nsPath,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", podID},
			{"K8S_POD_UID", pod.UID},
		},
		CapabilityArgs: capArgs,
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(m.recordPath(podID), data, 0o600); err != nil {
		return nil, fmt.Errorf("pod %s: record network attachment: %w", podID, err)
	}

	rt := runtimeConf(podID, rec)
	res, err := m.cni.AddNetworkList(ctx, withoutLoopback(list), rt)
	if err != nil {
		err = fmt.Errorf("pod %s: attach to network %q: %w", podID, list.Name, err)
		if delErr := m.Teardown(context.WithoutCancel(ctx), podID); delErr != nil {
			return nil, errors.Join(err, fmt.Errorf("roll back: %w", delErr))
		}
		return nil, err
	}
	ips, err := podIPs(res)
	if err != nil {
		err = fmt.Errorf("pod %s: network %q: %w", podID, list.Name, err)
		if delErr := m.Teardown(context.WithoutCancel(ctx), podID); delErr != nil {
			return nil, errors.Join(err, fmt.Errorf("roll back: %w", delErr))
		}
		return nil, err
	}
	klog.V(2).InfoS("Pod attached to network", "pod", podID, "network", list.Name, "ips", ips)
	return ips, nil
}

// Teardown detaches the pod from its network (CNI DEL with the recorded
// configuration), freeing its addresses, port mappings and host interface.
// It is safe to repeat and works after a daemon restart; a pod that was never
// attached is not an error. Call it while the pod's netns is still pinned
// (Remove does): once the namespace is gone, DEL still frees the address and
// the port mappings, but Debian 12's bridge plugin can no longer find the
// pod's masquerade rule.
func (m *Manager) Teardown(ctx context.Context, podID string) error {
	if err := checkPodID(podID); err != nil {
		return err
	}
	data, err := os.ReadFile(m.recordPath(podID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pod %s: read network attachment: %w", podID, err)
	}
	var rec attachment
	if err := json.Unmarshal(data, &rec); err != nil {
		return fmt.Errorf("pod %s: network attachment record %s is corrupt: %w", podID, m.recordPath(podID), err)
	}
	list, err := libcni.NetworkConfFromBytes(rec.Config)
	if err != nil {
		return fmt.Errorf("pod %s: recorded network config: %w", podID, err)
	}
	rt := runtimeConf(podID, rec)
	// Plugins clean up host-side state (IPs, iptables) without the netns;
	// a path that is no longer a namespace would only make them fail.
	if ok, _ := nspin.IsPinned(rec.NetNS); !ok {
		rt.NetNS = ""
	}
	if err := m.cni.DelNetworkList(ctx, withoutLoopback(list), rt); err != nil {
		return fmt.Errorf("pod %s: detach from network %q: %w", podID, list.Name, err)
	}
	if err := os.Remove(m.recordPath(podID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pod %s: %w", podID, err)
	}
	klog.V(2).InfoS("Pod detached from network", "pod", podID, "network", list.Name)
	return nil
}

// withoutLoopback is list without its loopback plugins, which the chain
// runs on no pod: Setup brings lo up itself, in-process, where the plugin
// is a process to start on ADD and on DEL (where it only sets lo down in a
// namespace about to go), some 5-10 ms each. Chained after the interface's
// plugin, as configurations put it, the loopback plugin hands the previous
// result on, so the chain's result is the same. A list of nothing else is
// left as it is.
func withoutLoopback(list *libcni.NetworkConfigList) *libcni.NetworkConfigList {
	kept := slices.DeleteFunc(slices.Clone(list.Plugins), func(p *libcni.PluginConfig) bool {
		return p.Network.Type == "loopback"
	})
	if len(kept) == len(list.Plugins) || len(kept) == 0 {
		return list
	}
	out := *list
	out.Plugins = kept
	return &out
}

func runtimeConf(podID string, rec attachment) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    podID,
		NetNS:          rec.NetNS,
		IfName:         podIfName,
		Args:           rec.Args,
		CapabilityArgs: rec.CapabilityArgs,
	}
}

// capabilityArgs renders the runtimeConfig values that plugins opt into.
func capabilityArgs(pod PodNetwork) (map[string]any, error) {
	args := map[string]any{}
	var mappings []map[string]any
	for _, p := range pod.PortMappings {
		if p.HostPort == 0 {
			continue // a containerPort without hostPort is informational only
		}
		if p.HostPort < 0 || p.HostPort > 65535 || p.ContainerPort <= 0 || p.ContainerPort > 65535 {
			return nil, fmt.Errorf("port mapping %d->%d out of range: %w", p.HostPort, p.ContainerPort, errdefs.ErrInvalidArgument)
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" && proto != "sctp" {
			return nil, fmt.Errorf("port mapping protocol %q (want tcp, udp or sctp): %w", p.Protocol, errdefs.ErrInvalidArgument)
		}
		m := map[string]any{"hostPort": p.HostPort, "containerPort": p.ContainerPort, "protocol": proto}
		if p.HostIP != "" {
			if _, err := netip.ParseAddr(p.HostIP); err != nil {
				return nil, fmt.Errorf("port mapping host IP %q: %w", p.HostIP, errdefs.ErrInvalidArgument)
			}
			m["hostIP"] = p.HostIP
		}
		mappings = append(mappings, m)
	}
	if len(mappings) > 0 {
		args["portMappings"] = mappings
	}
	if b := pod.Bandwidth; b != nil {
		args["bandwidth"] = map[string]uint64{
			"ingressRate": b.IngressRate, "ingressBurst": b.IngressBurst,
			"egressRate": b.EgressRate, "egressBurst": b.EgressBurst,
		}
	}
	if pod.CgroupParent != "" {
		args["cgroupPath"] = pod.CgroupParent
	}
	return args, nil
}

// podIPs picks the addresses of the pod's own interface from a CNI result
// (plugins also report the host-side bridge and veth), IPv4 first.
func podIPs(res cnitypes.Result) ([]netip.Addr, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("read CNI result: %w", err)
	}
	var ips []netip.Addr
	for _, ipc := range r.IPs {
		if ipc.Interface != nil && *ipc.Interface >= 0 && *ipc.Interface < len(r.Interfaces) {
			if iface := r.Interfaces[*ipc.Interface]; iface.Sandbox == "" {
				continue
			}
		}
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ips = append(ips, a.Unmap())
		}
	}
	if len(ips) == 0 {
		return nil, errors.New("CNI result has no address for the pod")
	}
	slices.SortStableFunc(ips, func(a, b netip.Addr) int {
		switch {
		case a.Is4() == b.Is4():
			return 0
		case a.Is4():
			return -1
		}
		return 1
	})
	return ips, nil
}

// loopbackUp sets lo up in the calling thread's network namespace, whatever
// the configured plugins do: pods expect 127.0.0.1 to work.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	defer unix.Close(fd)
	if err := setLinkFlags(fd, "lo", unix.IFF_UP, 0); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// Create makes a new network namespace for the pod and pins it at
// RunRoot/netns/<pod>/net, whose path it returns.
func (m *Manager) Create(podID string) (string, error) {
	if err := checkPodID(podID); err != nil {
		return "", err
	}
	paths, err := nspin.Pin(m.podNetnsDir(podID), []nspin.Kind{nspin.Net}, nil)
	if err != nil {
		return "", fmt.Errorf("pod %s: network namespace: %w", podID, err)
	}
	return paths[nspin.Net], nil
}

// Adopt pins as the pod's network namespace the one at src (a
// /proc/PID/ns/net link), where Create would pin a new one: a pod with a
// user namespace of its own has its network namespace made inside that
// user namespace, by the process that makes both (package sandbox), so
// that the pod's root owns it. Remove undoes it as it undoes Create.
func (m *Manager) Adopt(podID, src string) (string, error) {
	if err := checkPodID(podID); err != nil {
		return "", err
	}
	dir := m.podNetnsDir(podID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("pod %s: network namespace: %w", podID, err)
	}
	target := nspin.Path(dir, nspin.Net)
	if err := nspin.PinFile(src, target); err != nil {
		return "", fmt.Errorf("pod %s: network namespace: %w", podID, err)
	}
	return target, nil
}

// Path is where Create pins the pod's network namespace.
func (m *Manager) Path(podID string) string {
	return nspin.Path(m.podNetnsDir(podID), nspin.Net)
}

// Remove detaches the pod from its network if it still is attached, then
// unpins its network namespace (the kernel frees it when no process is left
// in it). Safe to repeat. Detaching first matters: the bridge plugin finds
// the pod's masquerade rules through the interface inside the namespace.
func (m *Manager) Remove(ctx context.Context, podID string) error {
	if err := m.Teardown(ctx, podID); err != nil {
		return err
	}
	dir := m.podNetnsDir(podID)
	if err := nspin.Unpin(dir, nspin.Net); err != nil {
		return fmt.Errorf("pod %s: %w", podID, err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pod %s: remove network namespace dir: %w", podID, err)
	}
	return nil
}

// Pods lists the pods that have a pinned network namespace or a network
// attachment, so that start-up can collect those of pods that no longer exist.
func (m *Manager) Pods() ([]string, error) {
	var ids []string
	entries, err := os.ReadDir(m.netnsDir)
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	records, err := os.ReadDir(m.recordDir)
	if err != nil {
		return nil, fmt.Errorf("list network attachments: %w", err)
	}
	for _, e := range records {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

func (m *Manager) podNetnsDir(podID string) string {
	return filepath.Join(m.netnsDir, podID)
}

// PluginDirs splits a colon-separated plugin path as given by the
// --cni-plugin-dir flag.
func PluginDirs(list string) []string {
	var dirs []string
	for _, d := range filepath.SplitList(list) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	return dirs
}
