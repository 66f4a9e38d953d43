package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/mountinfo"
	"github.com/cri-mini/cri-mini/internal/nettest"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/internal/roottest"
)

const debianPlugins = "/usr/lib/cni"

func requireNetworking(t testing.TB) {
	t.Helper()
	roottest.Require(t)
	if _, err := os.Stat(filepath.Join(debianPlugins, "bridge")); err != nil {
		t.Skipf("CNI plugins not installed (apt-get install containernetworking-plugins): %v", err)
	}
}

// testNet is a default network of its own for one test: a bridge, subnet,
// IPAM data dir and run root nobody else uses.
type testNet struct {
	cfg    Config
	ipam   string // host-local's directory for this network
	subnet netip.Prefix
}

func newTestNet(t testing.TB, tag string, n int) testNet {
	t.Helper()
	// The process id keeps parallel runs of the suite apart, tag and n the
	// tests of one run.
	id := fmt.Sprintf("%s%d", tag, os.Getpid()%100000)
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 200+n, os.Getpid()%250))
	dataDir := t.TempDir()
	tn := testNet{
		cfg: Config{
			ConfDir:    filepath.Join(t.TempDir(), "net.d"),
			PluginDirs: []string{debianPlugins},
			RunRoot:    t.TempDir(),
			Default: DefaultNetwork{
				Name:        "crimt-" + id,
				Bridge:      "crimt" + id,
				Subnet:      subnet.String(),
				IPAMDataDir: dataDir,
			},
		},
		ipam:   filepath.Join(dataDir, "crimt-"+id),
		subnet: subnet,
	}
	t.Cleanup(func() {
		if err := DeleteBridge(tn.cfg.Default.Bridge); err != nil {
			t.Errorf("clean up bridge: %v", err)
		}
	})
	return tn
}

