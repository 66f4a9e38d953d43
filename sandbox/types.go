package sandbox

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/netns"
)

// Metadata identifies a pod for kubelet; the four fields together are unique.
type Metadata struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	UID       string `json:"uid"`
	Attempt   uint32 `json:"attempt"`
}

// DNSConfig is the pod's resolver configuration; nil means the host's.
type DNSConfig struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// Spec is what a pod is asked to be (the runtime-neutral part of the CRI's
// PodSandboxConfig).
type Spec struct {
	Metadata     Metadata            `json:"metadata"`
	Hostname     string              `json:"hostname,omitempty"`
	LogDirectory string              `json:"logDirectory,omitempty"`
	DNS          *DNSConfig          `json:"dns,omitempty"`
	PortMappings []netns.PortMapping `json:"portMappings,omitempty"`
	Labels       map[string]string   `json:"labels,omitempty"`
	Annotations  map[string]string   `json:"annotations,omitempty"`
	CgroupParent string              `json:"cgroupParent,omitempty"`
	Sysctls      map[string]string   `json:"sysctls,omitempty"`
	// HostNetwork also means the host's uts namespace, as kubelet expects.
	HostNetwork bool `json:"hostNetwork,omitempty"`
	HostIPC     bool `json:"hostIPC,omitempty"`
	// HostPID puts the pod's containers in the host's pid namespace;
	// SharedPID gives them one pid namespace of the pod's.
	HostPID        bool   `json:"hostPID,omitempty"`
	SharedPID      bool   `json:"sharedPID,omitempty"`
	RuntimeHandler string `json:"runtimeHandler,omitempty"`
	// RunAsUser and RunAsGroup are the uid and gid of the pod's pause
	// process (the CRI's pod-level run_as_user and run_as_group); unset,
	// both are 65535. A group needs a user.
	RunAsUser  *int64 `json:"runAsUser,omitempty"`
	RunAsGroup *int64 `json:"runAsGroup,omitempty"`
	// UserNS gives the pod a user namespace of its own (Kubernetes'
	// hostUsers: false) with these mappings; nil keeps the host's.
	UserNS *UserNamespace `json:"userNS,omitempty"`
	// Resources are applied to the pod's cgroup parent at start and by
	// UpdateResources, which records here what is in force; nil leaves
	// the cgroup as its maker set it. A pod without a cgroup parent has
	// nothing to apply them to.
	Resources *specs.LinuxResources `json:"resources,omitempty"`
}

// UserNamespace is the uid and gid mappings of a pod's user namespace: the
// range kubelet allocated to the pod, one mapping each.
type UserNamespace struct {
	UIDs []specs.LinuxIDMapping `json:"uids"`
	GIDs []specs.LinuxIDMapping `json:"gids"`
}

// HostIDs returns the host's uid and gid of the pod's uid and gid 0 (its
// root), which owns what the pod writes that is its own.
func (u *UserNamespace) HostIDs() (uid, gid int) {
	return int(u.UIDs[0].HostID), int(u.GIDs[0].HostID)
}

// State is where a pod is in its life.
type State string

const (
	// Creating: recorded, side effects in progress. A pod found in this
	// state at start-up is an orphan of a crash and is collected.
	Creating State = "creating"
	// Ready: namespaces and network are up.
	Ready State = "ready"
	// NotReady: stopped; namespaces kept until removal.
	NotReady State = "notready"
)

// Pod is a pod sandbox as recorded on disk (runroot/pods/<id>/state.json).
type Pod struct {
	ID        string `json:"id"`
	Spec      Spec   `json:"spec"`
	State     State  `json:"state"`
	CreatedAt int64  `json:"createdAt"` // unix nanoseconds
	// IPs of the pod from CNI, IPv4 first; empty for host-network pods.
	IPs []string `json:"ips,omitempty"`
	// Hostname actually used (the spec's, or the node's for host network).
	Hostname string `json:"hostname"`
	// Namespace files containers join; empty means the host's namespace.
	// A pod with a user namespace of its own (UserNS) has it pinned here
	// and every other namespace of the pod is owned by it.
	UserNS string `json:"userns,omitempty"`
	NetNS  string `json:"netns,omitempty"`
	UTSNS  string `json:"utsns,omitempty"`
	IPCNS  string `json:"ipcns,omitempty"`
	// PIDNS is the pod's shared pid namespace (SharedPID), whose PID 1 is
	// the pause process PausePID.
	PIDNS    string `json:"pidns,omitempty"`
	PausePID int    `json:"pausePid,omitempty"`
	// ShmPath is the directory bind-mounted as the containers' /dev/shm.
	ShmPath      string `json:"shmPath"`
	HostsPath    string `json:"hostsPath"`
	HostnamePath string `json:"hostnamePath"`
	ResolvPath   string `json:"resolvPath"`
	// CgroupCreated is the topmost cgroup that the pod made for its cgroup
	// parent (it and all below are removed with the pod).
	CgroupCreated string `json:"cgroupCreated,omitempty"`
}

// clone returns a copy the caller may keep while the pod changes.
func (p *Pod) clone() *Pod {
	c := *p
	c.IPs = append([]string(nil), p.IPs...)
	return &c
}
