package e2e

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/internal/nettest"
)

// nonRoot makes cfg run as uid and gid 1000 without any capability.
func nonRoot(cfg *runtimeapi.ContainerConfig) *runtimeapi.ContainerConfig {
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser: &runtimeapi.Int64Value{Value: 1000}, RunAsGroup: &runtimeapi.Int64Value{Value: 1000},
		Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}},
	}}
	return cfg
}

// TestUnprivilegedPortsAndPing: in a pod with a network of its own, a
// process without root or capabilities binds port 80 and every group may
// open ICMP echo sockets, as on containerd
// (net.ipv4.ip_unprivileged_port_start=0, net.ipv4.ping_group_range); a pod that sets the port sysctl itself
// keeps its value, and the non-root server cannot bind there.
func TestUnprivilegedPortsAndPing(t *testing.T) {
	pullTestImage(t)
	server := func() *runtimeapi.ContainerConfig {
		return nonRoot(containerConfig("web", "/bin/sh", "-c",
			"cat /proc/sys/net/ipv4/ping_group_range /proc/sys/net/ipv4/ip_unprivileged_port_start; exec busybox nc -ll -p 80 -e /bin/echo bound-by-$(id -u)"))
	}
	podID, podCfg := podWithLogs(t, "port80")
	runContainer(t, podID, podCfg, server())
	st, _ := podInfo(t, podID)
	var got string
	var err error
	for range 50 {
		if got, err = nettest.Dial("", net.JoinHostPort(st.GetNetwork().GetIp(), "80")); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.TrimSpace(got) != "bound-by-1000" {
		t.Errorf("the non-root server on :80 answered %q, %v", got, err)
	}
	// busybox's ping knows only raw sockets: the range is read back.
	if log, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, "web.log")); !strings.Contains(string(log), "stdout F 0\t2147483647") {
		t.Errorf("ping_group_range in the container: log %q", log)
	}

	cfg := podConfig("port80-own")
	cfg.LogDirectory = t.TempDir()
	cfg.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "1024"}
	own := runPod(t, cfg)
	exited := waitExited(t, runContainer(t, own, cfg, server()))
	log, _ := os.ReadFile(filepath.Join(cfg.LogDirectory, "web.log"))
	if exited.ExitCode == 0 || !strings.Contains(string(log), "stdout F 1024") || !strings.Contains(string(log), "Permission denied") {
		t.Errorf("pod with its own ip_unprivileged_port_start: exit %d, log %q; want 1024 and a refused bind", exited.ExitCode, log)
	}
}

// statusField is a field of /proc/self/status as the test process sees it.
func statusField(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/self/status", name)
	return ""
}

// TestPrivilegedContainer: a privileged container is privileged as with
// containerd and runc: /sys and its cgroups read-write (it can make a
// child cgroup of its own), the host's devices with /dev/ptmx still its
// own devpts', nothing masked or read-only in /proc, every capability
// this (root) test holds, no seccomp filter. An unprivileged sibling has
// none of it.
func TestPrivilegedContainer(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "privileged")
	// A child cgroup: in the pids hierarchy on v1, in the one tree on v2.
	cg, wantMounts := "/sys/fs/cgroup/pids", []string{"/sys rw", "/sys/fs/cgroup rw", "/sys/fs/cgroup/pids rw"}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg, wantMounts = "/sys/fs/cgroup", wantMounts[:2]
	}
	script := `grep -E ' /sys(/fs/cgroup(/pids)?)? ' /proc/mounts | cut -d' ' -f2,4 | cut -d, -f1
mkdir ` + cg + `/sub 2>/dev/null && rmdir ` + cg + `/sub && echo child-cgroup
ls /dev | tr '\n' ' '; echo
ls -l /dev/ptmx | grep -o -- '-> .*'
grep -E ' /proc/(sys|kcore) ' /proc/mounts | cut -d' ' -f2,4 | cut -d, -f1
grep -E '^(CapEff|Seccomp):' /proc/self/status | tr -d '\t'`
	run := func(name string, privileged bool) string {
		cfg := containerConfig(name, "sh", "-c", script)
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{Privileged: privileged}}
		waitExited(t, runContainer(t, podID, podCfg, cfg))
		out, _ := crictlErr("logs", containerOf(t, podID, name))
		return out + "\n"
	}
	priv, plain := run("priv", true), run("plain", false)

	for _, want := range append(wantMounts, "child-cgroup", "-> pts/ptmx", "CapEff:"+statusField(t, "CapEff"), "Seccomp:0") {
		if !strings.Contains(priv, want+"\n") {
			t.Errorf("privileged container: no %q in\n%s", want, priv)
		}
	}
	if strings.Contains(priv, "/proc/sys ro") || strings.Contains(priv, "/proc/kcore") {
		t.Errorf("privileged container: /proc still masked or read-only:\n%s", priv)
	}
	// Devices of the host that no container gets by default.
	entries, err := os.ReadDir("/dev")
	if err != nil {
		t.Fatal(err)
	}
	privWords, plainWords := strings.Fields(priv), strings.Fields(plain)
	var hostOnly []string
	for _, e := range entries {
		if e.Type()&os.ModeDevice != 0 && e.Name() != "console" && !slices.Contains(plainWords, e.Name()) {
			hostOnly = append(hostOnly, e.Name())
		}
	}
	if len(hostOnly) == 0 {
		t.Fatal("the host has no device beyond the default ones")
	}
	for _, d := range hostOnly {
		if !slices.Contains(privWords, d) {
			t.Errorf("the host's /dev/%s is missing from the privileged container", d)
		}
	}
	for _, want := range []string{"/sys ro", "/sys/fs/cgroup ro", "/proc/sys ro", "-> pts/ptmx"} {
		if !strings.Contains(plain, want+"\n") {
			t.Errorf("unprivileged container: no %q in\n%s", want, plain)
		}
	}
	if strings.Contains(plain, "child-cgroup") || strings.Contains(plain, "Seccomp:0") && strings.Contains(plain, "CapEff:"+statusField(t, "CapEff")) {
		t.Errorf("unprivileged container got privileges:\n%s", plain)
	}
}

