package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/randid"
	"github.com/cri-mini/cri-mini/internal/roottest"
	"github.com/cri-mini/cri-mini/netns"
)

const cniPlugins = "/usr/lib/cni"

type env struct {
	runRoot string
	netCfg  netns.Config
}

// newEnv gives a test its own run root and default CNI network (bridge,
// subnet and IPAM dir), removed afterwards.
func newEnv(t testing.TB, n int) env {
	t.Helper()
	roottest.Require(t)
	if _, err := os.Stat(filepath.Join(cniPlugins, "bridge")); err != nil {
		t.Skipf("CNI plugins missing (apt-get install containernetworking-plugins): %v", err)
	}
	id := fmt.Sprintf("%d%d", n, os.Getpid()%10000)
	runRoot := t.TempDir()
	e := env{
		runRoot: runRoot,
		netCfg: netns.Config{
			ConfDir:    filepath.Join(t.TempDir(), "net.d"),
			PluginDirs: []string{cniPlugins},
			RunRoot:    runRoot,
			Default: netns.DefaultNetwork{
				Name:        "crisb-" + id,
				Bridge:      "crisb" + id,
				Subnet:      fmt.Sprintf("10.%d.%d.0/24", 180+n, os.Getpid()%250),
				IPAMDataDir: t.TempDir(),
			},
		},
	}
	t.Cleanup(func() {
		if err := netns.DeleteBridge(e.netCfg.Default.Bridge); err != nil {
			t.Errorf("delete bridge: %v", err)
		}
		assertNoMountsUnder(t, runRoot)
	})
	return e
}

func (e env) manager(t testing.TB) *Manager {
	t.Helper()
	nm, err := netns.New(e.netCfg)
	if err != nil {
		t.Fatal(err)
	}
	cg, err := cgroups.New("cgroupfs")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(context.Background(), Config{RunRoot: e.runRoot, Network: nm, CgroupDriver: "cgroupfs", Cgroups: cg})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func assertNoMountsUnder(t testing.TB, dir string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			t.Errorf("mount left behind: %s", line)
		}
	}
}

func spec(name string) Spec {
	return Spec{
		Metadata: Metadata{Name: name, Namespace: "default", UID: "uid-" + name},
		Labels:   map[string]string{"app": name},
	}
}

// readInNS reads a file from a thread inside the namespace pinned at ns.
func readInNS(t *testing.T, ns string, kind nspin.Kind, path string) string {
	t.Helper()
	var data []byte
	if err := nspin.Run(ns, kind, func() (err error) {
		data, err = os.ReadFile(path)
		return err
	}); err != nil {
		t.Fatalf("read %s in %s: %v", path, ns, err)
	}
	return strings.TrimSpace(string(data))
}

func mountFSType(t *testing.T, path string) (fstype, opts string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[4] == path {
			i := 6
			for f[i] != "-" {
				i++
			}
			fstype, opts = f[i+1], f[5]+","+f[i+3]
		}
	}
	return fstype, opts
}

