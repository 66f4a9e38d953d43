package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/nettest"
	"github.com/cri-mini/cri-mini/internal/nspin"
	"github.com/cri-mini/cri-mini/sandbox"
)

// crictl runs crictl against the suite's daemon and returns its stdout.
func crictl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := crictlErr(args...)
	if err != nil {
		t.Fatalf("crictl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// crictlErr is crictl with no input; its output is trimmed.
func crictlErr(args ...string) (string, error) {
	out, err := crictlStdin("", args...)
	if err != nil {
		return out, err
	}
	return strings.TrimSpace(out), nil
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func podConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: "uid-" + name},
		Hostname: name,
		Labels:   map[string]string{"suite": "e2e", "pod": name},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
}

// runPod runs a pod through the Go client; the test removes it at the end.
func runPod(t testing.TB, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	resp, err := suite.rt.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", cfg.GetMetadata().GetName(), err)
	}
	id := resp.PodSandboxId
	t.Cleanup(func() {
		if _, err := suite.rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Errorf("remove pod %s: %v", id, err)
		}
	})
	return id
}

// podInfo is the verbose status of a pod: where its namespaces and files are.
func podInfo(t *testing.T, id string) (*runtimeapi.PodSandboxStatus, sandbox.Pod) {
	t.Helper()
	resp, err := suite.rt.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatalf("PodSandboxStatus %s: %v", id, err)
	}
	var p sandbox.Pod
	if err := json.Unmarshal([]byte(resp.Info["info"]), &p); err != nil {
		t.Fatalf("verbose info of %s: %v\n%s", id, err, resp.Info["info"])
	}
	return resp.Status, p
}

// pauseRuns reports whether pid is a live pod pause process: PID 1 of the
// pod's pid namespace, run from the sealed copy of the suite's shim.
func pauseRuns(pid int) bool {
	if pid <= 0 {
		return false
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return err == nil && runsSealedShim(pid) && strings.Contains(string(status), "\nNSpid:\t"+fmt.Sprint(pid)+"\t1\n") &&
		!strings.Contains(string(status), "State:\tZ")
}

func TestVersionStatusConfig(t *testing.T) {
	out := crictl(t, "version")
	for _, want := range []string{"RuntimeName:  cri-mini", "RuntimeApiVersion:  v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("crictl version lacks %q:\n%s", want, out)
		}
	}
	st, err := suite.rt.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.GetStatus().GetConditions() {
		if !c.Status {
			t.Errorf("condition %s false: %s %s", c.Type, c.Reason, c.Message)
		}
	}
	rc, err := suite.rt.RuntimeConfig(ctx(t), &runtimeapi.RuntimeConfigRequest{})
	if err != nil || rc.GetLinux().GetCgroupDriver() != runtimeapi.CgroupDriver_CGROUPFS {
		t.Errorf("RuntimeConfig: %v, %v", rc, err)
	}
	fi, err := os.Stat(suite.socket)
	if err != nil || fi.Mode()&os.ModeType != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket %s: %v %v, want a socket with mode 0660", suite.socket, fi.Mode(), err)
	}
}

