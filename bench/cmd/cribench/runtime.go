package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runtime is one CRI daemon under test.
type runtime struct {
	name   string
	dir    string // its throw-away state and logs
	cmd    *exec.Cmd
	conn   *grpc.ClientConn
	rs     runtimeapi.RuntimeServiceClient
	is     runtimeapi.ImageServiceClient
	bridge string
	// helpers are the executables whose processes (and their descendants)
	// a pod adds: containerd's shim, cri-mini's re-exec'd roles.
	helpers []string
}

// cniConf writes a bridge network of its own for a runtime.
func cniConf(dir, network, bridge, subnet string) error {
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[
 {"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}},
 {"type":"loopback"}]}`, network, bridge, subnet, filepath.Join(dir, "ipam"))
	return os.WriteFile(filepath.Join(dir, "net.d", "10-bench.conflist"), []byte(conf), 0o644)
}

func startContainerd(ctx context.Context, work, bin, registry string) (*runtime, error) {
	dir := filepath.Join(work, "containerd")
	bridge := fmt.Sprintf("cbc%d", os.Getpid()%100000)
	if err := cniConf(dir, "cribench-containerd", bridge, "10.99.0.0/17"); err != nil {
		return nil, err
	}
	hosts := filepath.Join(dir, "certs.d", mirrored)
	if err := os.MkdirAll(hosts, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(fmt.Sprintf(
		"server = \"http://%[1]s\"\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", registry)), 0o644); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "containerd.sock")
	// No CAP_SYS_RESOURCE here: containerd must not try to lower
	// oom_score_adj below its own (restrict_oom_score_adj).
	config := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      snapshotter = "overlayfs"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %[5]q
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %[6]q
    max_conf_num = 1
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  use_local_image_pull = true
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[7]q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %[8]q
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc",
		filepath.Join(bin, "runc"), filepath.Join(dir, "net.d"), pauseImage, filepath.Join(dir, "certs.d"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "containerd"), "--config", cfgPath)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	rt := &runtime{name: "containerd", dir: dir, bridge: bridge,
		helpers: []string{filepath.Join(bin, "containerd-shim-runc-v2")}}
	return rt, rt.start(ctx, cmd, sock)
}

func startCriMini(ctx context.Context, work, bin, registry string) (*runtime, error) {
	dir := filepath.Join(work, "cri-mini")
	bridge := fmt.Sprintf("cbm%d", os.Getpid()%100000)
	if err := cniConf(dir, "cribench-cri-mini", bridge, "10.99.128.0/17"); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "cri-mini.sock")
	cmd := exec.Command(abs, "--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
		"--listen", "unix://"+sock, "--cni-config-dir", filepath.Join(dir, "net.d"), "--cni-plugin-dir", "/usr/lib/cni",
		"--registry-mirror", mirrored+"=http://"+registry, "--insecure-registry", registry)
	rt := &runtime{name: "cri-mini", dir: dir, bridge: bridge, helpers: []string{abs}}
	return rt, rt.start(ctx, cmd, sock)
}

// start runs the daemon, logging to dir/daemon.log, and connects once its
// CRI answers.
func (rt *runtime) start(ctx context.Context, cmd *exec.Cmd, sock string) error {
	logf, err := os.Create(filepath.Join(rt.dir, "daemon.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	rt.cmd = cmd
	rt.conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	rt.rs, rt.is = runtimeapi.NewRuntimeServiceClient(rt.conn), runtimeapi.NewImageServiceClient(rt.conn)
	ready := waitFor(30*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := rt.rs.Status(c, &runtimeapi.StatusRequest{})
		if err != nil {
			return false
		}
		// Other conditions (containerd's deprecation warnings) do not
		// keep pods from running.
		for _, cond := range st.Status.GetConditions() {
			if (cond.Type == runtimeapi.RuntimeReady || cond.Type == runtimeapi.NetworkReady) && !cond.Status {
				return false
			}
		}
		return true
	})
	if !ready {
		logText, _ := os.ReadFile(filepath.Join(rt.dir, "daemon.log"))
		if len(logText) > 3000 {
			logText = logText[len(logText)-3000:]
		}
		return fmt.Errorf("%s not ready within 30s; its log ends:\n%s", rt.name, logText)
	}
	return nil
}

func (rt *runtime) pid() int { return rt.cmd.Process.Pid }

func (rt *runtime) pull(ctx context.Context, ref string) error {
	_, err := rt.is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	return err
}

// removeAllPods stops and removes every pod of the runtime.
func (rt *runtime) removeAllPods(ctx context.Context) {
	resp, err := rt.rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	for _, p := range resp.Items {
		rt.rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
		rt.rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
	}
}

// stop removes the pods, stops the daemon (SIGTERM, then SIGKILL after
// 20s) and deletes its bridge.
func (rt *runtime) stop() {
	if rt.cmd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if rt.rs != nil {
		rt.removeAllPods(ctx)
	}
	if rt.conn != nil {
		rt.conn.Close()
	}
	rt.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { rt.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		fmt.Fprintf(os.Stderr, "cribench: %s did not exit on SIGTERM; killing it\n", rt.name)
		rt.cmd.Process.Kill()
		<-done
	}
	rt.cmd = nil
	if _, err := os.Stat("/sys/class/net/" + rt.bridge); err == nil {
		if out, err := exec.Command("ip", "link", "delete", rt.bridge).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "cribench: delete bridge %s: %v %s\n", rt.bridge, err, out)
		}
	}
}

// cleanupWork unmounts whatever is still mounted below work (deepest
// first), removes the pods' cgroups and deletes work.
func cleanupWork(work string) {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], work+"/") {
			mounts = append(mounts, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		fmt.Fprintf(os.Stderr, "cribench: left behind: mount %s (detaching)\n", m)
		unix.Unmount(m, unix.MNT_DETACH)
	}
	removeCgroups()
	if err := os.RemoveAll(work); err != nil {
		fmt.Fprintf(os.Stderr, "cribench: %v\n", err)
	}
}

// removeCgroups removes the cgroup trees the pods were given (parent
// cgroupParent below), deepest first, in every hierarchy.
func removeCgroups() {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupParent)
	if u := "/sys/fs/cgroup/" + cgroupParent; dirExists(u) {
		roots = append(roots, u)
	}
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := unix.Rmdir(dirs[i]); err != nil {
				fmt.Fprintf(os.Stderr, "cribench: remove cgroup %s: %v\n", dirs[i], err)
			}
		}
	}
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