func TestPodWithNetwork(t *testing.T) {
	e := newEnv(t, 1)
	m := e.manager(t)
	ctx := context.Background()
	s := spec("web")
	s.Hostname = "web-0"
	s.DNS = &DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5", "timeout:2"}}
	s.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shmmni": "1234"}
	s.CgroupParent = "/kubepods/besteffort/poduid-web"
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, p.ID) })

	if p.State != Ready || len(p.IPs) != 1 || !strings.HasPrefix(p.IPs[0], "10.181.") {
		t.Fatalf("pod %+v: want ready with one IP in the test subnet", p)
	}
	for _, ns := range []string{p.NetNS, p.UTSNS, p.IPCNS} {
		if ok, err := nspin.IsPinned(ns); !ok {
			t.Errorf("namespace %q not pinned: %v", ns, err)
		}
	}
	if got := readInNS(t, p.UTSNS, nspin.UTS, "/proc/sys/kernel/hostname"); got != "web-0" {
		t.Errorf("hostname in the pod's uts namespace %q", got)
	}
	if host, _ := os.Hostname(); host == "web-0" {
		t.Error("the host's hostname changed")
	}
	if got := readInNS(t, p.NetNS, nspin.Net, "/proc/sys/net/ipv4/ip_unprivileged_port_start"); got != "80" {
		t.Errorf("net sysctl in the pod: %q", got)
	}
	if got := readInNS(t, p.IPCNS, nspin.IPC, "/proc/sys/kernel/shmmni"); got != "1234" {
		t.Errorf("ipc sysctl in the pod: %q", got)
	}
	if host, _ := os.ReadFile("/proc/sys/kernel/shmmni"); strings.TrimSpace(string(host)) == "1234" {
		t.Error("the ipc sysctl reached the host")
	}
	resolv, _ := os.ReadFile(p.ResolvPath)
	want := "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5 timeout:2\n"
	if string(resolv) != want {
		t.Errorf("resolv.conf %q, want %q", resolv, want)
	}
	hosts, _ := os.ReadFile(p.HostsPath)
	if !strings.Contains(string(hosts), "127.0.0.1\tlocalhost web-0\n") || !strings.Contains(string(hosts), p.IPs[0]+"\tweb-0\n") {
		t.Errorf("hosts file %q", hosts)
	}
	if h, _ := os.ReadFile(p.HostnamePath); string(h) != "web-0\n" {
		t.Errorf("hostname file %q", h)
	}
	if fstype, opts := mountFSType(t, p.ShmPath); fstype != "tmpfs" || !strings.Contains(opts, "size=65536k") ||
		!strings.Contains(opts, "nosuid") || !strings.Contains(opts, "noexec") || !strings.Contains(opts, "nodev") {
		t.Errorf("pod shm at %s: %s %s", p.ShmPath, fstype, opts)
	}

	// Stop detaches the network and is idempotent; namespaces stay.
	for range 2 {
		if err := m.Stop(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.Get(p.ID[:12])
	if err != nil || got.State != NotReady {
		t.Fatalf("after stop (by id prefix): %+v, %v", got, err)
	}
	if ok, _ := nspin.IsPinned(p.NetNS); !ok {
		t.Error("stop unpinned the network namespace")
	}
	for range 2 {
		if err := m.Remove(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Get(p.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.runRoot, "pods", p.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod dir left: %v", err)
	}
	if pods, _ := e.manager(t).net.Pods(); len(pods) != 0 {
		t.Errorf("network state left for %v", pods)
	}
}

func TestHostNetworkPod(t *testing.T) {
	e := newEnv(t, 2)
	m := e.manager(t)
	ctx := context.Background()
	s := spec("node-agent")
	s.HostNetwork = true
	s.HostIPC = true
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, p.ID) })
	host, _ := os.Hostname()
	if p.NetNS != "" || p.UTSNS != "" || p.IPCNS != "" || len(p.IPs) != 0 || p.ShmPath != "/dev/shm" || p.Hostname != host {
		t.Errorf("host-network, host-IPC pod: %+v", p)
	}
	if pods, _ := m.net.Pods(); len(pods) != 0 {
		t.Errorf("a host-network pod touched CNI: %v", pods)
	}
	resolv, _ := os.ReadFile(p.ResolvPath)
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	if string(resolv) != string(hostResolv) {
		t.Errorf("resolv.conf %q, want the host's %q", resolv, hostResolv)
	}
	if err := m.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Errorf("removing a host-IPC pod touched /dev/shm: %v", err)
	}
}

func TestRestartAnswersAsBefore(t *testing.T) {
	e := newEnv(t, 3)
	m := e.manager(t)
	ctx := context.Background()
	a, err := m.Run(ctx, spec("a"))
	if err != nil {
		t.Fatal(err)
	}
	hn := spec("b")
	hn.HostNetwork = true
	b, err := m.Run(ctx, hn)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	before := m.List()

	// A second manager on the same run root is the daemon after kill -9.
	m2 := e.manager(t)
	after := m2.List()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("after restart\n got  %+v\n want %+v", after, before)
	}
	if _, err := m2.Run(ctx, spec("a")); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("duplicate after restart: %v", err)
	}
	for _, id := range []string{a.ID, b.ID} {
		if err := m2.Remove(ctx, id); err != nil {
			t.Error(err)
		}
	}
	if n := len(e.manager(t).List()); n != 0 {
		t.Errorf("%d pods after removal and restart", n)
	}
}