func TestCrictlPodLifecycle(t *testing.T) {
	dir := t.TempDir()
	// No namespace options: the pod shares one pid namespace (mode POD).
	// Its cgroup parent does not exist yet: the pod makes and removes it.
	cgroupParent := fmt.Sprintf("/cri-mini-e2e-%d/pod-crictl", os.Getpid())
	cfg := fmt.Sprintf(`{"metadata":{"name":"crictl-pod","namespace":"e2e","uid":"uid-crictl","attempt":0},
		"hostname":"crictl-pod","labels":{"tier":"web","suite":"e2e"},"linux":{"cgroup_parent":%q}}`, cgroupParent)
	file := filepath.Join(dir, "pod.json")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	id := crictl(t, "runp", file)
	if len(id) != 64 {
		t.Fatalf("runp printed %q, want a pod id", id)
	}

	if got := crictl(t, "pods", "-q", "--name", "crictl-pod"); got != id {
		t.Errorf("pods --name: %q, want %s", got, id)
	}
	if got := crictl(t, "pods", "-q", "--label", "tier=web", "--state", "ready"); got != id {
		t.Errorf("pods --label tier=web --state ready: %q, want %s", got, id)
	}
	if got := crictl(t, "pods", "-q", "--label", "tier=db"); got != "" {
		t.Errorf("pods --label tier=db: %q, want none", got)
	}
	if got := crictl(t, "pods", "-q", "--id", id[:10]); got != id {
		t.Errorf("pods --id prefix: %q", got)
	}

	var inspect struct {
		Status struct {
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info map[string]any `json:"info"`
	}
	if err := json.Unmarshal([]byte(crictl(t, "inspectp", id)), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Status.State != "SANDBOX_READY" || !strings.HasPrefix(inspect.Status.Network.IP, strings.TrimSuffix(suite.subnet, "0/24")) {
		t.Errorf("inspectp: state %q ip %q, want ready with an IP in %s", inspect.Status.State, inspect.Status.Network.IP, suite.subnet)
	}
	if inspect.Info["netns"] == nil || inspect.Info["shmPath"] == nil || inspect.Info["pidns"] == nil {
		t.Errorf("inspectp info lacks namespace paths: %v", inspect.Info)
	}
	pause, _ := inspect.Info["pausePid"].(float64)
	if !pauseRuns(int(pause)) {
		t.Errorf("pod pause process %v not running as PID 1 of the pod", inspect.Info["pausePid"])
	}
	// The pause process has a cgroup of its own below the pod's.
	cgroupDir := filepath.Dir(cgroupFile("pids", cgroupParent, "cgroup.procs", "cgroup.procs"))
	if procs, err := os.ReadFile(filepath.Join(cgroupDir, id, "cgroup.procs")); err != nil || strings.TrimSpace(string(procs)) != fmt.Sprint(pause) {
		t.Errorf("pause process not in its cgroup below the pod's %s: %q %v", cgroupParent, procs, err)
	}

	crictl(t, "stopp", id)
	crictl(t, "stopp", id) // idempotent
	if pauseRuns(int(pause)) {
		t.Errorf("pause process %v outlived stopp", pause)
	}
	if got := crictl(t, "pods", "-q", "--state", "notready", "--id", id); got != id {
		t.Errorf("after stopp: %q not listed as not ready", got)
	}
	if err := json.Unmarshal([]byte(crictl(t, "inspectp", id)), &inspect); err != nil || inspect.Status.State != "SANDBOX_NOTREADY" {
		t.Errorf("inspectp after stopp: %+v, %v", inspect.Status, err)
	}
	crictl(t, "rmp", id)
	if _, err := os.Stat(filepath.Dir(cgroupDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod cgroup left after rmp: %v", err)
	}
	if got := crictl(t, "pods", "-q", "--id", id); got != "" {
		t.Errorf("after rmp: %q still listed", got)
	}
	if _, err := suite.rt.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("second remove: %v, want success", err)
	}
	if _, err := suite.rt.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Errorf("stop of a removed pod: %v, want success (idempotent, as critest checks)", err)
	}
}

func TestHostNetworkPod(t *testing.T) {
	cfg := podConfig("hostnet")
	cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	id := runPod(t, cfg)
	st, info := podInfo(t, id)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.GetNetwork().GetIp() != "" || info.NetNS != "" {
		t.Errorf("host-network pod: %v, netns %q", st, info.NetNS)
	}
	if got := st.GetLinux().GetNamespaces().GetOptions().GetNetwork(); got != runtimeapi.NamespaceMode_NODE {
		t.Errorf("network mode %v", got)
	}
}

func TestTwoPodsReachEachOther(t *testing.T) {
	ids := []string{runPod(t, podConfig("ping-a")), runPod(t, podConfig("ping-b"))}
	var ns, ips []string
	for _, id := range ids {
		st, info := podInfo(t, id)
		ns = append(ns, info.NetNS)
		ips = append(ips, st.GetNetwork().GetIp())
		nettest.Serve(t, info.NetNS, ":8080", "hello from "+id)
	}
	if ips[0] == "" || ips[0] == ips[1] {
		t.Fatalf("pod IPs %v", ips)
	}
	for i := range ids {
		to := 1 - i
		got, err := nettest.Dial(ns[i], net.JoinHostPort(ips[to], "8080"))
		if err != nil || got != "hello from "+ids[to] {
			t.Errorf("pod %d -> pod %d (%s): %q, %v", i, to, ips[to], got, err)
		}
	}
}

func TestHostPortReachable(t *testing.T) {
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	hostPort, _ := strconv.Atoi(port)
	cfg := podConfig("hostport")
	cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8081, HostPort: int32(hostPort)}}
	id := runPod(t, cfg)
	_, info := podInfo(t, id)
	nettest.Serve(t, info.NetNS, ":8081", "via hostPort")
	for _, host := range []string{suite.gateway, "127.0.0.1"} {
		addr := net.JoinHostPort(host, fmt.Sprint(hostPort))
		if got, err := nettest.Dial("", addr); err != nil || got != "via hostPort" {
			t.Errorf("hostPort from the host via %s: %q, %v", addr, got, err)
		}
	}
}