// managerWithConf writes a config file for the test network (bridge with
// host-local, masquerade if asked, then plugin) and returns a Manager that
// reads it plus a pod whose netns is created and removed with the test.
func (tn testNet) managerWithConf(t *testing.T, ipMasq bool, plugin string) (*Manager, string, string) {
	t.Helper()
	def := tn.cfg.Default
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[
		{"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":%t,
		 "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}},
		%s]}`, def.Name, def.Bridge, ipMasq, def.Subnet, def.IPAMDataDir, plugin)
	if err := os.MkdirAll(tn.cfg.ConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tn.cfg.ConfDir, "10-test.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, tn.cfg)
	pod := "pod" + def.Bridge
	path, err := m.Create(pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(context.Background(), pod) })
	return m, pod, path
}

func newManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func freePort(t *testing.T) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

func iptablesSave(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	return string(out)
}

// podChains returns the iptables chains that hold rules about podID and
// the chains those rules jump to (portmap's per-pod CNI-DN-<hash> chain
// itself never names the pod).
func podChains(dump, podID string) []string {
	var chains []string
	for line := range strings.SplitSeq(dump, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || !strings.Contains(line, podID) {
			continue
		}
		chains = append(chains, f[1])
		if i := slices.Index(f, "-j"); i >= 0 && i+1 < len(f) {
			chains = append(chains, f[i+1])
		}
	}
	return chains
}

func bridgePorts(t *testing.T, bridge string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("/sys/class/net", bridge, "brif"))
	if err != nil {
		t.Fatalf("ports of %s: %v", bridge, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestTwoPodsOnDefaultBridge(t *testing.T) {
	requireNetworking(t)
	tn := newTestNet(t, "a", 1)
	m := newManager(t, tn.cfg)
	ctx := context.Background()
	if err := m.Status(ctx); err != nil {
		t.Fatalf("Status with the built-in network: %v", err)
	}

	pods := []string{"poda" + tn.cfg.Default.Bridge, "podb" + tn.cfg.Default.Bridge}
	paths := map[string]string{}
	ips := map[string]netip.Addr{}
	hostPort := freePort(t)
	for i, pod := range pods {
		path, err := m.Create(pod)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Remove(ctx, pod) })
		paths[pod] = path
		pn := PodNetwork{Name: fmt.Sprintf("pod-%d", i), Namespace: "default", UID: fmt.Sprintf("uid-%d", i)}
		if i == 0 {
			pn.PortMappings = []PortMapping{{HostPort: hostPort, ContainerPort: 8080, Protocol: "TCP"}}
		}
		got, err := m.Setup(ctx, pod, path, pn)
		if err != nil {
			t.Fatalf("Setup %s: %v", pod, err)
		}
		if len(got) != 1 || !got[0].Is4() || !tn.subnet.Contains(got[0]) {
			t.Fatalf("Setup %s gave %v, want one address in %s", pod, got, tn.subnet)
		}
		ips[pod] = got[0]
		nettest.Serve(t, path, ":8080", "hello from "+pod)
	}
	if _, err := m.Setup(ctx, pods[0], paths[pods[0]], PodNetwork{}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second Setup: %v, want ErrAlreadyExists", err)
	}

	// Each pod reaches the other by IP, and its own loopback.
	for i, from := range pods {
		to := pods[1-i]
		got, err := nettest.Dial(paths[from], netip.AddrPortFrom(ips[to], 8080).String())
		if err != nil || got != "hello from "+to {
			t.Errorf("%s -> %s: %q, %v", from, to, got, err)
		}
		if got, err := nettest.Dial(paths[from], "127.0.0.1:8080"); err != nil || got != "hello from "+from {
			t.Errorf("%s -> its loopback: %q, %v", from, got, err)
		}
	}

	// The hostPort of the first pod answers on the host: on the bridge's
	// gateway address and on 127.0.0.1 (portmap routes localnet for that).
	gateway := tn.subnet.Addr().Next()
	for _, host := range []string{gateway.String(), "127.0.0.1"} {
		addr := net.JoinHostPort(host, fmt.Sprint(hostPort))
		if got, err := nettest.Dial("", addr); err != nil || got != "hello from "+pods[0] {
			t.Errorf("hostPort via %s: %q, %v", addr, got, err)
		}
	}

	ports := bridgePorts(t, tn.cfg.Default.Bridge)
	if len(ports) != 2 {
		t.Errorf("bridge ports %v, want 2 veths", ports)
	}
	var chains []string
	dump := iptablesSave(t)
	for _, pod := range pods {
		chains = append(chains, podChains(dump, pod)...)
	}
	if !slices.ContainsFunc(chains, func(c string) bool { return strings.HasPrefix(c, "CNI-DN-") }) {
		t.Errorf("no hostPort DNAT chain for the pods:\n%s", dump)
	}

	// Teardown from a fresh Manager, as after a daemon restart, and twice;
	// meanwhile another network was configured, which must not matter: DEL
	// runs with the configuration the pods were attached with.
	if err := os.MkdirAll(tn.cfg.ConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	other := `{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ptp","ipam":{"type":"host-local","subnet":"10.254.254.0/24"}}]}`
	if err := os.WriteFile(filepath.Join(tn.cfg.ConfDir, "00-other.conflist"), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	restarted := newManager(t, tn.cfg)
	for _, pod := range pods {
		for range 2 {
			if err := restarted.Teardown(ctx, pod); err != nil {
				t.Errorf("Teardown %s: %v", pod, err)
			}
		}
		for range 2 {
			if err := restarted.Remove(ctx, pod); err != nil {
				t.Errorf("Remove %s: %v", pod, err)
			}
		}
	}

	for _, p := range ports {
		if _, err := os.Lstat(filepath.Join("/sys/class/net", p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("veth %s left behind (%v)", p, err)
		}
	}
	entries, err := os.ReadDir(tn.ipam)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(tn.ipam, e.Name()))
		for _, pod := range pods {
			if e.Name() == ips[pod].String() || strings.Contains(string(data), pod) {
				t.Errorf("IP allocation %s (%q) left for %s", e.Name(), data, pod)
			}
		}
	}
	after := iptablesSave(t)
	for _, pod := range pods {
		if c := podChains(after, pod); len(c) > 0 {
			t.Errorf("iptables rules of %s left in chains %v", pod, c)
		}
	}
	for _, c := range chains {
		// CNI-<hash> (masquerade) and CNI-DN-<hash> (hostPort DNAT) belong to
		// one pod; built-in chains and portmap's CNI-HOSTPORT-* are shared.
		perPod := strings.HasPrefix(c, "CNI-") && !strings.HasPrefix(c, "CNI-HOSTPORT-")
		if perPod && strings.Contains(after, c+" ") {
			t.Errorf("iptables chain %s left behind", c)
		}
	}
	for _, pod := range pods {
		mounted, err := mountinfo.MountedAt(paths[pod])
		if err != nil || mounted {
			t.Errorf("pin %s still mounted (%v)", paths[pod], err)
		}
		if _, err := os.Lstat(filepath.Dir(paths[pod])); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns dir of %s left (%v)", pod, err)
		}
	}
	if left, err := m.Pods(); err != nil || len(left) != 0 {
		t.Errorf("Pods() after removal = %v, %v", left, err)
	}
}