func TestOrphansCollectedAtStart(t *testing.T) {
	e := newEnv(t, 4)
	m := e.manager(t)

	// A pod a crash caught half way: recorded as creating, namespaces
	// pinned, shm mounted, a network namespace made.
	id := randid.New()
	p := &Pod{ID: id, State: Creating, Spec: spec("half")}
	dir := m.podDir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.save(p); err != nil {
		t.Fatal(err)
	}
	if _, err := nspin.Pin(nsDir(dir), []nspin.Kind{nspin.UTS, nspin.IPC}, nil); err != nil {
		t.Fatal(err)
	}
	if err := mountShm(filepath.Join(dir, "shm"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.net.Create(id); err != nil {
		t.Fatal(err)
	}
	// A network namespace whose pod is gone altogether.
	stray := randid.New()
	if _, err := m.net.Create(stray); err != nil {
		t.Fatal(err)
	}

	m2 := e.manager(t)
	if n := len(m2.List()); n != 0 {
		t.Errorf("%d pods listed, want the orphan collected", n)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan dir still there: %v", err)
	}
	if pods, _ := m2.net.Pods(); len(pods) != 0 {
		t.Errorf("orphan network namespaces left: %v", pods)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, 5)
	m := e.manager(t)
	ctx := context.Background()
	cases := map[string]struct {
		mod  func(*Spec)
		kind error
	}{
		"no name":           {func(s *Spec) { s.Metadata.Name = "" }, errdefs.ErrInvalidArgument},
		"no uid, namespace": {func(s *Spec) { s.Metadata.UID, s.Metadata.Namespace = "", "" }, errdefs.ErrInvalidArgument},
		"bad hostname":      {func(s *Spec) { s.Hostname = "under_score" }, errdefs.ErrInvalidArgument},
		"host sysctl":       {func(s *Spec) { s.Sysctls = map[string]string{"kernel.pid_max": "1000"} }, errdefs.ErrInvalidArgument},
		"dotdot sysctl":     {func(s *Spec) { s.Sysctls = map[string]string{"net/../kernel/pid_max": "1"} }, errdefs.ErrInvalidArgument},
		"net sysctl, hostnet": {func(s *Spec) {
			s.HostNetwork = true
			s.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"}
		}, errdefs.ErrInvalidArgument},
		"bad dns server":      {func(s *Spec) { s.DNS = &DNSConfig{Servers: []string{"dns.example"}} }, errdefs.ErrInvalidArgument},
		"relative cgroup":     {func(s *Spec) { s.CgroupParent = "kubepods/x" }, errdefs.ErrInvalidArgument},
		"host and shared pid": {func(s *Spec) { s.SharedPID, s.HostPID = true, true }, errdefs.ErrInvalidArgument},
		"group without user":  {func(s *Spec) { s.RunAsGroup = new(int64(5)) }, errdefs.ErrInvalidArgument},
		"negative user":       {func(s *Spec) { s.RunAsUser = new(int64(-1)) }, errdefs.ErrInvalidArgument},
		"user -1 as uint32":   {func(s *Spec) { s.RunAsUser = new(int64(1<<32 - 1)) }, errdefs.ErrInvalidArgument},
		"group past uint32": {func(s *Spec) {
			s.RunAsUser, s.RunAsGroup = new(int64(0)), new(int64(1<<32))
		}, errdefs.ErrInvalidArgument},
	}
	for name, tc := range cases {
		s := spec("bad")
		tc.mod(&s)
		if _, err := m.Run(ctx, s); !errors.Is(err, tc.kind) {
			t.Errorf("%s: got %v, want %v", name, err, tc.kind)
		}
	}

	// A failure after side effects (a namespaced sysctl the kernel lacks)
	// rolls everything back.
	s := spec("rollback")
	s.Sysctls = map[string]string{"net.ipv4.no_such_knob": "1"}
	if _, err := m.Run(ctx, s); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("missing sysctl: %v", err)
	}
	if entries, _ := os.ReadDir(m.dir); len(entries) != 0 {
		t.Errorf("failed pod left %v", entries)
	}
	if pods, _ := m.net.Pods(); len(pods) != 0 {
		t.Errorf("failed pod left network state %v", pods)
	}

	if _, err := m.Get("0123456789"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get unknown: %v", err)
	}
	if err := m.Stop(ctx, "0123456789"); err != nil {
		t.Errorf("Stop unknown: %v, want nil (idempotent)", err)
	}
	if err := m.Remove(ctx, "0123456789"); err != nil {
		t.Errorf("Remove unknown: %v, want nil (idempotent)", err)
	}
	if _, err := m.Get(""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Get empty id: %v", err)
	}

	ok, err := m.Run(ctx, spec("dup"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Remove(ctx, ok.ID)
	if _, err := m.Run(ctx, spec("dup")); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("duplicate: %v", err)
	}
	next := spec("dup")
	next.Metadata.Attempt = 1
	p, err := m.Run(ctx, next)
	if err != nil {
		t.Errorf("next attempt refused: %v", err)
	} else {
		_ = m.Remove(ctx, p.ID)
	}
}

func TestConcurrentPods(t *testing.T) {
	e := newEnv(t, 8)
	m := e.manager(t)
	ctx := context.Background()
	done := make(chan struct{})
	listed := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-done:
				listed <- n
				return
			default:
				for _, p := range m.List() {
					if p.State == Creating {
						t.Errorf("List showed pod %s half created", p.ID)
					}
				}
				n++
			}
		}
	}()
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			s := spec(fmt.Sprintf("conc-%d", i))
			s.HostNetwork = i%2 == 0
			p, err := m.Run(ctx, s)
			if err == nil {
				_, err = m.Get(p.ID)
			}
			if err == nil {
				err = m.Stop(ctx, p.ID)
			}
			if err == nil {
				err = m.Remove(ctx, p.ID)
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(done)
	if n := <-listed; n == 0 {
		t.Error("List never ran during the test")
	}
	if pods := m.List(); len(pods) != 0 {
		t.Errorf("%d pods left", len(pods))
	}
}

