package sandbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/container/seccomp"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/internal/idprefix"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/randid"
	"github.com/cri-mini/cri-mini/netns"
)

// Config tells a Manager where its state lives and what it uses.
type Config struct {
	// RunRoot holds pods/<id>/ (state, files, shm, pinned namespaces).
	RunRoot string
	// Network creates pod network namespaces and attaches them with CNI.
	Network *netns.Manager
	// CgroupDriver is "cgroupfs" or "systemd": how cgroup parents are named.
	CgroupDriver string
	// Cgroups, when set, creates a pod's cgroup parent that does not exist
	// yet (and removes it with the pod) and holds the pause process.
	Cgroups cgroups.Manager
	// PauseExecutable is the binary pause processes run, from a sealed
	// in-memory copy (internal/safeexec): it must link package
	// sandbox/pause, as cri-mini and cri-mini-shim do. Empty means this
	// process's own binary.
	PauseExecutable string
	// UserNamespaces is what pods with a user namespace of their own may
	// map.
	UserNamespaces UserNamespacePolicy
}

// Manager runs pod sandboxes and keeps their state on disk. It is safe for
// concurrent use.
type Manager struct {
	dir          string
	net          *netns.Manager
	cgroupDriver string
	cgroups      cgroups.Manager
	pauseExe     string
	// pauseFilter is the pause processes' seccomp program: the default
	// profile for a process without capabilities, compiled once.
	pauseFilter func() ([]unix.SockFilter, error)
	userNS      UserNamespacePolicy

	mu   sync.Mutex
	pods map[string]*entry
}

// entry is one pod in the index. mu serialises the operations that change
// the pod (which can take seconds of CNI work); readers take the snapshot
// published after each change and never wait for them.
type entry struct {
	mu       sync.Mutex
	pod      *Pod
	snapshot atomic.Pointer[Pod] // nil while the pod is being created
}

// publish makes the pod's current state what Get and List answer.
func (e *entry) publish() { e.snapshot.Store(e.pod.clone()) }

const stateFile = "state.json"

// New opens the pods under cfg.RunRoot, as they were left by an earlier
// daemon, and collects orphans: pods a crash caught half created, and
// network namespaces of pods that no longer exist.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.RunRoot == "" || cfg.Network == nil {
		return nil, fmt.Errorf("sandbox: run root and network manager are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.CgroupDriver == "" {
		cfg.CgroupDriver = "cgroupfs"
	}
	m := &Manager{
		dir:          filepath.Join(cfg.RunRoot, "pods"),
		net:          cfg.Network,
		cgroupDriver: cfg.CgroupDriver,
		cgroups:      cfg.Cgroups,
		pauseExe:     cfg.PauseExecutable,
		pauseFilter: sync.OnceValues(func() ([]unix.SockFilter, error) {
			profile, err := seccomp.RuntimeDefaultFor(nil)
			if err != nil {
				return nil, err
			}
			filter, err := seccomp.Compile(profile)
			if err != nil {
				return nil, fmt.Errorf("compile the pause's seccomp profile: %w", err)
			}
			return filter, nil
		}),
		pods:   map[string]*entry{},
		userNS: cfg.UserNamespaces,
	}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) load(ctx context.Context) error {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return fmt.Errorf("sandbox: list pods: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		id := e.Name()
		p, err := readState(filepath.Join(m.dir, id, stateFile))
		if err != nil || p.State == Creating || p.ID != id {
			klog.InfoS("Collecting orphaned pod sandbox", "pod", id, "reason", orphanReason(p, err))
			if p == nil || p.ID != id {
				p = &Pod{ID: id}
			}
			if err := m.release(ctx, p); err != nil {
				klog.ErrorS(err, "Could not collect orphaned pod sandbox", "pod", id)
			}
			continue
		}
		e := &entry{pod: p}
		e.publish()
		m.pods[id] = e
	}
	netPods, err := m.net.Pods()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	for _, id := range netPods {
		if _, ok := m.pods[id]; !ok {
			klog.InfoS("Collecting network namespace of a pod that no longer exists", "pod", id)
			if err := m.net.Remove(ctx, id); err != nil {
				klog.ErrorS(err, "Could not collect network of removed pod", "pod", id)
			}
		}
	}
	klog.V(1).InfoS("Pod sandboxes loaded", "count", len(m.pods))
	return nil
}

