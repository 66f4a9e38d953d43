package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container"
	"github.com/cri-mini/cri-mini/container/cgroups"
	"github.com/cri-mini/cri-mini/cri"
	"github.com/cri-mini/cri-mini/cri/config"
	"github.com/cri-mini/cri-mini/image"
	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/internal/safeexec"
	"github.com/cri-mini/cri-mini/netns"
	"github.com/cri-mini/cri-mini/sandbox"
)

// shutdownGrace is how long SIGTERM waits for calls in flight.
const shutdownGrace = 10 * time.Second

// serve runs the daemon until SIGTERM or SIGINT. Stopping leaves every pod
// and container running: they do not depend on the daemon's process.
func serve(cfg config.Config) error {
	// A descriptor inherited from whatever started the daemon (a shell, a
	// service manager, a careless parent) would otherwise pass through to
	// every process the daemon starts: Go's os/exec passes on all that are
	// not close-on-exec. Containers get none of them.
	if err := safeexec.CloseOnExec(3); err != nil {
		return err
	}
	for _, dir := range []string{cfg.Root, cfg.RunRoot} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
	}
	lock, err := lockRunRoot(cfg.RunRoot)
	if err != nil {
		return err
	}
	defer lock.Close()

	ctx := context.Background()
	network, err := netns.New(netns.Config{
		ConfDir:    cfg.CNIConfigDir,
		PluginDirs: netns.PluginDirs(cfg.CNIPluginDir),
		RunRoot:    cfg.RunRoot,
	})
	if err != nil {
		return err
	}
	cgroupManager, err := cgroups.New(cfg.CgroupDriver)
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	// Whatever enters a container (supervisors, inits, exec helpers, pause
	// processes) runs from one sealed copy of the shim, or of this binary
	// without one. It is made now, so that a daemon that cannot make it
	// fails at start rather than at its first pod.
	shim := findShim()
	exe := shim
	if exe == "" {
		exe = "/proc/self/exe"
	}
	if _, err := safeexec.Sealed(exe); err != nil {
		return err
	}
	pods, err := sandbox.New(ctx, sandbox.Config{RunRoot: cfg.RunRoot, Network: network, CgroupDriver: cfg.CgroupDriver, Cgroups: cgroupManager,
		PauseExecutable: shim, UserNamespaces: sandbox.UserNamespacePolicy{AllowHostRoot: cfg.UsernsAllowHostRoot}})
	if err != nil {
		return err
	}
	images, err := openImageStore(cfg, true)
	if err != nil {
		return err
	}
	if err := images.CheckConfig(); err != nil {
		return fmt.Errorf("image configuration: %w", err)
	}
	svc := cri.NewService(cri.Options{Config: cfg, Version: version, Network: network, Sandboxes: pods, Cgroups: cgroupManager, Images: images,
		Containers:  &container.Runtime{StateDir: filepath.Join(cfg.RunRoot, "containers"), Cgroups: cgroupManager, Shim: shim},
		ContainerFS: image.NewContainerFS(images, filepath.Join(cfg.RunRoot, "rootfs"))})
	srv := cri.NewServer(svc)
	streamAddr, stopStreaming, err := svc.StartStreaming(cfg.StreamAddress)
	if err != nil {
		return err
	}
	defer stopStreaming()
	klog.InfoS("Serving exec, attach and port-forward sessions", "address", streamAddr)
	if cfg.MetricsAddress != "" {
		metrics, err := serveMetrics(cfg.MetricsAddress, svc.MetricsHandler())
		if err != nil {
			return err
		}
		defer metrics.Close()
	}

	socket, _ := cfg.SocketPath() // validated with the config
	ln, err := listenUnix(socket)
	if err != nil {
		return err
	}
	defer os.Remove(socket)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-sigs
		klog.InfoS("Stopping: pods and containers keep running", "signal", sig.String())
		stopped := make(chan struct{})
		// Event streams last as long as their clients: end them first, or
		// the graceful stop would wait for them.
		go func() { svc.Close(); srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(shutdownGrace):
			srv.Stop()
		}
	}()

	klog.InfoS("cri-mini serving the CRI", "version", version, "socket", socket, "root", cfg.Root, "runroot", cfg.RunRoot)
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("serve %s: %w", socket, err)
	}
	return nil
}

// serveMetrics serves the Prometheus metrics at http://addr/metrics.
func serveMetrics(addr string, h http.Handler) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Metrics server stopped")
		}
	}()
	klog.InfoS("Serving metrics", "address", "http://"+ln.Addr().String()+"/metrics")
	return srv, nil
}

// lockRunRoot takes an exclusive lock on the run root for the life of the
// process, so that two daemons never manage the same pods. The lock file
// names the holder's pid for the error message of the next one.
func lockRunRoot(runRoot string) (*os.File, error) {
	path := filepath.Join(runRoot, "cri-mini.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another cri-mini (pid %s) is already running on runroot %s; stop it or give this one another --runroot",
				strings.TrimSpace(string(holder)), runRoot)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// listenUnix listens on socket, created with mode 0660 from the start (the
// umask is set around bind, so no wider-open moment exists). Only a stale
// socket, one nobody answers on (an earlier daemon's), is replaced: a live
// one means another daemon serves there, and anything else at the path
// (a file, a directory, a symlink) is the operator's, never deleted.
func listenUnix(socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o711); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := removeStaleSocket(socket); err != nil {
		return nil, err
	}
	old := unix.Umask(0o117)
	ln, err := net.Listen("unix", socket)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	return ln, nil
}

// removeStaleSocket clears the way for listening on socket: nothing there
// is fine, a socket nobody accepts on is removed, anything else is an
// error naming the path.
func removeStaleSocket(socket string) error {
	var st unix.Stat_t
	err := unix.Lstat(socket, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--listen %s: %w", socket, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("--listen %s: the path exists and is %s, not a socket; it is left alone: remove it or listen elsewhere", socket, fsutil.FileKind(st.Mode))
	}
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("--listen %s: another process (a cri-mini with another --runroot?) serves on this socket; stop it or listen elsewhere", socket)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("--listen %s: cannot tell whether the socket is stale: %w", socket, err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// findShim is cri-mini-shim next to this executable, the small binary that
// runs container supervisors; without it the daemon re-executes itself.
func findShim() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	shim := filepath.Join(filepath.Dir(self), "cri-mini-shim")
	if st, err := os.Stat(shim); err != nil || st.Mode()&0o111 == 0 {
		klog.InfoS("No cri-mini-shim next to the daemon: supervisors re-execute the daemon's binary (more memory per container)", "looked for", shim)
		return ""
	}
	return shim
}
