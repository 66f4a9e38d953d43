package container

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// oomWatch follows the OOM kills in a container's cgroup v2 (oom_kill in
// memory.events) while it runs, for the supervisor to record with the
// exit: under the systemd driver the cgroup goes with the container's last
// process, so nothing can read it once the container has ended.
type oomWatch struct {
	events string   // memory.events of the cgroup
	notify *os.File // inotify descriptor watching it
	killed atomic.Bool
	done   chan struct{}
	// The parent's count when the watch began: its memory.events counts
	// the kills below it too, and it outlives the container.
	parentEvents string
	parentBase   uint64
}

// watchOOM starts following the cgroup process pid is in. It returns nil
// where there is nothing to follow: on v1, whose cgroups stay until the
// runtime removes them, or without a memory controller.
func watchOOM(pid int) *oomWatch {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		klog.InfoS("No OOM watch", "pid", pid, "err", err)
		return nil
	}
	path, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "0::")
	if !ok {
		return nil
	}
	dir := filepath.Join("/sys/fs/cgroup", path)
	w := &oomWatch{events: filepath.Join(dir, "memory.events"), parentEvents: filepath.Join(filepath.Dir(dir), "memory.events"), done: make(chan struct{})}
	w.parentBase, _ = oomKills(w.parentEvents)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		klog.InfoS("No OOM watch: inotify", "pid", pid, "err", err)
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, w.events, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		if !errors.Is(err, unix.ENOENT) {
			klog.InfoS("No OOM watch", "pid", pid, "path", w.events, "err", err)
		}
		return nil
	}
	// Non-blocking, so that the runtime's poller reads it and Close ends
	// the read.
	w.notify = os.NewFile(uintptr(fd), "inotify")
	w.check()
	go w.follow()
	return w
}

// follow reads memory.events again on each change the kernel notifies.
func (w *oomWatch) follow() {
	defer close(w.done)
	buf := make([]byte, 4096)
	for {
		if _, err := w.notify.Read(buf); err != nil {
			return
		}
		w.check()
	}
}

// check reads the cgroup's count; false when the cgroup is gone.
func (w *oomWatch) check() bool {
	n, err := oomKills(w.events)
	if n > 0 {
		w.killed.Store(true)
	}
	return err == nil
}

// oomKills reads oom_kill from a memory.events file.
func oomKills(file string) (uint64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
			return strconv.ParseUint(n, 10, 64)
		}
	}
	return 0, nil
}

// stop ends the watch and reports whether the OOM killer killed a process
// of the container; sigkilled says the init died of SIGKILL (or, a shell,
// says with 137 that its child did). A kill can
// reach the watch only after the cgroup is gone: the kernel notifies a
// file's change at most every 10 ms, and the victim may be dead and its
// cgroup removed by then. So when the cgroup is gone and the init was
// killed, a kill counted in the parent since the start is taken as the
// container's.
func (w *oomWatch) stop(sigkilled bool) bool {
	if w == nil {
		return false
	}
	there := w.check()
	w.notify.Close()
	<-w.done
	if w.killed.Load() {
		return true
	}
	if there || !sigkilled {
		return false
	}
	n, err := oomKills(w.parentEvents)
	return err == nil && n > w.parentBase
}
