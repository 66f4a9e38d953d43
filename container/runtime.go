package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/container/seccomp"
	"github.com/cri-mini/cri-mini/internal/errdefs"
	"github.com/cri-mini/cri-mini/internal/proc"
	"github.com/cri-mini/cri-mini/internal/randid"
	"github.com/cri-mini/cri-mini/internal/safeexec"
)

// CgroupManager is what the runtime needs from container/cgroups.Manager.
type CgroupManager interface {
	Create(path string, r *specs.LinuxResources) error
	Apply(path string, pid int) error
	Update(path string, r *specs.LinuxResources) error
	KillAll(path string) error
	OOMKilled(path string) (bool, error)
	Destroy(path string) error
}

// Runtime creates and manages containers whose state lives under StateDir
// (one directory per container). The state directory is the truth: a
// daemon that restarts makes a new Runtime on the same StateDir and finds
// every container, running or not. It only remembers, by container ID,
// each container's parsed config, which only Update changes (writing the
// state directory first).
type Runtime struct {
	StateDir string
	// Cgroups places containers in their cgroup (Bundle.CgroupPath) and
	// applies the spec's resources; nil runs containers in the caller's.
	Cgroups CgroupManager
	// Shim is the executable started as each container's supervisor and
	// for each exec (it must call RunInternal first, as cmd/cri-mini-shim
	// does); empty means this process's own binary. A small shim keeps the
	// per-container memory low (a supervisor maps the code of the binary it
	// runs) and starts faster. It runs from a sealed in-memory copy
	// (internal/safeexec), made once per process, so that no process that
	// enters a container leads to the host's binary through /proc/PID/exe.
	Shim string

	// configs holds each container's config.json decoded (*config), so that
	// listing containers does not decode every spec, with the image's
	// environment, on every call. An update stores a new value.
	configs sync.Map
	// records holds each container's records that are final once written
	// (*records): what the supervisor wrote at create and start, and its
	// exit. State then reads none of them again: a list of a full node
	// costs a liveness check per running container, not four file reads
	// and decodes per container.
	records sync.Map
	// updateMu serialises resource updates (see Update).
	updateMu sync.Mutex
}

// executable is what the runtime starts for its internal roles: the sealed
// copy of Shim or of this process's own binary.
func (r *Runtime) executable() (string, error) {
	path := r.Shim
	if path == "" {
		path = "/proc/self/exe"
	}
	return safeexec.Sealed(path)
}

// Bundle is what a container is made from.
type Bundle struct {
	// Spec describes the container; Spec.Root.Path is the prepared rootfs.
	Spec *specs.Spec
	// LogPath, when set, receives the container's output in the CRI log
	// format. With LogDir (the pod's log directory) set, it must lie below
	// LogDir and is opened from there without following symlinks.
	LogPath, LogDir string
	// Tty gives the container a pty from its own devpts instead of pipes.
	Tty bool
	// Stdin keeps the container's stdin open for Attach; with StdinOnce
	// it is closed when the first attached client ends its input.
	Stdin, StdinOnce bool
	// CgroupPath is the container's cgroup (cgroupfs style) when Cgroups
	// is set.
	CgroupPath string
}

// Status is where a container is in its life.
type Status string

const (
	StatusCreating Status = "creating" // create has not finished (or was cut short)
	StatusCreated  Status = "created"  // the init waits for start
	StatusRunning  Status = "running"
	StatusStopped  Status = "stopped"
)

// State is a container as the state directory and the kernel describe it.
type State struct {
	ID       string
	Status   Status
	Pid      int // the init, in the daemon's pid namespace
	ExitCode int // 128+n for death by signal n
	Signal   int
	// ExitLost: the init and its supervisor are gone and no exit was
	// recorded (ExitCode 255 stands in for the unknown one).
	ExitLost   bool
	OOMKilled  bool
	Created    time.Time
	Started    time.Time
	Finished   time.Time
	Spec       *specs.Spec
	LogPath    string
	CgroupPath string
	Tty        bool
}