// A plugin failing half way through ADD leaves no trace: the plugins that
// ran are deleted again.
func TestSetupRollsBack(t *testing.T) {
	requireNetworking(t)
	tn := newTestNet(t, "rb", 2)
	def := tn.cfg.Default
	m, pod, path := tn.managerWithConf(t, true, `{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.no_such_knob":"1"}}`)
	ctx := context.Background()
	if _, err := m.Setup(ctx, pod, path, PodNetwork{Name: "p", Namespace: "ns", UID: "u"}); err == nil {
		t.Fatal("Setup with a failing tuning plugin succeeded")
	}
	if ports := bridgePorts(t, def.Bridge); len(ports) != 0 {
		t.Errorf("veths left on the bridge after a failed Setup: %v", ports)
	}
	if entries, _ := os.ReadDir(tn.ipam); len(entries) > 2 { // the lock and last_reserved_ip files
		t.Errorf("host-local allocations left: %v", entries)
	}
	if c := podChains(iptablesSave(t), pod); len(c) > 0 {
		t.Errorf("iptables rules left in %v", c)
	}
	if ids, _ := m.Pods(); len(ids) != 1 || ids[0] != pod {
		t.Errorf("Pods() = %v, want only the pinned %s (no attachment record)", ids, pod)
	}
}