func orphanReason(p *Pod, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case p.State == Creating:
		return "creation was interrupted"
	}
	return "state file names another pod"
}

func readState(path string) (*Pod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pod state: %w", err)
	}
	var p Pod
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("pod state %s is corrupt: %w", path, err)
	}
	return &p, nil
}

func (m *Manager) podDir(id string) string { return filepath.Join(m.dir, id) }

func (m *Manager) save(p *Pod) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(m.podDir(p.ID), stateFile), data, 0o600); err != nil {
		return fmt.Errorf("pod %s: save state: %w", p.ID, err)
	}
	return nil
}

// Run creates and starts a pod sandbox for spec and returns it. The pod is
// recorded before anything is made, and a failure half way undoes all of it.
func (m *Manager) Run(ctx context.Context, spec Spec) (*Pod, error) {
	if err := m.validate(&spec); err != nil {
		return nil, err
	}
	p := &Pod{ID: randid.New(), Spec: spec, State: Creating, CreatedAt: time.Now().UnixNano()}
	e := &entry{pod: p}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := m.reserve(e); err != nil {
		return nil, err
	}
	if err := m.create(ctx, p); err != nil {
		return nil, m.rollback(ctx, p, fmt.Errorf("run pod sandbox %s/%s: %w", spec.Metadata.Namespace, spec.Metadata.Name, err))
	}
	e.publish()
	klog.V(1).InfoS("Pod sandbox ready", "pod", p.ID, "name", spec.Metadata.Name, "namespace", spec.Metadata.Namespace, "ips", p.IPs)
	return p.clone(), nil
}

// reserve puts the new pod e into the index (unpublished: Get and List do
// not see it yet), unless a pod of the same metadata exists or a running
// pod's user namespace overlaps its.
func (m *Manager) reserve(e *entry) error {
	spec := &e.pod.Spec
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, other := range m.pods {
		md := spec.Metadata
		if other.pod.Spec.Metadata == md {
			return fmt.Errorf("pod sandbox %s/%s (uid %s, attempt %d) already exists as %s: %w",
				md.Namespace, md.Name, md.UID, md.Attempt, other.pod.ID, errdefs.ErrAlreadyExists)
		}
		// Two running pods sharing host ids could reach each other's
		// files and processes as their own. A new sandbox of the same
		// pod (kubelet's restart of it) takes over the pod's range, and
		// a stopped pod runs nothing.
		if other.pod.Spec.Metadata.UID != md.UID && other.pod.State != NotReady && spec.UserNS.overlaps(other.pod.Spec.UserNS) {
			omd := other.pod.Spec.Metadata
			return fmt.Errorf("pod user namespace overlaps the host ids of pod sandbox %s (%s/%s), which runs: %w",
				other.pod.ID, omd.Namespace, omd.Name, errdefs.ErrInvalidArgument)
		}
	}
	m.pods[e.pod.ID] = e
	return nil
}

// rollback undoes what a create that failed with err made (even when ctx
// has ended) and takes the pod out of the index. The error is err, with
// what the rollback left behind.
func (m *Manager) rollback(ctx context.Context, p *Pod, err error) error {
	if rbErr := m.release(context.WithoutCancel(ctx), p); rbErr != nil {
		klog.ErrorS(rbErr, "Rolling back a failed pod sandbox left something behind", "pod", p.ID)
		err = errors.Join(err, fmt.Errorf("roll back: %w", rbErr))
	}
	m.mu.Lock()
	delete(m.pods, p.ID)
	m.mu.Unlock()
	return err
}

// create makes the pod's pieces in order, recording each in p: the pod's
// directory and state first, so that whatever follows is found again by a
// rollback or, after a crash, by New's orphan collection.
func (m *Manager) create(ctx context.Context, p *Pod) error {
	dir := m.podDir(p.ID)
	if err := m.recordPod(p, dir); err != nil {
		return err
	}
	if err := m.createCgroup(p); err != nil {
		return err
	}
	if err := m.applyPodResources(&p.Spec); err != nil {
		return err
	}
	if err := choosePodHostname(p); err != nil {
		return err
	}
	if err := m.createNamespaces(ctx, p, dir); err != nil {
		return err
	}
	if err := mountPodShm(p, dir); err != nil {
		return err
	}
	if err := m.createNetNS(p); err != nil {
		return err
	}
	// The pause joins the pod's namespaces, so they are all made first
	// (with a user namespace, it made them).
	if p.Spec.SharedPID && p.PausePID == 0 {
		if err := m.startPause(ctx, p); err != nil {
			return err
		}
	}
	if err := applySysctls(p); err != nil {
		return err
	}
	if err := m.setupNetwork(ctx, p); err != nil {
		return err
	}
	if err := writeFiles(p); err != nil {
		return err
	}
	p.State = Ready
	return m.save(p)
}

