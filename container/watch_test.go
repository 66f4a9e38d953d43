package container

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cri-mini/cri-mini/internal/roottest"
)

// TestWatchExits: exits of containers started before and after the watch
// are sent once each, with State already showing them stopped; an exit
// recorded before the watch is not sent; cancelling ends the watch and
// closes its inotify descriptor.
func TestWatchExits(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	rt.run(t, "done", rt.bundle(t, "done", rootfs, "true"))
	rt.startRunning(t, "before", rt.bundle(t, "before", rootfs, "sleep", "999"))
	inotifyBefore := inotifyFds(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exits, err := rt.WatchExits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := inotifyFds(t); got != inotifyBefore+1 {
		t.Errorf("%d inotify descriptors while watching, %d before", got, inotifyBefore)
	}
	sups, err := rt.Supervisors()
	if err != nil || len(sups) != 1 || sups[0].ID != "before" || sups[0].Pid <= 0 {
		t.Fatalf("supervisors: %+v, %v; want the one of 'before'", sups, err)
	}

	next := func() string {
		t.Helper()
		select {
		case id := <-exits:
			st, err := rt.State(id)
			if err != nil || st.Status != StatusStopped {
				t.Errorf("exit of %s sent with state %+v, %v", id, st, err)
			}
			return id
		case <-time.After(20 * time.Second):
			t.Fatal("no exit sent within 20s")
			return ""
		}
	}
	rt.startRunning(t, "after", rt.bundle(t, "after", rootfs, "sh", "-c", "sleep 0.5; exit 3"))
	if id := next(); id != "after" {
		t.Errorf("exit sent for %s, want after", id)
	}
	if err := rt.Kill(ctx, "before", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if id := next(); id != "before" {
		t.Errorf("exit sent for %s, want before", id)
	}
	// A container deleted while watched sends nothing more.
	rt.deleteAndCheck(t, "after")
	select {
	case id := <-exits:
		t.Errorf("unexpected exit sent for %s", id)
	case <-time.After(300 * time.Millisecond):
	}
	waitFor(t, func() bool { sups, _ := rt.Supervisors(); return len(sups) == 0 })

	cancel()
	select {
	case id, ok := <-exits:
		if ok {
			t.Errorf("exit of %s sent after cancel", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the channel was not closed after cancel")
	}
	waitFor(t, func() bool { return inotifyFds(t) == inotifyBefore })
}

// TestWatchExitsNewStateDir: the watch makes the state directory when it
// is missing (before the first container) and sees containers made in it.
func TestWatchExitsNewStateDir(t *testing.T) {
	roottest.Require(t)
	rt, rootfs := newTestRuntime(t), busyboxRootfs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exits, err := rt.WatchExits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, id := range []string{"a", "b"} {
		rt.startRunning(t, id, rt.bundle(t, id, rootfs, "sleep", "0.5"))
	}
	for range 2 {
		select {
		case id := <-exits:
			ids = append(ids, id)
		case <-time.After(20 * time.Second):
			t.Fatalf("exits sent: %v, want a and b", ids)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"a", "b"}) {
		t.Errorf("exits sent: %v, want a and b", ids)
	}
}

// inotifyFds counts this process's inotify descriptors.
func inotifyFds(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); strings.Contains(target, "inotify") {
			n++
		}
	}
	return n
}