func TestStatus(t *testing.T) {
	requireNetworking(t)
	ctx := context.Background()
	base := Config{RunRoot: t.TempDir(), ConfDir: t.TempDir(), PluginDirs: []string{debianPlugins}}

	if err := newManager(t, base).Status(ctx); err != nil {
		t.Errorf("empty config dir, Debian plugins: %v", err)
	}

	empty := base
	empty.PluginDirs = []string{t.TempDir()}
	err := newManager(t, empty).Status(ctx)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "bridge") {
		t.Errorf("no plugins: %v, want FailedPrecondition naming bridge", err)
	}

	broken := base
	brokenDir := t.TempDir()
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if err := os.WriteFile(filepath.Join(brokenDir, p), []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	broken.PluginDirs = []string{brokenDir}
	if err := newManager(t, broken).Status(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("plugins that fail VERSION: %v, want FailedPrecondition", err)
	}

	bad := base
	bad.ConfDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(bad.ConfDir, "05-bad.conf"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := newManager(t, bad).Status(ctx); err == nil || !strings.Contains(err.Error(), "05-bad.conf") {
		t.Errorf("unparsable config: %v, want an error naming the file", err)
	}
}

func TestFirstConfigWins(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"20-second.conflist": `{"cniVersion":"1.0.0","name":"second","plugins":[{"type":"bridge"}]}`,
		"10-first.conf":      `{"cniVersion":"1.0.0","name":"first","type":"ptp"}`,
		"00-ignored.txt":     `not a config`,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := newManager(t, Config{RunRoot: t.TempDir(), ConfDir: dir})
	list, err := m.network()
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "first" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "ptp" {
		t.Errorf("loaded %s with %d plugins, want the single-plugin 10-first.conf", list.Name, len(list.Plugins))
	}
}

func TestDefaultNetworkAndPodCIDR(t *testing.T) {
	m := newManager(t, Config{RunRoot: t.TempDir(), ConfDir: filepath.Join(t.TempDir(), "missing")})
	list, err := m.network()
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	if got := strings.Join(types, ","); got != "bridge,portmap" || list.Name != "cri-mini" {
		t.Errorf("default network %s = %s", list.Name, got)
	}
	if !strings.Contains(string(list.Bytes), `"10.88.0.0/16"`) || !strings.Contains(string(list.Bytes), `"cri-mini0"`) {
		t.Errorf("default network config: %s", list.Bytes)
	}

	if err := m.SetPodCIDR("not-a-cidr"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("SetPodCIDR(bad): %v", err)
	}
	if err := m.SetPodCIDR("fd10:88::/64"); err != nil {
		t.Fatal(err)
	}
	list, _ = m.network()
	if !strings.Contains(string(list.Bytes), `"fd10:88::/64"`) || !strings.Contains(string(list.Bytes), `"::/0"`) {
		t.Errorf("after SetPodCIDR: %s", list.Bytes)
	}
	if _, err := New(Config{RunRoot: t.TempDir(), Default: DefaultNetwork{Bridge: "a-name-longer-than-15"}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("long bridge name: %v", err)
	}
	if _, err := New(Config{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("no run root: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, Config{RunRoot: t.TempDir(), ConfDir: t.TempDir(), PluginDirs: []string{debianPlugins}})
	for _, id := range []string{"", "../escape", "a/b", "-lead", strings.Repeat("x", 200)} {
		if _, err := m.Create(id); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Create(%q): %v", id, err)
		}
		if err := m.Teardown(ctx, id); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Teardown(%q): %v", id, err)
		}
	}
	plain := filepath.Join(t.TempDir(), "net")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Setup(ctx, "pod1", plain, PodNetwork{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Setup on a plain file: %v", err)
	}
	if err := m.Teardown(ctx, "never-attached"); err != nil {
		t.Errorf("Teardown of a pod never attached: %v", err)
	}
	if err := m.Remove(ctx, "never-created"); err != nil {
		t.Errorf("Remove of a pod never created: %v", err)
	}
	for _, pm := range []PortMapping{
		{HostPort: 70000, ContainerPort: 80},
		{HostPort: 8080, ContainerPort: 0},
		{HostPort: 8080, ContainerPort: 80, Protocol: "icmp"},
		{HostPort: 8080, ContainerPort: 80, HostIP: "localhost"},
	} {
		if _, err := capabilityArgs(PodNetwork{PortMappings: []PortMapping{pm}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("port mapping %+v: %v", pm, err)
		}
	}
	args, err := capabilityArgs(PodNetwork{
		PortMappings: []PortMapping{{ContainerPort: 80}, {HostPort: 8443, ContainerPort: 443, Protocol: "UDP", HostIP: "127.0.0.1"}},
		Bandwidth:    &Bandwidth{IngressRate: 1000},
		CgroupParent: "/kubepods/pod1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(args["portMappings"]); got != "[map[containerPort:443 hostIP:127.0.0.1 hostPort:8443 protocol:udp]]" {
		t.Errorf("portMappings = %s", got)
	}
	if args["bandwidth"] == nil || args["cgroupPath"] != "/kubepods/pod1" {
		t.Errorf("capability args = %v", args)
	}
}

func TestDeleteMissingBridge(t *testing.T) {
	roottest.Require(t)
	if err := DeleteBridge("crimt-none"); err != nil {
		t.Errorf("DeleteBridge of a missing bridge: %v", err)
	}
}

// BenchmarkPodNetwork measures what one pod's network costs on the default
// bridge: create and pin the netns, CNI ADD, CNI DEL, unpin.
func BenchmarkPodNetwork(b *testing.B) {
	requireNetworking(b)
	tn := newTestNet(b, "bn", 3)
	m := newManager(b, tn.cfg)
	ctx := context.Background()
	pn := PodNetwork{Name: "bench", Namespace: "default", UID: "uid"}
	for i := 0; b.Loop(); i++ {
		pod := fmt.Sprintf("bench%d", i)
		path, err := m.Create(pod)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Setup(ctx, pod, path, pn); err != nil {
			b.Fatal(err)
		}
		if err := m.Remove(ctx, pod); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatus measures a readiness check (it runs each plugin's VERSION).
func BenchmarkStatus(b *testing.B) {
	requireNetworking(b)
	m := newManager(b, Config{RunRoot: b.TempDir(), ConfDir: b.TempDir(), PluginDirs: []string{debianPlugins}})
	for b.Loop() {
		if err := m.Status(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// Teardown still frees the address and the hostPort rules when the pod's
// namespace disappeared first (here: unpinned behind the manager's back).
// The network has no ipMasq: Debian 12's bridge plugin finds that rule only
// through the interface inside the namespace (see Teardown).
func TestTeardownAfterNetnsGone(t *testing.T) {
	requireNetworking(t)
	tn := newTestNet(t, "gone", 4)
	def := tn.cfg.Default
	m, pod, path := tn.managerWithConf(t, false, `{"type":"portmap","capabilities":{"portMappings":true}}`)
	ctx := context.Background()
	pn := PodNetwork{Name: "p", Namespace: "ns", UID: "u",
		PortMappings: []PortMapping{{HostPort: freePort(t), ContainerPort: 80}}}
	ips, err := m.Setup(ctx, pod, path, pn)
	if err != nil {
		t.Fatal(err)
	}
	veths := bridgePorts(t, def.Bridge)
	if len(podChains(iptablesSave(t), pod)) == 0 {
		t.Fatal("no hostPort rules for the pod")
	}
	if _, err := os.Stat(filepath.Join(tn.ipam, ips[0].String())); err != nil {
		t.Fatalf("no allocation for %s: %v", ips[0], err)
	}

	if err := nspin.Unpin(filepath.Dir(path), nspin.Net); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := m.Teardown(ctx, pod); err != nil {
			t.Fatalf("Teardown without netns: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(tn.ipam, ips[0].String())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("allocation for %s left (%v)", ips[0], err)
	}
	if c := podChains(iptablesSave(t), pod); len(c) > 0 {
		t.Errorf("iptables rules left in %v", c)
	}
	// The kernel removes the veth when it frees the namespace, which it does
	// in the background: wait for it rather than race it.
	for _, v := range veths {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Lstat(filepath.Join("/sys/class/net", v)); errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("veth %s still there after its namespace was freed", v)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Pods set up and removed at the same time get distinct addresses and leave
// nothing behind.
func TestConcurrentPods(t *testing.T) {
	requireNetworking(t)
	tn := newTestNet(t, "c", 5)
	m := newManager(t, tn.cfg)
	ctx := context.Background()
	const n = 4
	ips := make([]netip.Addr, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			pod := fmt.Sprintf("conc%d%s", i, tn.cfg.Default.Bridge)
			path, err := m.Create(pod)
			if err == nil {
				var got []netip.Addr
				got, err = m.Setup(ctx, pod, path, PodNetwork{Name: pod, Namespace: "default", UID: pod})
				if err == nil {
					ips[i] = got[0]
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if !ip.IsValid() || seen[ip] {
			t.Errorf("addresses %v: missing or duplicate", ips)
		}
		seen[ip] = true
	}
	if ports := bridgePorts(t, tn.cfg.Default.Bridge); len(ports) != n {
		t.Errorf("bridge ports %v, want %d", ports, n)
	}
	pods, err := m.Pods()
	if err != nil || len(pods) != n {
		t.Fatalf("Pods() = %v, %v", pods, err)
	}
	for _, pod := range pods {
		go func() { errs <- m.Remove(ctx, pod) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if ports := bridgePorts(t, tn.cfg.Default.Bridge); len(ports) != 0 {
		t.Errorf("veths left on the bridge: %v", ports)
	}
	if left, err := m.Pods(); err != nil || len(left) != 0 {
		t.Errorf("Pods() after removal = %v, %v", left, err)
	}
	if entries, _ := os.ReadDir(tn.ipam); len(entries) > 2 {
		t.Errorf("host-local allocations left: %v", entries)
	}
}

// TestLoopbackPluginNotRun: a chain that lists the loopback plugin gets
// lo up from Setup itself, and the plugin, a failing stand-in here, is
// never started, on ADD or on DEL.
func TestLoopbackPluginNotRun(t *testing.T) {
	requireNetworking(t)
	tn := newTestNet(t, "lo", 4)
	standIns := t.TempDir()
	ran := filepath.Join(t.TempDir(), "loopback-ran")
	script := fmt.Sprintf("#!/bin/sh\necho \"$CNI_COMMAND\" >> %s\nexit 7\n", ran)
	if err := os.WriteFile(filepath.Join(standIns, "loopback"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tn.cfg.PluginDirs = []string{standIns, debianPlugins}
	m, pod, path := tn.managerWithConf(t, false, `{"type":"loopback"}`)
	ctx := context.Background()
	if err := m.Status(ctx); err != nil {
		t.Errorf("Status: %v", err)
	}
	ips, err := m.Setup(ctx, pod, path, PodNetwork{Name: "p", Namespace: "ns", UID: "u"})
	if err != nil || len(ips) == 0 || !tn.subnet.Contains(ips[0]) {
		t.Fatalf("Setup: %v, %v", ips, err)
	}
	var loUp bool
	if err := nspin.Run(path, nspin.Net, func() error {
		lo, err := net.InterfaceByName("lo")
		loUp = err == nil && lo.Flags&net.FlagUp != 0
		return err
	}); err != nil || !loUp {
		t.Errorf("lo in the pod: up %v, %v", loUp, err)
	}
	if err := m.Teardown(ctx, pod); err != nil {
		t.Errorf("Teardown: %v", err)
	}
	if data, err := os.ReadFile(ran); err == nil {
		t.Errorf("the loopback plugin ran: %q", data)
	}
}