func TestDNSConfigInResolvConf(t *testing.T) {
	cfg := podConfig("dns")
	cfg.DnsConfig = &runtimeapi.DNSConfig{
		Servers:  []string{"10.96.0.10", "fd00::10"},
		Searches: []string{"e2e.svc.cluster.local", "cluster.local"},
		Options:  []string{"ndots:5", "edns0"},
	}
	id := runPod(t, cfg)
	_, info := podInfo(t, id)
	got, err := os.ReadFile(info.ResolvPath)
	if err != nil {
		t.Fatal(err)
	}
	want := "search e2e.svc.cluster.local cluster.local\nnameserver 10.96.0.10\nnameserver fd00::10\noptions ndots:5 edns0\n"
	if string(got) != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	hosts, _ := os.ReadFile(info.HostsPath)
	if !strings.Contains(string(hosts), "localhost dns") {
		t.Errorf("hosts file:\n%s", hosts)
	}
}

func TestDaemonKilledAndRestarted(t *testing.T) {
	shared := podConfig("survivor-ready")
	shared.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	ready := runPod(t, shared)
	stopped := runPod(t, podConfig("survivor-stopped"))
	if _, err := suite.rt.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: stopped}); err != nil {
		t.Fatal(err)
	}
	before, err := suite.rt.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	statusBefore := map[string]*runtimeapi.PodSandboxStatusResponse{}
	for _, id := range []string{ready, stopped} {
		st, err := suite.rt.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		statusBefore[id] = st
	}

	if err := stopDaemon(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := startDaemon(); err != nil {
		t.Fatal(err)
	}

	after, err := suite.rt.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(before, after) {
		t.Errorf("ListPodSandbox after kill -9 and restart:\n got  %v\n want %v", after, before)
	}
	for id, want := range statusBefore {
		got, err := suite.rt.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
		if err == nil {
			got.Timestamp, want.Timestamp = 0, 0 // the time of each call
		}
		if err != nil || !proto.Equal(got, want) {
			t.Errorf("status of %s after restart:\n got  %v (%v)\n want %v", id, got, err, want)
		}
	}
	_, info := podInfo(t, ready)
	if ok, err := nspin.IsPinned(info.NetNS); !ok {
		t.Errorf("network namespace of the running pod lost: %v", err)
	}
	if !pauseRuns(info.PausePID) {
		t.Errorf("pause process %d of the running pod did not survive the daemon", info.PausePID)
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	cmd := exec.Command(suite.bin, append(daemonArgs(), "--listen", "unix://"+filepath.Join(t.TempDir(), "other.sock"))...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already running on runroot") {
		t.Errorf("a second daemon on the same runroot: %v\n%s", err, out)
	}
}

func TestBadRequestsGetTheRightCodes(t *testing.T) {
	c := ctx(t)
	id := runPod(t, podConfig("dup"))
	checks := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"no config", func() error {
			_, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{})
			return err
		}, codes.InvalidArgument},
		{"no metadata", func() error {
			cfg := podConfig("x")
			cfg.Metadata = nil
			_, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			return err
		}, codes.InvalidArgument},
		{"no uid", func() error {
			cfg := podConfig("x")
			cfg.Metadata.Uid = ""
			_, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			return err
		}, codes.InvalidArgument},
		{"duplicate", func() error {
			_, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podConfig("dup")})
			return err
		}, codes.AlreadyExists},
		{"unknown handler", func() error {
			_, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: podConfig("h"), RuntimeHandler: "kata"})
			return err
		}, codes.NotFound},
		{"host sysctl", func() error {
			cfg := podConfig("sysctl")
			cfg.Linux.Sysctls = map[string]string{"kernel.panic": "1"}
			_, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			return err
		}, codes.InvalidArgument},
		{"user namespace without mappings", func() error {
			cfg := podConfig("userns")
			cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}
			_, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			return err
		}, codes.InvalidArgument},
		{"user namespace of mode TARGET", func() error {
			cfg := podConfig("userns")
			cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}
			_, err := suite.rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			return err
		}, codes.InvalidArgument},
		{"status of unknown id", func() error {
			_, err := suite.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "feedface"})
			return err
		}, codes.NotFound},
		{"status without id", func() error {
			_, err := suite.rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{})
			return err
		}, codes.InvalidArgument},
		{"bad pod CIDR", func() error {
			_, err := suite.rt.UpdateRuntimeConfig(c, &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{
				NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.0.0.0/99"}}})
			return err
		}, codes.InvalidArgument},
		{"not implemented yet", func() error {
			_, err := suite.rt.CheckpointContainer(c, &runtimeapi.CheckpointContainerRequest{ContainerId: "x"})
			return err
		}, codes.Unimplemented},
	}
	for _, ch := range checks {
		err := ch.call()
		if status.Code(err) != ch.code {
			t.Errorf("%s: got %v, want %v", ch.name, err, ch.code)
		} else if msg := status.Convert(err).Message(); len(msg) < 10 {
			t.Errorf("%s: message %q says too little", ch.name, msg)
		}
	}
	pods, err := suite.rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{"suite": "e2e"}}})
	if err != nil {
		t.Fatal(err)
	}
	if ids := podIDs(pods); !slices.Equal(ids, []string{id}) {
		t.Errorf("failed requests left pods: %v", ids)
	}
	_, err = crictlErr("inspectp", "feedface")
	if err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("crictl inspectp of an unknown pod: %v", err)
	}
}

