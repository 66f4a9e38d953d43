package container

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/internal/nsexec"
	"github.com/cri-mini/cri-mini/internal/proc"
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
		if logw, err = openCRILog(cfg.LogDir, cfg.LogPath); err != nil {
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
	cmd.ExtraFiles = []*os.File{initSyncFD - 3: peer}
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
	initProc, err := startInit(cmd, dir, &cfg)
	peer.Close()
	if cmd.Stdout != nil {
		cmd.Stdout.(*os.File).Close()
		cmd.Stderr.(*os.File).Close()
	}
	if cmd.Stdin != nil {
		cmd.Stdin.(*os.File).Close()
	}
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
	// The daemon puts the init into its cgroup between "pid" and "go".
	if err := sendMsg(ctl, syncMsg{Type: msgPid, Pid: initProc.Pid}); err != nil {
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
	if err := writeJSON(dir, initFile, proc.Identify(initProc.Pid)); err != nil {
		return err
	}
	failed = false
	if err := sendMsg(ctl, syncMsg{Type: msgReady, Pid: initProc.Pid}); err != nil {
		klog.InfoS("Supervisor: daemon gone after create", "container", filepath.Base(dir), "err", err)
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
					klog.ErrorS(err, "Reopen container log", "container", filepath.Base(dir), "path", cfg.LogPath)
				}
			}
		}
	}()
	state, err := initProc.Wait()
	if err != nil {
		return fmt.Errorf("wait for init %d: %w", initProc.Pid, err)
	}
	// Output still buffered in the pipes belongs in the log before the exit
	// is recorded; processes that outlive the init in a shared pid
	// namespace may hold the pipes open, so the wait is bounded.
	drained := make(chan struct{})
	go func() { copies.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
	ws := state.Sys().(syscall.WaitStatus)
	ex := exitRecord{ExitCode: ws.ExitStatus(), Finished: time.Now().UTC()}
	if ws.Signaled() {
		ex.Signal = int(ws.Signal())
		ex.ExitCode = 128 + ex.Signal
	}
	ex.OOMKilled = oom.stop(ex.ExitCode == 128+int(syscall.SIGKILL))
	return writeJSON(dir, exitFile, ex)
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
