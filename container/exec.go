package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/proc"
)

// ExecOptions describe a further process in a running container. Fields left
// empty take the container's own values.
type ExecOptions struct {
	Args []string
	Env  []string
	Cwd  string
	User *specs.User
	Tty  bool
	// Stdin, Stdout and Stderr connect to the process (Stderr unused with a
	// tty: the terminal carries both streams on Stdout).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Resize, with a tty, delivers terminal size changes.
	Resize <-chan TerminalSize
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct {
	Width, Height uint16
}

// The exec child's descriptors (ExtraFiles order).
const (
	execSyncFD = 3 // go byte, then the process description as JSON
	execErrFD  = 4 // setup failures, closed on exec
	execCtlFD  = 5 // socket: the pty master, then "pid"/"go" around joining the cgroup
)

type execConfig struct {
	Process *specs.Process      `json:"process"`
	Seccomp *specs.LinuxSeccomp `json:"seccomp,omitempty"`
}

// Exec runs a process in the running container id and returns its exit code
// (128+n for death by signal n). It joins all the container's namespaces
// (through the nsenter constructor), its cgroup, capabilities, seccomp
// profile, user and working directory.
func (r *Runtime) Exec(ctx context.Context, id string, o ExecOptions) (int, error) {
	cfg, init, err := r.execTarget(id, o)
	if err != nil {
		return -1, err
	}
	payload, err := json.Marshal(execConfig{Process: execProcessSpec(cfg.Spec, o), Seccomp: seccompOf(cfg.Spec)})
	if err != nil {
		return -1, err
	}
	exe, err := r.executable()
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	x, err := newExecChild(ctx, exe, init.Pid, o)
	if err != nil {
		return -1, err
	}
	defer x.close()
	if err := x.start(payload); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	var ttyCopies *sync.WaitGroup
	if o.Tty {
		master, err := x.terminal(id)
		if err != nil {
			return -1, err
		}
		defer master.Close()
		var stopResize func()
		ttyCopies, stopResize = relayTerminal(master, o)
		defer stopResize()
	}
	if err := r.joinCgroup(x.ctl, x.cmd.Process.Pid, cfg.CgroupPath); err != nil {
		_ = x.cmd.Cancel()
		_ = x.cmd.Wait()
		return -1, fmt.Errorf("exec in %s: %w", id, err)
	}
	werr := x.cmd.Wait()
	if o.Tty {
		// The slave is gone with the process: reading the master ends in
		// EIO once the buffered output is out.
		ttyCopies.Wait()
	}
	return x.exitCode(ctx, id, werr)
}

// execTarget is the config and the live init of container id, which an
// exec of o joins.
func (r *Runtime) execTarget(id string, o ExecOptions) (*config, proc.ID, error) {
	var init proc.ID
	dir, cfg, err := r.existing(id)
	if err != nil {
		return nil, init, err
	}
	if len(o.Args) == 0 {
		return nil, init, fmt.Errorf("exec in %s: no command: %w", id, errdefs.ErrInvalidArgument)
	}
	if init, err = readProcess(dir, initFile); err != nil || !init.Alive() {
		return nil, init, fmt.Errorf("exec in %s: container is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	return cfg, init, nil
}

// execProcessSpec is the container's process with what o sets instead.
func execProcessSpec(spec *specs.Spec, o ExecOptions) *specs.Process {
	p := *spec.Process
	p.Args, p.Terminal = o.Args, o.Tty
	if o.Env != nil {
		p.Env = o.Env
	}
	if o.Cwd != "" {
		p.Cwd = o.Cwd
	}
	if o.User != nil {
		p.User = *o.User
	}
	return &p
}

// execChild is the nsenter parent of an exec, whose child joins the
// container and execs the process, with this side's ends of the
// descriptors they share (execSyncFD, execErrFD, execCtlFD).
type execChild struct {
	cmd          *exec.Cmd
	syncR, syncW *os.File // the go byte and the process description
	errR, errW   *os.File // setup failures
	ctl          *net.UnixConn
	peer         *os.File // the child's end of ctl
}

// newExecChild prepares the nsenter parent that joins the namespaces of
// the init initPid, from the sealed executable exe. close releases what
// it holds.
func newExecChild(ctx context.Context, exe string, initPid int, o ExecOptions) (*execChild, error) {
	x := &execChild{}
	var err error
	if x.syncR, x.syncW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if x.errR, x.errW, err = os.Pipe(); err != nil {
		x.close()
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Args = []string{os.Args[0]}
	cmd.Env = []string{envRole + "=" + roleExec, "_CRI_MINI_NSENTER_PID=" + strconv.Itoa(initPid),
		"_CRI_MINI_NSENTER_SYNC=" + strconv.Itoa(execSyncFD), "_CRI_MINI_NSENTER_ERR=" + strconv.Itoa(execErrFD),
		// The parent-death signal follows the thread that forks, not the
		// process: this works because no thread of ours ends while its
		// children live (internal/nsexec returns threads to Go).
		"_CRI_MINI_NSENTER_PPID=" + strconv.Itoa(os.Getpid())}
	if x.ctl, x.peer, err = socketPair(); err != nil {
		x.close()
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{x.syncR, x.errW, x.peer}
	if !o.Tty {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	}
	// When ctx ends, the exec'd process and everything it started in the
	// container go, not only the nsenter parent we hold.
	cmd.Cancel = func() error {
		killDescendants(cmd.Process.Pid)
		return cmd.Process.Kill()
	}
	cmd.WaitDelay = 2 * time.Second
	x.cmd = cmd
	return x, nil
}

// close closes this side's descriptors (most are closed already).
func (x *execChild) close() {
	if x.ctl != nil {
		x.peer.Close()
		x.ctl.Close()
	}
	if x.errR != nil {
		x.errW.Close()
		x.errR.Close()
	}
	x.syncW.Close()
	x.syncR.Close()
}

// start starts the nsenter parent, closes the ends its child has, and
// sends the go byte with the process description.
func (x *execChild) start(payload []byte) error {
	if err := x.cmd.Start(); err != nil {
		return err
	}
	x.syncR.Close()
	x.errW.Close()
	x.peer.Close()
	_, werr := x.syncW.Write(append([]byte{'g'}, payload...))
	x.syncW.Close()
	if werr != nil {
		_ = x.cmd.Process.Kill()
		_ = x.cmd.Wait()
		return werr
	}
	return nil
}

// terminal receives the pty master the exec child made; when it sends
// none, the child is waited for and the error says why.
func (x *execChild) terminal(id string) (*os.File, error) {
	_, fds, err := expectMsg(x.ctl, msgReady)
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		_ = x.cmd.Wait()
		return nil, fmt.Errorf("exec in %s: no terminal: %w", id, errors.Join(err, readSetupError(x.errR)))
	}
	return os.NewFile(uintptr(fds[0]), "pty"), nil
}

// relayTerminal connects the caller's streams to the terminal and applies
// its resizes. The WaitGroup ends when the output is copied; stop ends
// the resizing.
func relayTerminal(master *os.File, o ExecOptions) (output *sync.WaitGroup, stop func()) {
	output, stop = &sync.WaitGroup{}, func() {}
	if o.Stdin != nil {
		go func() { _, _ = io.Copy(master, o.Stdin) }()
	}
	if o.Stdout != nil {
		output.Add(1)
		go func() { defer output.Done(); _, _ = io.Copy(o.Stdout, master) }()
	}
	if o.Resize != nil {
		done := make(chan struct{})
		stop = func() { close(done) }
		go func() {
			for {
				select {
				case sz := <-o.Resize:
					_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
				case <-done:
					return
				}
			}
		}()
	}
	return output, stop
}

// exitCode is the exec'd process's exit code (128+n for death by signal
// n) once the nsenter parent has been waited for (werr), or why there is
// none: a setup failure the child reported, the end of ctx.
func (x *execChild) exitCode(ctx context.Context, id string, werr error) (int, error) {
	if serr := readSetupError(x.errR); serr != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, serr)
	}
	if ctx.Err() != nil {
		return -1, fmt.Errorf("exec in %s: %w", id, orCtxErr(ctx, nil))
	}
	ps := x.cmd.ProcessState
	if ps == nil {
		return -1, fmt.Errorf("exec in %s: %w", id, werr)
	}
	if code := ps.ExitCode(); code >= 0 {
		return code, nil
	}
	if ws, ok := ps.Sys().(interface{ Signal() os.Signal }); ok {
		if s, ok := ws.Signal().(unix.Signal); ok {
			return 128 + int(s), nil
		}
	}
	return -1, fmt.Errorf("exec in %s: %v", id, werr)
}

// readSetupError returns what the exec child reported before it could exec.
func readSetupError(r *os.File) error {
	data, _ := io.ReadAll(r)
	if len(data) == 0 {
		return nil
	}
	return errors.New(string(data))
}

// runExec is the exec role after the nsenter constructor: inside all of the
// container's namespaces, it sets up the process like the init does and
// execs it.
func runExec() {
	runtime.LockOSThread()
	// The application must not inherit the error pipe: a process it leaves
	// behind would keep Exec waiting for setup errors.
	unix.CloseOnExec(execErrFD)
	errPipe := os.NewFile(execErrFD, "err")
	err := execInContainer()
	fmt.Fprint(errPipe, err.Error())
	os.Exit(126)
}

func execInContainer() error {
	sync := os.NewFile(execSyncFD, "sync")
	data, err := io.ReadAll(sync) // the go byte was consumed by the constructor
	if err != nil {
		return fmt.Errorf("read exec config: %w", err)
	}
	sync.Close()
	var ec execConfig
	if err := json.Unmarshal(data, &ec); err != nil {
		return fmt.Errorf("decode exec config: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	ctl, err := fileConn(os.NewFile(execCtlFD, "ctl"))
	if err != nil {
		return err
	}
	defer ctl.Close()
	if ec.Process.Terminal {
		master, err := setupTTY()
		if err != nil {
			return err
		}
		err = sendMsg(ctl, readyMsg(0), master)
		unix.Close(master)
		if err != nil {
			return err
		}
	}
	path, err := prepareProcess(ec.Process)
	if err != nil {
		return err
	}
	// Joined to the cgroup only now: the Go runtime's threads would count
	// against the container's pids limit; after exec only one is left.
	if err := sendMsg(ctl, pidMsg(0)); err != nil {
		return err
	}
	if _, _, err := expectMsg(ctl, msgGo); err != nil {
		return fmt.Errorf("wait for the cgroup: %w", err)
	}
	ctl.Close()
	// Not to outlive the nsenter parent, which dies with the daemon.
	return execProcess(ec.Process, ec.Seccomp, path, true)
}

// joinCgroup puts the exec child (the only child of the nsenter parent) into
// the container's cgroup when it is about to exec. A child that failed
// before never asks; its error comes through the error pipe.
func (r *Runtime) joinCgroup(ctl *net.UnixConn, parent int, path string) error {
	if _, _, err := expectMsg(ctl, msgPid); err != nil {
		return nil
	}
	if path != "" && r.Cgroups != nil {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent))
		if err != nil {
			return fmt.Errorf("find the exec child: %w", err)
		}
		f := strings.Fields(string(data))
		if len(f) != 1 {
			return fmt.Errorf("nsenter parent %d has children %q, want one", parent, f)
		}
		child, err := strconv.Atoi(f[0])
		if err != nil {
			return fmt.Errorf("find the exec child: %w", err)
		}
		if err := r.Cgroups.Apply(path, child); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	return sendMsg(ctl, goMsg())
}

// killDescendants kills every process below pid. They are stopped first,
// scan after scan until no new one appears, so that none can fork a child
// that escapes the kill by being reparented to the container's init.
func killDescendants(pid int) {
	stopped := map[int]bool{}
	for range 20 {
		found := false
		for _, p := range descendants(pid) {
			if !stopped[p] {
				_ = unix.Kill(p, unix.SIGSTOP)
				stopped[p], found = true, true
			}
		}
		if !found {
			break
		}
	}
	for p := range stopped {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	// SIGKILL lands asynchronously: wait until each is dead (gone or a
	// zombie), so the caller's "the command was killed" is true on return.
	deadline := time.Now().Add(2 * time.Second)
	for p := range stopped {
		for proc.Alive(p) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
}

// descendants lists the processes below pid, from the parent pids in /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := proc.ReadStat(p); err == nil {
			children[st.PPid] = append(children[st.PPid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out
}