func (r *Runtime) dir(id string) (string, error) {
	if !randid.Valid(id) {
		return "", fmt.Errorf("container id %q: must be 1-128 letters, digits, '.', '_' or '-': %w", id, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(r.StateDir, id), nil
}

// existing returns the state directory and the config of a container that
// exists. The config is decoded once and shared: callers read it only.
func (r *Runtime) existing(id string) (string, *config, error) {
	return r.lookup(id, false)
}

// lookup is existing; listed says the caller has just read the container's
// directory entry (List), which is then truth enough.
func (r *Runtime) lookup(id string, listed bool) (string, *config, error) {
	dir, err := r.dir(id)
	if err != nil {
		return "", nil, err
	}
	if cached, ok := r.configs.Load(id); ok {
		// The directory stays the truth: a container another Runtime on
		// the same StateDir removed is not served from memory.
		if listed {
			return dir, cached.(*config), nil
		}
		if _, err := os.Lstat(filepath.Join(dir, configFile)); err == nil {
			return dir, cached.(*config), nil
		}
		r.configs.Delete(id)
		r.records.Delete(id)
	}
	var cfg config
	if err := readJSON(dir, configFile, &cfg); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
		}
		return "", nil, fmt.Errorf("container %s: %w", id, err)
	}
	r.configs.Store(id, &cfg)
	return dir, &cfg, nil
}

// Create builds the container (R2-R18) and leaves its init waiting for
// Start. On failure nothing of it remains.
func (r *Runtime) Create(ctx context.Context, id string, b Bundle) (err error) {
	dir, err := r.dir(id)
	if err != nil {
		return err
	}
	if err := validateBundle(b); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if r.Cgroups == nil && b.CgroupPath != "" {
		return fmt.Errorf("container %s: cgroup path %s given but the runtime has no cgroup manager: %w", id, b.CgroupPath, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(r.StateDir, 0o711); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("container %s: %w", id, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("container %s: %w", id, err)
	}
	cfg := config{ID: id, Spec: b.Spec, LogPath: b.LogPath, LogDir: b.LogDir, Tty: b.Tty, Stdin: b.Stdin, StdinOnce: b.StdinOnce,
		CgroupPath: b.CgroupPath, Created: time.Now().UTC()}
	cfg.Spec.Process.Terminal = b.Tty
	// Recorded before any side effect, so Delete can undo a cut-short create.
	if err := writeJSON(dir, configFile, cfg); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("container %s: %w", id, err)
	}
	r.configs.Store(id, &cfg)
	r.records.Delete(id)
	defer func() {
		if err != nil {
			if derr := r.remove(ctx, id, dir, &cfg); derr != nil {
				klog.ErrorS(derr, "Roll back of a failed create", "container", id)
			}
		}
	}()
	if err := writeEtcFiles(dir, id, b.Spec); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, fifoFile), 0o600); err != nil {
		return fmt.Errorf("container %s: start fifo: %w", id, err)
	}
	if err := ownByRoot(dir, b.Spec); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	var pids *specs.LinuxPids
	if b.CgroupPath != "" {
		var res *specs.LinuxResources
		if b.Spec.Linux != nil && b.Spec.Linux.Resources != nil {
			// The init is a Go program with a handful of threads, each a
			// task the pids controller counts: a small limit would stop it
			// half way. The limit is set once the init is ready and waits.
			lifted := *b.Spec.Linux.Resources
			pids, lifted.Pids = lifted.Pids, nil
			res = &lifted
		}
		if err := r.Cgroups.Create(b.CgroupPath, res); err != nil {
			return fmt.Errorf("container %s: cgroup %s: %w", id, b.CgroupPath, err)
		}
	}
	if err := r.startSupervisor(ctx, dir, &cfg); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if pids != nil {
		if err := r.Cgroups.Update(b.CgroupPath, &specs.LinuxResources{Pids: pids}); err != nil {
			return fmt.Errorf("container %s: cgroup %s: pids limit: %w", id, b.CgroupPath, err)
		}
	}
	return nil
}

func validateBundle(b Bundle) error {
	s := b.Spec
	switch {
	case s == nil:
		return fmt.Errorf("no spec: %w", errdefs.ErrInvalidArgument)
	case s.Root == nil || !filepath.IsAbs(s.Root.Path):
		return fmt.Errorf("spec root path must be absolute: %w", errdefs.ErrInvalidArgument)
	case s.Process == nil || len(s.Process.Args) == 0:
		return fmt.Errorf("spec has no process args: %w", errdefs.ErrInvalidArgument)
	}
	if b.LogPath != "" {
		if _, _, err := logLocation(b.LogDir, b.LogPath); err != nil {
			return err
		}
	}
	if fi, err := os.Stat(s.Root.Path); err != nil || !fi.IsDir() {
		return fmt.Errorf("rootfs %s is not a directory: %w", s.Root.Path, errdefs.ErrInvalidArgument)
	}
	if _, _, err := namespaceFlags(s); err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := validUserNS(s); err != nil {
		return err
	}
	// What the init would only find out inside the container is checked
	// here, so that bad input is reported as such.
	for _, rl := range s.Process.Rlimits {
		if _, ok := rlimitNames[rl.Type]; !ok {
			return fmt.Errorf("rlimit %q: unknown type: %w", rl.Type, errdefs.ErrInvalidArgument)
		}
	}
	if c := s.Process.Capabilities; c != nil {
		for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
			if _, err := caps.Parse(set); err != nil {
				return fmt.Errorf("capabilities: %w", err)
			}
		}
	}
	if sc := seccompOf(s); sc != nil {
		if _, err := seccomp.Compile(sc); err != nil {
			return fmt.Errorf("seccomp profile: %w", err)
		}
	}
	return nil
}

