package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// WatchExits sends the id of each container whose init has exited, once its
// exit record is in place, until ctx ends; then it closes the channel.
//
// It watches the state directories with inotify, not the processes with
// pidfds: the supervisor renames exit.json into place (an IN_MOVED_TO), and
// that record is what State reads, so an exit is never reported before
// State shows it (a pidfd fires when the init dies, before the supervisor
// has drained the output and recorded the exit). One descriptor serves
// every container, and a container is watched from the moment its
// directory appears, before it has any process.
//
// Containers that already exist when the watch starts are watched as well,
// so a restarted daemon hears of the exits of containers it did not start.
// Exits that happened while no one watched (the daemon was down) are not
// sent: their records are there for State and List, and a client whose
// event stream broke with the daemon must list again anyway (kubelet does).
//
// A container's exit is sent at most once; the receiver must keep up, as
// the watch waits for it.
func (r *Runtime) WatchExits(ctx context.Context) (<-chan string, error) {
	if err := os.MkdirAll(r.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("watch container exits: %w", err)
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("watch container exits: inotify: %w", err)
	}
	// Through os.File the reads wait in the runtime's poller, and Close
	// (on ctx done) wakes them.
	w := &exitWatcher{stateDir: r.StateDir, f: os.NewFile(uintptr(fd), "inotify"), dirs: map[int]string{}, sent: map[string]bool{}}
	if _, err := w.addWatch(r.StateDir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		w.f.Close()
		return nil, fmt.Errorf("watch container exits: %w", err)
	}
	entries, err := os.ReadDir(r.StateDir)
	if err != nil {
		w.f.Close()
		return nil, fmt.Errorf("watch container exits: %w", err)
	}
	var exited []string
	for _, e := range entries {
		if e.IsDir() {
			exited = append(exited, w.watchContainer(e.Name(), true)...)
		}
	}
	ch := make(chan string)
	go func() {
		defer close(ch)
		stop := context.AfterFunc(ctx, func() { w.f.Close() })
		defer stop()
		defer w.f.Close()
		for {
			for _, id := range exited {
				select {
				case ch <- id:
				case <-ctx.Done():
					return
				}
			}
			if exited, err = w.next(); err != nil {
				if ctx.Err() == nil {
					klog.ErrorS(err, "Watching container exits stopped")
				}
				return
			}
		}
	}()
	return ch, nil
}

// exitWatcher is the state of one WatchExits; only its goroutine uses it
// once the watch has started.
type exitWatcher struct {
	stateDir string
	f        *os.File
	dirs     map[int]string  // watch descriptor -> container id
	sent     map[string]bool // containers whose exit was sent (or predates the watch)
	buf      [64 << 10]byte
}

// addWatch adds an inotify watch; the descriptor is used under Control so
// that a concurrent Close cannot hand its number to another file meanwhile.
func (w *exitWatcher) addWatch(path string, mask uint32) (int, error) {
	sc, err := w.f.SyscallConn()
	if err != nil {
		return -1, err
	}
	wd := -1
	var addErr error
	if err := sc.Control(func(fd uintptr) { wd, addErr = unix.InotifyAddWatch(int(fd), path, mask) }); err != nil {
		return -1, err
	}
	if addErr != nil {
		return -1, fmt.Errorf("inotify watch %s: %w", path, addErr)
	}
	return wd, nil
}

// watchContainer starts watching a container's directory and returns its
// id if it has exited meanwhile. At start-up, an exit recorded before the
// watch (while no daemon watched) is not reported; one recorded between
// the listing and the watch is.
func (w *exitWatcher) watchContainer(id string, atStart bool) []string {
	exitPath := filepath.Join(w.stateDir, id, exitFile)
	_, err := os.Stat(exitPath)
	recordedBefore := err == nil
	wd, err := w.addWatch(filepath.Join(w.stateDir, id), unix.IN_MOVED_TO|unix.IN_ONLYDIR)
	if err != nil {
		// Removed already, or not a container directory.
		klog.V(4).InfoS("Not watching container directory", "container", id, "err", err)
		return nil
	}
	w.dirs[wd] = id
	if atStart && recordedBefore {
		w.sent[id] = true
		return nil
	}
	return w.exited(id)
}

// exited returns id if its exit record exists and was not sent yet.
func (w *exitWatcher) exited(id string) []string {
	if w.sent[id] {
		return nil
	}
	if _, err := os.Stat(filepath.Join(w.stateDir, id, exitFile)); err != nil {
		return nil
	}
	w.sent[id] = true
	return []string{id}
}

// next waits for inotify events and returns the containers that exited.
func (w *exitWatcher) next() ([]string, error) {
	n, err := w.f.Read(w.buf[:])
	if err != nil {
		return nil, err
	}
	var exited []string
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
		nameBytes := w.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
		off += unix.SizeofInotifyEvent + int(ev.Len)
		name := string(nameBytes[:clen(nameBytes)])
		wd := int(ev.Wd)
		switch {
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			klog.InfoS("Container exit watch overflowed, rescanning", "dir", w.stateDir)
			more, err := w.rescan()
			if err != nil {
				return nil, err
			}
			exited = append(exited, more...)
		case ev.Mask&unix.IN_IGNORED != 0: // the directory went away
			if id, ok := w.dirs[wd]; ok {
				delete(w.dirs, wd)
				delete(w.sent, id)
			}
		case w.dirs[wd] == "" && ev.Mask&unix.IN_ISDIR != 0: // a new container directory
			exited = append(exited, w.watchContainer(name, false)...)
		case w.dirs[wd] != "" && name == exitFile:
			exited = append(exited, w.exited(w.dirs[wd])...)
		}
	}
	return exited, nil
}

// rescan catches up after lost events: every container directory is
// watched and every recorded exit not sent yet is returned.
func (w *exitWatcher) rescan() ([]string, error) {
	entries, err := os.ReadDir(w.stateDir)
	if err != nil {
		return nil, fmt.Errorf("rescan %s: %w", w.stateDir, err)
	}
	watched := map[string]bool{}
	for _, id := range w.dirs {
		watched[id] = true
	}
	var exited []string
	for _, e := range entries {
		switch {
		case !e.IsDir():
		case !watched[e.Name()]:
			exited = append(exited, w.watchContainer(e.Name(), false)...)
		default:
			exited = append(exited, w.exited(e.Name())...)
		}
	}
	return exited, nil
}

// clen is the length of the NUL-padded name of an inotify event.
func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// Supervisor is a container's supervisor process.
type Supervisor struct {
	ID  string // the container's
	Pid int
}

// Supervisors lists the supervisors that are alive.
func (r *Runtime) Supervisors() ([]Supervisor, error) {
	entries, err := os.ReadDir(r.StateDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list supervisors: %w", err)
	}
	var out []Supervisor
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if sup, err := readProcess(filepath.Join(r.StateDir, e.Name()), supFile); err == nil && sup.Alive() {
			out = append(out, Supervisor{ID: e.Name(), Pid: sup.Pid})
		}
	}
	return out, nil
}
