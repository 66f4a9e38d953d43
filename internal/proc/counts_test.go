package proc

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCounts: this test's own process has threads, file descriptors, a
// socket it opens, and the soft open-files limit getrlimit tells.
func TestCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	threads, err := Threads(os.Getpid())
	if err != nil || threads < 2 {
		t.Errorf("threads %d, %v", threads, err)
	}
	fds, sockets, err := FDs(os.Getpid())
	if err != nil || fds < 3 || sockets < 1 {
		t.Errorf("%d fds, %d sockets, %v", fds, sockets, err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if soft, ok := OpenFilesSoftLimit(os.Getpid()); !ok || soft != lim.Cur {
		t.Errorf("open files soft limit %d (%v), want %d", soft, ok, lim.Cur)
	}
	if _, ok := OpenFilesSoftLimit(0); ok {
		t.Error("a limit for pid 0")
	}
	if _, err := Threads(1 << 30); err == nil {
		t.Error("threads of a pid that cannot exist")
	}
}

// TestFDsOverManyBatches: descriptors beyond one batch of the directory
// read (as a process holding thousands has) are all counted, and so are
// the sockets among them.
func TestFDsOverManyBatches(t *testing.T) {
	before, sockBefore, err := FDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	const files, socks = 3*fdBatch + 7, 50
	for range files {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Skipf("open %d descriptors: %v", files, err)
		}
		defer f.Close()
	}
	for range socks {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
	}
	fds, sockets, err := FDs(os.Getpid())
	if err != nil || fds != before+files+socks || sockets != sockBefore+socks {
		t.Errorf("%d fds and %d sockets (%v), want %d and %d", fds, sockets, err, before+files+socks, sockBefore+socks)
	}
}