// writeEtcFiles is R2: hosts, hostname and resolv.conf for the container,
// for each one the spec does not bind itself.
func writeEtcFiles(dir, id string, spec *specs.Spec) error {
	bound := map[string]bool{}
	for _, m := range spec.Mounts {
		bound[filepath.Clean(m.Destination)] = true
	}
	name := spec.Hostname
	if name == "" {
		name = id
		if len(name) > 12 {
			name = name[:12]
		}
	}
	files := map[string][]byte{
		"hosts":    []byte("127.0.0.1\tlocalhost " + name + "\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
		"hostname": []byte(name + "\n"),
	}
	if data, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		files["resolv.conf"] = data
	}
	for f, data := range files {
		if bound["/etc/"+f] {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startSupervisor starts the detached supervisor and runs the create
// handshake: it reports the init's pid, the daemon places it in its cgroup
// and says go, the init builds the container and reports ready.
func (r *Runtime) startSupervisor(ctx context.Context, dir string, cfg *config) error {
	exe, err := r.executable()
	if err != nil {
		return err
	}
	ctl, peer, err := socketPair()
	if err != nil {
		return err
	}
	defer ctl.Close()
	logf, err := os.OpenFile(filepath.Join(dir, "supervisor.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		peer.Close()
		return err
	}
	cmd := exec.Command(exe)
	cmd.Args = []string{os.Args[0]}
	cmd.Env = []string{envRole + "=" + roleSupervisor, envStateDir + "=" + dir}
	cmd.ExtraFiles = []*os.File{peer}
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	peer.Close()
	logf.Close()
	if err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	// The supervisor is our child only until we restart; reap it meanwhile.
	go func() { _ = cmd.Wait() }()
	if err := writeProcess(dir, supFile, proc.Identify(cmd.Process.Pid)); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	stop := context.AfterFunc(ctx, func() { ctl.Close() })
	defer stop()
	m, _, err := expectMsg(ctl, msgPid)
	if err != nil {
		return fmt.Errorf("supervisor: %w", orCtxErr(ctx, err))
	}
	pid := int(m.GetPid().GetPid())
	if p := cfg.Spec.Process; p.OOMScoreAdj != nil {
		setOOMScoreAdj(pid, *p.OOMScoreAdj)
	}
	if cfg.CgroupPath != "" {
		if err := r.Cgroups.Apply(cfg.CgroupPath, pid); err != nil {
			// A cancelled create makes the supervisor kill the init: say so.
			return fmt.Errorf("move init into cgroup %s: %w", cfg.CgroupPath, orCtxErr(ctx, err))
		}
	}
	if err := sendMsg(ctl, goMsg()); err != nil {
		return orCtxErr(ctx, err)
	}
	if _, _, err := expectMsg(ctl, msgReady); err != nil {
		return fmt.Errorf("create: %w", orCtxErr(ctx, err))
	}
	return nil
}

// orCtxErr returns why ctx ended when it has (our closing of a connection
// on that is what caused err), and err otherwise.
func orCtxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.Join(ctx.Err(), errdefs.ErrDeadlineExceeded)
	}
	return err
}

// setOOMScoreAdj sets the init's OOM score. Lowering it needs
// CAP_SYS_RESOURCE; without it the score stays as inherited, and we say so.
func setOOMScoreAdj(pid, score int) {
	p := "/proc/" + strconv.Itoa(pid) + "/oom_score_adj"
	if err := os.WriteFile(p, []byte(strconv.Itoa(score)), 0); err != nil {
		klog.InfoS("oom_score_adj clamped to the inherited value", "pid", pid, "score", score, "err", err)
	}
}

// Start releases a created container's init to exec its application.
func (r *Runtime) Start(ctx context.Context, id string) error {
	dir, _, err := r.existing(id)
	if err != nil {
		return err
	}
	init, err := readProcess(dir, initFile)
	if err != nil {
		return fmt.Errorf("container %s: not created: %w", id, errdefs.ErrFailedPrecondition)
	}
	fifo := filepath.Join(dir, fifoFile)
	fd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("container %s: already started: %w", id, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("container %s: open start fifo: %w", id, err)
	}
	defer unix.Close(fd)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("container %s: start: %w", id, errors.Join(err, errdefs.ErrDeadlineExceeded))
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 100)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("container %s: start: %w", id, err)
		}
		if n > 0 {
			buf := make([]byte, 1)
			if k, _ := unix.Read(fd, buf); k == 1 {
				break
			}
		}
		if !init.Alive() {
			return fmt.Errorf("container %s: init exited before start: %w", id, errdefs.ErrFailedPrecondition)
		}
	}
	if err := writeJSON(dir, startedFile, startedRecord{Started: time.Now().UTC()}); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	_ = os.Remove(fifo)
	return nil
}

