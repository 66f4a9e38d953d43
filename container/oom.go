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
		klog.Warningf("OOM watch: %v", err)
		return nil
	}
	path, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "0::")
	if !ok {
		return nil
	}
	events := filepath.Join("/sys/fs/cgroup", path, "memory.events")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		klog.Warningf("OOM watch: inotify: %v", err)
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		if !errors.Is(err, unix.ENOENT) {
			klog.Warningf("OOM watch: %s: %v", events, err)
		}
		return nil
	}
	// Non-blocking, so that the runtime's poller reads it and Close ends
	// the read.
	w := &oomWatch{events: events, notify: os.NewFile(uintptr(fd), "inotify"), done: make(chan struct{})}
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

func (w *oomWatch) check() {
	data, err := os.ReadFile(w.events)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
			if k, _ := strconv.ParseUint(n, 10, 64); k > 0 {
				w.killed.Store(true)
			}
		}
	}
}

// stop ends the watch, after a last look where the cgroup is still there,
// and reports whether the OOM killer killed a process of the container.
func (w *oomWatch) stop() bool {
	if w == nil {
		return false
	}
	w.check()
	w.notify.Close()
	<-w.done
	return w.killed.Load()
}
