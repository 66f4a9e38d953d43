// Package e2e drives a real cri-mini daemon, started with throw-away
// directories and its own CNI network, through crictl and the Go CRI client.
package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mini/cri-mini/netns"
)

const cniPlugins = "/usr/lib/cni"

// suite is the daemon all tests share.
var suite struct {
	bin, crictl       string
	dir               string // everything of the run lives below it
	root, run, socket string
	cniDir, ipamDir   string
	bridge, subnet    string
	network           string // the CNI network's name
	gateway           string
	metrics           string // host:port of the metrics endpoint
	registry, image   string // loopback registry and the busybox image on it
	certsDir          string // the daemon's registry config path (hosts.toml directories)
	policy            string // the daemon's signature policy (accepting everything but while a test says otherwise)
	extraArgs         []string
	daemon            *exec.Cmd
	logFile           *os.File
	rt                runtimeapi.RuntimeServiceClient
	conn              *grpc.ClientConn
	// sealed are the sealed copies of the shim (device:inode) that the
	// run's daemons started their helpers and pause processes from.
	sealed map[string]bool
}

func TestMain(m *testing.M) {
	flag.Parse()
	if reason := missing(); reason != "" {
		fmt.Printf("e2e: SKIP: %s\n", reason)
		os.Exit(0)
	}
	code, err := runSuite(m)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// missing says why the suite cannot run here, or "" when it can.
func missing() string {
	if testing.Short() {
		return "-short: the suite needs root and a daemon"
	}
	if os.Geteuid() != 0 {
		return "needs root (namespaces, mounts, veths, iptables)"
	}
	if _, err := os.Stat(filepath.Join(cniPlugins, "bridge")); err != nil {
		return "CNI plugins missing: apt-get install containernetworking-plugins"
	}
	if _, err := findCrictl(); err != nil {
		return err.Error()
	}
	return ""
}

func findCrictl() (string, error) {
	if p, err := exec.LookPath("crictl"); err == nil {
		return p, nil
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "crictl")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("crictl not found: go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0")
}

func runSuite(m *testing.M) (int, error) {
	var err error
	if suite.crictl, err = findCrictl(); err != nil {
		return 1, err
	}
	if suite.dir, err = os.MkdirTemp("", "cri-mini-e2e-"); err != nil {
		return 1, err
	}
	defer os.RemoveAll(suite.dir)
	if suite.bin, err = daemonBinary(); err != nil {
		return 1, err
	}

	n := os.Getpid() % 200
	suite.root = filepath.Join(suite.dir, "root")
	suite.run = filepath.Join(suite.dir, "run")
	suite.socket = filepath.Join(suite.dir, "cri-mini.sock")
	suite.cniDir = filepath.Join(suite.dir, "net.d")
	suite.ipamDir = filepath.Join(suite.dir, "ipam")
	suite.certsDir = filepath.Join(suite.dir, "certs.d")
	suite.policy = filepath.Join(suite.dir, "policy.json")
	if err := os.WriteFile(suite.policy, []byte(acceptAnything), 0o644); err != nil {
		return 1, err
	}
	suite.bridge = fmt.Sprintf("crie2e%d", os.Getpid()%100000)
	suite.subnet = fmt.Sprintf("10.177.%d.0/24", n)
	suite.gateway = fmt.Sprintf("10.177.%d.1", n)
	if err := os.MkdirAll(suite.cniDir, 0o755); err != nil {
		return 1, err
	}
	if suite.metrics, err = freeAddr(); err != nil {
		return 1, err
	}
	// Named for this run: the leak check finds its iptables rules by name,
	// beside those of other runs on the machine.
	suite.network = fmt.Sprintf("cri-mini-e2e-%d", os.Getpid())
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[
	{"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":true,"hairpinMode":true,
	 "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}},
	{"type":"portmap","capabilities":{"portMappings":true}},
	{"type":"loopback"}]}`, suite.network, suite.bridge, suite.subnet, suite.ipamDir)
	if err := os.WriteFile(filepath.Join(suite.cniDir, "10-e2e.conflist"), []byte(conf), 0o644); err != nil {
		return 1, err
	}
	if suite.logFile, err = os.Create(filepath.Join(suite.dir, "daemon.log")); err != nil {
		return 1, err
	}
	defer suite.logFile.Close()

	if suite.registry, suite.image, err = serveTestImage(); err != nil {
		return 1, err
	}
	if err := startDaemon(); err != nil {
		return 1, err
	}
	suite.conn, err = grpc.NewClient("unix://"+suite.socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20))) // as kubelet
	if err != nil {
		return 1, err
	}
	suite.rt = runtimeapi.NewRuntimeServiceClient(suite.conn)

	code := m.Run()

	leaks := cleanUpAndCheckLeaks()
	suite.conn.Close()
	if code != 0 || leaks != nil {
		if log, err := os.ReadFile(suite.logFile.Name()); err == nil {
			fmt.Fprintf(os.Stderr, "--- daemon log (last 4 KiB) ---\n%s\n", tail(log, 4096))
		}
	}
	return code, leaks
}

// daemonBinary builds cri-mini and its shim into the run's directory, or
// takes a prebuilt one (with cri-mini-shim beside it) from CRI_MINI_BIN,
// as where nothing can be compiled (e2e/v2vm's guest).
func daemonBinary() (string, error) {
	if bin := os.Getenv("CRI_MINI_BIN"); bin != "" {
		return bin, nil
	}
	bin := filepath.Join(suite.dir, "cri-mini")
	for out, pkg := range map[string]string{bin: "./cmd/cri-mini", filepath.Join(suite.dir, "cri-mini-shim"): "./cmd/cri-mini-shim"} {
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
	}
	return bin, nil
}

// cgroupFile is a file of the cgroup at path (cgroupfs syntax): v1File in
// the controller's hierarchy on v1, v2File in the one tree on v2.
func cgroupFile(controller, path, v1File, v2File string) string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return filepath.Join("/sys/fs/cgroup", path, v2File)
	}
	return filepath.Join("/sys/fs/cgroup", controller, path, v1File)
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// maxLayerSize is what one layer may unpack to in the suite's daemon:
// more than any test image but a decompression bomb's.
const maxLayerSize = 128 << 20

// daemonArgs are the flags of the suite's daemon, then suite.extraArgs
// (a test that restarts the daemon with them restores them).
func daemonArgs() []string {
	return append([]string{
		"--root", suite.root, "--runroot", suite.run, "--listen", "unix://" + suite.socket,
		"--cni-config-dir", suite.cniDir, "--cni-plugin-dir", cniPlugins, "-v", "2",
		"--metrics-address", suite.metrics, "--insecure-registry", suite.registry,
		"--max-layer-size", strconv.Itoa(maxLayerSize), "--registry-config-path", suite.certsDir,
		"--pinned-image", suite.registry + "/" + pinnedRepo + ":1", "--signature-policy", suite.policy,
		"--device-ownership-from-security-context", // TestDeviceOwnership
		"--cdi-spec-dir", filepath.Join(suite.dir, "cdi"), // TestCDIDevices
	}, suite.extraArgs...)
}

// startDaemon starts cri-mini and waits until it answers Version. The
// daemon inherits extra as descriptors 3, 4, ... (nil entries are closed).
func startDaemon(extra ...*os.File) error {
	cmd := exec.Command(suite.bin, daemonArgs()...)
	cmd.Stdout, cmd.Stderr = suite.logFile, suite.logFile
	cmd.ExtraFiles = extra
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start cri-mini: %w", err)
	}
	suite.daemon = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("cri-mini exited at start: %v", err)
		default:
		}
		if c, err := net.Dial("unix", suite.socket); err == nil {
			c.Close()
			go func() { <-exited }()
			return recordSealedShim(cmd.Process.Pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("cri-mini did not listen within 20s")
}

// recordSealedShim adds the daemon's sealed copy of the shim (a memfd it
// holds open from its start) to suite.sealed.
func recordSealedShim(daemon int) error {
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", daemon))
	if err != nil {
		return err
	}
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && strings.HasPrefix(target, "/memfd:cri-mini-shim") {
			if suite.sealed == nil {
				suite.sealed = map[string]bool{}
			}
			suite.sealed[fileID(fd)] = true
			return nil
		}
	}
	return fmt.Errorf("cri-mini (pid %d) holds no sealed copy of cri-mini-shim", daemon)
}

// fileID is the device and inode of the file at path, "" if there is none.
func fileID(path string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// runsSealedShim reports whether process pid runs one of the run's sealed
// copies of the shim.
func runsSealedShim(pid int) bool {
	id := fileID(fmt.Sprintf("/proc/%d/exe", pid))
	return id != "" && suite.sealed[id]
}

// stopDaemon sends sig and waits for the daemon to exit.
func stopDaemon(sig syscall.Signal) error {
	if err := suite.daemon.Process.Signal(sig); err != nil {
		return err
	}
	for range 200 {
		if err := suite.daemon.Process.Signal(syscall.Signal(0)); err != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("cri-mini did not exit on %v", sig)
}

// cleanUpAndCheckLeaks removes every pod through the CRI, stops the daemon
// and then looks for anything of the run left on the host.
func cleanUpAndCheckLeaks() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if pods, err := suite.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
		for _, p := range pods.GetItems() {
			if _, err := suite.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				errs = append(errs, fmt.Errorf("remove pod %s: %w", p.Id, err))
			}
		}
	} else {
		errs = append(errs, fmt.Errorf("list pods: %w", err))
	}
	if err := stopDaemon(syscall.SIGTERM); err != nil {
		errs = append(errs, err)
	}
	if _, err := os.Stat(suite.socket); !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("socket left after SIGTERM: %v", err))
	}
	errs = append(errs, leaks()...)
	if err := netns.DeleteBridge(suite.bridge); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("leak check after the suite:\n%w", errors.Join(errs...))
	}
	fmt.Println("e2e: leak check passed: no mount, namespace pin, veth, IP allocation, iptables rule, cgroup or process of the run left")
	return nil
}

// leaks lists what the run left: mounts (including namespace pins) below
// its directory, veths on its bridge, IP allocations, iptables rules of its
// network, pod cgroups, processes of its binaries or of their sealed copies.
func leaks() []error {
	var errs []error
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []error{err}
	}
	for line := range strings.SplitSeq(string(mountinfo), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], suite.dir+"/") {
			errs = append(errs, fmt.Errorf("mount left: %s", line))
		}
	}
	if ports, err := os.ReadDir(filepath.Join("/sys/class/net", suite.bridge, "brif")); err == nil && len(ports) > 0 {
		for _, p := range ports {
			errs = append(errs, fmt.Errorf("veth left on %s: %s", suite.bridge, p.Name()))
		}
	}
	allocs, _ := filepath.Glob(filepath.Join(suite.ipamDir, "*", "10.*"))
	for _, a := range allocs {
		errs = append(errs, fmt.Errorf("IP allocation left: %s", a))
	}
	if dump, err := exec.Command("iptables-save").Output(); err == nil {
		for line := range strings.SplitSeq(string(dump), "\n") {
			if strings.Contains(line, `name: \"`+suite.network+`\"`) {
				errs = append(errs, fmt.Errorf("iptables rule left: %s", line))
			}
		}
	}
	var cgroupsLeft []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/cri-mini-e2e-%d", "/sys/fs/cgroup/cri-mini-e2e-%d"} { // v1, v2
		left, _ := filepath.Glob(fmt.Sprintf(pattern, os.Getpid()))
		cgroupsLeft = append(cgroupsLeft, left...)
	}
	for _, cg := range cgroupsLeft {
		errs = append(errs, fmt.Errorf("cgroup left: %s", cg))
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, exe := range procs {
		if target, err := os.Readlink(exe); err == nil && (strings.HasPrefix(target, suite.dir+"/") || suite.sealed[fileID(exe)]) {
			errs = append(errs, fmt.Errorf("process left: %s -> %s", exe, target))
		}
	}
	return errs
}