// containerOf is the ID of the container named name in pod podID.
func containerOf(t *testing.T, podID, name string) string {
	t.Helper()
	resp, err := suite.rt.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Containers {
		if c.Metadata.Name == name {
			return c.Id
		}
	}
	t.Fatalf("no container %s in pod %s", name, podID)
	return ""
}

// TestDebugTarget: the CRI calls of `kubectl debug --target=app` (a static
// pod cannot get an ephemeral container): a container created with
// NamespaceMode TARGET in a pod whose containers have pid namespaces of
// their own sees the target's processes (its init as PID 1) and reads
// its environment; a target that is missing, in another pod or not
// running is refused.
func TestDebugTarget(t *testing.T) {
	pullTestImage(t)
	podCfg := podConfig("debug-target") // pid namespaces per container, as kubelet's default
	podCfg.LogDirectory = t.TempDir()
	podID := runPod(t, podCfg)
	other, otherCfg := podWithLogs(t, "debug-other")
	app := runContainer(t, podID, podCfg, containerConfig("app", "sleep", "600"))
	debug := func(name, target string) *runtimeapi.ContainerConfig {
		cfg := containerConfig(name, "sh", "-c", "sleep 600")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: target,
				Network: runtimeapi.NamespaceMode_POD, Ipc: runtimeapi.NamespaceMode_POD}}}
		return cfg
	}
	dbg := runContainer(t, podID, podCfg, debug("debugger", app))
	resp, err := suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: dbg, Timeout: 10,
		// The debugger's own sleep may not be started yet: wait for it a while.
		Cmd: []string{"sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; for i in $(seq 50); do [ $(pidof sleep | wc -w) -ge 2 ] && break; sleep 0.1; done; pidof sleep | wc -w"}})
	if err != nil || !strings.HasPrefix(string(resp.Stdout), "sleep 600 \n2") {
		t.Errorf("the debug container's view: %q %q %v; want the target's sleep as PID 1 beside its own", resp.GetStdout(), resp.GetStderr(), err)
	}
	// What a debugger reads of its target: its environment (the image's PATH).
	resp, err = suite.rt.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: dbg, Timeout: 10, Cmd: []string{"sh", "-c", "tr '\\0' '\\n' < /proc/1/environ | grep ^PATH="}})
	if err != nil || string(resp.Stdout) != "PATH=/bin\n" {
		t.Errorf("the target's environment from the debug container: %q %q %v", resp.GetStdout(), resp.GetStderr(), err)
	}
	if _, err := suite.rt.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: app}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, pod, target string
		podCfg            *runtimeapi.PodSandboxConfig
		code              codes.Code
	}{
		{"no target", podID, "", podCfg, codes.InvalidArgument},
		{"unknown target", podID, "feedface", podCfg, codes.NotFound},
		{"target in another pod", other, dbg, otherCfg, codes.InvalidArgument},
		{"stopped target", podID, app, podCfg, codes.FailedPrecondition},
	} {
		_, err := suite.rt.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: tc.pod, Config: debug("bad", tc.target), SandboxConfig: tc.podCfg})
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
}

// TestDeviceOwnership: the suite's daemon runs with
// device_ownership_from_security_context: a device given to a container
// is owned by its run_as_user and run_as_group (so a non-root container
// may open a device of mode 0600); without ids it is root's. The host's /dev/tty is root:tty.
func TestDeviceOwnership(t *testing.T) {
	pullTestImage(t)
	podID, podCfg := podWithLogs(t, "devowner")
	cmd := []string{"sh", "-c", "ls -ln /dev/mine | tr -s ' ' | cut -d' ' -f3,4"}
	withDevice := func(cfg *runtimeapi.ContainerConfig) *runtimeapi.ContainerConfig {
		cfg.Devices = []*runtimeapi.Device{{HostPath: "/dev/tty", ContainerPath: "/dev/mine", Permissions: "rw"}}
		return cfg
	}
	nonRootCfg := withDevice(nonRoot(containerConfig("nonroot", cmd...)))
	nonRootCfg.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 2000}
	for _, tc := range []struct {
		cfg  *runtimeapi.ContainerConfig
		want string
	}{
		{nonRootCfg, "1000 2000"},
		{withDevice(containerConfig("root", cmd...)), "0 0"},
	} {
		id := runContainer(t, podID, podCfg, tc.cfg)
		waitExited(t, id)
		out, _ := crictlErr("logs", id)
		if out != tc.want {
			t.Errorf("%s: /dev/mine: %q, want owned by %s", tc.cfg.Metadata.Name, out, tc.want)
		}
	}
}
