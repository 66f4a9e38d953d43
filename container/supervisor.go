package container

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/nsexec"
	"github.com/cri-mini/cri-mini/internal/proc"
	pb "github.com/cri-mini/cri-mini/proto/supervisor/v1"
)

// runSupervisor is the small detached process (own session) that is the
// parent of one container's init: it starts the init in its namespaces,
// relays the create handshake to the daemon, then copies the container's
// output into its CRI log, reaps the init and records how it ended. The
// daemon can die and restart meanwhile: it finds everything in the state
// directory.
func runSupervisor() {
	dir := os.Getenv(envStateDir)
	conn, err := fileConn(os.NewFile(3, "ctl"))
	if err == nil {
		err = supervise(dir, conn)
	}
	if err != nil {
		klog.ErrorS(err, "Supervisor failed", "container", filepath.Base(dir), "dir", dir)
		if conn != nil {
			_ = sendMsg(conn, errorMsg(err))
		}
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
	os.Exit(0)
}

// supervise is the supervisor's life, one phase after the other: start the
// init, relay the create handshake, serve attach and the log while the
// container runs, and record how it ended. Until the daemon has been told
// that the container is created, a failure kills the init.
func supervise(dir string, ctl *net.UnixConn) error {
	var cfg config
	if err := readJSON(dir, configFile, &cfg); err != nil {
		return err
	}
	logw, err := openContainerLog(&cfg)
	if err != nil {
		return err
	}
	if logw != nil {
		defer logw.close()
	}
	conn, peer, err := socketPair()
	if err != nil {
		return err
	}
	defer conn.Close()
	cmd := initCommand(dir, peer)
	pipes, err := pipeStdio(cmd, &cfg)
	if err != nil {
		return err
	}
	initProc, err := startInit(cmd, dir, &cfg)
	closeInitEnds(cmd, peer)
	if err != nil {
		return fmt.Errorf("start init: %w", err)
	}
	failed := true
	defer func() {
		if failed {
			_ = initProc.Kill()
			_, _ = initProc.Wait()
		}
	}()
	if err := waitForCgroup(ctl, initProc.Pid); err != nil {
		return err
	}
	oom := watchOOM(initProc.Pid) // the init is in its cgroup now (cmd ran the nsenter constructor, reaped by now)
	fds, err := releaseInit(conn)
	if err != nil {
		return err
	}
	master, err := ptyMaster(&cfg, fds)
	if err != nil {
		return err
	}
	if master != nil {
		defer master.Close()
	}
	control, err := listenControl(dir, attachStdin(&cfg, master, pipes.stdinW), cfg.StdinOnce, master, logw)
	if err != nil {
		return err
	}
	defer control.close()
	if err := writeProcess(dir, initFile, proc.Identify(initProc.Pid)); err != nil {
		return err
	}
	failed = false
	reportCreated(ctl, dir, initProc.Pid)

	copies := copyOutput(logw, control, master, pipes)
	state, err := initProc.Wait()
	if err != nil {
		return fmt.Errorf("wait for init %d: %w", initProc.Pid, err)
	}
	drainOutput(copies, 2*time.Second)
	return recordExit(dir, state, oom)
}

// openContainerLog opens the container's CRI log; nil when it has none.
func openContainerLog(cfg *config) (*criLog, error) {
	if cfg.LogPath == "" {
		return nil, nil
	}
	logw, err := openCRILog(cfg.LogDir, cfg.LogPath)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", cfg.LogPath, err)
	}
	return logw, nil
}

// initCommand re-executes this binary in the init role, with peer, its end
// of the sync socket, at initSyncFD. startInit adds the rest.
func initCommand(dir string, peer *os.File) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{os.Args[0]}
	cmd.Env = []string{envRole + "=" + roleInit, envStateDir + "=" + dir}
	cmd.ExtraFiles = []*os.File{initSyncFD - 3: peer}
	return cmd
}

// initPipes are the supervisor's ends of the init's standard streams
// without a terminal; nil where there is none.
type initPipes struct {
	stdinW     *os.File // attach writes the container's stdin here
	outR, errR *os.File // the container's stdout and stderr, for the log
}

// pipeStdio connects the init's standard streams to pipes when it has no
// terminal (with one, the init sends the pty master once it is ready).
// The init's ends are set in cmd.
func pipeStdio(cmd *exec.Cmd, cfg *config) (initPipes, error) {
	var p initPipes
	if cfg.Stdin && !cfg.Tty {
		stdinR, stdinW, err := os.Pipe()
		if err != nil {
			return p, err
		}
		cmd.Stdin, p.stdinW = stdinR, stdinW
	}
	if !cfg.Tty {
		outR, outW, err := os.Pipe()
		if err != nil {
			closeInitEnds(cmd, nil)
			return p, err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			outW.Close()
			closeInitEnds(cmd, nil)
			return p, err
		}
		cmd.Stdout, cmd.Stderr = outW, errW
		p.outR, p.errR = outR, errR
	}
	return p, nil
}

// closeInitEnds closes this process's copies of what the init inherits
// (the sync socket's peer, the pipes' other ends), once startInit has
// started it or failed: a pipe must see its end when the container's
// processes have closed theirs.
func closeInitEnds(cmd *exec.Cmd, peer *os.File) {
	if peer != nil {
		peer.Close()
	}
	if cmd.Stdout != nil {
		cmd.Stdout.(*os.File).Close()
		cmd.Stderr.(*os.File).Close()
	}
	if cmd.Stdin != nil {
		cmd.Stdin.(*os.File).Close()
	}
}