func podIDs(resp *runtimeapi.ListPodSandboxResponse) []string {
	var ids []string
	for _, p := range resp.GetItems() {
		ids = append(ids, p.Id)
	}
	return ids
}

func TestConfigCommandRoundTrips(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command(suite.bin, "config", "--root", "/srv/cri", "--insecure-registry", "reg.local:5000",
		"--registry-mirror", "docker.io=http://mirror.local").Output()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cri-mini.toml")
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := exec.Command(suite.bin, "config", "--config", file).Output()
	if err != nil || string(again) != string(out) {
		t.Errorf("config printed from its own output differs (%v):\n%s\nvs\n%s", err, again, out)
	}
	// The shipped default config is what the binary prints with no flags.
	defaults, err := exec.Command(suite.bin, "config").Output()
	if err != nil {
		t.Fatal(err)
	}
	if shipped, err := os.ReadFile("../manifests/cri-mini.toml"); err != nil || string(shipped) != string(defaults) {
		t.Errorf("manifests/cri-mini.toml differs from `cri-mini config` (regenerate it): %v", err)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("root = \"/x\"\nlisten_adress = \"unix:///y\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	msg, err := exec.Command(suite.bin, "config", "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "unknown key listen_adress") {
		t.Errorf("unknown key: %v %s", err, msg)
	}
}

func TestMetrics(t *testing.T) {
	runPod(t, podConfig("metrics"))
	resp, err := http.Get("http://" + suite.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`cri_mini_cri_calls_total{code="OK",method="/runtime.v1.RuntimeService/RunPodSandbox"}`,
		`cri_mini_cri_call_duration_seconds_bucket{method="/runtime.v1.RuntimeService/RunPodSandbox"`,
		`cri_mini_pod_sandboxes{state="ready"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestPortForwardIntoPod(t *testing.T) {
	id := runPod(t, podConfig("portfwd"))
	if got := portForwarded(t, id, 8082); got != "through port-forward" {
		t.Errorf("crictl port-forward into %s: got %q", id[:12], got)
	}

	if _, err := suite.rt.PortForward(ctx(t), &runtimeapi.PortForwardRequest{PodSandboxId: "feedface", Port: []int32{80}}); status.Code(err) != codes.NotFound {
		t.Errorf("port-forward into an unknown pod: %v", err)
	}
}

// portForwarded serves a message on port of the loopback of pod id only,
// reaches it through crictl port-forward and returns what arrived.
func portForwarded(t *testing.T, id string, port int) string {
	t.Helper()
	_, info := podInfo(t, id)
	// A server on the pod's loopback only: nothing outside the pod reaches
	// it except through the port-forward session.
	nettest.Serve(t, info.NetNS, fmt.Sprintf("127.0.0.1:%d", port), "through port-forward")
	local, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, localPort, _ := net.SplitHostPort(local)
	cmd := exec.Command(suite.crictl, "--runtime-endpoint", "unix://"+suite.socket, "port-forward", id, fmt.Sprintf("%s:%d", localPort, port))
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var got string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if got, err = nettest.Dial("", net.JoinHostPort("127.0.0.1", localPort)); err == nil && got != "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got == "" {
		t.Logf("crictl port-forward %s %s:%d: %v\n%s", id[:12], localPort, port, err, out.String())
	}
	return got
}

func TestPodStats(t *testing.T) {
	cfg := podConfig("stats")
	cfg.Linux.CgroupParent = fmt.Sprintf("/cri-mini-e2e-%d/pod-stats", os.Getpid())
	cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD // the pause process is in the cgroup
	id := runPod(t, cfg)
	st, info := podInfo(t, id)
	nettest.Serve(t, info.NetNS, ":8083", strings.Repeat("x", 10000))
	if got, err := nettest.Dial("", net.JoinHostPort(st.GetNetwork().GetIp(), "8083")); err != nil || len(got) != 10000 {
		t.Fatalf("traffic to the pod: %d bytes, %v", len(got), err)
	}

	var out struct {
		Stats []struct {
			Attributes struct {
				ID string `json:"id"`
			} `json:"attributes"`
			Linux struct {
				CPU struct {
					UsageCoreNanoSeconds struct {
						Value string `json:"value"`
					} `json:"usageCoreNanoSeconds"`
				} `json:"cpu"`
				Memory struct {
					WorkingSetBytes *struct {
						Value string `json:"value"`
					} `json:"workingSetBytes"`
				} `json:"memory"`
				Network struct {
					DefaultInterface struct {
						Name    string `json:"name"`
						TxBytes struct {
							Value string `json:"value"`
						} `json:"txBytes"`
					} `json:"defaultInterface"`
				} `json:"network"`
			} `json:"linux"`
		} `json:"stats"`
	}
	raw := crictl(t, "statsp", "-o", "json", "--id", id)
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("statsp: %v\n%s", err, raw)
	}
	if len(out.Stats) != 1 {
		t.Fatalf("statsp listed %d pods:\n%s", len(out.Stats), raw)
	}
	l := out.Stats[0].Linux
	tx, _ := strconv.Atoi(l.Network.DefaultInterface.TxBytes.Value)
	if l.Network.DefaultInterface.Name != "eth0" || tx < 10000 {
		t.Errorf("pod network usage: %+v, want eth0 with the 10000 bytes sent", l.Network.DefaultInterface)
	}
	if l.Memory.WorkingSetBytes == nil || l.CPU.UsageCoreNanoSeconds.Value == "" {
		t.Errorf("pod cgroup usage missing:\n%s", raw)
	}
}