func TestPodCgroupParent(t *testing.T) {
	e := newEnv(t, 9)
	m := e.manager(t)
	ctx := context.Background()
	top := fmt.Sprintf("/cri-mini-sbtest-%d", os.Getpid())
	// The pids hierarchy on v1, the one tree on v2.
	pidsDir := "/sys/fs/cgroup/pids"
	if _, err := os.Stat(pidsDir); err != nil {
		pidsDir = "/sys/fs/cgroup"
	}

	s := spec("cg")
	s.HostNetwork, s.SharedPID = true, true
	s.CgroupParent = top + "/besteffort/pod-cg"
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, p.ID) })
	if p.CgroupCreated != top {
		t.Errorf("pod records %q as made, want %q", p.CgroupCreated, top)
	}
	// The pause process has a cgroup of its own below the pod's.
	procs, err := os.ReadFile(filepath.Join(pidsDir, s.CgroupParent, p.ID, "cgroup.procs"))
	if err != nil || strings.TrimSpace(string(procs)) != fmt.Sprint(p.PausePID) {
		t.Errorf("pause %d not in its cgroup below the pod's: %q %v", p.PausePID, procs, err)
	}
	// A second pod in an existing parent does not own it.
	s2 := spec("cg2")
	s2.HostNetwork = true
	s2.CgroupParent = top + "/besteffort"
	p2, err := m.Run(ctx, s2)
	if err != nil {
		t.Fatal(err)
	}
	if p2.CgroupCreated != "" {
		t.Errorf("pod in an existing cgroup claims %q", p2.CgroupCreated)
	}
	if err := m.Remove(ctx, p2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pidsDir, s2.CgroupParent)); err != nil {
		t.Errorf("removing a pod deleted a cgroup it did not make: %v", err)
	}
	if err := m.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pidsDir, top)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod cgroup left: %v", err)
	}
}

// TestSharedPIDPodInKubeletCgroup: kubelet makes a pod's cgroup in the v1
// hierarchies it manages, not in devices; the pause process of a shared
// pid namespace still joins it there too, and the pod does not claim what
// kubelet made.
func TestSharedPIDPodInKubeletCgroup(t *testing.T) {
	e := newEnv(t, 16)
	m := e.manager(t)
	ctx := context.Background()
	devices := "/sys/fs/cgroup/devices"
	if _, err := os.Stat(filepath.Join(devices, "devices.list")); err != nil {
		t.Skipf("test needs the v1 devices hierarchy: %v", err)
	}
	top := fmt.Sprintf("/cri-mini-sbtest-kubelet-%d", os.Getpid())
	parent := top + "/besteffort/pod-shared"
	// As kubelet: every hierarchy but devices (and the v2 one of a hybrid
	// host), cpusets filled in from above.
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	var made []string
	t.Cleanup(func() {
		for _, h := range append(hierarchies, devices) {
			for _, d := range []string{parent, top + "/besteffort", top} {
				_ = os.Remove(filepath.Join(h, d))
			}
		}
	})
	for _, h := range hierarchies {
		if h == devices || strings.HasSuffix(h, "/unified") {
			continue
		}
		for _, d := range []string{top, top + "/besteffort", parent} {
			dir := filepath.Join(h, d)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f)); err == nil {
					if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		made = append(made, h)
	}
	s := spec("shared-pid")
	s.HostNetwork, s.SharedPID = true, true
	s.CgroupParent = parent
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatalf("shared-pid pod in a cgroup kubelet made: %v", err)
	}
	if p.CgroupCreated != "" {
		t.Errorf("the pod claims %q, which kubelet made", p.CgroupCreated)
	}
	for _, h := range append(made, devices) {
		procs, err := os.ReadFile(filepath.Join(h, parent, p.ID, "cgroup.procs"))
		if err != nil || strings.TrimSpace(string(procs)) != fmt.Sprint(p.PausePID) {
			t.Errorf("pause %d not in its cgroup below the pod's in %s: %q %v", p.PausePID, h, procs, err)
		}
	}
	if err := m.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(made[0], parent)); err != nil {
		t.Errorf("removing the pod deleted kubelet's cgroup: %v", err)
	}
}