// recordPod makes the pod's directory and saves the pod (Creating) in it,
// with the paths of the files writeFiles writes last.
func (m *Manager) recordPod(p *Pod, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	p.HostsPath = filepath.Join(dir, "hosts")
	p.HostnamePath = filepath.Join(dir, "hostname")
	p.ResolvPath = filepath.Join(dir, "resolv.conf")
	return m.save(p)
}

// applyPodResources sets the spec's resources on the pod's cgroup parent.
func (m *Manager) applyPodResources(spec *Spec) error {
	if spec.Resources == nil || spec.CgroupParent == "" || m.cgroups == nil {
		return nil
	}
	if err := m.cgroups.Update(spec.CgroupParent, spec.Resources); err != nil {
		return fmt.Errorf("pod cgroup %s: resources: %w", spec.CgroupParent, err)
	}
	return nil
}

// choosePodHostname sets the pod's hostname. Without a hostname of its own
// (or with the host's network) the pod keeps the node's, as a new uts
// namespace starts with it.
func choosePodHostname(p *Pod) error {
	p.Hostname = p.Spec.Hostname
	if p.Spec.HostNetwork || p.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node hostname: %w", err)
		}
		p.Hostname = h
	}
	return nil
}

// createNamespaces makes the pod's user namespace when it has one, and the
// others from inside it; otherwise it pins new uts (with the pod's
// hostname) and ipc namespaces, unless the pod shares the host's network
// or ipc.
func (m *Manager) createNamespaces(ctx context.Context, p *Pod, dir string) error {
	spec := &p.Spec
	var kinds []nspin.Kind
	if !spec.HostNetwork {
		kinds = append(kinds, nspin.UTS)
	}
	if !spec.HostIPC {
		kinds = append(kinds, nspin.IPC)
	}
	if spec.UserNS != nil {
		// The user namespace first, the others from inside it.
		return m.createUserNS(ctx, p)
	}
	if len(kinds) == 0 {
		return nil
	}
	paths, err := nspin.Pin(nsDir(dir), kinds, func() error {
		if spec.HostNetwork {
			return nil
		}
		return setHostname(p.Hostname)
	})
	if err != nil {
		return err
	}
	p.UTSNS, p.IPCNS = paths[nspin.UTS], paths[nspin.IPC]
	return nil
}

// mountPodShm gives the pod a /dev/shm of its own, or the host's with the
// host's ipc.
func mountPodShm(p *Pod, dir string) error {
	if p.Spec.HostIPC {
		p.ShmPath = "/dev/shm"
		return nil
	}
	p.ShmPath = filepath.Join(dir, "shm")
	return mountShm(p.ShmPath, p.Spec.UserNS)
}

// createNetNS makes the pod's network namespace, unless it uses the host's
// or has one already (with a user namespace, pinUserNS adopted the one its
// holder or pause was born in).
func (m *Manager) createNetNS(p *Pod) error {
	if p.Spec.HostNetwork || p.NetNS != "" {
		return nil
	}
	nsPath, err := m.net.Create(p.ID)
	if err != nil {
		return err
	}
	p.NetNS = nsPath
	return nil
}

// setupNetwork attaches the pod's network namespace (CNI) and records its
// IPs.
func (m *Manager) setupNetwork(ctx context.Context, p *Pod) error {
	spec := &p.Spec
	if spec.HostNetwork {
		return nil
	}
	ips, err := m.net.Setup(ctx, p.ID, p.NetNS, netns.PodNetwork{
		Name: spec.Metadata.Name, Namespace: spec.Metadata.Namespace, UID: spec.Metadata.UID,
		PortMappings: spec.PortMappings, CgroupParent: spec.CgroupParent,
	})
	if err != nil {
		return err
	}
	for _, ip := range ips {
		p.IPs = append(p.IPs, ip.String())
	}
	return nil
}

