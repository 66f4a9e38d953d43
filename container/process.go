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
// by exec: both end in execProcess on their locked OS thread.

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

// prepareProcess does the steps whose failure should fail create (or exec)
// rather than the started application: rlimits, umask, working directory,
// and finding the executable. It returns the executable's path.
func prepareProcess(p *specs.Process) (string, error) {
	if p == nil || len(p.Args) == 0 {
		return "", errNoCommand
	}
	for _, rl := range p.Rlimits {
		res, ok := rlimitNames[rl.Type]
		if !ok {
			return "", fmt.Errorf("unknown rlimit %q", rl.Type)
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}); err != nil {
			return "", fmt.Errorf("set %s to %d/%d: %w", rl.Type, rl.Soft, rl.Hard, err)
		}
	}
	umask := 0o022
	if p.User.Umask != nil {
		umask = int(*p.User.Umask)
	}
	unix.Umask(umask)
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	root, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer root.Close()
	d, err := mkdirInRoot(root, cwd)
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	err = unix.Fchdir(int(d.Fd()))
	d.Close()
	if err != nil {
		return "", fmt.Errorf("chdir %s: %w", cwd, err)
	}
	return lookPath(p.Args[0], p.Env)
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

// execProcess drops privileges and replaces the calling process with the
// application (R19): no_new_privs, user and groups, capabilities, seccomp,
// exec. The application gets stdio and no other descriptor. With
// dieWithParent (an exec'd process), it is killed when its parent dies.
func execProcess(p *specs.Process, sc *specs.LinuxSeccomp, path string, dieWithParent bool) error {
	parent := os.Getppid()
	// Marked before the seccomp filter is in place, which may not allow
	// close_range. Whatever was opened without O_CLOEXEC on the way here
	// (by us, a library, or inherited) goes with the exec.
	if err := safeexec.CloseOnExec(3); err != nil {
		return err
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	} else if err := seccomp.Load(sc); err != nil {
		// Without no_new_privs the filter needs CAP_SYS_ADMIN: load it
		// while we still have it.
		return fmt.Errorf("seccomp: %w", err)
	}
	setUser := func() error {
		gids := make([]int, 0, len(p.User.AdditionalGids))
		for _, g := range p.User.AdditionalGids {
			gids = append(gids, int(g))
		}
		if err := unix.Setgroups(gids); err != nil {
			return fmt.Errorf("setgroups %v: %w", gids, err)
		}
		if err := unix.Setresgid(int(p.User.GID), int(p.User.GID), int(p.User.GID)); err != nil {
			return fmt.Errorf("setgid %d: %w", p.User.GID, err)
		}
		if err := unix.Setresuid(int(p.User.UID), int(p.User.UID), int(p.User.UID)); err != nil {
			return fmt.Errorf("setuid %d: %w", p.User.UID, err)
		}
		return nil
	}
	if err := caps.Apply(p.Capabilities, setUser); err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	if dieWithParent {
		// Armed here, on the thread that execs: the signal is per
		// thread, and a change of user clears it.
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
			return fmt.Errorf("set the parent-death signal: %w", err)
		}
		if os.Getppid() != parent {
			return errors.New("the parent died before the parent-death signal was set")
		}
	}
	if p.NoNewPrivileges {
		// Loaded last, so the filter need not allow the calls above.
		if err := seccomp.Load(sc); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
	}
	env := p.Env
	if !hasEnv(env, "HOME") {
		env = append(env[:len(env):len(env)], "HOME=/")
	}
	if err := unix.Exec(path, p.Args, env); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}
