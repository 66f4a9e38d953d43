package safeexec

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCloseOnExec: a descriptor opened without O_CLOEXEC reaches a child
// started with os/exec, and no longer does once marked.
func TestCloseOnExec(t *testing.T) {
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	probe := "/proc/self/fd/" + strconv.Itoa(fd)
	lookup := func() string {
		out, _ := exec.Command("/bin/busybox", "readlink", probe).Output()
		return strings.TrimSpace(string(out))
	}
	if got := lookup(); got != dir {
		t.Fatalf("before marking, the child sees descriptor %d as %q, want %s (the test does not test anything)", fd, got, dir)
	}
	if err := CloseOnExec(3); err != nil {
		t.Fatal(err)
	}
	if got := lookup(); got != "" {
		t.Errorf("after marking, the child still has descriptor %d: %s", fd, got)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor %d flags %#x (%v), want FD_CLOEXEC and still open", fd, flags, err)
	}
}

// TestSealed: a child runs the sealed copy even with its own descriptors
// laid over the copy's number; /proc/PID/exe of the child is the memfd,
// which cannot be written, and the source file is untouched.
func TestSealed(t *testing.T) {
	src := filepath.Join(t.TempDir(), "busybox")
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static is needed: %v", err)
	}
	if err := os.WriteFile(src, data, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	path, err := Sealed(src)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Sealed(src); err != nil || again != path {
		t.Errorf("a second Sealed of the same file: %q %v, want the same copy %q", again, err, path)
	}

	cmd := exec.Command(path, "600")
	cmd.Args[0] = "sleep" // busybox runs the applet of argv[0]
	for range 8 {
		f, err := os.Open("/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	exe := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/exe"
	if link, err := os.Readlink(exe); err != nil || !strings.HasPrefix(link, "/memfd:busybox") {
		t.Errorf("child runs %q (%v), want the memfd copy", link, err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err != nil || got&seals != seals {
		t.Errorf("seals %#x (%v), want %#x", got, err, seals)
	}
	if w, err := os.OpenFile(exe, os.O_WRONLY, 0); err == nil {
		_, err = w.Write([]byte("evil"))
		w.Close()
		if err == nil {
			t.Errorf("wrote to the running sealed copy")
		}
	}
	// Not executed by anyone, the copy still refuses writes: the seal, not
	// the kernel's refusal to write a running binary, holds.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	w, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write([]byte("evil")); !errors.Is(err, unix.EPERM) {
		t.Errorf("write to the idle sealed copy: %v, want EPERM", err)
	}
	if err := w.Truncate(0); !errors.Is(err, unix.EPERM) {
		t.Errorf("truncate the idle sealed copy: %v, want EPERM", err)
	}
	after, err := os.ReadFile(src)
	if err != nil || sha256.Sum256(after) != sum {
		t.Errorf("the source binary changed (%v)", err)
	}
	copied, err := io.ReadAll(io.NewSectionReader(f, 0, int64(len(data))+1))
	if err != nil || !bytes.Equal(copied, data) {
		t.Errorf("the copy differs from the source (%v)", err)
	}
}