// createCgroup makes the pod's cgroup parent when it does not exist (kubelet
// makes it itself; crictl users need not). It records first the topmost
// cgroup it is about to make, so that removal and orphan collection delete
// exactly what the pod made.
func (m *Manager) createCgroup(p *Pod) error {
	parent := p.Spec.CgroupParent
	if parent == "" || m.cgroups == nil {
		return nil
	}
	top := ""
	for cg, ok := parent, true; ok; cg, ok = cgroupAncestor(m.cgroupDriver, cg) {
		_, err := m.cgroups.Pids(cg)
		if err == nil {
			break
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("pod cgroup: %w", err)
		}
		top = cg
	}
	if top == "" {
		return nil
	}
	p.CgroupCreated = top
	if err := m.save(p); err != nil {
		return err
	}
	if err := m.cgroups.Create(parent, nil); err != nil {
		return fmt.Errorf("create pod cgroup: %w", err)
	}
	return nil
}

// pauseCgroup is the cgroup of the pod's pause process, below the pod's.
func pauseCgroup(driver string, p *Pod) string {
	return cgroups.ChildPath(driver, p.Spec.CgroupParent, p.ID)
}

// cgroupAncestor returns the parent of cgroup cg in the driver's syntax, or
// false at the top: /a/b -> /a; a-b.slice -> a.slice (systemd nests slices
// by their dash-separated name).
func cgroupAncestor(driver, cg string) (string, bool) {
	if driver == "systemd" {
		name := strings.TrimSuffix(filepath.Base(cg), ".slice")
		i := strings.LastIndex(name, "-")
		if i <= 0 {
			return "", false
		}
		return name[:i] + ".slice", true
	}
	up := filepath.Dir(cg)
	if up == "/" || up == cg {
		return "", false
	}
	return up, true
}

func nsDir(podDir string) string { return filepath.Join(podDir, "ns") }

