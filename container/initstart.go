package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The init's descriptors (ExtraFiles order); the nsenter constructor's
// report and join descriptors follow them, then the prepared mounts.
const (
	initSyncFD  = 3 // socket: "go" from the supervisor, "ready" back
	initInputFD = 4 // pipe: initInput as JSON
	initFifoFD  = 5 // O_PATH: the start fifo
)

// initInput is what the supervisor hands the init. The init never reaches
// the container's state directory, nor a mount's source, by a path of the
// host: in a user namespace it could not (they lie below directories only
// the host's root may search), so everything arrives as data or as a
// descriptor, the root file system as the working directory.
type initInput struct {
	Config *config   `json:"config"`
	Plan   PlanInput `json:"plan"`
	// Sources are the detached mounts the supervisor made of what the
	// plan's steps mount from the host (prepareSources), by step index:
	// descriptor numbers in the init.
	Sources map[int]int `json:"sources,omitempty"`
}

// startInit starts the container's init through the nsenter constructor
// (init mode): it joins the spec's namespaces, the user namespace first,
// makes the new ones, and forks the init in them, in the root file system
// as its working directory. The init is adopted by this process (a child
// subreaper while the constructor's process exits) and returned. cmd comes
// with its stdio and the sync socket.
func startInit(cmd *exec.Cmd, dir string, cfg *config) (*os.Process, error) {
	spec := cfg.Spec
	flags, joins, err := namespaceFlags(spec)
	if err != nil {
		return nil, err
	}
	hier, err := hostCgroups()
	if err != nil {
		return nil, fmt.Errorf("read host cgroups: %w", err)
	}
	in := initInput{Config: cfg, Plan: PlanInput{EtcFiles: etcFiles(dir), HostCgroups: hier}, Sources: map[int]int{}}
	plan, err := BuildPlan(spec, in.Plan)
	if err != nil {
		return nil, err
	}
	var files []*os.File // the child's, closed here once it has them
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	add := func(f *os.File) int {
		files = append(files, f)
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		return 2 + len(cmd.ExtraFiles)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer inW.Close()
	fifo, err := os.OpenFile(filepath.Join(dir, fifoFile), unix.O_PATH, 0)
	if err != nil {
		inR.Close()
		return nil, fmt.Errorf("open start fifo: %w", err)
	}
	add(inR)
	add(fifo)
	reportR, reportW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer reportR.Close()
	report := add(reportW)
	var userNS *os.File
	var joinFDs []string
	for _, ns := range joins {
		f, err := os.Open(ns.Path)
		if err != nil {
			return nil, fmt.Errorf("%s namespace: %w", ns.Type, err)
		}
		joinFDs = append(joinFDs, strconv.Itoa(add(f)))
		if ns.Type == specs.UserNamespace {
			userNS = f
		}
	}
	sources, err := prepareSources(plan, userNS)
	if err != nil {
		return nil, err
	}
	for _, i := range slices.Sorted(maps.Keys(sources)) {
		in.Sources[i] = add(sources[i])
	}
	cmd.Dir = spec.Root.Path
	cmd.Env = append(cmd.Env, "_CRI_MINI_NSINIT="+strconv.FormatUint(uint64(flags), 10),
		"_CRI_MINI_NSINIT_REPORT="+strconv.Itoa(report), "_CRI_MINI_NSINIT_JOIN="+strings.Join(joinFDs, ","))
	// The init, forked by the constructor's process, becomes ours when
	// that process exits; no other orphan can come our way meanwhile (the
	// init waits for go, and this process has no other child).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become a child subreaper: %w", err)
	}
	defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	out, rerr := io.ReadAll(io.LimitReader(reportR, 4096))
	werr := cmd.Wait()
	pid, perr := strconv.Atoi(string(out))
	if werr != nil || rerr != nil || perr != nil {
		if werr == nil && rerr == nil {
			werr = fmt.Errorf("unexpected report %q", out)
		} else if len(out) > 0 {
			werr = errors.New(string(out))
		}
		return nil, errors.Join(werr, rerr)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("adopt init %d: %w", pid, err)
	}
	if err := json.NewEncoder(inW).Encode(in); err != nil {
		_ = proc.Kill()
		_, _ = proc.Wait()
		return nil, fmt.Errorf("hand the init its input: %w", err)
	}
	return proc, nil
}

// prepareSources makes a detached mount of the source of every step of
// the plan that mounts something of the host's: the bind mounts (with
// their attributes, and idmapped with the container's user namespace when
// they carry id mappings) and, in a user namespace, where a device node
// cannot be made, the host's nodes. The init only attaches them.
func prepareSources(plan []Step, userNS *os.File) (map[int]*os.File, error) {
	sources := map[int]*os.File{}
	ok := false
	defer func() {
		if !ok {
			for _, f := range sources {
				f.Close()
			}
		}
	}()
	for i, s := range plan {
		var f *os.File
		var err error
		switch {
		case s.Kind == KindMount && isBind(*s.Mount):
			f, err = bindSource(*s.Mount, userNS)
		case s.Kind == KindDevice && s.Device.Bind != "":
			f, err = bindSource(specs.Mount{Destination: "/dev/" + s.Device.Path, Source: s.Device.Bind, Type: "bind"}, nil)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		sources[i] = f
	}
	ok = true
	return sources, nil
}

// etcFiles lists the R2 files Create wrote into the state directory.
func etcFiles(dir string) map[string]string {
	files := map[string]string{}
	for _, name := range []string{"hosts", "hostname", "resolv.conf"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			files["/etc/"+name] = p
		}
	}
	return files
}