func TestCgroupAncestor(t *testing.T) {
	for _, tc := range []struct{ driver, in, want string }{
		{"cgroupfs", "/kubepods/besteffort/pod1", "/kubepods/besteffort"},
		{"cgroupfs", "/kubepods", ""},
		{"systemd", "kubepods-besteffort-pod1.slice", "kubepods-besteffort.slice"},
		{"systemd", "kubepods.slice", ""},
	} {
		got, ok := cgroupAncestor(tc.driver, tc.in)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s %s: %q %v, want %q", tc.driver, tc.in, got, ok, tc.want)
		}
	}
}

func TestPodWithoutHostnameKeepsTheNodes(t *testing.T) {
	e := newEnv(t, 11)
	m := e.manager(t)
	ctx := context.Background()
	// critest names its pods like this: too long for a hostname, and no
	// hostname given.
	s := spec("create-PodSandbox-for-container-625acb48-fe26-4558-9081-2feb5053af42")
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Remove(ctx, p.ID)
	node, _ := os.Hostname()
	if got := readInNS(t, p.UTSNS, nspin.UTS, "/proc/sys/kernel/hostname"); p.Hostname != node || got != node {
		t.Errorf("pod hostname %q (in its namespace %q), want the node's %q", p.Hostname, got, node)
	}
}

// TestPodResources: a pod's resources reach its cgroup parent at start;
// UpdateResources changes them there and in the record a restarted
// manager reads; an update the kernel refuses half way is undone; a pod
// without a cgroup parent has nothing to resize.
func TestPodResources(t *testing.T) {
	e := newEnv(t, 10)
	m := e.manager(t)
	ctx := context.Background()
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	s := spec("res")
	s.HostNetwork = true
	s.CgroupParent = fmt.Sprintf("/cri-mini-sbtest-res-%d/pod-res", os.Getpid())
	s.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20)}, CPU: &specs.LinuxCPU{Shares: u64(512)}}
	p, err := m.Run(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, p.ID) })
	inForce := func() (uint64, uint64) {
		t.Helper()
		st, err := m.cgroups.Stats(s.CgroupParent)
		if err != nil {
			t.Fatal(err)
		}
		return st.Memory.Limit, st.CPU.Shares
	}
	// What the cgroup shows for 512 shares: v2 keeps a weight, read back
	// as shares with the conversion's rounding.
	want := uint64(512)
	if m.cgroups.Version() == 2 {
		want = cgroups.WeightToShares(cgroups.SharesToWeight(want))
	}
	if mem, shares := inForce(); mem != 64<<20 || shares != want {
		t.Errorf("pod cgroup at start: memory %d shares %d, want 64 MiB and 512", mem, shares)
	}

	if err := m.UpdateResources(p.ID, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(128 << 20)}}); err != nil {
		t.Fatal(err)
	}
	if mem, shares := inForce(); mem != 128<<20 || shares != want {
		t.Errorf("pod cgroup after the update: memory %d shares %d, want 128 MiB and 512", mem, shares)
	}
	restarted := e.manager(t)
	if got, err := restarted.Get(p.ID); err != nil || *got.Spec.Resources.Memory.Limit != 128<<20 || *got.Spec.Resources.CPU.Shares != 512 {
		t.Errorf("resources a restarted manager reads: %+v, %v", got.Spec.Resources, err)
	}

	err = m.UpdateResources(p.ID, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(2048), Cpus: "4095"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("update with a cpuset the machine lacks: %v, want InvalidArgument", err)
	}
	if mem, shares := inForce(); mem != 128<<20 || shares != want {
		t.Errorf("pod cgroup after the refused update: memory %d shares %d, want it as before", mem, shares)
	}
	if got, _ := m.Get(p.ID); *got.Spec.Resources.CPU.Shares != 512 || got.Spec.Resources.CPU.Cpus != "" {
		t.Errorf("recorded after the refused update: %+v", got.Spec.Resources.CPU)
	}

	bare := spec("bare")
	bare.HostNetwork = true
	q, err := m.Run(ctx, bare)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, q.ID) })
	if err := m.UpdateResources(q.ID, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(128 << 20)}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("resize of a pod without a cgroup parent: %v, want FailedPrecondition", err)
	}
}
