package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cri-mini/cri-mini/internal/fsutil"
	"github.com/cri-mini/cri-mini/internal/proc"
	pb "github.com/cri-mini/cri-mini/proto/supervisor/v1"
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

type startedRecord struct {
	Started time.Time `json:"started"`
}

// exitRecord is how the init ended: exit.json, pb.ExitRecord.
type exitRecord struct {
	ExitCode int
	Signal   int
	Finished time.Time
	// OOMKilled: the OOM killer killed a process of the container's
	// cgroup while the supervisor watched it (v2).
	OOMKilled bool
}

// The records a supervisor and the daemon leave for each other (init.json,
// supervisor.json, exit.json) are messages of proto/supervisor/v1 in
// protobuf's JSON form: a daemon upgraded while containers run reads what
// their older supervisors wrote. Fields a reader does not know are skipped.

// maxRecord bounds a record read: each is a few dozen bytes.
const maxRecord = 64 << 10

func writeRecord(dir, name string, m proto.Message) error {
	data, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, name), data, 0o600)
}

// readRecord reads a record into m; a missing file is reported with
// os.ErrNotExist.
func readRecord(dir, name string, m proto.Message) error {
	path := filepath.Join(dir, name)
	data, err := fsutil.ReadRegularFile(path, maxRecord)
	if err != nil {
		return err
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// writeProcess records a process: init.json or supervisor.json.
func writeProcess(dir, name string, id proc.ID) error {
	return writeRecord(dir, name, &pb.ProcessRecord{Pid: int32(id.Pid), StartTime: id.StartTime})
}

// readProcess reads the process that init.json or supervisor.json records.
func readProcess(dir, name string) (proc.ID, error) {
	var m pb.ProcessRecord
	if err := readRecord(dir, name, &m); err != nil {
		return proc.ID{}, err
	}
	return proc.ID{Pid: int(m.GetPid()), StartTime: m.GetStartTime()}, nil
}

func writeExit(dir string, ex exitRecord) error {
	return writeRecord(dir, exitFile, &pb.ExitRecord{ExitCode: int32(ex.ExitCode), Signal: int32(ex.Signal),
		Finished: timestamppb.New(ex.Finished), OomKilled: ex.OOMKilled})
}

func readExit(dir string) (*exitRecord, error) {
	var m pb.ExitRecord
	if err := readRecord(dir, exitFile, &m); err != nil {
		return nil, err
	}
	return &exitRecord{ExitCode: int(m.GetExitCode()), Signal: int(m.GetSignal()),
		Finished: m.GetFinished().AsTime(), OOMKilled: m.GetOomKilled()}, nil
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
