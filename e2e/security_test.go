package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