// waitForCgroup tells the daemon the init's pid and waits for its go: the
// daemon puts the init into its cgroup between "pid" and "go".
func waitForCgroup(ctl *net.UnixConn, pid int) error {
	if err := sendMsg(ctl, pidMsg(pid)); err != nil {
		return err
	}
	if _, _, err := expectMsg(ctl, msgGo); err != nil {
		return fmt.Errorf("wait for go: %w", err)
	}
	return nil
}

// releaseInit lets the init, now in its cgroup, build the container, and
// waits until it has (it then blocks on the start fifo). It returns the
// descriptors the init sent with its ready: the pty master with a tty.
func releaseInit(conn *net.UnixConn) ([]int, error) {
	if err := sendMsg(conn, goMsg()); err != nil {
		return nil, err
	}
	_, fds, err := expectMsg(conn, msgReady)
	if err != nil {
		return nil, fmt.Errorf("container init: %w", err)
	}
	return fds, nil
}

// ptyMaster is the container's terminal from the init's ready message;
// nil without a tty.
func ptyMaster(cfg *config, fds []int) (*os.File, error) {
	if !cfg.Tty {
		return nil, nil
	}
	if len(fds) != 1 {
		return nil, errors.New("container init sent no pty")
	}
	return os.NewFile(uintptr(fds[0]), "pty"), nil
}

// attachStdin is where attach writes the container's stdin: the terminal,
// the stdin pipe, or nowhere when the container has no stdin.
func attachStdin(cfg *config, master, stdinW *os.File) io.WriteCloser {
	switch {
	case cfg.Stdin && master != nil:
		return master
	case stdinW != nil:
		return stdinW
	}
	return nil
}

// reportCreated tells the daemon that the container is created and lets it
// go: from here on the supervisor lives without it.
func reportCreated(ctl *net.UnixConn, dir string, pid int) {
	if err := sendMsg(ctl, readyMsg(pid)); err != nil {
		klog.InfoS("Supervisor: daemon gone after create", "container", filepath.Base(dir), "err", err)
	}
	ctl.Close()
}

// copyOutput copies the container's output into its log (or discards it
// without one), through the attach sessions; the WaitGroup ends with the
// output.
func copyOutput(logw *criLog, control *controlServer, master *os.File, pipes initPipes) *sync.WaitGroup {
	var copies sync.WaitGroup
	copyOut := func(stream string, r io.Reader, kind pb.Stream) {
		copies.Add(1)
		r = io.TeeReader(r, control.writer(kind))
		go func() {
			defer copies.Done()
			if logw != nil {
				logw.copyStream(stream, r)
			} else {
				_, _ = io.Copy(io.Discard, r)
			}
		}()
	}
	if master != nil {
		copyOut("stdout", master, pb.Stream_STREAM_STDOUT)
	} else {
		copyOut("stdout", pipes.outR, pb.Stream_STREAM_STDOUT)
		copyOut("stderr", pipes.errR, pb.Stream_STREAM_STDERR)
	}
	return &copies
}

// drainOutput waits, at most timeout, for the output copies to end: output
// still buffered in the pipes belongs in the log before the exit is
// recorded; processes that outlive the init in a shared pid namespace may
// hold the pipes open, so the wait is bounded.
func drainOutput(copies *sync.WaitGroup, timeout time.Duration) {
	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(timeout):
	}
}

// recordExit writes how the init ended (128+n for death by signal n) and
// whether the OOM killer struck, for the daemon to read.
func recordExit(dir string, state *os.ProcessState, oom *oomWatch) error {
	ws := state.Sys().(syscall.WaitStatus)
	ex := exitRecord{ExitCode: ws.ExitStatus(), Finished: time.Now().UTC()}
	if ws.Signaled() {
		ex.Signal = int(ws.Signal())
		ex.ExitCode = 128 + ex.Signal
	}
	ex.OOMKilled = oom.stop(ex.ExitCode == 128+int(syscall.SIGKILL))
	return writeExit(dir, ex)
}

// namespaceFlags splits the spec's namespaces into clone flags for new ones
// and the namespaces to join. The mount namespace is always new; the
// cgroup namespace is made by the init itself once it is in its cgroup; a
// user namespace can only be joined (a pod's): a container has no mappings
// of its own.
func namespaceFlags(spec *specs.Spec) (uintptr, []specs.LinuxNamespace, error) {
	flags := uintptr(unix.CLONE_NEWNS)
	var joins []specs.LinuxNamespace
	if spec.Linux == nil {
		return flags, joins, nil
	}
	for _, ns := range spec.Linux.Namespaces {
		switch {
		case ns.Type == specs.MountNamespace:
			if ns.Path != "" {
				return 0, nil, fmt.Errorf("joining mount namespace %s: a container always gets its own", ns.Path)
			}
			continue
		case ns.Type == specs.UserNamespace:
			if ns.Path == "" {
				return 0, nil, errors.New("a new user namespace: a container joins its pod's, with the pod's mappings")
			}
			joins = append(joins, ns)
			continue
		}
		f, err := nsexec.CloneFlag(ns.Type)
		if err != nil {
			return 0, nil, fmt.Errorf("%s namespace: not supported", ns.Type)
		}
		switch {
		case ns.Path != "":
			joins = append(joins, ns)
		case ns.Type != specs.CgroupNamespace:
			flags |= uintptr(f)
		}
	}
	return flags, joins, nil
}