// Kill sends sig to the container's init. A container that has already
// stopped is not an error.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	dir, _, err := r.existing(id)
	if err != nil {
		return err
	}
	init, err := readProcess(dir, initFile)
	if err != nil {
		// No init yet: the create is under way, or a crash cut it short.
		// No application has run to be given a grace period, so any
		// signal ends the create (its caller rolls it back), and a pod
		// being stopped is not held up by a container it is still making.
		if err := abortCreate(ctx, dir); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		return nil
	}
	return signalProc(init, sig)
}

// abortCreate ends a create whose init is not recorded: the supervisor is
// killed (a half-made init gives up with it) and waited for, and an init it
// recorded before it died is killed too; a dead supervisor records no more.
func abortCreate(ctx context.Context, dir string) error {
	sup, err := readProcess(dir, supFile)
	if err != nil {
		return nil // it never got as far as a supervisor
	}
	if err := signalProc(sup, unix.SIGKILL); err != nil {
		return fmt.Errorf("kill supervisor: %w", err)
	}
	if err := waitProc(ctx, sup); err != nil {
		return fmt.Errorf("wait for supervisor: %w", err)
	}
	if init, err := readProcess(dir, initFile); err == nil {
		return signalProc(init, unix.SIGKILL)
	}
	return nil
}

// signalProc signals through a pidfd, so a recycled pid is never hit.
func signalProc(p proc.ID, sig syscall.Signal) error {
	fd, err := p.Open()
	if err != nil {
		return nil // gone already
	}
	defer unix.Close(fd)
	if err := proc.Signal(fd, sig); err != nil {
		return fmt.Errorf("signal %d to pid %d: %w", sig, p.Pid, err)
	}
	return nil
}

// waitProc blocks until the recorded process has exited or ctx ends.
func waitProc(ctx context.Context, p proc.ID) error {
	fd, err := p.Open()
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	err = proc.Wait(ctx, fd)
	if err != nil && ctx.Err() != nil {
		return errors.Join(err, errdefs.ErrDeadlineExceeded)
	}
	return err
}

// Wait blocks until the container has stopped and returns its state (exit
// code 128+n for death by signal n).
func (r *Runtime) Wait(ctx context.Context, id string) (*State, error) {
	dir, _, err := r.existing(id)
	if err != nil {
		return nil, err
	}
	sup, err := readProcess(dir, supFile)
	if err == nil {
		if err := waitProc(ctx, sup); err != nil {
			return nil, fmt.Errorf("container %s: wait: %w", id, err)
		}
	}
	// A supervisor that died abnormally leaves the init orphaned: wait for
	// the init itself.
	init, err := readProcess(dir, initFile)
	if err == nil {
		if err := waitProc(ctx, init); err != nil {
			return nil, fmt.Errorf("container %s: wait: %w", id, err)
		}
	}
	return r.State(id)
}

// State describes the container from its state directory.
func (r *Runtime) State(id string) (*State, error) {
	return r.state(id, false)
}

// state is State; listed as lookup's.
func (r *Runtime) state(id string, listed bool) (*State, error) {
	dir, cfg, err := r.lookup(id, listed)
	if err != nil {
		return nil, err
	}
	s := &State{ID: id, Status: StatusCreating, Created: cfg.Created, Spec: cfg.Spec,
		LogPath: cfg.LogPath, CgroupPath: cfg.CgroupPath, Tty: cfg.Tty}
	rec, initAlive := r.readRecords(id, dir)
	s.Started = rec.started.Started
	switch {
	case rec.exit != nil:
		ex := rec.exit
		s.Status, s.ExitCode, s.Signal, s.Finished, s.OOMKilled = StatusStopped, ex.ExitCode, ex.Signal, ex.Finished, ex.OOMKilled
	case rec.haveInit && (initAlive || rec.sup.Alive()):
		s.Status, s.Pid = StatusCreated, rec.init.Pid
		if rec.haveStarted {
			s.Status = StatusRunning
		}
	case rec.haveInit:
		// Both gone without a record: the exit code is lost.
		s.Status, s.ExitCode, s.ExitLost = StatusStopped, 255, true
	}
	// The supervisor's record, or the cgroup where it is still there (v1,
	// or an exit the supervisor did not record).
	if s.Status == StatusStopped && !s.OOMKilled && cfg.CgroupPath != "" && r.Cgroups != nil {
		s.OOMKilled, _ = r.Cgroups.OOMKilled(cfg.CgroupPath)
	}
	return s, nil
}

