package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/container/caps"
	"github.com/cri-mini/cri-mini/container/seccomp"
	"github.com/cri-mini/cri-mini/internal/safeexec"
)

// R19 and what a real runtime adds to it, shared by the container's init and
// by exec: both run a plan's process steps (processSteps), ending in
// execSteps on their locked OS thread.

var rlimitNames = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

func seccompOf(spec *specs.Spec) *specs.LinuxSeccomp {
	if spec.Linux == nil {
		return nil
	}
	return spec.Linux.Seccomp
}

// processSteps are the plan's last steps, R19 and what a real runtime adds
// to it: rlimits, no_new_privs, seccomp, user (with the umask), capabilities
// and the exec, in the order execSteps performs them, with every default
// filled in (umask 0022, working directory /, HOME=/): the plan shows them
// and the init and exec run them, from here alone. The seccomp filter is
// loaded after the change of user with no_new_privs, before it without
// (then it needs CAP_SYS_ADMIN, still held).
func processSteps(p *specs.Process, sc *specs.LinuxSeccomp) ([]Step, error) {
	if p == nil || len(p.Args) == 0 {
		return nil, errNoCommand
	}
	var out []Step
	add := func(s Step) { out = append(out, s) }
	for i := range p.Rlimits {
		add(Step{Recipe: "runtime", Kind: KindRlimit, Rlimit: &p.Rlimits[i]})
	}
	if p.NoNewPrivileges {
		add(Step{Recipe: "runtime", Kind: KindNoNewPrivs})
	} else if sc != nil {
		add(Step{Recipe: "runtime", Kind: KindSeccomp, Seccomp: sc})
	}
	user := p.User
	if user.Umask == nil {
		umask := uint32(0o022)
		user.Umask = &umask
	}
	add(Step{Recipe: "runtime", Kind: KindUser, User: &user})
	if p.Capabilities != nil {
		add(Step{Recipe: "runtime", Kind: KindCapabilities, Capabilities: p.Capabilities})
	}
	if p.NoNewPrivileges && sc != nil {
		add(Step{Recipe: "runtime", Kind: KindSeccomp, Seccomp: sc})
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	env := p.Env
	if !hasEnv(env, "HOME") {
		env = append(env[:len(env):len(env)], "HOME=/")
	}
	add(Step{Recipe: "R19", Kind: KindExec, Exec: &ExecStep{Args: p.Args, Env: env, Cwd: cwd}})
	return out, nil
}

// prepareProcess and execProcess run process p (an exec's) as a plan's
// process steps.
func prepareProcess(p *specs.Process) (string, error) {
	steps, err := processSteps(p, nil)
	if err != nil {
		return "", err
	}
	return prepareSteps(steps)
}

func execProcess(p *specs.Process, sc *specs.LinuxSeccomp, path string, dieWithParent bool) error {
	steps, err := processSteps(p, sc)
	if err != nil {
		return err
	}
	return execSteps(steps, path, dieWithParent)
}

// prepareSteps does the process steps of plan whose failure should fail
// create (or exec) rather than the started application: the rlimits, the
// user's umask, the exec's working directory, and finding its executable.
// It returns the executable's path.
func prepareSteps(plan []Step) (string, error) {
	var e *ExecStep
	for _, s := range plan {
		switch s.Kind {
		case KindRlimit:
			rl := s.Rlimit
			res, ok := rlimitNames[rl.Type]
			if !ok {
				return "", fmt.Errorf("unknown rlimit %q", rl.Type)
			}
			if err := unix.Setrlimit(res, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}); err != nil {
				return "", fmt.Errorf("set %s to %d/%d: %w", rl.Type, rl.Soft, rl.Hard, err)
			}
		case KindUser:
			if s.User.Umask == nil {
				return "", errors.New("plan step user has no umask")
			}
			unix.Umask(int(*s.User.Umask))
		case KindExec:
			e = s.Exec
		}
	}
	if e == nil || len(e.Args) == 0 {
		return "", errNoCommand
	}
	root, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer root.Close()
	d, err := mkdirInRoot(root, e.Cwd)
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	err = unix.Fchdir(int(d.Fd()))
	d.Close()
	if err != nil {
		return "", fmt.Errorf("chdir %s: %w", e.Cwd, err)
	}
	return lookPath(e.Args[0], e.Env)
}

// lookPath finds name the way execvp would, using the process's PATH.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if err := unix.Access(name, unix.X_OK); err != nil {
			return "", fmt.Errorf("executable %s: %w", name, err)
		}
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH %s", name, path)
}

// execSteps drops privileges and replaces the calling process with the
// application (R19), performing the plan's process steps in order:
// no_new_privs, seccomp, user and groups (changed inside the capabilities
// step, which must keep the capabilities across it), capabilities, exec.
// The application gets stdio and no other descriptor. With dieWithParent
// (an exec'd process), it is killed when its parent dies.
func execSteps(plan []Step, path string, dieWithParent bool) error {
	parent := os.Getppid()
	// Marked before the seccomp filter is in place, which may not allow
	// close_range. Whatever was opened without O_CLOEXEC on the way here
	// (by us, a library, or inherited) goes with the exec.
	if err := safeexec.CloseOnExec(3); err != nil {
		return err
	}
	var user *specs.User
	withCaps := false
	for _, s := range plan {
		switch s.Kind {
		case KindUser:
			user = s.User
		case KindCapabilities:
			withCaps = true
		}
	}
	if user == nil {
		return errors.New("plan has no user step")
	}
	setUser := func() error {
		gids := make([]int, 0, len(user.AdditionalGids))
		for _, g := range user.AdditionalGids {
			gids = append(gids, int(g))
		}
		if err := unix.Setgroups(gids); err != nil {
			return fmt.Errorf("setgroups %v: %w", gids, err)
		}
		if err := unix.Setresgid(int(user.GID), int(user.GID), int(user.GID)); err != nil {
			return fmt.Errorf("setgid %d: %w", user.GID, err)
		}
		if err := unix.Setresuid(int(user.UID), int(user.UID), int(user.UID)); err != nil {
			return fmt.Errorf("setuid %d: %w", user.UID, err)
		}
		return nil
	}
	// userSet follows the change of user: the parent-death signal is
	// armed here, on the thread that execs (the signal is per thread, and
	// a change of user clears it).
	userSet := func() error {
		if !dieWithParent {
			return nil
		}
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
			return fmt.Errorf("set the parent-death signal: %w", err)
		}
		if os.Getppid() != parent {
			return errors.New("the parent died before the parent-death signal was set")
		}
		return nil
	}
	for _, s := range plan {
		var err error
		switch s.Kind {
		case KindNoNewPrivs:
			if err = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				err = fmt.Errorf("set no_new_privs: %w", err)
			}
		case KindSeccomp:
			if err = seccomp.Load(s.Seccomp); err != nil {
				err = fmt.Errorf("seccomp: %w", err)
			}
		case KindUser:
			if !withCaps {
				if err = setUser(); err == nil {
					err = userSet()
				}
			}
		case KindCapabilities:
			if err = caps.Apply(s.Capabilities, setUser); err != nil {
				err = fmt.Errorf("capabilities: %w", err)
			} else {
				err = userSet()
			}
		case KindExec:
			if err = unix.Exec(path, s.Exec.Args, s.Exec.Env); err != nil {
				err = fmt.Errorf("exec %s: %w", path, err)
			}
		}
		if err != nil {
			return err
		}
	}
	return errors.New("plan has no exec step")
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}
