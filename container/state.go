package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cri-mini/cri-mini/internal/fsutil"
)

// A container's state directory holds one file per writer, so that the
// daemon and the supervisor never rewrite each other's records:
//
//	config.json   daemon, before any side effect: what to build
//	supervisor.json daemon: the supervisor process, once started
//	init.json     supervisor: the init process, once it waits for start
//	started.json  daemon: when start released the init
//	exit.json     supervisor: how and when the init ended
//	exec.fifo     the init blocks opening it until start reads it
const (
	configFile  = "config.json"
	initFile    = "init.json"
	supFile     = "supervisor.json"
	startedFile = "started.json"
	exitFile    = "exit.json"
	fifoFile    = "exec.fifo"
)

// config is what Create records before it does anything else, so that
// Delete can undo a create that was cut short.
type config struct {
	ID         string      `json:"id"`
	Spec       *specs.Spec `json:"spec"`
	LogPath    string      `json:"logPath,omitempty"`
	LogDir     string      `json:"logDir,omitempty"` // LogPath is opened below it
	Tty        bool        `json:"tty,omitempty"`
	Stdin      bool        `json:"stdin,omitempty"`
	StdinOnce  bool        `json:"stdinOnce,omitempty"`
	CgroupPath string      `json:"cgroupPath,omitempty"`
	Created    time.Time   `json:"created"`
	// The spec's JSON drops an empty list of masked or read-only paths
	// (a privileged container's), which would read back as no list and
	// get the recipe's defaults: these say the lists were there, empty.
	NoMaskedPaths   bool `json:"noMaskedPaths,omitempty"`
	NoReadonlyPaths bool `json:"noReadonlyPaths,omitempty"`
}

// MarshalJSON records whether the spec's lists of masked and read-only
// paths are empty rather than absent.
func (c config) MarshalJSON() ([]byte, error) {
	type plain config
	p := plain(c)
	if c.Spec != nil && c.Spec.Linux != nil {
		l := c.Spec.Linux
		p.NoMaskedPaths = l.MaskedPaths != nil && len(l.MaskedPaths) == 0
		p.NoReadonlyPaths = l.ReadonlyPaths != nil && len(l.ReadonlyPaths) == 0
	}
	return json.Marshal(p)
}

// UnmarshalJSON gives back the empty lists MarshalJSON recorded.
func (c *config) UnmarshalJSON(data []byte) error {
	type plain config
	if err := json.Unmarshal(data, (*plain)(c)); err != nil {
		return err
	}
	if c.Spec != nil && c.Spec.Linux != nil {
		if c.NoMaskedPaths && c.Spec.Linux.MaskedPaths == nil {
			c.Spec.Linux.MaskedPaths = []string{}
		}
		if c.NoReadonlyPaths && c.Spec.Linux.ReadonlyPaths == nil {
			c.Spec.Linux.ReadonlyPaths = []string{}
		}
	}
	return nil
}

// procRecord identifies a process across daemon restarts: a pid plus the
// start time the kernel gives it, so a recycled pid is not mistaken for it.
type procRecord struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

type startedRecord struct {
	Started time.Time `json:"started"`
}

type exitRecord struct {
	ExitCode int       `json:"exitCode"`
	Signal   int       `json:"signal,omitempty"`
	Finished time.Time `json:"finished"`
	// OOMKilled: the OOM killer killed a process of the container's
	// cgroup while the supervisor watched it (v2).
	OOMKilled bool `json:"oomKilled,omitempty"`
}

func writeJSON(dir, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, name), data, 0o600)
}

// readJSON reads a record; a missing file is reported with os.ErrNotExist.
func readJSON(dir, name string, v any) error {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}

// processStartTime returns field 22 of /proc/<pid>/stat (start time in clock
// ticks since boot).
func processStartTime(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// statFields returns the fields of /proc/<pid>/stat from field 3 (state)
// on: f[0] is the state, f[1] the parent pid, f[19] the start time.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	// The command name (field 2) may hold spaces; fields after it are plain.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil, errors.New("malformed /proc/pid/stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return nil, errors.New("malformed /proc/pid/stat")
	}
	return f, nil
}

func newProcRecord(pid int) procRecord {
	st, _ := processStartTime(pid)
	return procRecord{Pid: pid, StartTime: st}
}

// alive reports whether the recorded process still exists (and is not a
// zombie waiting for its parent).
func (p procRecord) alive() bool {
	if p.Pid <= 0 {
		return false
	}
	f, err := statFields(p.Pid)
	if err != nil {
		return false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && st == p.StartTime && f[0] != "Z"
}

// pidfd opens a descriptor on the recorded process, or fails when it has
// gone (or its pid now belongs to another process).
func (p procRecord) pidfd() (int, error) {
	fd, err := unix.PidfdOpen(p.Pid, 0)
	if err != nil {
		return -1, fmt.Errorf("process %d: %w", p.Pid, err)
	}
	if st, err := processStartTime(p.Pid); err != nil || st != p.StartTime {
		unix.Close(fd)
		return -1, fmt.Errorf("process %d: %w", p.Pid, os.ErrProcessDone)
	}
	return fd, nil
}