// records are a container's records that never change once written:
// the supervisor's and the init's process identities, the start, the exit.
type records struct {
	sup, init             proc.ID
	started               startedRecord
	haveInit, haveStarted bool
	exit                  *exitRecord
	// initHandle, of a started init without an exit record when the
	// records were kept, makes its liveness one system call per State.
	initHandle *proc.Handle
}

// initAlive reports whether the init still runs.
func (rec *records) initAlive() bool {
	if rec.initHandle != nil {
		if exited, err := rec.initHandle.Exited(); err == nil {
			return !exited
		}
	}
	return rec.init.Alive()
}

// readRecords reads what is not yet known of the container's records. Once
// the container has started every record but the exit is final, and once
// it has exited all are: they are kept and not read again. The exit is
// looked for once the init has gone: the supervisor records it after that.
// initAlive is whether the init runs, as seen meanwhile; false when it has
// no record, or an exit.
func (r *Runtime) readRecords(id, dir string) (rec *records, initAlive bool) {
	if cached, ok := r.records.Load(id); ok {
		rec = cached.(*records)
		if rec.exit != nil {
			return rec, false
		}
		if rec.initAlive() {
			return rec, true
		}
		if ex, err := readExit(dir); err == nil {
			rec = &records{sup: rec.sup, init: rec.init, started: rec.started, haveInit: true, haveStarted: true, exit: ex}
			r.records.Store(id, rec)
		}
		return rec, false
	}
	rec = &records{}
	rec.sup, _ = readProcess(dir, supFile)
	var err error
	rec.init, err = readProcess(dir, initFile)
	rec.haveInit = err == nil
	rec.haveStarted = readJSON(dir, startedFile, &rec.started) == nil
	rec.exit, _ = readExit(dir)
	if rec.haveInit && (rec.haveStarted || rec.exit != nil) {
		if rec.exit == nil {
			rec.initHandle, _ = rec.init.Handle() // nil once it has gone
		}
		r.records.Store(id, rec)
	}
	return rec, rec.haveInit && rec.exit == nil && rec.initAlive()
}

// List returns the state of every container in StateDir.
func (r *Runtime) List() ([]*State, error) {
	entries, err := os.ReadDir(r.StateDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []*State
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		s, err := r.state(e.Name(), true)
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Delete stops the container if needed and removes everything made for it:
// processes, cgroup and state. It also cleans up after a create that was cut
// short by a crash.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	dir, cfg, err := r.existing(id)
	if err != nil {
		return err
	}
	return r.remove(ctx, id, dir, cfg)
}

func (r *Runtime) remove(ctx context.Context, id, dir string, cfg *config) error {
	init, err := readProcess(dir, initFile)
	if err != nil {
		if err := abortCreate(ctx, dir); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		init, _ = readProcess(dir, initFile) // killed by abortCreate if there: waited for below
	} else if err := signalProc(init, unix.SIGKILL); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if sup, err := readProcess(dir, supFile); err == nil {
		if err := waitProc(ctx, sup); err != nil {
			return fmt.Errorf("container %s: wait for supervisor: %w", id, err)
		}
	}
	if err := waitProc(ctx, init); err != nil {
		return fmt.Errorf("container %s: wait for init: %w", id, err)
	}
	if cfg.CgroupPath != "" && r.Cgroups != nil {
		// A systemd scope is gone with its last process.
		if err := r.Cgroups.KillAll(cfg.CgroupPath); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			klog.ErrorS(err, "Kill what remains in the cgroup", "container", id, "cgroup", cfg.CgroupPath)
		}
		if err := r.Cgroups.Destroy(cfg.CgroupPath); err != nil {
			return fmt.Errorf("container %s: remove cgroup %s: %w", id, cfg.CgroupPath, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("container %s: remove state: %w", id, err)
	}
	r.configs.Delete(id)
	r.records.Delete(id)
	return nil
}
