package container

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
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
		klog.Errorf("supervisor %s: %v", dir, err)
		if conn != nil {
			_ = sendMsg(conn, syncMsg{Type: msgError, Error: err.Error()})
		}
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
	os.Exit(0)
}

func supervise(dir string, ctl *net.UnixConn) error {
	// ReopenLog may signal as soon as Create has returned, which is before
	// the log copying starts: without a handler from the first moment, the
	// signal's default action would end the supervisor.
	reopen := make(chan os.Signal, 1)
	signal.Notify(reopen, unix.SIGUSR1)
	var cfg config
	if err := readJSON(dir, configFile, &cfg); err != nil {
		return err
	}
	var logw *criLog
	if cfg.LogPath != "" {
		var err error
		if logw, err = openCRILog(cfg.LogPath); err != nil {
			return fmt.Errorf("open log %s: %w", cfg.LogPath, err)
		}
		defer logw.close()
	}
	conn, peer, err := socketPair()
	if err != nil {
		return err
	}
	defer conn.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{os.Args[0]}
	cmd.Env = []string{envRole + "=" + roleInit, envStateDir + "=" + dir}
	cmd.ExtraFiles = []*os.File{peer}
	var outR, errR, stdinW *os.File
	if cfg.Stdin && !cfg.Tty {
		var stdinR *os.File
		if stdinR, stdinW, err = os.Pipe(); err != nil {
			return err
		}
		cmd.Stdin = stdinR
		defer stdinR.Close()
	}
	if !cfg.Tty {
		var outW, errW *os.File
		if outR, outW, err = os.Pipe(); err != nil {
			return err
		}
		if errR, errW, err = os.Pipe(); err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = outW, errW
		defer outW.Close()
		defer errW.Close()
	}
	flags, joins, err := namespaceFlags(cfg.Spec)
	if err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	if err := startInNamespaces(cmd, joins); err != nil {
		return fmt.Errorf("start init: %w", err)
	}
	peer.Close()
	if cmd.Stdout != nil {
		cmd.Stdout.(*os.File).Close()
		cmd.Stderr.(*os.File).Close()
	}
	if cmd.Stdin != nil {
		cmd.Stdin.(*os.File).Close()
	}
	failed := true
	defer func() {
		if failed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	// The daemon puts the init into its cgroup between "pid" and "go".
	if err := sendMsg(ctl, syncMsg{Type: msgPid, Pid: cmd.Process.Pid}); err != nil {
		return err
	}
	if _, _, err := expectMsg(ctl, msgGo); err != nil {
		return fmt.Errorf("wait for go: %w", err)
	}
	oom := watchOOM(cmd.Process.Pid) // the init is in its cgroup now
	if err := sendMsg(conn, syncMsg{Type: msgGo}); err != nil {
		return err
	}
	_, fds, err := expectMsg(conn, msgReady)
	if err != nil {
		return fmt.Errorf("container init: %w", err)
	}
	var master *os.File
	if cfg.Tty {
		if len(fds) != 1 {
			return errors.New("container init sent no pty")
		}
		master = os.NewFile(uintptr(fds[0]), "pty")
		defer master.Close()
	}
	var stdin io.WriteCloser
	switch {
	case cfg.Stdin && master != nil:
		stdin = master
	case stdinW != nil:
		stdin = stdinW
	}
	attach, err := listenAttach(dir, stdin, cfg.StdinOnce, master)
	if err != nil {
		return err
	}
	defer attach.close()
	if err := writeJSON(dir, initFile, newProcRecord(cmd.Process.Pid)); err != nil {
		return err
	}
	failed = false
	if err := sendMsg(ctl, syncMsg{Type: msgReady, Pid: cmd.Process.Pid}); err != nil {
		klog.Warningf("supervisor %s: daemon gone after create: %v", dir, err)
	}
	ctl.Close()

	var copies sync.WaitGroup
	copyOut := func(stream string, r io.Reader, kind byte) {
		copies.Add(1)
		r = io.TeeReader(r, attach.writer(kind))
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
		copyOut("stdout", master, frameStdout)
	} else {
		copyOut("stdout", outR, frameStdout)
		copyOut("stderr", errR, frameStderr)
	}
	go func() {
		for range reopen {
			if logw != nil {
				if err := logw.reopen(); err != nil {
					klog.Errorf("reopen log %s: %v", cfg.LogPath, err)
				}
			}
		}
	}()
	_ = cmd.Wait()
	// Output still buffered in the pipes belongs in the log before the exit
	// is recorded; processes that outlive the init in a shared pid
	// namespace may hold the pipes open, so the wait is bounded.
	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	ex := exitRecord{ExitCode: ws.ExitStatus(), Finished: time.Now().UTC()}
	if ws.Signaled() {
		ex.Signal = int(ws.Signal())
		ex.ExitCode = 128 + ex.Signal
	}
	ex.OOMKilled = oom.stop(ex.ExitCode == 128+int(syscall.SIGKILL))
	return writeJSON(dir, exitFile, ex)
}

// namespaceFlags splits the spec's namespaces into clone flags for new ones
// and paths to join. The mount namespace is always new; the cgroup namespace
// is made by the init itself once it is in its cgroup.
func namespaceFlags(spec *specs.Spec) (uintptr, map[specs.LinuxNamespaceType]string, error) {
	flags := uintptr(unix.CLONE_NEWNS)
	joins := map[specs.LinuxNamespaceType]string{}
	if spec.Linux == nil {
		return flags, joins, nil
	}
	for _, ns := range spec.Linux.Namespaces {
		var f uintptr
		switch ns.Type {
		case specs.PIDNamespace:
			f = unix.CLONE_NEWPID
		case specs.NetworkNamespace:
			f = unix.CLONE_NEWNET
		case specs.UTSNamespace:
			f = unix.CLONE_NEWUTS
		case specs.IPCNamespace:
			f = unix.CLONE_NEWIPC
		case specs.CgroupNamespace:
		case specs.MountNamespace:
			if ns.Path != "" {
				return 0, nil, fmt.Errorf("joining mount namespace %s: a container always gets its own", ns.Path)
			}
		default:
			return 0, nil, fmt.Errorf("%s namespace: not supported", ns.Type)
		}
		if ns.Path != "" {
			joins[ns.Type] = ns.Path
		} else {
			flags |= f
		}
	}
	return flags, joins, nil
}

var nsTypeFlag = map[specs.LinuxNamespaceType]int{
	specs.PIDNamespace: unix.CLONE_NEWPID, specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.UTSNamespace: unix.CLONE_NEWUTS, specs.IPCNamespace: unix.CLONE_NEWIPC,
	specs.CgroupNamespace: unix.CLONE_NEWCGROUP,
}

// startInNamespaces starts cmd from an OS thread that first joined the given
// namespaces, so the child is born in them (a joined pid namespace applies to
// children only, which is exactly what the init is). The thread is left
// locked and so is discarded when the goroutine ends.
func startInNamespaces(cmd *exec.Cmd, joins map[specs.LinuxNamespaceType]string) error {
	if len(joins) == 0 {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		for t, p := range joins {
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				errc <- fmt.Errorf("open %s namespace %s: %w", t, p, err)
				return
			}
			err = unix.Setns(fd, nsTypeFlag[t])
			unix.Close(fd)
			if err != nil {
				errc <- fmt.Errorf("join %s namespace %s: %w", t, p, err)
				return
			}
		}
		errc <- cmd.Start()
	}()
	return <-errc
}
