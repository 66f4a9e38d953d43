// Package proc answers whether a process still runs and waits for it to
// end, from /proc/<pid>/stat and pidfds. A pid alone is never trusted
// across time: the kernel reuses it, so a process is named by its pid and
// start time together (ID), and signalled and waited on through a pidfd,
// which cannot come to name another process.
package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/cri-mini/cri-mini/internal/fsutil"
	"golang.org/x/sys/unix"
)

// Stat is what cri-mini reads of /proc/<pid>/stat.
type Stat struct {
	Comm      string // field 2, without its parentheses
	State     byte   // field 3: R, S, D, Z (zombie), X (dead), ...
	PPid      int    // field 4
	CPUTicks  uint64 // fields 14 and 15: user and system time, clock ticks
	StartTime uint64 // field 22, clock ticks after boot
}

// ReadStat reads /proc/<pid>/stat. A process that is gone is an error
// wrapping os.ErrNotExist.
func ReadStat(pid int) (Stat, error) {
	data, err := fsutil.ReadKernelFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return parseStat(pid, string(data))
}

func parseStat(pid int, data string) (Stat, error) {
	// The command name may hold spaces and parentheses of its own: it ends
	// at the last ")", and the fields after it are plain.
	open, end := strings.IndexByte(data, '('), strings.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(data[end+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat: parent pid: %w", pid, err)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat: CPU time: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat: start time: %w", pid, err)
	}
	return Stat{Comm: data[open+1 : end], State: f[0][0], PPid: ppid, CPUTicks: utime + stime, StartTime: start}, nil
}

// Running reports whether a process in this state has not exited: a
// zombie has, and waits only to be reaped.
func (s Stat) Running() bool { return s.State != 'Z' && s.State != 'X' }

// Alive reports whether pid is a process that has not exited.
func Alive(pid int) bool {
	s, err := ReadStat(pid)
	return err == nil && s.Running()
}

// ID names one process for as long as it lives: a pid is reused, a pid
// and its start time are not.
type ID struct {
	Pid       int
	StartTime uint64
}

// Identify returns the ID of the running process pid. The caller must know
// pid is its process (its child, not reaped yet): a start time that cannot
// be read is left 0, which then matches no process.
func Identify(pid int) ID {
	s, _ := ReadStat(pid)
	return ID{Pid: pid, StartTime: s.StartTime}
}

// Alive reports whether the process still runs: its pid names a process
// started at the recorded time that has not exited.
func (id ID) Alive() bool {
	if id.Pid <= 0 {
		return false
	}
	s, err := ReadStat(id.Pid)
	return err == nil && s.StartTime == id.StartTime && s.Running()
}

// Open returns a pidfd of the process, or an error when it has gone; a pid
// now of another process is os.ErrProcessDone. The start time is checked
// after the pidfd is open, so the pidfd cannot be of a process that took
// the pid between the check and the open.
func (id ID) Open() (int, error) {
	fd, err := Open(id.Pid)
	if err != nil {
		return -1, err
	}
	if s, err := ReadStat(id.Pid); err != nil || s.StartTime != id.StartTime {
		unix.Close(fd)
		return -1, fmt.Errorf("process %d: %w", id.Pid, os.ErrProcessDone)
	}
	return fd, nil
}

// Handle is an open pidfd of one process, for a question asked about it
// again and again (Exited) at one system call each, where Alive reads and
// parses /proc. Its descriptor is closed once the Handle is unreachable, so
// a Handle may be shared and dropped without a Close.
type Handle struct{ fd int }

// Handle opens a Handle of the process, or returns an error when it has
// gone (see Open).
func (id ID) Handle() (*Handle, error) {
	fd, err := id.Open()
	if err != nil {
		return nil, err
	}
	h := &Handle{fd: fd}
	runtime.AddCleanup(h, func(fd int) { unix.Close(fd) }, fd)
	return h, nil
}

// Exited reports, without waiting, whether the process has exited (a
// zombie has).
func (h *Handle) Exited() (bool, error) {
	defer runtime.KeepAlive(h) // its descriptor stays open through the poll
	fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll pidfd: %w", err)
		}
		return n > 0, nil
	}
}

// Open returns a pidfd of process pid, for a caller that tells by other
// means (its environment, say) that pid is the process it wants: it checks
// once the pidfd is open, and from then on the pidfd names that process.
func Open(pid int) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("process %d: %w", pid, err)
	}
	return fd, nil
}

// Signal sends sig to the process of pidfd. One that has exited (ESRCH) is
// no error: what the signal was for has happened.
func Signal(pidfd int, sig syscall.Signal) error {
	if err := unix.PidfdSendSignal(pidfd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// Wait blocks until the process of pidfd has exited, or returns ctx's
// error once ctx ends. It polls in short slices rather than until ctx's
// deadline, so that a ctx cancelled without one ends the wait as well.
func Wait(ctx context.Context, pidfd int) error {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 100)
		if n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