// release undoes everything create may have made for p; each step tolerates
// a piece that is missing, so it serves for rollback, removal and orphans.
func (m *Manager) release(ctx context.Context, p *Pod) error {
	dir := m.podDir(p.ID)
	var errs []error
	if err := killPause(p.ID); err != nil {
		errs = append(errs, err)
	}
	if err := m.net.Remove(ctx, p.ID); err != nil {
		errs = append(errs, err)
	}
	if err := nspin.Unpin(nsDir(dir), nspin.UTS, nspin.IPC); err != nil {
		errs = append(errs, err)
	}
	for _, pin := range []string{filepath.Join(nsDir(dir), "pid"), userNSPin(dir)} {
		if err := nspin.UnpinFile(pin); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmount(filepath.Join(dir, "shm")); err != nil {
		errs = append(errs, err)
	}
	if p.Spec.SharedPID && p.Spec.CgroupParent != "" && m.cgroups != nil {
		if err := m.cgroups.Destroy(pauseCgroup(m.cgroupDriver, p)); err != nil {
			errs = append(errs, fmt.Errorf("remove pause process cgroup: %w", err))
		}
	}
	if p.CgroupCreated != "" && m.cgroups != nil {
		if err := m.cgroups.Destroy(p.CgroupCreated); err != nil {
			errs = append(errs, fmt.Errorf("remove pod cgroup: %w", err))
		}
	}
	if len(errs) > 0 {
		// Keep the directory (and its state) so that a retry finds the rest.
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove pod dir: %w", err)
	}
	return nil
}

// lookup finds a pod by its id or a unique prefix of it.
func (m *Manager) lookup(id string) (*entry, error) {
	if id == "" {
		return nil, fmt.Errorf("pod sandbox id is empty: %w", errdefs.ErrInvalidArgument)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.pods[id]; ok {
		return e, nil
	}
	full, err := idprefix.Find(slices.Collect(maps.Keys(m.pods)), func(s string) string { return s }, id, "pod sandbox")
	if err != nil {
		return nil, err
	}
	return m.pods[full], nil
}

// Get returns the pod with id (or a unique prefix of it).
func (m *Manager) Get(id string) (*Pod, error) {
	e, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	p := e.snapshot.Load()
	if p == nil {
		return nil, fmt.Errorf("pod sandbox %q is still being created: %w", id, errdefs.ErrNotFound)
	}
	return current(p), nil
}

// current returns a copy of p as it is now: a ready pod whose pause process
// died (its shared pid namespace is gone with it) is not ready any more.
func current(p *Pod) *Pod {
	c := p.clone()
	if c.State == Ready && c.PausePID != 0 && !pauseAlive(c.PausePID, c.ID) {
		c.State = NotReady
	}
	return c
}

// List returns every pod that is ready or stopped, oldest first.
func (m *Manager) List() []*Pod {
	m.mu.Lock()
	entries := make([]*entry, 0, len(m.pods))
	for _, e := range m.pods {
		entries = append(entries, e)
	}
	m.mu.Unlock()
	pods := make([]*Pod, 0, len(entries))
	for _, e := range entries {
		if p := e.snapshot.Load(); p != nil {
			pods = append(pods, current(p))
		}
	}
	slices.SortFunc(pods, func(a, b *Pod) int { return cmp.Compare(a.CreatedAt, b.CreatedAt) })
	return pods
}

// Stop ends the pod's shared pid namespace (with every process in it),
// detaches the pod from its network and marks it not ready; its containers
// are the caller's to stop first. Its other namespaces stay until Remove.
// Stopping a stopped or unknown pod does nothing.
func (m *Manager) Stop(ctx context.Context, id string) error {
	e, err := m.lookup(id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil // the CRI asks for idempotent stop: gone is stopped
	}
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return m.stopLocked(ctx, e)
}

func (m *Manager) stopLocked(ctx context.Context, e *entry) error {
	p := e.pod
	if p.Spec.SharedPID {
		if err := killPause(p.ID); err != nil {
			return fmt.Errorf("stop pod sandbox %s: %w", p.ID, err)
		}
	}
	if !p.Spec.HostNetwork {
		if err := m.net.Teardown(ctx, p.ID); err != nil {
			return fmt.Errorf("stop pod sandbox %s: %w", p.ID, err)
		}
	}
	if p.State == NotReady {
		return nil
	}
	p.State = NotReady
	if err := m.save(p); err != nil {
		return err
	}
	e.publish()
	klog.V(1).InfoS("Pod sandbox stopped", "pod", p.ID)
	return nil
}

// Remove stops the pod if needed and deletes everything of it; its
// containers are the caller's to remove first. Removing an unknown pod is
// not an error (the CRI asks for idempotent removal).
func (m *Manager) Remove(ctx context.Context, id string) error {
	e, err := m.lookup(id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pod
	if p.State == Creating {
		return fmt.Errorf("pod sandbox %s is still being created: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	if err := m.stopLocked(ctx, e); err != nil {
		return err
	}
	if err := m.release(ctx, p); err != nil {
		return fmt.Errorf("remove pod sandbox %s: %w", p.ID, err)
	}
	m.mu.Lock()
	delete(m.pods, p.ID)
	m.mu.Unlock()
	klog.V(1).InfoS("Pod sandbox removed", "pod", p.ID)
	return nil
}

// UpdateResources applies res to the pod's cgroup parent (a pod-level
// resize) and records what is then in force in the pod's spec. Fields
// unset in res keep their value; a write the kernel refuses half way
// restores what was in force before.
func (m *Manager) UpdateResources(id string, res *specs.LinuxResources) error {
	e, err := m.lookup(id)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pod
	switch {
	case p.State != Ready:
		return fmt.Errorf("pod sandbox %s is %s: only a ready pod can be resized: %w", p.ID, p.State, errdefs.ErrFailedPrecondition)
	case p.Spec.CgroupParent == "" || m.cgroups == nil:
		return fmt.Errorf("pod sandbox %s has no cgroup parent to resize: %w", p.ID, errdefs.ErrFailedPrecondition)
	}
	old := p.Spec.Resources
	merged := cgroups.Merge(old, res)
	write := *res
	write.Memory = merged.Memory // v2's swap.max depends on the limit
	restore := func() {
		if old == nil {
			return
		}
		if err := m.cgroups.Update(p.Spec.CgroupParent, old); err != nil {
			klog.ErrorS(err, "Restore pod resources after a failed update", "pod", p.ID)
		}
	}
	if err := m.cgroups.Update(p.Spec.CgroupParent, &write); err != nil {
		restore()
		return fmt.Errorf("pod sandbox %s: update resources: %w", p.ID, err)
	}
	p.Spec.Resources = merged
	if err := m.save(p); err != nil {
		p.Spec.Resources = old
		restore()
		return err
	}
	e.publish()
	klog.V(2).InfoS("Pod resources updated", "pod", p.ID)
	return nil
}
